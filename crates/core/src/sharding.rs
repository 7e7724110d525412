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
//!   request runs again (the engine's refusal path).
//!
//! So no strategy refuses a request while the SKU's total would satisfy it, whichever
//! strategies share the SKU.

use crate::error::InvalidInput;

/// Default bucket count per SKU for adapters that implement `Sharded`.
pub const DEFAULT_SHARD_BUCKETS: u32 = 16;
/// Most buckets per SKU. Beyond a few dozen, the consistent path (which locks them all)
/// costs more than the spread saves.
pub const SHARD_BUCKETS_MAX: u32 = 256;
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
    fn bucket_count_limits() {
        assert!(check_bucket_count(0).is_err());
        assert_eq!(check_bucket_count(16), Ok(16));
        assert!(check_bucket_count(SHARD_BUCKETS_MAX + 1).is_err());
    }
}
