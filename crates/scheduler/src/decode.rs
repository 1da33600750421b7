//! Reading request JSON the way Marathon's Play JSON readers do: every type error is collected
//! with its path (`/cpus`, `/apps(0)/container/docker/image`) and Play's message key
//! (`error.expected.jsnumber`, ...), instead of stopping at the first one. Range and rule
//! violations found while reading go to a second list, reported as "Object is not valid".
//!
//! JSON `null` counts as absent everywhere, so a GET response (which carries `"cmd": null`
//! and the like) can be sent back unchanged.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Play's message keys.
pub const EXPECTED_NUMBER: &str = "error.expected.jsnumber";
pub const EXPECTED_STRING: &str = "error.expected.jsstring";
pub const EXPECTED_BOOLEAN: &str = "error.expected.jsboolean";
pub const EXPECTED_ARRAY: &str = "error.expected.jsarray";
pub const EXPECTED_OBJECT: &str = "error.expected.jsobject";
pub const EXPECTED_INT: &str = "error.expected.int";
pub const EXPECTED_LONG: &str = "error.expected.long";
pub const PATH_MISSING: &str = "error.path.missing";
pub const UNKNOWN_ENUM: &str = "error.unknown.enum.literal";
pub const MIN_LENGTH: &str = "error.minLength";

/// What reading found wrong: type errors (a 422 "Invalid JSON") and rule violations (a 422
/// "Object is not valid"), both as (path, message) in the order found.
#[derive(Debug, Default)]
pub struct Ctx {
    pub json: Vec<(String, String)>,
    pub violations: Vec<(String, String)>,
}

impl Ctx {
    pub fn type_error(&mut self, path: &str, key: &str) {
        self.json.push((display_path(path), key.to_string()));
    }

    pub fn violation(&mut self, path: &str, message: impl Into<String>) {
        self.violations.push((display_path(path), message.into()));
    }
}

/// The path as Marathon prints it: `/` for the document itself.
pub fn display_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        path.to_string()
    }
}

pub fn key_path(path: &str, key: &str) -> String {
    format!("{path}/{key}")
}

pub fn index_path(path: &str, index: usize) -> String {
    format!("{path}({index})")
}

/// A field, with `null` read as absent.
pub fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

pub fn as_object<'a>(v: &'a Value, path: &str, ctx: &mut Ctx) -> Option<&'a Map<String, Value>> {
    match v {
        Value::Object(map) => Some(map),
        _ => {
            ctx.type_error(path, EXPECTED_OBJECT);
            None
        }
    }
}

pub fn as_array<'a>(v: &'a Value, path: &str, ctx: &mut Ctx) -> Option<&'a [Value]> {
    match v {
        Value::Array(items) => Some(items),
        _ => {
            ctx.type_error(path, EXPECTED_ARRAY);
            None
        }
    }
}

pub fn as_string(v: &Value, path: &str, ctx: &mut Ctx) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        _ => {
            ctx.type_error(path, EXPECTED_STRING);
            None
        }
    }
}

pub fn as_f64(v: &Value, path: &str, ctx: &mut Ctx) -> Option<f64> {
    match v.as_f64() {
        Some(n) if v.is_number() => Some(n),
        _ => {
            ctx.type_error(path, EXPECTED_NUMBER);
            None
        }
    }
}

/// An integer that fits `[min, max]` of its Scala type (Int or Long); `key` is Play's error
/// for a number that is not such an integer.
fn as_integer(v: &Value, path: &str, ctx: &mut Ctx, min: i64, max: i64, key: &str) -> Option<i64> {
    let Value::Number(n) = v else {
        ctx.type_error(path, EXPECTED_NUMBER);
        return None;
    };
    let exact = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= -9.0e18 && *f <= 9.0e18)
            .map(|f| f as i64)
    });
    match exact {
        Some(i) if i >= min && i <= max => Some(i),
        _ => {
            ctx.type_error(path, key);
            None
        }
    }
}

pub fn as_i32(v: &Value, path: &str, ctx: &mut Ctx) -> Option<i64> {
    as_integer(
        v,
        path,
        ctx,
        i64::from(i32::MIN),
        i64::from(i32::MAX),
        EXPECTED_INT,
    )
}

pub fn as_i64(v: &Value, path: &str, ctx: &mut Ctx) -> Option<i64> {
    as_integer(v, path, ctx, i64::MIN, i64::MAX, EXPECTED_LONG)
}

pub fn as_bool(v: &Value, path: &str, ctx: &mut Ctx) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => {
            ctx.type_error(path, EXPECTED_BOOLEAN);
            None
        }
    }
}

/// Optional typed fields of an object.
pub struct Fields<'a> {
    pub obj: &'a Map<String, Value>,
    pub path: String,
}

impl<'a> Fields<'a> {
    pub fn new(obj: &'a Map<String, Value>, path: &str) -> Self {
        Fields {
            obj,
            path: path.to_string(),
        }
    }

