//! The seed's layered lock as a flash-sale path (`redis_lock`, docs/redis.md): every attempt
//! takes the SKU's Redis lock (`SET NX PX`, with a fencing token from `INCR`), registers the
//! token in the database, reads the stock without a lock, writes `read − 1` with its ledger
//! row only while the fence still holds its token, and releases the lock. The read-modify-write
//! is the seed's unguarded one, made safe by the fence alone, as in redis_lock.rs; here no
//! holder pauses, so it is the layered lock's speed that is measured.
//!
//! A client that finds the lock held waits 0.5–2 ms and tries again, as a spin lock does;
//! after sell-out, every attempt still takes the lock and reads the stock before it is refused.

use std::time::{Duration, Instant};

use rand::Rng;
use redis::aio::MultiplexedConnection;
use stockguard_core::{DeductError, SkuId};

use crate::db::{FreshDatabase, RawPool};
use crate::redis_lock::{ACQUIRE, RELEASE};

/// The lock's time to live: far past one holder's read and write (no holder pauses here).
const LOCK_TTL_MS: u64 = 2_000;

/// The locked sale of one SKU.
pub(crate) struct LockedSale {
    pool: RawPool,
    redis: MultiplexedConnection,
    sku: String,
    lock_key: String,
    fence_key: String,
    acquire: redis::Script,
    release: redis::Script,
    /// Attempts give up (as `unavailable`) past this.
    until: Instant,
}

fn redis_failed(error: redis::RedisError) -> DeductError {
    DeductError::Unavailable {
        reason: "redis_lock: redis failed",
        retry_after: Duration::from_millis(100),
        source: Some(Box::new(error)),
    }
}

fn database_failed(error: sqlx::Error) -> DeductError {
    DeductError::Unavailable {
        reason: "redis_lock: the database failed",
        retry_after: Duration::from_millis(100),
        source: Some(Box::new(error)),
    }
}

impl LockedSale {
    /// The sale of `sku` (stocked already) on `database`, with `pool_size` connections, its
    /// fence at token 0, and its lock in a hash tag of its own on `redis_url`.
    pub(crate) async fn open(
        database: &FreshDatabase,
        redis_url: &str,
        sku: &SkuId,
        pool_size: u32,
        time_cap: Duration,
    ) -> anyhow::Result<Self> {
        let pool = RawPool::connect(database, pool_size).await?;
        pool.create_fence(sku.as_str()).await?;
        let redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Ok(Self {
            pool,
            redis,
            sku: sku.as_str().to_owned(),
            lock_key: format!("bench-flash-lock:{{{tag}}}:lock"),
            fence_key: format!("bench-flash-lock:{{{tag}}}:fence"),
            acquire: redis::Script::new(ACQUIRE),
            release: redis::Script::new(RELEASE),
            until: Instant::now() + time_cap,
        })
    }

    /// One one-unit attempt: a sale, a refusal once the stock is gone, or `unavailable`.
    pub(crate) async fn deduct(&self) -> Result<(), DeductError> {
        let mut redis = self.redis.clone();
        let owner = uuid::Uuid::new_v4().simple().to_string();
        while Instant::now() < self.until {
            let token: i64 = self
                .acquire
                .key(&self.lock_key)
                .key(&self.fence_key)
                .arg(&owner)
                .arg(LOCK_TTL_MS)
                .invoke_async(&mut redis)
                .await
                .map_err(redis_failed)?;
            if token == 0 {
                let wait_us = rand::rng().random_range(500..2_000);
                tokio::time::sleep(Duration::from_micros(wait_us)).await;
                continue;
            }
            let answer = self.holding(token).await;
            let _: i64 = self
                .release
                .key(&self.lock_key)
                .arg(&owner)
                .invoke_async(&mut redis)
                .await
                .map_err(redis_failed)?;
            match answer {
                // Fenced out: a newer holder registered first, and nothing was written.
                Ok(None) => continue,
                Ok(Some(answer)) => return answer,
                Err(error) => return Err(error),
            }
        }
        Err(DeductError::Unavailable {
            reason: "redis_lock: the sale's time cap passed",
            retry_after: Duration::from_millis(100),
            source: None,
        })
    }

    /// The holder's work; `None` when the fence refused it (nothing changed).
    async fn holding(&self, token: i64) -> Result<Option<Result<(), DeductError>>, DeductError> {
        if !self
            .pool
            .register_fence(&self.sku, token)
            .await
            .map_err(database_failed)?
        {
            return Ok(None);
        }
        let read = self
            .pool
            .read_stock_unlocked(&self.sku)
            .await
            .map_err(database_failed)?;
        if read < 1 {
            return Ok(Some(Err(DeductError::InsufficientStock {
                requested: 1,
                available: read,
            })));
        }
        let wrote = self
            .pool
            .write_unguarded(&self.sku, read, 1, Some(token))
            .await
            .map_err(database_failed)?;
        Ok(wrote.then_some(Ok(())))
    }

    /// Drops the lock's keys from the shared Redis and closes the pool.
    pub(crate) async fn close(&self) {
        let mut redis = self.redis.clone();
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(&self.lock_key)
            .arg(&self.fence_key)
            .query_async(&mut redis)
            .await;
        self.pool.close().await;
    }
}
