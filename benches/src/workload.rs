//! Seeded, reproducible workloads.
//!
//! Every requester draws its requests from its own generator, seeded from the run's seed and
//! the requester's index, so the same seed gives every requester the same request sequence
//! no matter how the scheduler interleaves them. Only how far each requester gets through
//! its sequence depends on timing (a run is bounded by duration or by an op count).

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

/// Which SKUs requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Skew {
    /// Every SKU equally likely.
    Uniform,
    /// Zipf with exponent `s`: SKU rank k is chosen with probability ∝ 1/k^s.
    Zipf {
        /// The exponent (> 0).
        s: f64,
    },
    /// A hot set: the first `hot_fraction` of the SKUs receives `hot_traffic` of the requests.
    HotSet {
        /// Fraction of SKUs that are hot, in (0, 1].
        hot_fraction: f64,
        /// Fraction of requests that go to the hot set, in [0, 1].
        hot_traffic: f64,
    },
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skew::Uniform => f.write_str("uniform"),
            Skew::Zipf { s } => write!(f, "zipf:{s}"),
            Skew::HotSet {
                hot_fraction,
                hot_traffic,
            } => write!(f, "hot:{hot_fraction}:{hot_traffic}"),
        }
    }
}

impl FromStr for Skew {
    type Err = anyhow::Error;
    /// `uniform`, `zipf:S`, or `hot:FRACTION:TRAFFIC` (e.g. `hot:0.01:0.9`).
    fn from_str(raw: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = raw.split(':').collect();
        let number = |s: &str| {
            s.parse::<f64>()
                .with_context(|| format!("not a number: {s:?} in {raw:?}"))
        };
        match parts.as_slice() {
            ["uniform"] => Ok(Skew::Uniform),
            ["zipf", s] => {
                let s = number(s)?;
                if !(s > 0.0 && s.is_finite()) {
                    bail!("zipf exponent must be > 0 (got {s})");
                }
                Ok(Skew::Zipf { s })
            }
            ["hot", fraction, traffic] => {
                let (hot_fraction, hot_traffic) = (number(fraction)?, number(traffic)?);
                if !(hot_fraction > 0.0 && hot_fraction <= 1.0 && (0.0..=1.0).contains(&hot_traffic)) {
                    bail!("hot set needs 0 < fraction <= 1 and 0 <= traffic <= 1 (got {raw:?})");
                }
                Ok(Skew::HotSet {
                    hot_fraction,
                    hot_traffic,
                })
            }
            _ => bail!("unknown skew {raw:?}: use uniform, zipf:S or hot:FRACTION:TRAFFIC"),
        }
    }
}

/// How many units each request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuantityDist {
    /// Always the same quantity.
    Fixed {
        /// Units per request.
        units: u32,
    },
    /// Uniform in `min..=max`.
    Uniform {
        /// Smallest quantity.
        min: u32,
        /// Largest quantity.
        max: u32,
    },
}

impl QuantityDist {
    /// The mean quantity, used to size stock from a measured request rate.
    pub fn mean(self) -> f64 {
        match self {
            QuantityDist::Fixed { units } => f64::from(units),
            QuantityDist::Uniform { min, max } => (f64::from(min) + f64::from(max)) / 2.0,
        }
    }
}

impl fmt::Display for QuantityDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantityDist::Fixed { units } => write!(f, "fixed:{units}"),
            QuantityDist::Uniform { min, max } => write!(f, "uniform:{min}:{max}"),
        }
    }
}

impl FromStr for QuantityDist {
    type Err = anyhow::Error;
    /// `fixed:N` or `uniform:MIN:MAX` (1 ≤ MIN ≤ MAX ≤ 1000).
    fn from_str(raw: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = raw.split(':').collect();
        let units = |s: &str| -> anyhow::Result<u32> {
            let n: u32 = s
                .parse()
                .with_context(|| format!("not a count: {s:?} in {raw:?}"))?;
            if !(1..=QUANTITY_LIMIT).contains(&n) {
                bail!("quantities must be in 1..={QUANTITY_LIMIT} (got {n})");
            }
            Ok(n)
        };
        match parts.as_slice() {
            ["fixed", n] => Ok(QuantityDist::Fixed { units: units(n)? }),
            ["uniform", min, max] => {
                let (min, max) = (units(min)?, units(max)?);
                if min > max {
                    bail!("uniform quantity needs MIN <= MAX (got {raw:?})");
                }
                Ok(QuantityDist::Uniform { min, max })
            }
            _ => bail!("unknown quantity distribution {raw:?}: use fixed:N or uniform:MIN:MAX"),
        }
    }
}

