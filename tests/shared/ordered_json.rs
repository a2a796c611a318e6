//! A JSON object read as its members in document order, duplicates kept. serde_json's own
//! `Map` (built without `preserve_order`) sorts the keys and keeps one value per key, and the
//! properties that use this are about Go's field order and about repeated keys.
//!
//! Shared with the fuzz targets: `tests/properties.rs` and `fuzz/fuzz_targets/{payload_encoding,
//! request_decision}.rs` each include this file with `#[path = "…"] mod ordered_json;` (the
//! fuzz crate cannot use a test crate, and the library does not export test code). It needs
//! serde and serde_json only.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// A JSON object's members in document order, duplicates kept.
pub struct Ordered(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = map.next_entry::<String, Value>()? {
                    out.push(kv);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}
