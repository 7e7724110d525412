//! Which SKUs go through the gate. The gate pays for itself on a hot SKU (a flash sale, where
//! most buyers arrive after sell-out and Redis turns them away), and costs a Redis round trip
//! per line everywhere else. A shop that knows its hot SKUs gates only those: the rest go
//! straight to the database, with no Redis call and no counter.

use std::collections::BTreeSet;

use stockguard_core::{InvalidInput, SkuId};

/// Most entries (SKUs plus prefixes) a scope may list.
pub const SCOPE_ENTRIES_MAX: usize = 10_000;

/// The SKUs the gate covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GateScope {
    /// Every SKU (the default).
    #[default]
    Every,
    /// Only these SKUs, and the SKUs that start with one of these prefixes.
    Only {
        /// SKUs named in full.
        skus: BTreeSet<SkuId>,
        /// Prefixes (written `flash-*`).
        prefixes: Vec<String>,
    },
}

impl GateScope {
    /// Parses a comma-separated list: `sku-1,sku-2,flash-*` (an entry ending in `*` is a
    /// prefix). Each entry must be a valid SKU id (a prefix without its `*`); at least one,
    /// at most [`SCOPE_ENTRIES_MAX`].
    pub fn parse(list: &str) -> Result<Self, InvalidInput> {
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        if entries.iter().all(|entry| entry.is_empty()) || entries.len() > SCOPE_ENTRIES_MAX {
            return Err(InvalidInput::LimitOutOfRange {
                setting: "redis_gate_skus (entries)",
                given: entries.iter().filter(|entry| !entry.is_empty()).count() as u64,
                min: 1,
                max: SCOPE_ENTRIES_MAX as u64,
            });
        }
        let mut skus = BTreeSet::new();
        let mut prefixes = Vec::new();
        for entry in entries.into_iter().filter(|entry| !entry.is_empty()) {
            match entry.strip_suffix('*') {
                // The prefix must itself be a valid SKU id, so it can match one.
                Some(prefix) => prefixes.push(SkuId::parse(prefix)?.as_str().to_owned()),
                None => {
                    skus.insert(SkuId::parse(entry)?);
                }
            }
        }
        Ok(GateScope::Only { skus, prefixes })
    }

    /// Whether `sku` goes through the gate.
    pub fn covers(&self, sku: &SkuId) -> bool {
        match self {
            GateScope::Every => true,
            GateScope::Only { skus, prefixes } => {
                skus.contains(sku)
                    || prefixes
                        .iter()
                        .any(|prefix| sku.as_str().starts_with(prefix.as_str()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(name: &str) -> SkuId {
        SkuId::parse(name).unwrap()
    }

    #[test]
    fn every_covers_all_and_a_list_covers_its_skus_and_prefixes() {
        assert!(GateScope::Every.covers(&sku("anything")));
        let scope = GateScope::parse("hot-1, flash-*").unwrap();
        assert!(scope.covers(&sku("hot-1")));
        assert!(!scope.covers(&sku("hot-10")), "a full SKU is not a prefix");
        assert!(scope.covers(&sku("flash-42")));
        assert!(scope.covers(&sku("flash-")));
        assert!(!scope.covers(&sku("cold-1")));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(GateScope::parse("").is_err());
        assert!(GateScope::parse(" , ").is_err());
        assert!(GateScope::parse("has space").is_err());
        assert!(
            GateScope::parse("*").is_err(),
            "an empty prefix would gate everything"
        );
        let too_many = vec!["s"; SCOPE_ENTRIES_MAX + 1].join(",");
        assert!(GateScope::parse(&too_many).is_err());
    }
}
