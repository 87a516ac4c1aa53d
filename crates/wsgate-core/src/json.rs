//! JSON objects with unique member names, for JOSE headers and claim sets.
//!
//! serde_json keeps the last of two equal keys. A token whose header or
//! claims say `"sub":"alice","sub":"admin"` then means one thing to us and
//! maybe another to the IdP, a WAF or a log pipeline that keeps the first.
//! RFC 7515 4 and RFC 7519 4 allow refusing such input; we do.

use serde::de::{Deserializer, Error, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Parses `bytes` as a JSON object whose top-level keys are all distinct.
pub fn unique_object(bytes: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    serde_json::from_slice::<UniqueObject>(bytes).map(|o| o.0)
}

struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<UniqueObject, A::Error> {
                let mut out = Map::new();
                while let Some(k) = m.next_key::<String>()? {
                    if out.contains_key(&k) {
                        return Err(A::Error::custom("duplicate member name"));
                    }
                    let v: Value = m.next_value()?;
                    out.insert(k, v);
                }
                Ok(UniqueObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused() {
        assert!(unique_object(br#"{"a":1,"b":{"a":1}}"#).is_ok());
        assert!(unique_object(br#"{"sub":"alice","sub":"admin"}"#).is_err());
        // Escapes spell the same name.
        assert!(unique_object(br#"{"sub":"a","s\u0075b":"b"}"#).is_err());
        assert!(unique_object(br#"[1]"#).is_err());
        assert!(unique_object(br#"{"a":1} x"#).is_err());
    }
}
