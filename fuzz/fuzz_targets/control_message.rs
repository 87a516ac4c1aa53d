//! In-band control messages (wsgate-core control.rs): which client texts
//! the gateway consumes. Whatever a parser reads as an auth message must
//! never be classified as data (it would be forwarded, token and all).
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wsgate_core::control::{self, Classified};

/// serde_json's own reading of a value: last of repeated members wins.
fn says_auth(v: &Value) -> bool {
    v.as_object()
        .and_then(|o| o.get("type"))
        .and_then(Value::as_str)
        == Some("auth")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = control::classify(text);
    // The cheap test never skips a text that the full parse would stop.
    assert_eq!(c, control::classify_parsed(text));
    if c == Classified::Data {
        // Neither the whole text nor its first value (a streaming decoder
        // that ignores what follows) reads as an auth message.
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            assert!(!says_auth(&v), "{text:?}");
        }
        let mut first = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        if let Some(Ok(v)) = first.next() {
            assert!(!says_auth(&v), "{text:?}");
        }
    }
    if let Classified::Auth(token) = &c {
        // A well-formed auth message (serde_json's Value refuses a little
        // more, numbers like 1e400): the token is the one every parser reads.
        if let Ok(v) = serde_json::from_str::<Value>(text) {
            assert!(says_auth(&v), "{text:?}");
            assert_eq!(token.as_deref(), v.get("token").and_then(Value::as_str));
        }
    }
});
