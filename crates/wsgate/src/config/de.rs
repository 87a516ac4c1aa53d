//! Reading TOML values into the config types, with typed errors.
//!
//! [`ValueDe`] is a serde deserializer over a [`toml::Value`] whose error is
//! [`DeError`]: it knows the value it holds and the type a key asks for, so
//! a problem is reported as what the operator wrote against what the key
//! takes ("expected a whole number ≥ 0, got \"many\""), an unknown key or
//! value with the nearest known one, and nothing depends on the wording of
//! another crate's messages. The custom deserializers for durations,
//! addresses and the like are here too.

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Unexpected, Visitor};
use std::fmt;
use toml::Value;

/// What a key takes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expect {
    Bool,
    /// An unsigned integer type; `max` is its largest value.
    WholeNumber {
        max: u64,
    },
    Integer,
    Text,
    List,
    Table,
    /// A custom deserializer's own description (durations, addresses).
    Described(String),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Bool => f.write_str("true or false"),
            Expect::WholeNumber { .. } => f.write_str("a whole number ≥ 0"),
            Expect::Integer => f.write_str("a whole number"),
            Expect::Text => f.write_str("a string"),
            Expect::List => f.write_str("a list"),
            Expect::Table => f.write_str("a table"),
            Expect::Described(d) => f.write_str(d),
        }
    }
}

/// What the file holds instead.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Found {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    List,
    Table,
    Other(String),
}

impl Found {
    fn of(v: &Value) -> Found {
        match v {
            Value::String(s) => Found::Text(s.clone()),
            Value::Integer(n) => Found::Integer(*n),
            Value::Float(x) => Found::Float(*x),
            Value::Boolean(b) => Found::Bool(*b),
            Value::Datetime(d) => Found::Datetime(d.to_string()),
            Value::Array(_) => Found::List,
            Value::Table(_) => Found::Table,
        }
    }

    fn unexpected(u: Unexpected<'_>) -> Found {
        match u {
            Unexpected::Bool(b) => Found::Bool(b),
            Unexpected::Signed(n) => Found::Integer(n),
            Unexpected::Unsigned(n) => {
                i64::try_from(n).map_or(Found::Other(n.to_string()), Found::Integer)
            }
            Unexpected::Float(x) => Found::Float(x),
            Unexpected::Str(s) => Found::Text(s.to_owned()),
            Unexpected::Seq => Found::List,
            Unexpected::Map => Found::Table,
            other => Found::Other(other.to_string()),
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Text(s) => write!(f, "{s:?}"),
            Found::Integer(n) => write!(f, "{n}"),
            Found::Float(x) => write!(f, "{x}"),
            Found::Bool(b) => write!(f, "{b}"),
            // TOML reads an unquoted date as a date-time, not as text.
            Found::Datetime(d) => write!(f, "the date-time {d} (quote it to make it a string)"),
            Found::List => f.write_str("a list"),
            Found::Table => f.write_str("a table"),
            Found::Other(s) => f.write_str(s),
        }
    }
}

/// Why a section could not be read.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum DeError {
    UnknownKey {
        key: String,
        known: &'static [&'static str],
    },
    MissingKey(&'static str),
    WrongType {
        expected: Expect,
        found: Found,
    },
    UnknownValue {
        value: String,
        known: &'static [&'static str],
    },
    /// A custom deserializer's message ("invalid duration ...").
    Invalid(String),
}