/// Largest quantity the harness asks for in one request; keeps stock sizing simple.
pub const QUANTITY_LIMIT: u32 = 1_000;
/// Most SKUs one workload may have (bulk creation and per-SKU tallies are sized for it).
pub const SKU_COUNT_LIMIT: usize = 1_000_000;

/// The shape of one conflict level: how many SKUs and how requests spread over them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LevelSpec {
    /// Number of SKUs.
    pub sku_count: usize,
    /// How requests spread over them.
    pub skew: Skew,
}

impl fmt::Display for LevelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.sku_count, self.skew)
    }
}

impl FromStr for LevelSpec {
    type Err = anyhow::Error;
    /// `SKUS` or `SKUS:SKEW`, e.g. `1`, `100000:uniform`, `10000:zipf:1.1`, `1000:hot:0.01:0.9`.
    fn from_str(raw: &str) -> anyhow::Result<Self> {
        let (count, skew) = match raw.split_once(':') {
            Some((count, skew)) => (count, skew.parse()?),
            None => (raw, Skew::Uniform),
        };
        let sku_count: usize = count
            .parse()
            .with_context(|| format!("level {raw:?}: SKU count {count:?} is not a number"))?;
        if !(1..=SKU_COUNT_LIMIT).contains(&sku_count) {
            bail!("level {raw:?}: SKU count must be in 1..={SKU_COUNT_LIMIT}");
        }
        Ok(Self { sku_count, skew })
    }
}

impl LevelSpec {
    /// The probability that one request goes to each SKU, by SKU index. Used to size each
    /// SKU's stock in proportion to its expected demand.
    pub fn access_probabilities(&self) -> Vec<f64> {
        let n = self.sku_count;
        match self.skew {
            Skew::Uniform => vec![1.0 / n as f64; n],
            Skew::Zipf { s } => {
                let weights: Vec<f64> = (1..=n).map(|rank| 1.0 / (rank as f64).powf(s)).collect();
                let total: f64 = weights.iter().sum();
                weights.into_iter().map(|w| w / total).collect()
            }
            Skew::HotSet {
                hot_fraction,
                hot_traffic,
            } => {
                let hot = hot_count(n, hot_fraction);
                let cold = n - hot;
                (0..n)
                    .map(|i| {
                        if i < hot {
                            // With no cold SKUs, the hot set takes all traffic.
                            if cold == 0 {
                                1.0 / hot as f64
                            } else {
                                hot_traffic / hot as f64
                            }
                        } else {
                            (1.0 - hot_traffic) / cold as f64
                        }
                    })
                    .collect()
            }
        }
    }
}

fn hot_count(sku_count: usize, hot_fraction: f64) -> usize {
    // ceil(n · f), at least 1 and at most n. The product is ≤ SKU_COUNT_LIMIT, so it fits.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let hot = (sku_count as f64 * hot_fraction).ceil() as usize;
    hot.clamp(1, sku_count)
}

/// One request: which SKU (by index), how many units, and the client's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Index into the level's SKU list.
    pub sku_index: usize,
    /// Units asked for.
    pub units: u32,
    /// The client's Idempotency-Key, or `None` when the client sends none (`--unkeyed`).
    pub key: Option<String>,
    /// True when this is a client's retry of its previous request: same SKU, units and key.
    pub retry: bool,
}

/// How requesters key their requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Keying {
    /// Every request carries a unique Idempotency-Key.
    pub keyed: bool,
    /// The share of requests that retry the previous request with its key, as a client does
    /// when an answer was lost (0 when unkeyed: a retry without a key is a new request).
    pub retry_share: f64,
    /// How clients make their keys.
    pub shape: KeyShape,
}

