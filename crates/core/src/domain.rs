//! Domain values. Every input is parsed once into one of these types at the edge, so
//! everything behind the store trait is valid by construction.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// Longest accepted SKU id, in characters. Matches the `VARCHAR(64)` columns in every adapter.
pub const SKU_ID_MAX_LEN: usize = 64;
/// Largest quantity one request may deduct or restock. With [`STOCK_MAX`] this keeps every
/// sum inside `i64` on every database, so no arithmetic in SQL or Rust can overflow.
pub const QUANTITY_MAX: u32 = 1_000_000_000;
/// Longest accepted idempotency key, in characters. Matches the `VARCHAR(128)` columns.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 128;
/// Largest stock a SKU may hold (10^15). Restocks that would pass it are refused.
pub const STOCK_MAX: i64 = 1_000_000_000_000_000;
/// Largest page a ledger read returns.
pub const LEDGER_PAGE_MAX: u32 = 1_000;

/// A SKU identifier: 1..=64 characters of `[A-Za-z0-9._:-]`.
///
/// The charset is deliberately narrow: ids end up in URLs, logs and metric labels, and a
/// narrow charset means none of those need escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SkuId(String);

impl SkuId {
    /// Parses a SKU id, rejecting empty, over-long or non-safe-charset input.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(InvalidInput::EmptySku);
        }
        if raw.chars().count() > SKU_ID_MAX_LEN {
            return Err(InvalidInput::SkuTooLong {
                max_len: SKU_ID_MAX_LEN,
            });
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(InvalidInput::SkuCharset { found: bad });
        }
        Ok(Self(raw))
    }

    /// The id as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SkuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SkuId {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for SkuId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(raw).map_err(serde::de::Error::custom)
    }
}

/// A positive quantity of units, 1..=[`QUANTITY_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    /// Parses a quantity from any integer, refusing 0, negatives and values above the maximum.
    pub fn new(units: i64) -> Result<Self, InvalidInput> {
        if units < 1 || units > i64::from(QUANTITY_MAX) {
            return Err(InvalidInput::QuantityOutOfRange {
                given: units,
                max: QUANTITY_MAX,
            });
        }
        // In range 1..=1e9 as checked above, so the conversion cannot fail.
        Ok(Self(u32::try_from(units).expect("checked range")))
    }

    /// The number of units, widened for stock arithmetic.
    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(d)?;
        Self::new(raw).map_err(serde::de::Error::custom)
    }
}

/// A client-chosen key that makes a deduction safe to retry: 1..=128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a key, rejecting empty, over-long or non-printable input.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(InvalidInput::EmptyIdempotencyKey);
        }
        if raw.len() > IDEMPOTENCY_KEY_MAX_LEN {
            return Err(InvalidInput::IdempotencyKeyTooLong {
                max_len: IDEMPOTENCY_KEY_MAX_LEN,
            });
        }
        if raw.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(InvalidInput::IdempotencyKeyCharset);
        }
        Ok(Self(raw))
    }

    /// The key as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A fresh key for a request that came without one: [`GENERATED_KEY_PREFIX`], the time in
    /// nanoseconds since 1970, and 64 random bits, in hex. Every change carries a key, so that
    /// a change whose answer was lost can always be looked up (see the engine's outcome
    /// contract). Time first, so that the ledger's unique index on the key grows at its right
    /// edge, as it does for ids: random keys land all over the index. At a hot SKU on
    /// PostgreSQL, random keys took `coalesced` from about 30 500 to 22 700 deductions/s;
    /// time-ordered keys gave 31 600 and 32 800 against 32 700 without keys (A/B, one machine).
    pub fn generate() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
        Self(format!(
            "{GENERATED_KEY_PREFIX}{nanos:016x}{:016x}",
            rand::random::<u64>()
        ))
    }

    /// True for a key made by [`IdempotencyKey::generate`] (or a client key that happens to
    /// share its prefix).
    pub fn looks_generated(&self) -> bool {
        self.0.starts_with(GENERATED_KEY_PREFIX) && self.0.len() == GENERATED_KEY_PREFIX.len() + 32
    }
}

/// How keys the engine generates begin.
pub const GENERATED_KEY_PREFIX: &str = "sg:";

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(raw).map_err(serde::de::Error::custom)
    }
}

