//! The engine's side of probing: what the server cannot honour is refused from then on.
//!
//! A probe runs after migrating (it tries each locking clause on the schema's probe row).
//! Until one has run, every strategy the adapter implements is accepted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{Backend, Engine};
use crate::domain::{ProbeReport, Strategy, StrategyRefusal};
use crate::error::DeductError;

/// The strategies the last probe refused: a bit per strategy, read on every call, and the
/// report that says why, read only when a call is refused.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    mask: AtomicU8,
    report: Mutex<Option<ProbeReport>>,
}

const _: () = assert!(Strategy::ALL.len() <= u8::BITS as usize);

fn bit(strategy: Strategy) -> u8 {
    let index = Strategy::ALL.iter().position(|s| *s == strategy).unwrap_or(0);
    1 << index
}

impl Refusals {
    /// Why `strategy` is refused, if it is.
    pub(crate) fn refused(&self, strategy: Strategy) -> Option<StrategyRefusal> {
        if self.mask.load(Ordering::Acquire) & bit(strategy) == 0 {
            return None;
        }
        let report = self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        report
            .as_ref()?
            .refused
            .iter()
            .find(|refusal| refusal.strategy == strategy)
            .cloned()
    }

    fn install(&self, report: ProbeReport) {
        let mask = report
            .refused
            .iter()
            .fold(0, |mask, refusal| mask | bit(refusal.strategy));
        let mut slot = self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(report);
        self.mask.store(mask, Ordering::Release);
    }

    fn report(&self) -> Option<ProbeReport> {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl<B: Backend> Engine<B> {
    /// Asks the server what it really does (run it after [`Engine::migrate`]: it needs the
    /// schema's probe row) and refuses, from then on, every strategy whose locking clause
    /// the server does not honour. Returns what it found; a second probe replaces the first.
    pub async fn probe(&self) -> Result<ProbeReport, DeductError> {
        let probe = self.core.backend.probe().await?;
        let backend = &self.core.backend;
        let refused = probe.refusals(&self.core.capabilities.strategies, |strategy| {
            backend.lock_features(strategy)
        });
        let report = ProbeReport { probe, refused };
        self.core.refusals.install(report.clone());
        Ok(report)
    }

    /// The last probe's report, if one has run.
    pub fn probe_report(&self) -> Option<ProbeReport> {
        self.core.refusals.report()
    }
}
