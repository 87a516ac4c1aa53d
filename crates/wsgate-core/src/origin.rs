//! The Origin allow-list: the defence against cross-site WebSocket hijacking.
//!
//! Browsers attach cookies to cross-site WebSocket upgrades; only the
//! `Origin` header tells the gateway which page opened the socket.

use std::fmt;

/// One allow-list entry, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `scheme://host[:port]`, compared after normalisation.
    Exact(String),
    /// `scheme://*.suffix[:port]`: any subdomain of `suffix`, not `suffix` itself.
    Wildcard {
        scheme: String,
        suffix: String,
        port: Option<u16>,
    },
}

/// A configured list of allowed origins.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    entries: Vec<Entry>,
    pub allow_missing: bool,
}

/// An invalid allow-list entry (config error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOrigin(pub String);

impl fmt::Display for BadOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid origin {:?}: expected scheme://host[:port] or scheme://*.domain[:port]",
            self.0
        )
    }
}

/// What the policy says about a request's Origin header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginVerdict {
    /// An Origin header matched the allow-list.
    Allowed,
    /// No Origin header and `allow_missing` is on (non-browser client).
    MissingAllowed,
    /// Refused.
    Denied,
}

struct Parsed<'a> {
    scheme: String,
    host: &'a str,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Parses `scheme://host[:port]` with no path, query, or credentials.
fn parse(s: &str) -> Option<Parsed<'_>> {
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    // IPv6 literal hosts are bracketed: [::1]:8080.
    let (host, port) = if let Some(after) = rest.strip_prefix('[') {
        let (inner, tail) = after.split_once(']')?;
        let host = &rest[..inner.len() + 2];
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        (host, port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = port.filter(|p| Some(*p) != default_port(&scheme));
    Some(Parsed { scheme, host, port })
}

fn normalise(p: &Parsed<'_>) -> String {
    let host = p.host.to_ascii_lowercase();
    match p.port {
        Some(port) => format!("{}://{}:{}", p.scheme, host, port),
        None => format!("{}://{}", p.scheme, host),
    }
}

impl OriginPolicy {
    /// Builds the policy; every invalid entry is reported.
    pub fn new<S: AsRef<str>>(allow: &[S], allow_missing: bool) -> Result<Self, Vec<BadOrigin>> {
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        for raw in allow {
            let raw = raw.as_ref();
            match parse(raw) {
                Some(p) if p.host.starts_with("*.") => {
                    let suffix = p.host[2..].to_ascii_lowercase();
                    if suffix.is_empty()
                        || suffix.contains('*')
                        || !suffix.contains(|c: char| c.is_ascii_alphanumeric())
                    {
                        bad.push(BadOrigin(raw.to_string()));
                    } else {
                        entries.push(Entry::Wildcard {
                            scheme: p.scheme,
                            suffix,
                            port: p.port,
                        });
                    }
                }
                Some(p) if !p.host.contains('*') => entries.push(Entry::Exact(normalise(&p))),
                _ => bad.push(BadOrigin(raw.to_string())),
            }
        }
        if bad.is_empty() {
            Ok(OriginPolicy {
                entries,
                allow_missing,
            })
        } else {
            Err(bad)
        }
    }

    /// Judges the request's Origin header value (`None` when absent).
    /// `Origin: null` (sandboxed frames, file://) is never allowed.
    pub fn check(&self, origin: Option<&str>) -> OriginVerdict {
        let Some(origin) = origin else {
            return if self.allow_missing {
                OriginVerdict::MissingAllowed
            } else {
                OriginVerdict::Denied
            };
        };
        if self.allows(origin) {
            OriginVerdict::Allowed
        } else {
            OriginVerdict::Denied
        }
    }

    /// Whether an Origin value is on the list.
    pub fn allows(&self, origin: &str) -> bool {
        let Some(p) = parse(origin) else { return false };
        let norm = normalise(&p);
        self.entries.iter().any(|e| match e {
            Entry::Exact(s) => *s == norm,
            Entry::Wildcard {
                scheme,
                suffix,
                port,
            } => {
                if *scheme != p.scheme || *port != p.port {
                    return false;
                }
                let host = p.host.to_ascii_lowercase();
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(list: &[&str]) -> OriginPolicy {
        OriginPolicy::new(list, false).expect("valid test policy")
    }

    #[test]
    fn exact_matches_with_normalisation() {
        let p = pol(&["https://app.example", "http://127.0.0.1:8080"]);
        assert!(p.allows("https://app.example"));
        assert!(p.allows("https://APP.example"));
        assert!(p.allows("https://app.example:443"));
        assert!(p.allows("http://127.0.0.1:8080"));
        assert!(!p.allows("http://app.example"));
        assert!(!p.allows("https://app.example:8443"));
        assert!(!p.allows("https://app.example.evil"));
        assert!(!p.allows("https://evilapp.example"));
        assert!(!p.allows("http://127.0.0.1:8081"));
        assert!(!p.allows("null"));
        assert!(!p.allows("https://app.example/path"));
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = pol(&["https://*.example.com"]);
        assert!(p.allows("https://a.example.com"));
        assert!(p.allows("https://a.b.example.com"));
        assert!(!p.allows("https://example.com"));
        assert!(!p.allows("https://evilexample.com"));
        assert!(!p.allows("https://a.example.com.evil"));
        assert!(!p.allows("http://a.example.com"));
        assert!(!p.allows("https://a.example.com:444"));
    }

    #[test]
    fn ipv6_origin() {
        let p = pol(&["http://[::1]:8080"]);
        assert!(p.allows("http://[::1]:8080"));
        assert!(!p.allows("http://[::1]:8081"));
    }

    #[test]
    fn bad_entries_are_reported() {
        let err = OriginPolicy::new(
            &["app.example", "https://*", "https://a.*.b", "https://x/"],
            false,
        )
        .unwrap_err();
        assert_eq!(err.len(), 4);
    }

    #[test]
    fn missing_origin() {
        let p = OriginPolicy::new(&["https://a.example"], true).expect("valid");
        assert_eq!(p.check(None), OriginVerdict::MissingAllowed);
        assert_eq!(pol(&[]).check(None), OriginVerdict::Denied);
        assert_eq!(p.check(Some("https://a.example")), OriginVerdict::Allowed);
        assert_eq!(p.check(Some("https://b.example")), OriginVerdict::Denied);
    }
}
