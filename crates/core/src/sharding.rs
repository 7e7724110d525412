//! Stock buckets for [`Strategy::Sharded`](crate::Strategy::Sharded): the parts of the
//! design that do not depend on a database.
//!
//! A SKU's stock is the SKU row's own `stock` plus the stock of its bucket rows. `Sharded`
//! deductions take from buckets; every other strategy takes from the SKU row. Stock moves
//! between the two only under the SKU row's lock, in a transaction that writes no ledger
//! row (the total does not change), so the audit's `initial + Σ deltas = total` holds at
//! every commit. Two moves exist:
//! - *spread*: the `Sharded` consistent path takes the SKU row and every bucket, deducts
//!   from the total and spreads what is left evenly over the buckets ([`spread`]);
//! - *gather*: when another strategy would refuse a request for lack of stock in the SKU
//!   row while buckets still hold some, the buckets are emptied into the SKU row and the
//!   request runs again ([`refuse_only_on_total`]).
//!
//! So no strategy refuses a request while the SKU's total would satisfy it, whichever
//! strategies share the SKU.

use std::future::Future;

use crate::error::{DeductError, InvalidInput};

/// Default bucket count per SKU for adapters that implement `Sharded`.
pub const DEFAULT_SHARD_BUCKETS: u32 = 16;
/// Most buckets per SKU. Beyond a few dozen, the consistent path (which locks them all)
/// costs more than the spread saves.
pub const SHARD_BUCKETS_MAX: u32 = 256;
/// How many times a non-`Sharded` request gathers buckets and runs again before it gives
/// up with `Conflict` (each round means a concurrent `Sharded` request spread the stock
/// again in between).
pub const GATHER_ROUNDS_MAX: u32 = 8;

/// Checks an adapter's bucket count.
pub fn check_bucket_count(buckets: u32) -> Result<u32, InvalidInput> {
    if (1..=SHARD_BUCKETS_MAX).contains(&buckets) {
        Ok(buckets)
    } else {
        Err(InvalidInput::ShardBucketsOutOfRange {
            given: buckets,
            max: SHARD_BUCKETS_MAX,
        })
    }
}

/// Splits `total` units over `buckets` buckets as evenly as possible: the first
/// `total % buckets` buckets get one unit more. Σ result = total.
pub fn spread(total: i64, buckets: u32) -> Vec<i64> {
    assert!(total >= 0 && buckets > 0, "spread({total}, {buckets})");
    let n = i64::from(buckets);
    let (share, extra) = (total / n, total % n);
    (0..n).map(|i| share + i64::from(i < extra)).collect()
}

/// The bucket rows a re-spread writes: `left` units spread over `buckets` buckets
/// (`0..buckets`), plus a zero for every existing bucket at or beyond `buckets` (the count
/// was lowered since), so that no units are left behind in a bucket no longer used. Pairs of
/// (bucket, stock); Σ stock = left.
pub fn respread(left: i64, buckets: u32, existing: impl IntoIterator<Item = i64>) -> Vec<(i64, i64)> {
    let shares = spread(left, buckets);
    let highest = existing
        .into_iter()
        .map(|bucket| bucket + 1)
        .max()
        .unwrap_or(0)
        .max(i64::from(buckets));
    (0..highest)
        .map(|bucket| {
            let share = usize::try_from(bucket)
                .ok()
                .and_then(|i| shares.get(i).copied())
                .unwrap_or(0);
            (bucket, share)
        })
        .collect()
}

/// What a gather found, under the SKU row's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gathered {
    /// The SKU's total (row + buckets) is below the request: refusing is exact.
    Short {
        /// The total at that moment.
        total: i64,
    },
    /// The request may fit now (buckets were emptied into the row, or it was restocked).
    Retry,
}

impl Gathered {
    /// The decision a gather can take from one snapshot of the SKU's row stock and bucket
    /// stock, before locking anything: `Some` when the total is short (refusing is exact)
    /// or the buckets are empty (the row was restocked: run again); `None` when the buckets
    /// must be emptied into the row under the locks.
    pub fn from_snapshot(row_stock: i64, bucket_stock: i64, requested: i64) -> Option<Self> {
        if row_stock + bucket_stock < requested {
            Some(Gathered::Short {
                total: row_stock + bucket_stock,
            })
        } else if bucket_stock == 0 {
            Some(Gathered::Retry)
        } else {
            None
        }
    }
}

