//! Fails when docs/openapi.json differs from the spec generated from the code, or when the
//! page that shows it (`/docs`) needs anything from outside the binary.
//! Regenerate with `STOCKGUARD_BLESS_OPENAPI=1 cargo test -p stockguard-api --test openapi_drift`
//! (or `cargo run -p stockguard-api -- openapi > docs/openapi.json`).

mod common;

use std::path::PathBuf;

use common::{Backend, Harness};

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

/// `/docs` is served from files inside the binary: the page names no other host, every asset
/// it loads answers 200 from this server, and the UI reads this server's `/openapi.json`.
#[tokio::test(flavor = "multi_thread")]
async fn docs_page_works_offline() {
    let Some(h) = Harness::start(Backend::Sqlite).await else {
        return;
    };
    let page = h.get("/docs").await;
    assert_eq!(page.status(), 200);
    let base = page.url().clone();
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
        "the page names another host:\n{html}"
    );
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|part| [".js", ".css", ".png"].iter().any(|ext| part.ends_with(ext)))
        .collect();
    assert!(assets.len() >= 4, "scripts, styles and icons: {assets:?}");
    for asset in &assets {
        let url = base.join(asset).unwrap();
        assert_eq!(url.host_str(), Some("127.0.0.1"), "{asset}");
        let response = h.client.get(url.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{url}");
    }
    let initializer = h
        .client
        .get(base.join("swagger-initializer.js").unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains(r#""url": "/openapi.json""#), "{initializer}");
    assert!(initializer.contains(r#""validatorUrl": "none""#), "{initializer}");
    h.shutdown().await;
}