/// Validates an initial or absolute stock level: 0..=[`STOCK_MAX`].
pub fn check_stock_level(units: i64) -> Result<i64, InvalidInput> {
    if !(0..=STOCK_MAX).contains(&units) {
        return Err(InvalidInput::StockOutOfRange {
            given: units,
            max: STOCK_MAX,
        });
    }
    Ok(units)
}

/// How a deduction is made safe against concurrent deductions of the same SKU.
///
/// Every strategy gives the same observable result: stock never falls below zero, each
/// success writes exactly one ledger row in the same transaction, and idempotency keys
/// replay. They differ in how they wait, and so in throughput and latency under conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// Lock the row (`SELECT … FOR UPDATE`), check, write `read - q`, log, commit.
    /// The classic flow; waits in the lock queue under conflict.
    Pessimistic,
    /// Like `Pessimistic`, but fails at once with `LockTimeout` instead of waiting for a
    /// row another transaction holds (`FOR UPDATE NOWAIT`). For callers that shed load.
    NoWait,
    /// Read without a lock, then write only if the version is unchanged; on a version miss
    /// re-read and retry under the [`RetryPolicy`](crate::RetryPolicy).
    Optimistic,
    /// One conditional statement, `UPDATE … SET stock = stock - q WHERE stock >= q`, with the
    /// ledger insert in the same transaction. No read round trip, no version.
    Guarded,
    /// Group commit: concurrent deductions of one SKU queue in-process and a leader applies
    /// the whole batch in one transaction (one row lock, one commit, one ledger insert).
    Coalesced,
    /// Stock buckets: the SKU's stock is spread over N bucket rows and a deduction takes
    /// from one bucket with room that no one holds (`FOR UPDATE SKIP LOCKED`), so requests
    /// for one hot SKU stop queueing on one row lock. When no bucket fits (fragmented or
    /// empty), a consistent path locks the SKU and all its buckets, deducts from the total
    /// and re-spreads it, so the SKU still sells out exactly. The ledger's `stock_after`
    /// (and the receipt's `remaining`) is the SKU total as seen by the deducting
    /// statement's snapshot: exact when no other deduction of the SKU is in flight, an
    /// upper estimate otherwise. Not on SQLite (one writer at a time: nothing to spread).
    Sharded,
}

impl Strategy {
    /// Every strategy, in a stable order (used by the conformance suite and the harness).
    pub const ALL: [Strategy; 6] = [
        Strategy::Pessimistic,
        Strategy::NoWait,
        Strategy::Optimistic,
        Strategy::Guarded,
        Strategy::Coalesced,
        Strategy::Sharded,
    ];

    /// The stable snake_case name used in URLs, metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "pessimistic",
            Strategy::NoWait => "no_wait",
            Strategy::Optimistic => "optimistic",
            Strategy::Guarded => "guarded",
            Strategy::Coalesced => "coalesced",
            Strategy::Sharded => "sharded",
        }
    }

    /// True when every ledger row's `stock_after` is exact, so a SKU's ledger reads as a
    /// serial history. `Sharded` rows carry a snapshot estimate (see [`Strategy::Sharded`]).
    pub fn exact_stock_after(self) -> bool {
        self != Strategy::Sharded
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or_else(|| InvalidInput::UnknownStrategy { given: s.to_owned() })
    }
}

/// One deduction, fully parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeductRequest {
    /// Which SKU to deduct from.
    pub sku: SkuId,
    /// How many units.
    pub quantity: Quantity,
    /// When set, a repeat of this request returns the first receipt and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
    /// How to make the deduction safe.
    pub strategy: Strategy,
    /// When set, a conditional deduction: it applies only if the SKU row's version (as read
    /// by [`StockLevel::version`]) is still this one, else `VersionMismatch`. The seed
    /// article's optimistic flow with the client holding the version, made safe: one
    /// compare-and-set, no retry, no lost update. The strategy is not used.
    pub expected_version: Option<i64>,
}

impl DeductRequest {
    /// A request with no idempotency key.
    pub fn new(sku: SkuId, quantity: Quantity, strategy: Strategy) -> Self {
        Self {
            sku,
            quantity,
            idempotency_key: None,
            strategy,
            expected_version: None,
        }
    }

