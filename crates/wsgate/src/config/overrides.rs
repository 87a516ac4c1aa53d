//! `WSGATE_<SECTION>__<KEY>` environment overrides, applied to the parsed
//! TOML table before deserialization so that an override naming an unknown
//! key fails exactly like the same key in the file.

use toml::{Table, Value};

/// An override that was applied: the dotted key it set and the variable.
#[derive(Debug, Clone)]
pub(super) struct Applied {
    pub key: String,
    pub var: String,
}

/// One path segment, numeric ones index into arrays (`[[auth.keys]]`).
fn segments(var: &str) -> Option<Vec<String>> {
    let rest = var.strip_prefix("WSGATE_")?;
    // Single-underscore names (WSGATE_JWT_SECRET) are secrets and other
    // settings read by name, never overrides.
    if !rest.contains("__") {
        return None;
    }
    Some(rest.split("__").map(str::to_ascii_lowercase).collect())
}

/// The dotted form used in messages: `auth.keys[0].secret_env`.
pub(super) fn dotted(segs: &[String]) -> String {
    let mut out = String::new();
    for s in segs {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(s);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(s);
        }
    }
    out
}

/// The value as TOML when it parses as one (`true`, `42`, `["a","b"]`),
/// else the raw string (`0.0.0.0:8080`, `https://idp`).
pub(super) fn parse_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match doc.parse::<Table>() {
        // Exactly one key guards against a value smuggling in more lines.
        Ok(mut t) if t.len() == 1 => match t.remove("v") {
            // A date-like string is far more likely meant as text.
            Some(Value::Datetime(_)) | None => Value::String(raw.to_owned()),
            Some(v) => v,
        },
        _ => Value::String(raw.to_owned()),
    }
}

/// Orders overrides so that array entries are created in index order
/// (`KEYS__2` after `KEYS__10` would otherwise be out of range).
fn sort_key(segs: &[String]) -> Vec<(u8, u64, String)> {
    segs.iter()
        .map(|s| match s.parse::<u64>() {
            Ok(n) => (0, n, String::new()),
            Err(_) => (1, 0, s.clone()),
        })
        .collect()
}

fn set(cur: &mut Value, segs: &[String], value: Value, done: &[String]) -> Result<(), String> {
    let Some((first, rest)) = segs.split_first() else {
        return Err("empty key".into());
    };
    let here = || dotted(done);
    match cur {
        Value::Table(t) => {
            if rest.is_empty() {
                t.insert(first.clone(), value);
                return Ok(());
            }
            let child = t
                .entry(first.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            let mut done = done.to_vec();
            done.push(first.clone());
            set(child, rest, value, &done)
        }
        Value::Array(items) => {
            let idx: usize = first
                .parse()
                .map_err(|_| format!("{} is a list: the next part must be an index", here()))?;
            if idx > items.len() {
                return Err(format!(
                    "{}[{idx}]: index out of range (the list has {} entries; add entries in order)",
                    here(),
                    items.len()
                ));
            }
            if idx == items.len() {
                items.push(Value::Table(Table::new()));
            }
            let Some(slot) = items.get_mut(idx) else {
                return Err(format!("{}[{idx}]: index out of range", here()));
            };
            if rest.is_empty() {
                *slot = value;
                return Ok(());
            }
            let mut done = done.to_vec();
            done.push(first.clone());
            set(slot, rest, value, &done)
        }
        other => Err(format!(
            "{} is a {}, so it has no key {first:?}",
            here(),
            other.type_str()
        )),
    }
}

/// Applies every `WSGATE_*__*` variable to `root`; returns what was set.
pub(super) fn apply(
    root: &mut Table,
    env_vars: &[(String, String)],
    problems: &mut Vec<String>,
) -> Vec<Applied> {
    let mut found: Vec<(Vec<String>, &str, &str)> = env_vars
        .iter()
        .filter_map(|(k, v)| segments(k).map(|s| (s, k.as_str(), v.as_str())))
        .collect();
    found.sort_by_key(|(segs, _, _)| sort_key(segs));
    let mut applied = Vec::new();
    let mut doc = Value::Table(std::mem::take(root));
    for (segs, var, raw) in found {
        if segs.iter().any(String::is_empty) {
            problems.push(format!(
                "{var}: empty key between double underscores (expected WSGATE_<SECTION>__<KEY>)"
            ));
            continue;
        }
        match set(&mut doc, &segs, parse_value(raw), &[]) {
            Ok(()) => applied.push(Applied {
                key: dotted(&segs),
                var: var.to_owned(),
            }),
            Err(e) => problems.push(format!("{var}: {e}")),
        }
    }
    if let Value::Table(t) = doc {
        *root = t;
    }
    applied
}
