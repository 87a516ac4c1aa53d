//! Every metric the gateway has is in `docs/reference.md` ("Metrics"): each
//! name registered in `crates/wsgate/src` (read from the source, so a family
//! that has no series yet counts too), and each name a running gateway
//! exposes on `/metrics` (so one registered some other way counts too).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::path::Path;

const DOC: &str = include_str!("../../../docs/reference.md");

/// Metric names in the first column of the "Metrics" table.
fn documented() -> BTreeSet<String> {
    let start = DOC
        .find("\n## Metrics\n")
        .expect("docs/reference.md has a `## Metrics` section");
    let rest = &DOC[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)];
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .filter(|n| n.starts_with("wsgate_"))
        .collect()
}

/// The name of every `.register("wsgate_…"` / `.register_with_unit("wsgate_…"`
/// call under `dir`.
fn registered(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("read src dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            registered(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read source");
        for call in [".register(", ".register_with_unit("] {
            for (at, _) in text.match_indices(call) {
                let args = text[at + call.len()..].trim_start();
                if let Some(name) = args
                    .strip_prefix('"')
                    .and_then(|a| a.split_once('"'))
                    .map(|(n, _)| n)
                    .filter(|n| n.starts_with("wsgate_"))
                {
                    out.insert(name.to_owned());
                }
            }
        }
    }
}

/// Whether the doc names `base` as it is exposed: as registered, as a
/// counter (`_total`) or with its unit (`_seconds`).
fn exposed_form_documented(doc: &BTreeSet<String>, base: &str) -> bool {
    ["", "_total", "_seconds"]
        .iter()
        .any(|suffix| doc.contains(&format!("{base}{suffix}")))
}

/// Every name registered in crates/wsgate/src.
fn registered_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    registered(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut names,
    );
    // The scan must see the registry, or it proves nothing.
    for known in ["wsgate_handshakes", "wsgate_closes", "wsgate_key_refreshes"] {
        assert!(
            names.contains(known),
            "{known} not found by the source scan: {names:?}"
        );
    }
    names
}

#[test]
fn every_registered_metric_is_in_the_reference() {
    let doc = documented();
    let missing: Vec<_> = registered_names()
        .into_iter()
        .filter(|n| !exposed_form_documented(&doc, n))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics registered in crates/wsgate/src but missing from docs/reference.md: {missing:?}"
    );
}

#[tokio::test]
async fn every_exposed_metric_is_in_the_reference() {
    let gw = Gateway::start(&base_config(""));
    // A little traffic, so that families with series show up too.
    let (ws, _) = bearer(&gw.url(), &token("ref")).await.open();
    drop(ws);
    upgrade(&gw.url(), &[]).await.refused(401, "missing_token");
    let r = http(gw.admin, "GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200);
    let exposed: BTreeSet<String> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert!(exposed.contains("wsgate_handshakes_total"), "{exposed:?}");
    let doc = documented();
    let missing: Vec<_> = exposed.difference(&doc).collect();
    assert!(
        missing.is_empty(),
        "metrics on /metrics but missing from docs/reference.md: {missing:?}"
    );
    // And nothing documented that the gateway does not have.
    let names = registered_names();
    let stale: Vec<_> = doc
        .iter()
        .filter(|d| !exposed.contains(*d))
        .filter(|d| {
            !names.iter().any(|n| {
                ["", "_total", "_seconds"]
                    .iter()
                    .any(|s| **d == format!("{n}{s}"))
            })
        })
        .collect();
    assert!(
        stale.is_empty(),
        "docs/reference.md lists metrics the gateway does not have: {stale:?}"
    );
}
