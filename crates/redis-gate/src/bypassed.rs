//! Sales that reached the database without a record: Redis did not answer (fail open), the
//! counter could not be warmed, or the key was in flight for other units. Their keys never
//! reached the SKU's done hash. Left there, a client retrying such a key after sell-out would
//! be refused at the gate (`insufficient_stock`) although its first request committed: an
//! untrue answer. So the gate remembers them, and writes them to the done hash, or marks the
//! SKU partial, before it decides any admission once Redis answers again.
//!
//! Another instance that never lost Redis does not know them until this one writes them: it
//! flushes on its next Redis call (the next admission or reconcile pass), so the window is
//! at most one reconcile interval after Redis is back (docs/redis.md).

use stockguard_core::{IdempotencyKey, SkuId};

use crate::gate::{Gate, Outcome};
use crate::link::LinkError;
use crate::stats::GateStats;

/// Most keys written to a done hash by one script call.
const KEYS_PER_CALL: usize = 500;

impl Gate {
    /// Tells the gate how a request it let through without a record ended. A commit's key is
    /// remembered until it is written to the done hash; an unknown outcome marks the SKU
    /// partial. Written at once when Redis was answering, else before the next admission.
    pub async fn finish_bypassed(&self, sku: &SkuId, key: &IdempotencyKey, units: i64, outcome: Outcome) {
        // A snapshot without this key must not refuse its replay.
        self.hints.forget(sku);
        {
            let mut unrecorded = self.bypassed.unrecorded.lock().await;
            match outcome {
                Outcome::NothingChanged => return,
                Outcome::Committed => unrecorded.committed(sku, key, units),
                Outcome::Unknown => {
                    unrecorded.partial.insert(sku.clone());
                }
            }
            self.bypassed.set_pending();
        }
        // While Redis is down this would only add a timeout to the request.
        if self.stats.redis_up()
            && let Err(error) = self.flush_bypassed().await
        {
            tracing::debug!(%error, "admission gate: bypassed sales left for the next call");
        }
    }

    /// Writes what [`Gate::finish_bypassed`] remembered. Every admission and reconcile pass
    /// calls this first; with nothing pending it is one atomic load.
    pub(crate) async fn flush_bypassed(&self) -> Result<(), LinkError> {
        if !self.bypassed.is_pending() {
            return Ok(());
        }
        let mut unrecorded = self.bypassed.unrecorded.lock().await;
        let window_ms = u64::try_from(self.config.replay_window.as_millis()).unwrap_or(u64::MAX);
        while let Some(sku) = unrecorded.partial.first().cloned() {
            let mark = redis::cmd("SET")
                .arg(self.partial_key(&sku))
                .arg(1)
                .arg("PX")
                .arg(window_ms)
                .to_owned();
            let marked = self.link.query::<String>(&mark, self.timeout()).await;
            self.stats.saw(&marked);
            marked?;
            // A snapshot taken before this mark must not be kept (see below).
            self.hints.forget(&sku);
            unrecorded.partial.remove(&sku);
            GateStats::bump(&self.stats.bypass_partial_marks);
        }
        while let Some((sku, mut keys)) = unrecorded.committed.pop_first() {
            while !keys.is_empty() {
                let chunk = keys.len().min(KEYS_PER_CALL);
                let mut invocation = self.scripts.record_done.prepare_invoke();
                invocation
                    .key(self.done_key(&sku))
                    .key(self.partial_key(&sku))
                    .arg(self.config.done_max)
                    .arg(window_ms);
                for (key, units) in &keys[keys.len() - chunk..] {
                    invocation.arg(key.as_str()).arg(*units);
                }
                let recorded = self.link.invoke::<i64>(&invocation, self.timeout()).await;
                self.stats.saw(&recorded);
                if let Err(error) = recorded {
                    unrecorded.committed.insert(sku, keys);
                    return Err(error);
                }
                keys.truncate(keys.len() - chunk);
                unrecorded.keys -= chunk;
                GateStats::add(&self.stats.bypass_recorded, chunk as u64);
            }
            // A sold-out snapshot taken before these keys were written lacks them: forgetting
            // the SKU's hint bumps the hints' generation, so a snapshot still on its way back
            // is not kept, and the next one holds the keys. Without this, a replay of such a
            // key was refused once the flush had cleared `pending` (found by the chaos
            // suite's `+gate` cell: a replay of an acknowledged key answered 409).
            self.hints.forget(&sku);
        }
        self.bypassed.clear_pending();
        Ok(())
    }
}
