//! Hub permissions from claims (SPEC 6): which channels a session may
//! subscribe to and publish on.
//!
//! In a pattern `*` matches any run of characters and `{sub}` stands for
//! the caller's own `sub`, taken literally (a `*` inside a sub is not a
//! wildcard).

use serde_json::{Map, Value};

/// One `[[hub.grants]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `None`: applies to every authenticated session.
    pub claim: Option<String>,
    pub value: Option<String>,
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
}

/// What is being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
}

/// A valid channel name: 1-200 printable ASCII characters.
pub fn valid_channel(c: &str) -> bool {
    (1..=200).contains(&c.len()) && c.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Whether a claim value equals `want`, or (array) contains it.
fn claim_matches(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        Value::Number(n) => n.to_string() == want,
        Value::Array(a) => a.iter().any(|x| !x.is_array() && claim_matches(x, want)),
        _ => false,
    }
}

impl Grant {
    /// Whether this grant applies to a session with `claims`.
    pub fn applies(&self, claims: &Map<String, Value>) -> bool {
        match (&self.claim, &self.value) {
            (None, _) => true,
            (Some(c), Some(want)) => claims.get(c).is_some_and(|v| claim_matches(v, want)),
            (Some(_), None) => false,
        }
    }
}

/// Whether `sub` with `claims` may do `action` on `channel`.
pub fn allowed(
    grants: &[Grant],
    claims: &Map<String, Value>,
    sub: &str,
    action: Action,
    channel: &str,
) -> bool {
    grants.iter().filter(|g| g.applies(claims)).any(|g| {
        let patterns = match action {
            Action::Subscribe => &g.subscribe,
            Action::Publish => &g.publish,
        };
        patterns.iter().any(|p| matches(p, sub, channel))
    })
}

/// Pattern match with `*` and a literal `{sub}`.
pub fn matches(pattern: &str, sub: &str, channel: &str) -> bool {
    // Tokens: literal text (with {sub} expanded) and wildcards.
    let mut parts: Vec<Option<String>> = Vec::new();
    for (i, piece) in pattern.split('*').enumerate() {
        if i > 0 {
            parts.push(None);
        }
        if !piece.is_empty() {
            parts.push(Some(piece.replace("{sub}", sub)));
        }
    }
    glob(&parts, channel.as_bytes())
}

/// Iterative wildcard match with backtracking to the last `*` (linear-ish,
/// no recursion, so hostile patterns cannot blow the stack).
fn glob(parts: &[Option<String>], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        match parts.get(p) {
            Some(None) => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(Some(lit)) if text[t..].starts_with(lit.as_bytes()) => {
                t += lit.len();
                p += 1;
                continue;
            }
            None if t == text.len() => return true,
            _ => {}
        }
        match star {
            Some((sp, st)) if st < text.len() => {
                star = Some((sp, st + 1));
                p = sp + 1;
                t = st + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn spec_grants() -> Vec<Grant> {
        vec![
            Grant {
                claim: None,
                value: None,
                subscribe: vec!["public:*".into(), "user:{sub}".into()],
                publish: vec!["chat:*".into()],
            },
            Grant {
                claim: Some("roles".into()),
                value: Some("admin".into()),
                subscribe: vec!["*".into()],
                publish: vec!["*".into()],
            },
        ]
    }

    #[test]
    fn patterns() {
        assert!(matches("public:*", "a", "public:news"));
        assert!(matches("public:*", "a", "public:"));
        assert!(!matches("public:*", "a", "private:x"));
        assert!(matches("user:{sub}", "alice", "user:alice"));
        assert!(!matches("user:{sub}", "alice", "user:bob"));
        assert!(!matches("user:{sub}", "alice", "user:alice2"));
        assert!(matches("*", "a", "anything at all"));
        assert!(matches("a*b*c", "x", "a-b-b-c"));
        assert!(!matches("a*b*c", "x", "a-b-b-d"));
        assert!(matches("room:*:log", "x", "room:1:2:log"));
        // {sub} is literal: a sub containing * grants nothing extra.
        assert!(!matches("user:{sub}", "*", "user:alice"));
        assert!(matches("user:{sub}", "*", "user:*"));
        assert!(!matches("exact", "x", "exactly"));
    }

    #[test]
    fn spec_example() {
        let g = spec_grants();
        let user = claims(json!({"roles": ["user"]}));
        let admin = claims(json!({"roles": ["user", "admin"]}));
        use Action::*;
        assert!(allowed(&g, &user, "alice", Subscribe, "public:news"));
        assert!(allowed(&g, &user, "alice", Subscribe, "user:alice"));
        assert!(!allowed(&g, &user, "alice", Subscribe, "user:bob"));
        assert!(!allowed(&g, &user, "alice", Publish, "public:news"));
        assert!(allowed(&g, &user, "alice", Publish, "chat:lobby"));
        assert!(allowed(&g, &admin, "root", Subscribe, "user:bob"));
        assert!(allowed(&g, &admin, "root", Publish, "anything"));
        assert!(allowed(
            &g,
            &claims(json!({"roles": "admin"})),
            "r",
            Publish,
            "x"
        ));
        assert!(!allowed(&[], &admin, "r", Subscribe, "x"));
    }

    #[test]
    fn claim_value_types() {
        let g = vec![Grant {
            claim: Some("level".into()),
            value: Some("3".into()),
            subscribe: vec!["*".into()],
            publish: vec![],
        }];
        assert!(allowed(
            &g,
            &claims(json!({"level": 3})),
            "a",
            Action::Subscribe,
            "x"
        ));
        assert!(allowed(
            &g,
            &claims(json!({"level": "3"})),
            "a",
            Action::Subscribe,
            "x"
        ));
        assert!(!allowed(
            &g,
            &claims(json!({"level": 4})),
            "a",
            Action::Subscribe,
            "x"
        ));
        assert!(!allowed(
            &g,
            &claims(json!({})),
            "a",
            Action::Subscribe,
            "x"
        ));
    }

    #[test]
    fn channel_names() {
        assert!(valid_channel("chat:lobby"));
        assert!(!valid_channel(""));
        assert!(!valid_channel(&"a".repeat(201)));
        assert!(!valid_channel("tab\there"));
        assert!(!valid_channel("é"));
    }
}
