//! The command line's parsing (main.rs's tests, kept apart so main.rs stays short).

use super::*;

#[test]
fn the_transport_flag_parses() {
    let args =
        Args::try_parse_from(["stockguard-bench", "--out", "x", "--transport", "in-process,http"]).unwrap();
    assert_eq!(args.transport, vec![Transport::InProcess, Transport::Http]);
    assert!(Args::try_parse_from(["stockguard-bench", "--out", "x", "--transport", "grpc"]).is_err());
}

#[test]
fn strategies_take_every_library_strategy_and_raw_path_by_name() {
    use stockguard_bench::raw::RawOp;
    use stockguard_core::Strategy;

    let args = Args::try_parse_from([
        "stockguard-bench",
        "--out",
        "x",
        "--strategies",
        "sharded,raw_guarded,unsafe_no_lock",
    ])
    .unwrap();
    assert_eq!(
        args.strategies,
        vec![
            Variant::Library(Strategy::Sharded),
            Variant::Raw(RawOp::Guarded),
            Variant::Raw(RawOp::UnsafeNoLock)
        ]
    );
    assert!(Args::try_parse_from(["stockguard-bench", "--out", "x", "--strategies", "fastest"]).is_err());
    let db = Args::try_parse_from(["stockguard-bench", "--out", "x", "--db", "mariadb,postgres"]).unwrap();
    assert_eq!(db.db, vec![Backend::MySql, Backend::Postgres]);
}

#[test]
fn chaos_is_a_subcommand_and_the_bench_still_needs_out() {
    let args = Args::try_parse_from([
        "stockguard-bench",
        "chaos",
        "--out",
        "x",
        "--cell",
        "postgres:guarded",
        "--seed",
        "7",
    ])
    .unwrap();
    let Some(Command::Chaos(chaos)) = args.command else {
        panic!("not the chaos subcommand");
    };
    assert_eq!(
        (chaos.cells, chaos.seed),
        (vec!["postgres:guarded".to_owned()], Some(7))
    );
    assert!(Args::try_parse_from(["stockguard-bench", "chaos"]).is_err());
    assert!(Args::try_parse_from(["stockguard-bench", "--profile", "smoke"]).is_err());
}

#[test]
fn the_service_memory_flag_takes_on_off_only() {
    let args = Args::try_parse_from(["stockguard-bench", "--out", "x"]).unwrap();
    assert_eq!(args.service_memory, WorkloadRun::On);
    let args = Args::try_parse_from(["stockguard-bench", "--out", "x", "--service-memory", "only"]).unwrap();
    assert_eq!(args.service_memory, WorkloadRun::Only);
    assert!(Args::try_parse_from(["stockguard-bench", "--out", "x", "--service-memory", "maybe"]).is_err());
}
