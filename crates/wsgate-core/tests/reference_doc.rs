//! `docs/reference.md` is the project's reference for its wire contract.
//! These tests hold it to the code: every [`Reason`] has its row there, as
//! the code maps it (code, status, close codes, `Retry-After`, message), and
//! every close code constant of `reason::close` has its row, with no stale
//! rows left in either table.

use std::collections::BTreeSet;
use wsgate_core::reason::close;
use wsgate_core::Reason;

const DOC: &str = include_str!("../../../docs/reference.md");
const REASON_RS: &str = include_str!("../src/reason.rs");

/// The text of the `## {title}` section, up to the next `## ` heading.
fn section(title: &str) -> &'static str {
    let head = format!("\n## {title}\n");
    let start = DOC
        .find(&head)
        .unwrap_or_else(|| panic!("docs/reference.md has no `## {title}` section"))
        + head.len();
    let len = DOC[start..].find("\n## ").unwrap_or(DOC.len() - start);
    &DOC[start..start + len]
}

/// The body rows of the section's first table: cells trimmed, without the
/// header and the `|---|` line.
fn table(title: &str) -> Vec<Vec<String>> {
    let rows: Vec<Vec<String>> = section(title)
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_start_matches('|')
                .trim_end_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(rows.len() > 2, "`## {title}` has no table");
    rows[2..].to_vec()
}

/// What a reason's row must say, cell by cell.
fn reason_row(r: Reason) -> Vec<String> {
    let status = r.status();
    let (first_code, first_text) = r.first_message_close();
    vec![
        format!("`{}`", r.code()),
        format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
        r.close_code().to_string(),
        format!("{first_code} {first_text}"),
        r.retry_after_secs()
            .map_or_else(|| "—".to_owned(), |s| s.to_string()),
        r.message().to_owned(),
    ]
}

#[test]
fn every_reason_is_in_the_reference_as_the_code_maps_it() {
    let rows = table("Refusals before 101");
    let missing: Vec<String> = Reason::ALL
        .iter()
        .map(|r| (r, reason_row(*r)))
        .filter(|(_, want)| !rows.contains(want))
        .map(|(r, want)| format!("{r:?}: | {} |", want.join(" | ")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md (\"Refusals before 101\") lacks these reasons, or says otherwise \
         than crates/wsgate-core/src/reason.rs; their rows should read:\n{}",
        missing.join("\n")
    );
    let wanted: Vec<Vec<String>> = Reason::ALL.iter().map(|r| reason_row(*r)).collect();
    let stale: Vec<&Vec<String>> = rows.iter().filter(|row| !wanted.contains(row)).collect();
    assert!(
        stale.is_empty(),
        "rows of docs/reference.md that no Reason has: {stale:?}"
    );
}

/// `pub const NAME: u16 = N;` lines of `pub mod close` in reason.rs: every
/// constant, including one added after this test was written.
fn close_constants() -> Vec<(String, u16)> {
    let start = REASON_RS
        .find("pub mod close {")
        .expect("reason.rs has `pub mod close`");
    REASON_RS[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.trim() != "}")
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("pub const ")?;
            let (name, value) = rest.split_once(": u16 =")?;
            let value = value.trim().trim_end_matches(';').parse().ok()?;
            Some((name.trim().to_owned(), value))
        })
        .collect()
}

#[test]
fn the_close_constants_read_from_the_source_are_the_code_s() {
    let found = close_constants();
    for (name, value) in &found {
        let real = match name.as_str() {
            "NORMAL" => close::NORMAL,
            "GOING_AWAY" => close::GOING_AWAY,
            "PROTOCOL" => close::PROTOCOL,
            "NO_STATUS" => close::NO_STATUS,
            "ABNORMAL" => close::ABNORMAL,
            "TLS_FAILED" => close::TLS_FAILED,
            "INVALID_PAYLOAD" => close::INVALID_PAYLOAD,
            "POLICY" => close::POLICY,
            "TOO_BIG" => close::TOO_BIG,
            "INTERNAL" => close::INTERNAL,
            "TRY_AGAIN_LATER" => close::TRY_AGAIN_LATER,
            "AUTH_FAILED" => close::AUTH_FAILED,
            "EXPIRED" => close::EXPIRED,
            "REVOKED" => close::REVOKED,
            "IDLE" => close::IDLE,
            "RATE_LIMITED" => close::RATE_LIMITED,
            other => panic!(
                "a new close code close::{other}: add it to this list and to docs/reference.md"
            ),
        };
        assert_eq!(*value, real, "close::{name}");
    }
    assert_eq!(
        found.len(),
        16,
        "close constants read from reason.rs: {found:?}"
    );
}

#[test]
fn every_close_code_is_in_the_reference() {
    let rows = table("Close codes");
    let documented: BTreeSet<(String, String)> = rows
        .iter()
        .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.clone())))
        .collect();
    let wanted: BTreeSet<(String, String)> = close_constants()
        .into_iter()
        .map(|(name, value)| (format!("`{value}`"), format!("`{name}`")))
        .collect();
    let missing: Vec<_> = wanted.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "docs/reference.md (\"Close codes\") lacks rows for (code, constant): {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&wanted).collect();
    assert!(
        stale.is_empty(),
        "docs/reference.md lists close codes the code does not have: {stale:?}"
    );
    // Every code a Reason closes with is one of them.
    for r in Reason::ALL {
        for code in [r.close_code(), r.first_message_close().0] {
            assert!(
                wanted.iter().any(|(v, _)| *v == format!("`{code}`")),
                "{r:?} closes with {code}, which is not a close constant"
            );
        }
    }
}

/// Every `CloseReason` has its row under "Close causes", with the code and
/// the log reason the code gives it.
#[test]
fn every_close_cause_is_in_the_reference() {
    use wsgate_core::CloseReason;
    let rows = table("Close causes");
    let row = |label: &str| {
        rows.iter()
            .find(|r| r.first().map(String::as_str) == Some(&format!("`{label}`")))
            .unwrap_or_else(|| panic!("docs/reference.md (\"Close causes\") lacks `{label}`"))
    };
    for c in CloseReason::ALL {
        let r = row(c.metric_label());
        match c {
            // The peer's own code.
            CloseReason::ClientClosed(_) | CloseReason::UpstreamClosed(_) => {}
            _ => assert!(
                r[1].contains(&format!("`{}`", c.code())),
                "{c:?}: code {} not in {:?}",
                c.code(),
                r[1]
            ),
        }
        if !matches!(c, CloseReason::AuthFailed(_)) {
            assert!(
                r[2].contains(c.log_reason()),
                "{c:?}: reason {:?} not in {:?}",
                c.log_reason(),
                r[2]
            );
        }
    }
    let labels: BTreeSet<String> = CloseReason::ALL
        .iter()
        .map(|c| format!("`{}`", c.metric_label()))
        .collect();
    for r in &rows {
        assert!(labels.contains(&r[0]), "stale close cause {:?}", r[0]);
    }
}
