//! The Redis anchor: redis-benchmark running the bare check-and-decrement script (the one the
//! harness's own ceiling runs, `flash::CHECK_AND_DECREMENT`) against one counter: what Redis
//! alone reaches for an admission and for a refusal, with no gate code involved.

use std::time::Duration;

use anyhow::{Context, ensure};
use tokio::process::Command;

use super::tools::{Endpoint, TOOL_GRACE, redis_benchmark_rps, run_bounded, version};
use super::{AnchorResult, AnchorSet};
use crate::flash::CHECK_AND_DECREMENT;

/// What the counter holds while the tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LuaMode {
    /// Plenty: every call takes a unit (an admission).
    Admit,
    /// Zero: every call is refused (the sold-out burst the gate absorbs).
    Refuse,
}

/// One redis-benchmark run.
#[derive(Debug, Clone, Copy)]
pub struct LuaSpec {
    /// Admissions or refusals.
    pub mode: LuaMode,
    /// Connections (redis-benchmark's `-c`).
    pub clients: usize,
    /// Requests in flight per connection (`-P`).
    pub pipeline: u32,
    /// Calls in all (`-n`): the tool stops after them.
    pub requests: u64,
}

impl LuaSpec {
    /// The case's name in reports.
    pub fn name(&self) -> String {
        let mode = match self.mode {
            LuaMode::Admit => "lua_admit",
            LuaMode::Refuse => "lua_refuse",
        };
        if self.pipeline > 1 {
            format!("{mode}_p{}", self.pipeline)
        } else {
            mode.to_owned()
        }
    }
}

/// The Redis anchor cases of a profile at the flash sale's client count: admissions and
/// refusals one call per connection at a time (as the gate's buyers), and refusals with 16
/// in flight per connection (closer to the gate's multiplexed connection).
pub fn lua_specs(set: AnchorSet, clients: usize) -> Vec<LuaSpec> {
    let requests = match set {
        AnchorSet::Smoke => return vec![spec(LuaMode::Refuse, clients, 1, 20_000)],
        AnchorSet::Quick => 100_000,
        AnchorSet::Full => 1_000_000,
    };
    vec![
        spec(LuaMode::Admit, clients, 1, requests),
        spec(LuaMode::Refuse, clients, 1, requests),
        spec(LuaMode::Refuse, clients, 16, requests * 2),
    ]
}

fn spec(mode: LuaMode, clients: usize, pipeline: u32, requests: u64) -> LuaSpec {
    LuaSpec {
        mode,
        clients,
        pipeline,
        requests,
    }
}

/// Runs one case on a fresh counter (deleted afterwards). The counter must show exactly
/// what the tool claims: `requests` units taken when admitting, none when refusing; a
/// mismatch is returned as a problem.
pub async fn run_lua_anchor(
    redis_url: &str,
    spec: LuaSpec,
) -> anyhow::Result<(AnchorResult, Option<String>)> {
    let tool = version("redis-benchmark").await.map_err(anyhow::Error::msg)?;
    let endpoint = Endpoint::parse(redis_url)?;
    let client = redis::Client::open(redis_url).context("the Redis URL")?;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let key = format!("sg-anchor-{}", uuid::Uuid::new_v4().simple());
    let initial: i64 = match spec.mode {
        LuaMode::Admit => i64::try_from(spec.requests).unwrap_or(i64::MAX).saturating_mul(2),
        LuaMode::Refuse => 0,
    };
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(CHECK_AND_DECREMENT)
        .query_async(&mut connection)
        .await?;
    redis::cmd("SET")
        .arg(&key)
        .arg(initial)
        .query_async::<()>(&mut connection)
        .await?;
    let mut command = Command::new("redis-benchmark");
    command
        .args([
            "-h",
            &endpoint.host,
            "-p",
            &endpoint.port.unwrap_or(6379).to_string(),
        ])
        .args(["-c", &spec.clients.to_string(), "-n", &spec.requests.to_string()])
        .args(["-P", &spec.pipeline.to_string(), "--threads", "2", "--csv"]);
    if let Some(password) = &endpoint.password {
        command.args(["-a", password]);
    }
    if let Some(user) = &endpoint.user {
        command.args(["--user", user]);
    }
    if let Some(db) = &endpoint.database {
        command.args(["--dbnum", db]);
    }
    command.args(["EVALSHA", &sha, "1", &key, "1"]);
    // At worst a few thousand calls a second: the bound scales with the calls asked for.
    let limit = Duration::from_secs(spec.requests / 2_000) + TOOL_GRACE;
    let ran = run_bounded(command, limit, &format!("redis-benchmark {}", spec.name())).await;
    let left: i64 = redis::cmd("GET").arg(&key).query_async(&mut connection).await?;
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut connection)
        .await?;
    let rps = redis_benchmark_rps(&ran?)?;
    ensure!(rps > 0.0, "redis-benchmark reported 0 requests/s");
    let taken = u64::try_from(initial - left).unwrap_or(u64::MAX);
    let expected = match spec.mode {
        LuaMode::Admit => spec.requests,
        LuaMode::Refuse => 0,
    };
    let problem = (taken != expected).then(|| {
        format!(
            "redis anchor {}: the counter lost {taken} units where {expected} calls admitted",
            spec.name()
        )
    });
    let result = AnchorResult {
        engine: "redis".to_owned(),
        tool,
        case: spec.name(),
        sku_count: 1,
        clients: spec.clients,
        pipeline: spec.pipeline,
        seconds: spec.requests as f64 / rps,
        transactions_per_s: rps,
        units_per_s: rps,
    };
    Ok((result, problem))
}
