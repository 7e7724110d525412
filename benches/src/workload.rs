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

/// One request: which SKU (by index) and how many units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Index into the level's SKU list.
    pub sku_index: usize,
    /// Units asked for.
    pub units: u32,
}

enum SkuPicker {
    Uniform,
    Zipf(Zipf<f64>),
    HotSet { hot: usize, hot_traffic: f64 },
}

/// One requester's request stream.
pub struct RequestStream {
    rng: StdRng,
    sku_count: usize,
    picker: SkuPicker,
    quantity: QuantityDist,
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
    pub fn new(level: &LevelSpec, quantity: QuantityDist, seed: u64, index: usize) -> Self {
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
            sku_count: level.sku_count,
            picker,
            quantity,
        }
    }

    /// The next request.
    pub fn next_request(&mut self) -> Request {
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
        Request { sku_index, units }
    }
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
                let a = take(&mut RequestStream::new(&level, quantity, 42, requester), 500);
                let b = take(&mut RequestStream::new(&level, quantity, 42, requester), 500);
                assert_eq!(a, b, "level {level} requester {requester}");
            }
            if level.sku_count > 1 {
                let first = take(&mut RequestStream::new(&level, quantity, 42, 0), 500);
                let other_requester = take(&mut RequestStream::new(&level, quantity, 42, 1), 500);
                let other_seed = take(&mut RequestStream::new(&level, quantity, 43, 0), 500);
                assert_ne!(first, other_requester);
                assert_ne!(first, other_seed);
            }
        }
    }

    #[test]
    fn skews_stay_in_range_and_concentrate_as_specified() {
        let quantity = QuantityDist::Fixed { units: 1 };
        let hot: LevelSpec = "1000:hot:0.01:0.9".parse().unwrap();
        let mut stream = RequestStream::new(&hot, quantity, 7, 0);
        let requests = take(&mut stream, 20_000);
        let to_hot = requests.iter().filter(|r| r.sku_index < 10).count();
        assert!(requests.iter().all(|r| r.sku_index < 1000));
        // 90 % ± a generous margin for 20k samples.
        assert!((17_000..=19_000).contains(&to_hot), "{to_hot}");

        let zipf: LevelSpec = "1000:zipf:1.2".parse().unwrap();
        let requests = take(&mut RequestStream::new(&zipf, quantity, 7, 0), 20_000);
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
