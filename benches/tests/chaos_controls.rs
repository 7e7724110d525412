//! The chaos checker's negative controls on a real PostgreSQL database: a checker that
//! cannot fail proves nothing.
//!
//! (a) An unlocked read-modify-write (the harness's `unsafe_no_lock` idea, with keys) loses
//!     updates and oversells: the checker must report conservation and oversell violations.
//! (b) Real keyed deductions through the engine, whose recorded answers are then rewritten
//!     as definite refusals (the mutant that answers a lost COMMIT with "nothing changed"):
//!     the checker must report each one, and must pass the truthful history.

use std::sync::Arc;

use stockguard_api::store::StoreSettings;
use stockguard_api::{AnyStore, DatabaseTarget};
use stockguard_bench::chaos::checker::{ViolationKind, check};
use stockguard_bench::chaos::controls::refuse_committed;
use stockguard_bench::chaos::history::{Answer, OpKind, Record, Role};
use stockguard_bench::chaos::snapshot::read_state;
use stockguard_core::{DeductRequest, IdempotencyKey, InventoryStore, Quantity, SkuId, Strategy};
use stockguard_testkit::{Backend, TestDatabase};
use tokio::sync::{Barrier, Mutex};

async fn store_on(database: &TestDatabase) -> AnyStore {
    let target = DatabaseTarget::parse(database.url()).unwrap();
    let store = AnyStore::connect(StoreSettings::new(target)).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn record(key: &str, sku: &str, quantity: i64, answer: Answer, at_us: u64) -> Record {
    Record {
        op: 0,
        kind: OpKind::Deduct,
        key: key.to_owned(),
        sku: sku.to_owned(),
        quantity,
        role: Role::Original,
        client: 0,
        start_us: at_us,
        end_us: at_us + 1,
        timeout_ms: 1_000,
        answer,
    }
}

fn receipt(sku: &str, quantity: i64, ledger_id: i64, remaining: i64) -> Answer {
    let body = serde_json::json!({
        "sku": sku, "quantity": quantity, "remaining": remaining, "ledger_id": ledger_id,
        "attempts": 1, "replayed": false, "lock_wait_us": 0, "strategy": "guarded", "idempotency_key": "k",
    });
    Answer::from_http(200, body.to_string().as_bytes())
}

/// The read and the write of the unsafe flow, with nothing between them but time.
const READ: &str = "SELECT stock FROM inventory WHERE sku = $1";
const WRITE: &str = "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1 RETURNING stock) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     SELECT $1, $3, u.stock, 'deduct', $4 FROM u RETURNING id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_an_unlocked_read_modify_write_is_flagged() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let store = store_on(&database).await;
    store.create_sku(&SkuId::parse("hot").unwrap(), 20).await.unwrap();
    store.close().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(database.url())
        .await
        .unwrap();
    let history = Arc::new(Mutex::new(Vec::new()));
    // Every task reads before any writes: all 16 see 20 units and each sells 2.
    let barrier = Arc::new(Barrier::new(16));
    let mut tasks = Vec::new();
    for task in 0..16_u64 {
        let (pool, history, barrier) = (pool.clone(), Arc::clone(&history), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            for n in 0..3_u64 {
                let key = format!("unsafe-{task}-{n}");
                let stock: i64 = sqlx::query_scalar(READ)
                    .bind("hot")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if n == 0 {
                    barrier.wait().await;
                }
                let answer = if stock >= 2 {
                    let id: i64 = sqlx::query_scalar(WRITE)
                        .bind("hot")
                        .bind(stock - 2)
                        .bind(-2_i64)
                        .bind(&key)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    receipt("hot", 2, id, stock - 2)
                } else {
                    let body = r#"{"type":"urn:stockguard:problem:insufficient_stock","status":409}"#;
                    Answer::from_http(409, body.as_bytes())
                };
                history
                    .lock()
                    .await
                    .push(record(&key, "hot", 2, answer, task * 100 + n));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    pool.close().await;
    let records = history.lock().await.clone();
    let db = read_state(Backend::Postgres, database.url()).await.unwrap();
    let findings = check(&records, &db);
    assert_eq!(
        findings.count(ViolationKind::Conservation),
        1,
        "{:#?}",
        findings.violations
    );
    assert_eq!(
        findings.count(ViolationKind::Oversold),
        1,
        "{:#?}",
        findings.violations
    );
    database.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_committed_deductions_answered_as_refused_are_flagged() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let store = store_on(&database).await;
    let sku = SkuId::parse("cold").unwrap();
    store.create_sku(&sku, 40).await.unwrap();
    let mut records = Vec::new();
    for n in 0..30_u64 {
        let key = format!("real-{n}");
        let quantity = 1 + i64::try_from(n % 3).unwrap();
        let request = DeductRequest::new(sku.clone(), Quantity::new(quantity).unwrap(), Strategy::Guarded)
            .with_idempotency_key(IdempotencyKey::parse(&key).unwrap());
        let answer = match store.deduct(request).await {
            Ok(r) => receipt("cold", quantity, r.ledger_id, r.remaining),
            Err(error) => {
                assert_eq!(error.kind(), "insufficient_stock", "{error}");
                let body = r#"{"type":"urn:stockguard:problem:insufficient_stock","status":409}"#;
                Answer::from_http(409, body.as_bytes())
            }
        };
        records.push(record(&key, "cold", quantity, answer, n));
    }
    store.close().await;
    let db = read_state(Backend::Postgres, database.url()).await.unwrap();

    // The truthful history passes: the checker does not flag what is right.
    let truthful = check(&records, &db);
    assert_eq!(truthful.violation_count(), 0, "{:#?}", truthful.violations);
    assert!(
        truthful.stats.acknowledged >= 10 && truthful.stats.refused >= 1,
        "{:?}",
        truthful.stats
    );

    let rewritten = refuse_committed(&mut records, 2);
    assert!(rewritten >= 5, "only {rewritten} committed deductions to rewrite");
    let mutant = check(&records, &db);
    assert_eq!(
        mutant.count(ViolationKind::RefusalApplied),
        rewritten as u64,
        "{:#?}",
        mutant.violations
    );
    assert_eq!(mutant.violation_count(), rewritten as u64);
    database.drop_now().await.unwrap();
}