/// Runs `deduct` (a non-`Sharded` strategy, which only sees the SKU row) and, when it is
/// refused for insufficient stock, asks `gather` whether the SKU's total would satisfy
/// the request. A refusal is returned only when the total falls short, with the total as
/// `available`; otherwise the request runs again, at most [`GATHER_ROUNDS_MAX`] times,
/// then fails with `Conflict` (retryable; nothing was changed).
pub async fn refuse_only_on_total<T, D, DF, G, GF>(
    requested: i64,
    mut deduct: D,
    mut gather: G,
) -> Result<T, DeductError>
where
    D: FnMut() -> DF,
    DF: Future<Output = Result<T, DeductError>>,
    G: FnMut(i64) -> GF,
    GF: Future<Output = Result<Gathered, DeductError>>,
{
    for _ in 0..GATHER_ROUNDS_MAX {
        match deduct().await {
            Err(DeductError::InsufficientStock { .. }) => match gather(requested).await? {
                Gathered::Short { total } => {
                    return Err(DeductError::InsufficientStock {
                        requested,
                        available: total,
                    });
                }
                Gathered::Retry => continue,
            },
            other => return other,
        }
    }
    Err(DeductError::Conflict {
        attempts: GATHER_ROUNDS_MAX,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_even_and_exact() {
        assert_eq!(spread(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(spread(3, 5), vec![1, 1, 1, 0, 0]);
        assert_eq!(spread(0, 3), vec![0, 0, 0]);
        for (total, buckets) in [(1_000_003, 16), (15, 16), (1, 1)] {
            let parts = spread(total, buckets);
            assert_eq!(parts.len(), buckets as usize);
            assert_eq!(parts.iter().sum::<i64>(), total);
            assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn respread_empties_buckets_beyond_the_count() {
        assert_eq!(respread(5, 2, [0, 1]), vec![(0, 3), (1, 2)]);
        assert_eq!(respread(5, 2, [0, 1, 2, 3]), vec![(0, 3), (1, 2), (2, 0), (3, 0)]);
        assert_eq!(respread(4, 4, []), vec![(0, 1), (1, 1), (2, 1), (3, 1)]);
    }

    #[test]
    fn gather_decisions_from_a_snapshot() {
        assert_eq!(
            Gathered::from_snapshot(1, 2, 5),
            Some(Gathered::Short { total: 3 })
        );
        assert_eq!(Gathered::from_snapshot(6, 0, 5), Some(Gathered::Retry));
        assert_eq!(Gathered::from_snapshot(1, 9, 5), None);
    }

    #[test]
    fn bucket_count_limits() {
        assert!(check_bucket_count(0).is_err());
        assert_eq!(check_bucket_count(16), Ok(16));
        assert!(check_bucket_count(SHARD_BUCKETS_MAX + 1).is_err());
    }

    #[tokio::test]
    async fn refusal_only_when_the_total_is_short() {
        // Row short, buckets hold enough: gather, run again, succeed.
        let mut calls = 0;
        let outcome = refuse_only_on_total(
            5,
            || {
                calls += 1;
                let first = calls == 1;
                async move {
                    if first {
                        Err(DeductError::InsufficientStock {
                            requested: 5,
                            available: 2,
                        })
                    } else {
                        Ok(7)
                    }
                }
            },
            |_| async { Ok(Gathered::Retry) },
        )
        .await;
        assert_eq!(outcome.unwrap(), 7);

        // Total short: the refusal carries the total.
        let outcome: Result<(), _> = refuse_only_on_total(
            5,
            || async {
                Err(DeductError::InsufficientStock {
                    requested: 5,
                    available: 1,
                })
            },
            |_| async { Ok(Gathered::Short { total: 4 }) },
        )
        .await;
        assert!(matches!(
            outcome,
            Err(DeductError::InsufficientStock {
                requested: 5,
                available: 4
            })
        ));

        // Endless ping-pong: bounded, and a retryable Conflict rather than a false refusal.
        let outcome: Result<(), _> = refuse_only_on_total(
            5,
            || async {
                Err(DeductError::InsufficientStock {
                    requested: 5,
                    available: 0,
                })
            },
            |_| async { Ok(Gathered::Retry) },
        )
        .await;
        assert!(matches!(outcome, Err(DeductError::Conflict { attempts }) if attempts == GATHER_ROUNDS_MAX));
    }
}
