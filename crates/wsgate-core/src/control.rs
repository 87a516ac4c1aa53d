//! Which client text messages are in-band control messages (docs/reference.md):
//! `{"type":"auth","token":...}` is consumed by the gateway, everything else
//! goes to the backend.
//!
//! Decided on the parsed JSON, never on the bytes: a backend parses the
//! message too, and whatever it would read as an auth message must not reach
//! it (the token would end up in its hands and its logs). So `"\u0061uth"`
//! is `auth`, and a text the gateway cannot read exactly one way is refused
//! rather than forwarded:
//!
//! - a top-level `type` member whose value unescapes to `auth` (any of them,
//!   if there are several) makes a control message;
//! - a control message must be one well-formed JSON object with distinct
//!   member names (a backend keeping the first of two `type`s or `token`s
//!   would read another message than ours) and a string `token`, or it is
//!   [`Malformed`](Classified::Malformed);
//! - a text that looks like a JSON object and could spell `auth` but is not
//!   valid JSON (trailing data, `NaN`, a lone surrogate in a key, a trailing
//!   comma) is [`Malformed`](Classified::Malformed) too: lenient parsers
//!   (Go's streaming decoder, Python's `json`, JavaScript with lone
//!   surrogates) accept such texts, and one of them may see `auth` in it.
//!
//! A cheap test keeps JSON parsing off the relay path: a JSON string that
//! unescapes to `auth` is written either `"auth"`, quotes included, or with
//! a `\u` escape of one of its letters, `\u0061`, `\u0075`, `\u0074` or
//! `\u0068` (the other escapes spell no letter, and these hex digits have
//! no case), so only texts that start with `{` and contain one of those
//! are parsed: not `"author"`, not `"caf\u00e9"`.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// What a client text message is to the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified<'a> {
    /// Not a control message: the backend's.
    Data,
    /// An `auth` message; `None` when it has no `token` member.
    Auth(Option<Cow<'a, str>>),
    /// Could be an `auth` message but cannot be read one way only:
    /// answered `auth_fail` `malformed_token`, never forwarded.
    Malformed,
}

/// Classifies one client text message.
pub fn classify(text: &str) -> Classified<'_> {
    if !candidate(text) {
        return Classified::Data;
    }
    classify_parsed(text)
}

/// Whether `text` could be a control message: starts (after JSON
/// whitespace) with `{` and contains `"auth"` or a `\u` escape of a letter
/// of it.
pub fn candidate(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
        && (text.contains("\"auth\"") || escapes_a_letter_of_auth(text.as_bytes()))
}

/// Whether `b` holds `\u0061`, `\u0075`, `\u0074` or `\u0068`. Most texts
/// have no backslash at all: one SIMD scan (a substring search costs a
/// searcher's setup per message).
fn escapes_a_letter_of_auth(b: &[u8]) -> bool {
    memchr::memchr_iter(b'\\', b).any(|at| {
        matches!(
            b.get(at + 1..at + 6),
            Some(b"u0061" | b"u0075" | b"u0074" | b"u0068")
        )
    })
}

/// [`classify`] without the cheap test: parses every text (for tests and
/// the fuzz target, which check that the test never lets one through).
pub fn classify_parsed(text: &str) -> Classified<'_> {
    let mut scan = Scan::default();
    if parse(text, &mut scan).is_err() {
        // Unreadable: refused if a lenient parser could find `auth` in it.
        return if candidate(text) {
            Classified::Malformed
        } else {
            Classified::Data
        };
    }
    if !scan.auth {
        return Classified::Data;
    }
    if scan.types > 1 || scan.tokens > 1 || scan.token_not_string {
        return Classified::Malformed;
    }
    // Rare (a real auth message): a second pass for any repeated name.
    let mut again = Scan {
        names: Some(HashSet::new()),
        ..Scan::default()
    };
    if parse(text, &mut again).is_err() || again.duplicate {
        return Classified::Malformed;
    }
    Classified::Auth(scan.token)
}

/// Exactly one JSON object, nothing after it.
fn parse<'a>(text: &'a str, scan: &mut Scan<'a>) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    TopLevel(scan).deserialize(&mut de)?;
    de.end()
}