impl Keying {
    /// The default workload: keyed with random UUIDs, with 1 % retries.
    pub const KEYED: Keying = Keying {
        keyed: true,
        retry_share: 0.01,
        shape: KeyShape::Uuid4,
    };
    /// Clients that send no key: the comparison `--unkeyed` adds.
    pub const UNKEYED: Keying = Keying {
        keyed: false,
        retry_share: 0.0,
        shape: KeyShape::Uuid4,
    };
}

/// The shape of a client's key, which decides where it lands in the ledger's key index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KeyShape {
    /// A random UUID (version 4), as most clients make one: each key lands at a random place
    /// in the index, the harder case for the database.
    Uuid4,
    /// A time-ordered UUID (version 7: milliseconds, then random bits): keys land at the
    /// index's right edge, as the engine's own generated keys do.
    Uuid7,
}

enum SkuPicker {
    Uniform,
    Zipf(Zipf<f64>),
    HotSet { hot: usize, hot_traffic: f64 },
}

/// One requester's request stream.
pub struct RequestStream {
    rng: StdRng,
    // Keys and retries draw from their own generator, so a keyed run and an unkeyed run of
    // the same seed ask for the same SKUs and units (only the retries are added).
    key_rng: StdRng,
    keying: Keying,
    sku_count: usize,
    picker: SkuPicker,
    quantity: QuantityDist,
    previous: Option<Request>,
}

impl fmt::Debug for RequestStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestStream")
            .field("sku_count", &self.sku_count)
            .field("quantity", &self.quantity)
            .finish_non_exhaustive()
    }
}