    /// Makes the deduction conditional on the SKU row's version.
    pub fn with_expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// Proof of a committed deduction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The SKU deducted from.
    pub sku: SkuId,
    /// Units deducted.
    pub quantity: Quantity,
    /// Stock left right after this deduction committed.
    pub remaining: i64,
    /// The ledger row written for this deduction.
    pub ledger_id: i64,
    /// Attempts this call made (1 unless a version miss, deadlock or serialization failure
    /// was retried). A replay reports the attempts of the replaying call.
    pub attempts: u32,
    /// True when the idempotency key had already been used and this is the first receipt again.
    pub replayed: bool,
    /// Time this call spent waiting for the right to change the row, in microseconds: the
    /// duration of the statements that take the row lock, plus queue time when coalesced.
    /// The harness uses it to measure the conflict rate.
    pub lock_wait_us: u64,
    /// The key the ledger row carries: the client's, or one the engine generated.
    pub idempotency_key: IdempotencyKey,
}

/// Proof of a committed restock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestockReceipt {
    /// The SKU restocked.
    pub sku: SkuId,
    /// Units added.
    pub quantity: Quantity,
    /// Stock right after the restock committed.
    pub stock_after: i64,
    /// The ledger row written for this restock.
    pub ledger_id: i64,
    /// True when the idempotency key had already been used and this is the first receipt again.
    pub replayed: bool,
    /// The key the ledger row carries: the client's, or one the engine generated.
    pub idempotency_key: IdempotencyKey,
}

/// One restock, fully parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestockRequest {
    /// Which SKU to restock.
    pub sku: SkuId,
    /// How many units to add.
    pub quantity: Quantity,
    /// When set, a repeat of this request returns the first receipt and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl RestockRequest {
    /// A request with no idempotency key.
    pub fn new(sku: SkuId, quantity: Quantity) -> Self {
        Self {
            sku,
            quantity,
            idempotency_key: None,
        }
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// A SKU's current stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockLevel {
    /// The SKU.
    pub sku: SkuId,
    /// Units on hand now.
    pub stock: i64,
    /// Stock the SKU was created with; the audit reconciles the ledger against it.
    pub initial_stock: i64,
    /// The SKU row's version, bumped by every write to the row (not by `Sharded` bucket
    /// deductions, which leave the row alone). A conditional deduction names it.
    pub version: i64,
}

/// Why a ledger row was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerReason {
    /// A deduction (negative delta).
    Deduct,
    /// A restock (positive delta).
    Restock,
}

impl LedgerReason {
    /// The value stored in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerReason::Deduct => "deduct",
            LedgerReason::Restock => "restock",
        }
    }

    /// Parses the stored column value.
    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "deduct" => Some(LedgerReason::Deduct),
            "restock" => Some(LedgerReason::Restock),
            _ => None,
        }
    }
}

/// One ledger row: every stock change writes exactly one, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    /// Monotonic id within one database.
    pub id: i64,
    /// The SKU changed.
    pub sku: SkuId,
    /// Signed change: negative for deductions, positive for restocks.
    pub delta: i64,
    /// Stock right after this change.
    pub stock_after: i64,
    /// Why the change happened.
    pub reason: LedgerReason,
    /// The idempotency key of the request that wrote it, if any.
    pub idempotency_key: Option<String>,
    /// Commit-side timestamp.
    pub created_at: DateTime<Utc>,
}

/// One ledger row as an adapter reads it, in column order: id, sku, delta, stock_after,
/// reason, idempotency key, created_at. [`LedgerEntry::from_stored`] re-checks it.
pub type StoredLedgerRow = (i64, String, i64, i64, String, Option<String>, DateTime<Utc>);

/// The columns of [`StoredLedgerRow`], for adapters' `SELECT`s.
pub const LEDGER_COLUMNS: &str = "id, sku, delta, stock_after, reason, idempotency_key, created_at";

impl LedgerEntry {
    /// Builds an entry from a stored row, re-checking the SKU id and the reason.
    pub fn from_stored(row: StoredLedgerRow) -> Result<Self, crate::DeductError> {
        let (id, sku, delta, stock_after, reason, idempotency_key, created_at) = row;
        Ok(LedgerEntry {
            id,
            sku: SkuId::parse(sku)
                .map_err(|e| crate::DeductError::internal("stored sku id is invalid", e))?,
            delta,
            stock_after,
            reason: LedgerReason::from_db(&reason).ok_or(crate::DeductError::Internal {
                context: "stored ledger reason is unknown",
                source: None,
            })?,
            idempotency_key,
            created_at,
        })
    }
}