/// What one pass over the top-level members saw.
#[derive(Default)]
struct Scan<'a> {
    /// A `type` member is the string `auth`.
    auth: bool,
    types: u32,
    tokens: u32,
    token: Option<Cow<'a, str>>,
    token_not_string: bool,
    /// Every member name, when looking for repeats (second pass only).
    names: Option<HashSet<Cow<'a, str>>>,
    duplicate: bool,
}

struct TopLevel<'s, 'a>(&'s mut Scan<'a>);

impl<'de, 's> DeserializeSeed<'de> for TopLevel<'s, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 's> Visitor<'de> for TopLevel<'s, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let scan = self.0;
        while let Some(name) = m.next_key::<Str<'de>>()? {
            match &*name.0 {
                "type" => {
                    scan.types += 1;
                    if let Member::Str(v) = m.next_value::<Member<'de>>()? {
                        scan.auth |= v == "auth";
                    }
                }
                "token" => {
                    scan.tokens += 1;
                    match m.next_value::<Member<'de>>()? {
                        Member::Str(v) => scan.token = Some(v),
                        Member::Other => scan.token_not_string = true,
                    }
                }
                _ => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
            if let Some(names) = scan.names.as_mut() {
                if !names.insert(name.0) {
                    scan.duplicate = true;
                }
            }
        }
        Ok(())
    }
}

/// A string, borrowed from the text when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(MemberVisitor)? {
            Member::Str(s) => Ok(Str(s)),
            Member::Other => Err(de::Error::custom("expected a string")),
        }
    }
}

/// A member's value: a string, or anything else (skipped, not built).
enum Member<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for Member<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MemberVisitor)
    }
}

struct MemberVisitor;