impl std::error::Error for DeError {}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::UnknownKey { key, known } => match did_you_mean(key, known) {
                Some(near) => write!(f, "unknown key; did you mean {near:?}?"),
                None => write!(f, "unknown key; expected one of {}", known.join(", ")),
            },
            DeError::MissingKey(_) => f.write_str("required"),
            DeError::WrongType { expected, found } => match (expected, found) {
                (Expect::WholeNumber { max }, Found::Integer(n)) if *n > 0 => {
                    write!(f, "expected a whole number from 0 to {max}, got {n}")
                }
                _ => write!(f, "expected {expected}, got {found}"),
            },
            DeError::UnknownValue { value, known } => {
                write!(f, "unknown value {value:?}; ")?;
                match did_you_mean(value, known) {
                    Some(near) => write!(f, "did you mean {near:?}?"),
                    None => write!(f, "expected one of {}", quoted(known)),
                }
            }
            DeError::Invalid(m) => f.write_str(m),
        }
    }
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Invalid(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::WrongType {
            expected: Expect::Described(exp.to_string()),
            found: Found::unexpected(unexp),
        }
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::invalid_type(unexp, exp)
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::UnknownValue {
            value: variant.to_owned(),
            known: expected,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::UnknownKey {
            key: field.to_owned(),
            known: expected,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::MissingKey(field)
    }
}

/// `"a", "b" or "c"`.
pub(super) fn quoted(words: &[&str]) -> String {
    let q: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    match q.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => q.join(""),
    }
}

/// The known word `word` is most likely a typo of, if any is close.
pub(super) fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&word, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// A section that did not deserialize: where and why.
pub(super) struct ReadError {
    /// The dotted key of the value at fault (`auth.keys[1].secret`).
    pub key: String,
    pub error: DeError,
}

/// Deserializes `value`, the contents of `[section]`.
pub(super) fn read<T: DeserializeOwned>(section: &str, value: Value) -> Result<T, ReadError> {
    serde_path_to_error::deserialize(ValueDe(value)).map_err(|e| {
        let mut key = section.to_owned();
        for seg in e.path().iter() {
            match seg {
                serde_path_to_error::Segment::Seq { index } => key.push_str(&format!("[{index}]")),
                serde_path_to_error::Segment::Map { key: k } => {
                    key.push('.');
                    key.push_str(k);
                }
                _ => {}
            }
        }
        let error = e.into_inner();
        // The key at fault is the unknown or missing one, below the path
        // (which may or may not end with it already).
        let below = match &error {
            DeError::UnknownKey { key, .. } => Some(key.as_str()),
            DeError::MissingKey(k) => Some(*k),
            _ => None,
        };
        if let Some(k) = below {
            if !key.ends_with(&format!(".{k}")) && key != k {
                key.push('.');
                key.push_str(k);
            }
        }
        ReadError { key, error }
    })
}

/// A TOML value as a serde deserializer with [`DeError`]s.
pub(super) struct ValueDe(pub Value);

impl ValueDe {
    fn wrong<T>(&self, expected: Expect) -> Result<T, DeError> {
        Err(DeError::WrongType {
            expected,
            found: Found::of(&self.0),
        })
    }
}

impl<'de> IntoDeserializer<'de, DeError> for ValueDe {
    type Deserializer = ValueDe;

    fn into_deserializer(self) -> ValueDe {
        self
    }
}

/// Integer requests: the value must fit the type asked for.
macro_rules! integers {
    ($($method:ident $visit:ident $t:ty => $expect:expr;)*) => {$(
        fn $method<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            match &self.0 {
                Value::Integer(n) => match <$t>::try_from(*n) {
                    Ok(x) => v.$visit(x),
                    Err(_) => self.wrong($expect),
                },
                _ => self.wrong($expect),
            }
        }
    )*};
}

