//! Fails when docs/openapi.json differs from the spec generated from the code.
//! Regenerate with `STOCKGUARD_BLESS_OPENAPI=1 cargo test -p stockguard-api --test openapi_drift`
//! (or `cargo run -p stockguard-api -- openapi > docs/openapi.json`).

use std::path::PathBuf;

#[test]
fn checked_in_spec_matches_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = stockguard_api::openapi_pretty_json();
    if std::env::var("STOCKGUARD_BLESS_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is out of date with the code. Regenerate it with\n  \
         STOCKGUARD_BLESS_OPENAPI=1 cargo test -p stockguard-api --test openapi_drift\n\
         and review the diff."
    );
}

#[test]
fn every_error_response_is_problem_json() {
    let spec: serde_json::Value = serde_json::from_str(&stockguard_api::openapi_pretty_json()).unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = response["content"].as_object().unwrap();
                    assert!(
                        content.contains_key("application/problem+json"),
                        "{method} {path} {status} is not problem+json"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} error responses documented");
}