/// The seed of requester `index` in a run seeded with `seed` (SplitMix64-style mixing, so
/// neighbouring requesters get unrelated streams).
pub fn requester_seed(seed: u64, index: usize) -> u64 {
    let mut z = seed ^ (index as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RequestStream {
    /// The stream of requester `index` for `level` in a run seeded with `seed`.
    pub fn new(level: &LevelSpec, quantity: QuantityDist, keying: Keying, seed: u64, index: usize) -> Self {
        let picker = match level.skew {
            Skew::Uniform => SkuPicker::Uniform,
            Skew::Zipf { s } => {
                SkuPicker::Zipf(Zipf::new(level.sku_count as f64, s).expect("validated zipf parameters"))
            }
            Skew::HotSet {
                hot_fraction,
                hot_traffic,
            } => SkuPicker::HotSet {
                hot: hot_count(level.sku_count, hot_fraction),
                hot_traffic,
            },
        };
        Self {
            rng: StdRng::seed_from_u64(requester_seed(seed, index)),
            key_rng: StdRng::seed_from_u64(requester_seed(seed ^ KEY_SEED_SALT, index)),
            keying,
            sku_count: level.sku_count,
            picker,
            quantity,
            previous: None,
        }
    }

    /// The next request: a retry of the previous one (`retry_share` of the time, when keyed),
    /// or a new one with a fresh key.
    pub fn next_request(&mut self) -> Request {
        if let Some(previous) = &self.previous
            && self.keying.keyed
            && self.key_rng.random_bool(self.keying.retry_share)
        {
            return Request {
                retry: true,
                ..previous.clone()
            };
        }
        let (sku_index, units) = self.next_sku_and_units();
        let key = self
            .keying
            .keyed
            .then(|| client_key(self.keying.shape, self.key_rng.random()));
        let request = Request {
            sku_index,
            units,
            key,
            retry: false,
        };
        if self.keying.keyed {
            self.previous = Some(request.clone());
        }
        request
    }

    fn next_sku_and_units(&mut self) -> (usize, u32) {
        let n = self.sku_count;
        let sku_index = match &self.picker {
            SkuPicker::Uniform => self.rng.random_range(0..n),
            SkuPicker::Zipf(zipf) => {
                // Zipf samples ranks 1..=n as floats; rank 1 is SKU 0.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let rank = zipf.sample(&mut self.rng) as usize;
                rank.clamp(1, n) - 1
            }
            SkuPicker::HotSet { hot, hot_traffic } => {
                let (hot, cold) = (*hot, n - *hot);
                if cold == 0 || self.rng.random_bool(*hot_traffic) {
                    self.rng.random_range(0..hot)
                } else {
                    hot + self.rng.random_range(0..cold)
                }
            }
        };
        let units = match self.quantity {
            QuantityDist::Fixed { units } => units,
            QuantityDist::Uniform { min, max } => self.rng.random_range(min..=max),
        };
        (sku_index, units)
    }
}

/// Mixed into the run's seed for the key generators.
const KEY_SEED_SALT: u64 = 0x4B45_5953;

/// A client key of `shape` from `bits` of randomness, 36 characters. Random (v4) keys land
/// all over the key index, the realistic and the harder case for the database; time-ordered
/// (v7) keys take their first 48 bits from the clock in milliseconds.
fn client_key(shape: KeyShape, bits: u128) -> String {
    const VERSION_MASK: u128 = 0xF << 76;
    const VARIANT_MASK: u128 = 0x3 << 62;
    const VARIANT_RFC_4122: u128 = 0x2 << 62;
    const UNIX_MS_SHIFT: u32 = 80;
    let bits = match shape {
        KeyShape::Uuid4 => (bits & !VERSION_MASK & !VARIANT_MASK) | (0x4 << 76) | VARIANT_RFC_4122,
        KeyShape::Uuid7 => {
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis());
            let random = bits & ((1u128 << UNIX_MS_SHIFT) - 1);
            ((unix_ms << UNIX_MS_SHIFT) | random) & !VERSION_MASK & !VARIANT_MASK
                | (0x7 << 76)
                | VARIANT_RFC_4122
        }
    };
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The SKU id of index `i` in a level.
pub fn sku_name(index: usize) -> String {
    format!("bench-{index:07}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(stream: &mut RequestStream, n: usize) -> Vec<Request> {
        (0..n).map(|_| stream.next_request()).collect()
    }

    #[test]
    fn same_seed_gives_every_requester_the_same_sequence() {
        for level in ["1", "1000:uniform", "1000:zipf:1.1", "1000:hot:0.01:0.9"] {
            let level: LevelSpec = level.parse().unwrap();
            let quantity: QuantityDist = "uniform:1:5".parse().unwrap();
            for requester in 0..4 {
                let a = take(
                    &mut RequestStream::new(&level, quantity, Keying::KEYED, 42, requester),
                    500,
                );
                let b = take(
                    &mut RequestStream::new(&level, quantity, Keying::KEYED, 42, requester),
                    500,
                );
                assert_eq!(a, b, "level {level} requester {requester}");
            }
            if level.sku_count > 1 {
                let first = take(
                    &mut RequestStream::new(&level, quantity, Keying::KEYED, 42, 0),
                    500,
                );
                let other_requester = take(
                    &mut RequestStream::new(&level, quantity, Keying::KEYED, 42, 1),
                    500,
                );
                let other_seed = take(
                    &mut RequestStream::new(&level, quantity, Keying::KEYED, 43, 0),
                    500,
                );
                assert_ne!(first, other_requester);
                assert_ne!(first, other_seed);
            }
        }
    }

    #[test]
    fn time_ordered_keys_are_uuid7_and_sort_by_time() {
        let keying = Keying {
            shape: KeyShape::Uuid7,
            ..Keying::KEYED
        };
        let (level, quantity) = ("1:uniform".parse().unwrap(), "uniform:1:1".parse().unwrap());
        let mut stream = RequestStream::new(&level, quantity, keying, 9, 0);
        let first = stream.next_request().key.expect("keyed");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = (0..10)
            .map(|_| stream.next_request())
            .find(|r| !r.retry)
            .and_then(|r| r.key)
            .expect("a new key");
        for key in [&first, &later] {
            let valid = stockguard_core::IdempotencyKey::parse(key).is_ok();
            assert!(valid && key.len() == 36 && key.as_bytes()[14] == b'7', "{key}");
        }
        assert!(first < later, "a later key sorts after: {first} {later}");
    }

    #[test]
    fn keyed_requests_carry_unique_uuid_keys_and_retry_the_previous_request() {
        let level: LevelSpec = "1000:uniform".parse().unwrap();
        let quantity: QuantityDist = "uniform:1:5".parse().unwrap();
        let keyed = take(
            &mut RequestStream::new(&level, quantity, Keying::KEYED, 9, 3),
            20_000,
        );
        let unkeyed = take(
            &mut RequestStream::new(&level, quantity, Keying::UNKEYED, 9, 3),
            20_000,
        );
        assert!(unkeyed.iter().all(|r| r.key.is_none() && !r.retry));

        let retries: Vec<usize> = (0..keyed.len()).filter(|&i| keyed[i].retry).collect();
        // 1 % of 20 000 ± a generous margin.
        assert!((120..=280).contains(&retries.len()), "{}", retries.len());
        for &i in &retries {
            let (retry, previous) = (&keyed[i], &keyed[i - 1]);
            assert_eq!(
                (retry.sku_index, retry.units, &retry.key),
                (previous.sku_index, previous.units, &previous.key)
            );
        }
        let mut keys: Vec<&str> = keyed
            .iter()
            .filter(|r| !r.retry)
            .map(|r| r.key.as_deref().expect("keyed"))
            .collect();
        assert!(keys.iter().all(|k| {
            k.len() == 36 && k.as_bytes()[14] == b'4' && stockguard_core::IdempotencyKey::parse(*k).is_ok()
        }));
        let new_requests = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), new_requests, "keys repeat outside retries");

        // Keys draw from their own generator: without the retries, the keyed stream asks for
        // what the unkeyed stream asks for.
        let asked = |requests: &[Request]| -> Vec<(usize, u32)> {
            requests
                .iter()
                .filter(|r| !r.retry)
                .map(|r| (r.sku_index, r.units))
                .collect()
        };
        let keyed_asks = asked(&keyed);
        assert_eq!(keyed_asks[..], asked(&unkeyed)[..keyed_asks.len()]);
    }

    #[test]
    fn skews_stay_in_range_and_concentrate_as_specified() {
        let quantity = QuantityDist::Fixed { units: 1 };
        let hot: LevelSpec = "1000:hot:0.01:0.9".parse().unwrap();
        let mut stream = RequestStream::new(&hot, quantity, Keying::UNKEYED, 7, 0);
        let requests = take(&mut stream, 20_000);
        let to_hot = requests.iter().filter(|r| r.sku_index < 10).count();
        assert!(requests.iter().all(|r| r.sku_index < 1000));
        // 90 % ± a generous margin for 20k samples.
        assert!((17_000..=19_000).contains(&to_hot), "{to_hot}");

        let zipf: LevelSpec = "1000:zipf:1.2".parse().unwrap();
        let requests = take(
            &mut RequestStream::new(&zipf, quantity, Keying::UNKEYED, 7, 0),
            20_000,
        );
        assert!(requests.iter().all(|r| r.sku_index < 1000));
        let top = requests.iter().filter(|r| r.sku_index == 0).count();
        let probabilities = zipf.access_probabilities();
        let expected = probabilities[0] * 20_000.0;
        assert!(
            (top as f64 - expected).abs() < expected * 0.15,
            "{top} vs {expected}"
        );
        assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((hot.access_probabilities().iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn specs_parse_and_reject_nonsense() {
        assert_eq!(
            "7".parse::<LevelSpec>().unwrap(),
            LevelSpec {
                sku_count: 7,
                skew: Skew::Uniform
            }
        );
        assert!("0".parse::<LevelSpec>().is_err());
        assert!("10:zipf:0".parse::<LevelSpec>().is_err());
        assert!("10:hot:2:0.5".parse::<LevelSpec>().is_err());
        assert!("fixed:0".parse::<QuantityDist>().is_err());
        assert!("uniform:5:2".parse::<QuantityDist>().is_err());
        assert_eq!("uniform:1:3".parse::<QuantityDist>().unwrap().mean(), 2.0);
    }
}