impl<'de> Visitor<'de> for MemberVisitor {
    type Value = Member<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Member<'de>, E> {
        Ok(Member::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Member<'de>, E> {
        Ok(Member::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Member<'de>, E> {
        Ok(Member::Str(Cow::Owned(v)))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_unit<E>(self) -> Result<Member<'de>, E> {
        Ok(Member::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Member<'de>, A::Error> {
        while s.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Member::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Member<'de>, A::Error> {
        while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Member::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Classified::*;

    fn auth(t: &str) -> Classified<'_> {
        Auth(Some(Cow::Borrowed(t)))
    }

    #[test]
    fn the_plain_auth_message() {
        assert_eq!(classify(r#"{"type":"auth","token":"T"}"#), auth("T"));
        assert_eq!(
            classify(" \n{ \"token\" : \"T\" , \"type\" : \"auth\" }\r\n"),
            auth("T")
        );
        assert_eq!(classify(r#"{"type":"auth"}"#), Auth(None));
        assert_eq!(classify(r#"{"type":"auth","token":""}"#), auth(""));
    }

    #[test]
    fn escapes_are_read_as_a_parser_reads_them() {
        for text in [
            r#"{"type":"\u0061uth","token":"T"}"#,
            r#"{"type":"\u0061\u0075\u0074\u0068","token":"T"}"#,
            r#"{"\u0074ype":"auth","token":"T"}"#,
            r#"{"type":"auth","t\u006fken":"T"}"#,
        ] {
            assert_eq!(classify(text), auth("T"), "{text}");
        }
        // The token itself may be escaped: unescaped, it is an owned string.
        assert_eq!(
            classify(r#"{"type":"auth","token":"a\/b"}"#),
            Auth(Some(Cow::Owned("a/b".into())))
        );
    }

    #[test]
    fn repeated_members_are_malformed() {
        for text in [
            r#"{"type":"x","type":"auth","token":"T"}"#,
            r#"{"type":"auth","type":"x","token":"T"}"#,
            r#"{"type":"auth","type":"auth","token":"T"}"#,
            r#"{"type":"auth","token":"T","token":"U"}"#,
            r#"{"type":"auth","token":"T","\u0074oken":"U"}"#,
            r#"{"type":"auth","token":"T","x":1,"x":2}"#,
            r#"{"type":5,"type":"auth","token":"T"}"#,
        ] {
            assert_eq!(classify(text), Malformed, "{text}");
        }
    }

    #[test]
    fn what_a_lenient_parser_could_read_as_auth_is_malformed() {
        for text in [
            // Go's json.Decoder (gorilla's ReadJSON) stops after the object.
            r#"{"type":"auth","token":"T"} trailing"#,
            r#"{"type":"auth","token":"T"}{"type":"x"}"#,
            // Python's json reads NaN; JavaScript reads lone surrogates.
            r#"{"x":NaN,"type":"auth","token":"T"}"#,
            r#"{"token":"T","\ud800":1,"type":"auth"}"#,
            r#"{"type":"auth","token":"T",}"#,
            r#"{"type":"auth","token":"T""#,
            r#"{"type":"auth","token":7}"#,
            r#"{"type":"auth","token":null}"#,
        ] {
            assert_eq!(classify(text), Malformed, "{text}");
        }
    }

    #[test]
    fn everything_else_is_data() {
        for text in [
            "hello",
            r#"{"type":"message","text":"hi"}"#,
            // Mentions auth, but no top-level type says it.
            r#"{"type":"post","author":"kim"}"#,
            r#"{"type":"authx","token":"T"}"#,
            r#"{"type":"AUTH","token":"T"}"#,
            r#"{"data":{"type":"auth","token":"T"}}"#,
            r#"[{"type":"auth","token":"T"}]"#,
            r#""{\"type\":\"auth\"}""#,
            // Repeats in data are the backend's business.
            r#"{"type":"x","type":"y","auth":1}"#,
            // Not an object at all.
            "auth \\u0061",
            "",
        ] {
            assert_eq!(classify(text), Data, "{text}");
        }
    }

    #[test]
    fn the_cheap_test_lets_no_control_message_through() {
        // Every text above classifies the same with and without it.
        for text in [
            r#"{"type":"\u0061uth","token":"T"}"#,
            r#"{"\u0074ype":"\u0061uth"}"#,
            r#"{"type":"auth"}"#,
            r#"{"type":"x","y":"\u00e9"}"#,
            r#"{"type":"x"}"#,
            r#"{"type":"post","author":"kim","x":NaN}"#,
            "{",
            "{}",
            " {\"a\":\"b\"}",
            r#"{"x":NaN}"#,
        ] {
            assert_eq!(classify(text), classify_parsed(text), "{text}");
        }
        // And every text of up to five pieces (~100k, valid or not): the
        // ones the test skips are data to a full parse as well.
        let pieces = [
            "{",
            "}",
            "\"type\"",
            ":",
            "\"auth\"",
            "\"\\u0061uth\"",
            ",",
            "\"token\"",
            "\"T\"",
            " ",
            "NaN",
            "[",
            "]",
            "\"a\\u0075th\"",
            "\"\\u00e9\"",
        ];
        let mut text = String::new();
        let mut n = 0usize;
        let total = pieces.len().pow(5);
        while n < total {
            text.clear();
            let mut k = n;
            for _ in 0..5 {
                text.push_str(pieces[k % pieces.len()]);
                k /= pieces.len();
            }
            let full = classify_parsed(&text);
            assert_eq!(classify(&text), full, "{text}");
            // Whatever serde_json's own reading (last member wins) calls
            // an auth message is never data.
            if let Ok(serde_json::Value::Object(o)) = serde_json::from_str(&text) {
                if o.get("type").and_then(|t| t.as_str()) == Some("auth") {
                    assert_ne!(full, Data, "{text}");
                }
            }
            n += 1;
        }
        assert!(!candidate(r#"{"type":"x"}"#));
        assert!(!candidate(r#"{"type":"post","author":"kim"}"#));
        assert!(!candidate(r#"{"type":"post","text":"caf\u00e9 \\ \n"}"#));
        assert!(!candidate(r#"{"type":"\u0078"}"#));
        for letter in ["\\u0061", "\\u0075", "\\u0074", "\\u0068"] {
            assert!(candidate(&format!(r#"{{"type":"{letter}"}}"#)), "{letter}");
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        // Skipped values are walked without recursion; the members we read
        // stop at serde_json's depth limit. Neither overflows the stack.
        let open = "[".repeat(500_000);
        let close = "]".repeat(500_000);
        let skipped = format!("{{\"x\":{open}1{close},\"type\":\"auth\"}}");
        assert_eq!(classify(&skipped), Auth(None));
        let read = format!("{{\"token\":{open}1{close},\"type\":\"auth\"}}");
        assert_eq!(classify(&read), Malformed);
    }
}