    pub fn at(&self, key: &str) -> String {
        key_path(&self.path, key)
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        field(self.obj, key)
    }

    pub fn string(&self, key: &str, ctx: &mut Ctx) -> Option<String> {
        self.get(key).and_then(|v| as_string(v, &self.at(key), ctx))
    }

    /// A string that must be present.
    pub fn required_string(&self, key: &str, ctx: &mut Ctx) -> Option<String> {
        match self.get(key) {
            Some(v) => as_string(v, &self.at(key), ctx),
            None => {
                ctx.type_error(&self.at(key), PATH_MISSING);
                None
            }
        }
    }

    pub fn f64(&self, key: &str, ctx: &mut Ctx) -> Option<f64> {
        self.get(key).and_then(|v| as_f64(v, &self.at(key), ctx))
    }

    pub fn i32(&self, key: &str, ctx: &mut Ctx) -> Option<i64> {
        self.get(key).and_then(|v| as_i32(v, &self.at(key), ctx))
    }

    pub fn i64(&self, key: &str, ctx: &mut Ctx) -> Option<i64> {
        self.get(key).and_then(|v| as_i64(v, &self.at(key), ctx))
    }

    pub fn bool(&self, key: &str, ctx: &mut Ctx) -> Option<bool> {
        self.get(key).and_then(|v| as_bool(v, &self.at(key), ctx))
    }

    pub fn object(&self, key: &str, ctx: &mut Ctx) -> Option<&'a Map<String, Value>> {
        self.get(key).and_then(|v| as_object(v, &self.at(key), ctx))
    }

    pub fn array(&self, key: &str, ctx: &mut Ctx) -> Option<&'a [Value]> {
        self.get(key).and_then(|v| as_array(v, &self.at(key), ctx))
    }

    /// An array of strings (absent: `None`).
    pub fn strings(&self, key: &str, ctx: &mut Ctx) -> Option<Vec<String>> {
        let items = self.array(key, ctx)?;
        let path = self.at(key);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = as_string(item, &index_path(&path, i), ctx) {
                out.push(s);
            }
        }
        Some(out)
    }

    /// An object of string values (`env`, `labels`).
    pub fn string_map(&self, key: &str, ctx: &mut Ctx) -> Option<BTreeMap<String, String>> {
        let obj = self.object(key, ctx)?;
        let path = self.at(key);
        let mut out = BTreeMap::new();
        for (k, v) in obj {
            // null values are dropped, like absent ones
            if v.is_null() {
                continue;
            }
            if let Some(s) = as_string(v, &key_path(&path, k), ctx) {
                out.insert(k.clone(), s);
            }
        }
        Some(out)
    }

    /// An enum given as one of `allowed` (exact spelling).
    pub fn enumeration<T: Copy>(
        &self,
        key: &str,
        allowed: &[(&str, T)],
        ctx: &mut Ctx,
    ) -> Option<T> {
        let text = self.string(key, ctx)?;
        match allowed.iter().find(|(name, _)| *name == text) {
            Some((_, value)) => Some(*value),
            None => {
                ctx.type_error(&self.at(key), UNKNOWN_ENUM);
                None
            }
        }
    }
}

/// Accord's wording for numbers as Java prints doubles (`1.0`, `0.001`, `-3.0`).
pub fn java_double(x: f64) -> String {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e7 {
        format!("{x:.1}")
    } else {
        format!("{x:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_type_errors_with_paths() {
        let v = json!({"a": "1", "b": 1.5, "c": 3, "d": [1, "x"], "e": null, "f": 1e300});
        let obj = v.as_object().unwrap();
        let f = Fields::new(obj, "");
        let mut ctx = Ctx::default();
        assert_eq!(f.f64("a", &mut ctx), None);
        assert_eq!(f.i32("b", &mut ctx), None);
        assert_eq!(f.i32("c", &mut ctx), Some(3));
        assert_eq!(f.strings("d", &mut ctx), Some(vec!["x".to_string()]));
        assert_eq!(f.string("e", &mut ctx), None);
        assert_eq!(f.i32("f", &mut ctx), None);
        assert_eq!(f.required_string("g", &mut ctx), None);
        let got: Vec<(&str, &str)> = ctx
            .json
            .iter()
            .map(|(p, k)| (p.as_str(), k.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/a", EXPECTED_NUMBER),
                ("/b", EXPECTED_INT),
                ("/d(0)", EXPECTED_STRING),
                ("/f", EXPECTED_INT),
                ("/g", PATH_MISSING),
            ]
        );
    }

    #[test]
    fn java_doubles() {
        assert_eq!(java_double(0.0), "0.0");
        assert_eq!(java_double(-3.0), "-3.0");
        assert_eq!(java_double(0.001), "0.001");
        assert_eq!(java_double(1.2), "1.2");
    }
}
