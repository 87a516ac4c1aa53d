//! Hub permissions from claims (docs/reference.md): which channels a session may
//! subscribe to and publish on.
//!
//! In a pattern `*` matches any run of characters and `{sub}` stands for
//! the caller's own `sub`, taken literally (a `*` inside a sub is not a
//! wildcard).
//!
//! A grant's `claim` is a claim name or a dotted path into nested objects
//! (`realm_access.roles`, Keycloak): a top-level claim whose name is the
//! whole string wins, so namespaced claims such as
//! `https://example.com/roles` (Auth0) work as written. The OAuth `scope`
//! and `scp` claims, when strings, are space-separated lists (RFC 8693 4.2).

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

/// Deepest nesting a claim path may walk (bounded work per lookup).
const MAX_PATH_DEPTH: usize = 8;

/// The claim at `path`: the top-level claim named exactly `path`, else the
/// value reached by walking its dot-separated segments through objects.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut segments = path.split('.');
    let mut v = claims.get(segments.next()?)?;
    for (depth, seg) in segments.enumerate() {
        if depth >= MAX_PATH_DEPTH {
            return None;
        }
        v = v.as_object()?.get(seg)?;
    }
    Some(v)
}

/// Whether the claim at `path` is a space-separated list when a string.
fn is_scope_claim(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    last == "scope" || last == "scp"
}

impl Grant {
    /// Whether this grant applies to a session with `claims`.
    pub fn applies(&self, claims: &Map<String, Value>) -> bool {
        match (&self.claim, &self.value) {
            (None, _) => true,
            (Some(c), Some(want)) => claim_at(claims, c).is_some_and(|v| match v {
                Value::String(s) if is_scope_claim(c) => s.split(' ').any(|item| item == want),
                v => claim_matches(v, want),
            }),
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

    fn grant(claim: &str, value: &str) -> Vec<Grant> {
        vec![Grant {
            claim: Some(claim.into()),
            value: Some(value.into()),
            subscribe: vec!["*".into()],
            publish: vec![],
        }]
    }

    fn may(g: &[Grant], c: Value) -> bool {
        allowed(g, &claims(c), "a", Action::Subscribe, "x")
    }

    #[test]
    fn claim_paths() {
        // Keycloak: nested object.
        let g = grant("realm_access.roles", "admin");
        assert!(may(
            &g,
            json!({"realm_access": {"roles": ["user", "admin"]}})
        ));
        assert!(!may(&g, json!({"realm_access": {"roles": ["user"]}})));
        assert!(!may(&g, json!({"realm_access": ["admin"]})));
        assert!(!may(&g, json!({"roles": ["admin"]})));
        let g = grant("resource_access.my-app.roles", "editor");
        assert!(may(
            &g,
            json!({"resource_access": {"my-app": {"roles": ["editor"]}}})
        ));
        // Auth0: a namespaced top-level claim containing dots.
        let g = grant("https://example.com/roles", "admin");
        assert!(may(&g, json!({"https://example.com/roles": ["admin"]})));
        assert!(!may(&g, json!({"https://example": {"com/roles": ["x"]}})));
        // Exact top-level names win over paths.
        let g = grant("a.b", "1");
        assert!(may(&g, json!({"a.b": "1", "a": {"b": "2"}})));
        assert!(!may(&g, json!({"a.b": "2", "a": {"b": "1"}})));
        // Depth is bounded.
        let deep = format!("a{}", ".a".repeat(20));
        let mut v = json!("x");
        for _ in 0..21 {
            v = json!({ "a": v });
        }
        assert!(!may(&grant(&deep, "x"), v));
    }

    #[test]
    fn scope_strings_are_lists() {
        let g = grant("scope", "write:chat");
        assert!(may(&g, json!({"scope": "openid write:chat profile"})));
        assert!(may(&g, json!({"scope": "write:chat"})));
        assert!(!may(&g, json!({"scope": "openid write:chatty"})));
        assert!(!may(&g, json!({"scope": "read:chat"})));
        // Okta: scp as an array; Entra: scp as a string.
        assert!(may(&grant("scp", "a"), json!({"scp": ["b", "a"]})));
        assert!(may(&grant("scp", "a"), json!({"scp": "b a"})));
        // Other string claims are not split.
        assert!(!may(
            &grant("roles", "admin"),
            json!({"roles": "user admin"})
        ));
        // Auth0 RBAC: permissions array.
        assert!(may(
            &grant("permissions", "publish:news"),
            json!({"permissions": ["publish:news"]})
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
