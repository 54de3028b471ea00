//! An event's `data`: a JSON object kept as the text the client sent.
//!
//! Ingestion only checks and stores `data`; only the fields a pipeline
//! names (`data.temperature`) are ever read. Building a map of every field
//! on parse, writing it back out for the log and dropping it again was a
//! quarter of the node's time at 400k events/s, most of it in the
//! allocator. So `data` stays text — validated once as JSON and as an
//! object — and [`Payload::lookup`] reads one field by scanning it without
//! allocating.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A JSON object, as text.
#[derive(Clone, Serialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

/// Why text is not a payload.
#[derive(Debug)]
pub enum PayloadError {
    /// Not JSON.
    Json(serde_json::Error),
    /// JSON, but not an object.
    NotObject,
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "not JSON: {e}"),
            Self::NotObject => f.write_str("not a JSON object"),
        }
    }
}

impl std::error::Error for PayloadError {}

fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

impl Payload {
    /// Checks `text` (JSON, an object) and keeps it.
    pub fn from_text(text: String) -> Result<Self, PayloadError> {
        let raw = RawValue::from_string(text).map_err(PayloadError::Json)?;
        if !is_object(&raw) {
            return Err(PayloadError::NotObject);
        }
        Ok(Self(raw))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The value at `path` (object keys joined by `.`: `a.b`), borrowed
    /// from the text; `None` when a step is missing or not an object.
    pub fn lookup(&self, path: &str) -> Option<&RawValue> {
        let mut at: &RawValue = &self.0;
        for key in path.split('.') {
            at = member(at, key)?;
        }
        Some(at)
    }
}

impl From<Map<String, Value>> for Payload {
    fn from(map: Map<String, Value>) -> Self {
        let text = Value::Object(map).to_string();
        Self(RawValue::from_string(text).expect("a serialized JSON map is valid JSON"))
    }
}

/// By hand: the text is any JSON object, which a derive cannot say of a
/// `RawValue`.
impl utoipa::PartialSchema for Payload {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
            ))
            .description(Some("Any JSON object."))
            .into()
    }
}

impl utoipa::ToSchema for Payload {}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if !is_object(&raw) {
            return Err(de::Error::invalid_type(
                de::Unexpected::Other(raw.get()),
                &"a JSON object",
            ));
        }
        Ok(Self(raw))
    }
}

/// The member `key` of `object` (the last one, if repeated, as a parsed
/// map would keep), borrowed.
fn member<'a>(object: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    if !is_object(object) {
        return None;
    }
    let mut scanner = serde_json::Deserializer::from_str(object.get());
    scanner.deserialize_map(FindMember(key)).ok().flatten()
}

/// Visits an object, keeping the value of one key and skipping the rest.
struct FindMember<'k>(&'k str);

impl<'de> Visitor<'de> for FindMember<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(hit) = map.next_key_seed(KeyIs(self.0))? {
            if hit {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A key, compared with the one wanted without being copied.
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(p: &Payload) -> Value {
        serde_json::from_str(p.as_str()).expect("JSON")
    }

    fn payload(text: &str) -> Payload {
        Payload::from_text(text.to_owned()).expect("a payload")
    }

    #[test]
    fn lookup_reads_one_member_at_any_depth() {
        let p = payload(r#"{"a": 1, "b": {"c": "x\"y", "d": [1, {"e": 2}]}, "f\u0067": null}"#);
        assert_eq!(p.lookup("a").map(RawValue::get), Some("1"));
        assert_eq!(p.lookup("b.c").map(RawValue::get), Some(r#""x\"y""#));
        assert_eq!(p.lookup("b.d").map(RawValue::get), Some(r#"[1, {"e": 2}]"#));
        // An escaped key matches its unescaped name.
        assert_eq!(p.lookup("fg").map(RawValue::get), Some("null"));
        assert!(p.lookup("b.d.e").is_none(), "arrays have no keys");
        assert!(p.lookup("a.b").is_none(), "numbers have no keys");
        assert!(p.lookup("z").is_none());
        assert!(p.lookup("").is_none());
    }

    #[test]
    fn a_repeated_key_reads_as_a_map_would_keep_it() {
        let p = payload(r#"{"k": 1, "k": 2}"#);
        let map: Map<String, Value> = serde_json::from_str(p.as_str()).expect("a map");
        assert_eq!(p.lookup("k").map(RawValue::get), Some("2"));
        assert_eq!(map["k"], json!(2));
    }

    #[test]
    fn only_json_objects_are_payloads() {
        assert!(matches!(
            Payload::from_text("[1]".into()),
            Err(PayloadError::NotObject)
        ));
        assert!(matches!(
            Payload::from_text("{".into()),
            Err(PayloadError::Json(_))
        ));
        let err = serde_json::from_str::<Payload>("\"text\"").expect_err("a string");
        assert!(err.to_string().contains("a JSON object"), "{err}");
        let p: Payload = serde_json::from_str(r#" {"a": [1]} "#).expect("an object");
        assert_eq!(p.as_str(), r#"{"a": [1]}"#);
        assert_eq!(value(&p), json!({"a": [1]}));
    }

    #[test]
    fn a_map_becomes_its_json_text() {
        let map = json!({"v": 1, "s": "x"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let p = Payload::from(map.clone());
        assert_eq!(value(&p), Value::Object(map));
        assert_eq!(serde_json::to_string(&p).ok(), Some(p.as_str().to_owned()));
    }
}