impl<'de> Deserializer<'de> for ValueDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => v.visit_string(s),
            Value::Integer(n) => v.visit_i64(n),
            Value::Float(x) => v.visit_f64(x),
            Value::Boolean(b) => v.visit_bool(b),
            Value::Datetime(d) => v.visit_string(d.to_string()),
            Value::Array(items) => visit_list(items, v),
            Value::Table(t) => visit_table(t, v),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Boolean(b) => v.visit_bool(b),
            _ => self.wrong(Expect::Bool),
        }
    }

    integers! {
        deserialize_u8 visit_u8 u8 => Expect::WholeNumber { max: u8::MAX.into() };
        deserialize_u16 visit_u16 u16 => Expect::WholeNumber { max: u16::MAX.into() };
        deserialize_u32 visit_u32 u32 => Expect::WholeNumber { max: u32::MAX.into() };
        deserialize_u64 visit_u64 u64 => Expect::WholeNumber { max: i64::MAX as u64 };
        deserialize_i8 visit_i8 i8 => Expect::Integer;
        deserialize_i16 visit_i16 i16 => Expect::Integer;
        deserialize_i32 visit_i32 i32 => Expect::Integer;
        deserialize_i64 visit_i64 i64 => Expect::Integer;
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_string(v)
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => v.visit_string(s),
            _ => self.wrong(Expect::Text),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // TOML has no null: a key that is present has a value.
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Array(items) => visit_list(items, v),
            _ => self.wrong(Expect::List),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Table(t) => visit_table(t, v),
            _ => self.wrong(Expect::Table),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        // Config enums are plain words (`kind = "hub"`).
        match self.0 {
            Value::String(s) => v.visit_enum(s.into_deserializer()),
            _ => self.wrong(Expect::Text),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        f32 f64 char bytes byte_buf unit unit_struct tuple tuple_struct identifier i128 u128
    }
}

fn visit_list<'de, V: Visitor<'de>>(items: Vec<Value>, v: V) -> Result<V::Value, DeError> {
    let mut seq = SeqDeserializer::new(items.into_iter().map(ValueDe));
    let out = v.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(out)
}

fn visit_table<'de, V: Visitor<'de>>(t: toml::Table, v: V) -> Result<V::Value, DeError> {
    let mut map = MapDeserializer::new(t.into_iter().map(|(k, v)| (k, ValueDe(v))));
    let out = v.visit_map(&mut map)?;
    map.end()?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Values with a syntax of their own: one clear message per bad value.

/// `"500ms"`, `"30s"`, `"5m"`: read with `deserialize_with`, shown the same
/// way by `wsgate check` (`serialize_with`); `with = "de::duration"`.
pub(super) mod duration {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Serializer;
    use std::fmt;
    use std::time::Duration;

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"500ms\", \"30s\", \"5m\" or \"1h\"")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            humantime::parse_duration(s.trim()).map_err(|e| {
                E::custom(format!(
                    "invalid duration {s:?} ({e}); use e.g. \"500ms\", \"30s\", \"5m\", \"1h\""
                ))
            })
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

struct AddrVisitor;

impl Visitor<'_> for AddrVisitor {
    type Value = std::net::SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\"")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        s.trim().parse().map_err(|_| {
            E::custom(format!(
                "invalid address {s:?}; expected IP:PORT such as \"127.0.0.1:8080\", \
                 \"0.0.0.0:8080\" or \"[::1]:8080\" (host names are not resolved)"
            ))
        })
    }
}

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::net::SocketAddr, D::Error> {
    d.deserialize_any(AddrVisitor)
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `"api"` or `["api", "ws"]`.
pub(super) fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match <OneOrMany as serde::Deserialize>::deserialize(d) {
        Ok(OneOrMany::One(s)) => Ok(vec![s]),
        Ok(OneOrMany::Many(v)) => Ok(v),
        Err(_) => Err(de::Error::custom("expected a string or a list of strings")),
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Bool(bool),
    Int(i64),
}

/// Claims compare as text, so `value = true` and `value = 42` are
/// stringified (`"true"`, `"42"`).
pub(super) fn grant_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match <Scalar as serde::Deserialize>::deserialize(d) {
        Ok(Scalar::Str(s)) => Ok(Some(s)),
        Ok(Scalar::Bool(b)) => Ok(Some(b.to_string())),
        Ok(Scalar::Int(i)) => Ok(Some(i.to_string())),
        Err(_) => Err(de::Error::custom("expected a string, boolean or integer")),
    }
}
