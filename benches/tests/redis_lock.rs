//! The seed's layered lock (`redis_lock`, docs/redis.md) on both Redis topologies the gate
//! runs on: the machine's single node and a private 3-master Redis Cluster, on PostgreSQL.
//! Holders pause past the lock's TTL. The fenced path must sell exactly the supply with a
//! clean audit; the fenceless negative control must be caught (it oversells, or the audit
//! finds its lost updates). A control that is not caught proves nothing, so that fails too.

use stockguard_bench::db::reachable;
use stockguard_bench::redis_lock::{LockResult, LockSpec, run_lock};
use stockguard_testkit::{Backend, PrivateRedisCluster, ServerError, database_required};

/// PostgreSQL answers, or the test is skipped loudly (a failure where a database is required).
async fn postgres_reachable() -> bool {
    match reachable(Backend::Postgres).await {
        Ok(()) => true,
        Err(reason) if !database_required() => {
            eprintln!("\n*** SKIPPED REDIS LOCK TEST *** PostgreSQL: {reason}\n");
            false
        }
        Err(reason) => panic!("PostgreSQL is required: {reason}"),
    }
}

/// Runs the fenced path and the negative control against the Redis at `redis_url`.
async fn fenced_and_control(redis_url: &str) -> [LockResult; 2] {
    let run = |fenced| {
        run_lock(LockSpec {
            backend: Backend::Postgres,
            fenced,
            redis_url: redis_url.to_owned(),
        })
    };
    let fenced = run(true).await.expect("the fenced case runs");
    let control = run(false).await.expect("the negative control runs");
    [fenced, control]
}

fn assert_fence_holds_and_control_is_caught([fenced, control]: [LockResult; 2]) {
    assert!(fenced.pauses > 0, "no holder paused past its TTL: {fenced:?}");
    assert_eq!(fenced.oversold, 0, "{fenced:?}");
    assert_eq!(fenced.sold, u64::try_from(fenced.supply).unwrap(), "{fenced:?}");
    assert!(fenced.audit_clean, "{fenced:?}");
    assert!(
        fenced.fenced_out > 0,
        "the fence never refused a stale holder: {fenced:?}"
    );
    assert!(
        control.oversold > 0 || !control.audit_clean,
        "the fenceless control was not caught: {control:?}"
    );
    assert_eq!(fenced.failure(), None);
    assert_eq!(control.failure(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_redis_lock_on_one_node() {
    if !postgres_reachable().await {
        return;
    }
    let redis_url =
        std::env::var("STOCKGUARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    assert_fence_holds_and_control_is_caught(fenced_and_control(&redis_url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_redis_lock_on_a_cluster() {
    if !postgres_reachable().await {
        return;
    }
    let cluster = match tokio::task::spawn_blocking(|| PrivateRedisCluster::start(3))
        .await
        .unwrap()
    {
        Ok(cluster) => cluster,
        Err(ServerError::NotInstalled(reason)) if !database_required() => {
            eprintln!("\n*** SKIPPED REDIS LOCK TEST *** {reason}\n");
            return;
        }
        Err(error) => panic!("could not start a private Redis Cluster: {error}"),
    };
    assert_fence_holds_and_control_is_caught(fenced_and_control(&cluster.url()).await);
}
