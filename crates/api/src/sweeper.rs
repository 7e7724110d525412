//! The service's hold sweeper: writes the expiry of holds past their `expires_at`, in
//! batches, until shutdown. Expiry already takes effect at read time without it (see
//! `stockguard_core::InventoryStore::reserve`); the sweeper turns due holds into `expire`
//! ledger rows so that `reserved` and the ledger say so too. Several instances sweep side by
//! side: each batch skips the holds another transaction has locked.

use std::sync::Arc;
use std::time::Duration;

use stockguard_core::InventoryStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store::AnyStore;

/// Most batches one tick sweeps before pausing again, so a backlog drains in bounded steps.
const BATCHES_PER_TICK_MAX: u32 = 20;

/// Starts sweeping every `interval` (none when it is zero); stops when `stop` turns true.
pub fn spawn(
    store: Arc<AnyStore>,
    interval: Duration,
    batch: u32,
    mut stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    if interval.is_zero() {
        tracing::info!(
            "hold sweeper off (hold_sweep_interval_ms = 0): expiry takes effect at read time only"
        );
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep(interval) => {}
            }
            for _ in 0..BATCHES_PER_TICK_MAX {
                match store.sweep_holds(batch).await {
                    Ok(expired) if expired > 0 => {
                        tracing::debug!(expired, "swept expired holds");
                        if expired < batch as usize {
                            break;
                        }
                    }
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "sweeping expired holds failed; trying again next tick");
                        break;
                    }
                }
            }
        }
    }))
}