/// Which page of a SKU's ledger to read, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerPage {
    /// Return rows with an id strictly greater than this one.
    pub after_id: Option<i64>,
    /// At most this many rows, 1..=[`LEDGER_PAGE_MAX`].
    pub limit: u32,
}

impl LedgerPage {
    /// The first page of `limit` rows; `limit` is validated.
    pub fn first(limit: u32) -> Result<Self, InvalidInput> {
        Self::after(None, limit)
    }

    /// The page after `after_id`; `limit` is validated.
    pub fn after(after_id: Option<i64>, limit: u32) -> Result<Self, InvalidInput> {
        if limit == 0 || limit > LEDGER_PAGE_MAX {
            return Err(InvalidInput::PageLimitOutOfRange {
                given: limit,
                max: LEDGER_PAGE_MAX,
            });
        }
        Ok(Self { after_id, limit })
    }
}

/// The raw per-SKU figures the audit reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkuSnapshot {
    /// The SKU.
    pub sku: SkuId,
    /// Stock at creation.
    pub initial_stock: i64,
    /// Stock now.
    pub stock: i64,
    /// Σ of the SKU's ledger deltas.
    pub ledger_delta_sum: i64,
    /// Number of the SKU's ledger rows.
    pub ledger_rows: i64,
}

/// One row of an adapter's snapshot query, in column order: sku, initial stock, stock (row
/// plus buckets), Σ ledger deltas, ledger rows.
pub type StoredSnapshotRow = (String, i64, i64, i64, i64);

impl SkuSnapshot {
    /// Builds the snapshots from an adapter's snapshot query, re-checking each stored SKU id.
    pub fn from_stored_rows(rows: Vec<StoredSnapshotRow>) -> Result<Vec<Self>, crate::DeductError> {
        rows.into_iter()
            .map(|(sku, initial_stock, stock, ledger_delta_sum, ledger_rows)| {
                Ok(SkuSnapshot {
                    sku: SkuId::parse(sku)
                        .map_err(|e| crate::DeductError::internal("stored sku id is invalid", e))?,
                    initial_stock,
                    stock,
                    ledger_delta_sum,
                    ledger_rows,
                })
            })
            .collect()
    }
}

/// What the audit found wrong with one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    /// The figures that do not add up.
    pub snapshot: SkuSnapshot,
    /// True if the stock is below zero.
    pub negative_stock: bool,
    /// `initial + Σ ledger deltas − stock`: 0 when the ledger reconciles.
    pub ledger_gap: i64,
}

/// The result of reconciling every SKU: `stock ≥ 0` and `initial + Σ deltas = stock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// SKUs checked.
    pub skus_checked: u64,
    /// Ledger rows summed.
    pub ledger_rows: u64,
    /// SKUs that broke an invariant; empty when the audit passes.
    pub discrepancies: Vec<Discrepancy>,
}

impl AuditReport {
    /// Reconciles raw snapshots.
    pub fn from_snapshots(snapshots: &[SkuSnapshot]) -> Self {
        let mut ledger_rows = 0u64;
        let mut discrepancies = Vec::new();
        for snapshot in snapshots {
            ledger_rows += u64::try_from(snapshot.ledger_rows).unwrap_or(0);
            let ledger_gap = snapshot.initial_stock + snapshot.ledger_delta_sum - snapshot.stock;
            let negative_stock = snapshot.stock < 0;
            if negative_stock || ledger_gap != 0 {
                discrepancies.push(Discrepancy {
                    snapshot: snapshot.clone(),
                    negative_stock,
                    ledger_gap,
                });
            }
        }
        Self {
            skus_checked: snapshots.len() as u64,
            ledger_rows,
            discrepancies,
        }
    }

    /// True when every SKU reconciles.
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

/// What an adapter can do; the conformance suite reads it instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Strategies this adapter implements.
    pub strategies: Vec<Strategy>,
    /// False when the database admits one writer at a time (SQLite): row locks do not exist,
    /// so the conformance suite does not expect lock-wait behaviour to differ by strategy.
    pub row_level_locking: bool,
}

/// Pool occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// Connections open now.
    pub size: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The configured maximum.
    pub max_size: u32,
}
