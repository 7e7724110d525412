//! The background reconciler: every `reconcile_interval`, recomputes every counter from the
//! database (see [`Gate::reconcile`]). It fixes drift both ways: low counters (a crash between
//! the gate and the database, a Redis failover that lost a give-back, units returned by
//! restocks, releases or expired holds) and high ones (a failover that lost a decrement).

use std::sync::Arc;

use stockguard_core::InventoryStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::gate::Gate;

/// A running reconciler; dropping it does not stop it, [`Reconciler::stop`] does.
#[derive(Debug)]
pub struct Reconciler {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Reconciler {
    /// Warms every known counter now, then reconciles them every interval until stopped.
    pub fn spawn<S: InventoryStore>(gate: Arc<Gate>, store: Arc<S>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let interval = gate.config().reconcile_interval;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => return,
                }
                let (reconciled, error) = gate.reconcile_all(&*store).await;
                match error {
                    Some(error) => {
                        tracing::warn!(reconciled, %error, "admission gate: reconcile pass incomplete")
                    }
                    None => tracing::debug!(reconciled, "admission gate: reconcile pass"),
                }
            }
        });
        Self { stop, task }
    }

    /// Stops after the pass in progress, if any.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
