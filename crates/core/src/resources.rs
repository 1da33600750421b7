//! Mesos resources: named scalars, ranges and sets, optionally reserved for a role.
//!
//! The text form is Mesos': `cpus:4;mem:1024;disk:100;ports:[31000-32000,40000-40010];zones:{a,b}`,
//! with a role in parentheses (`cpus(web):2`; no role means `*`). Scalars are fixed point with
//! three decimals, as in Mesos, so that sums never drift. [`Resources`] is a normalised bag:
//! zero scalars and empty ranges or sets are dropped, ranges are sorted and merged, so equal bags
//! compare equal and print the same.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The role of unreserved resources.
pub const ANY_ROLE: &str = "*";

/// A non-negative quantity with three decimals (`0.25` is stored as 250 thousandths).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scalar(u64);

impl Scalar {
    pub const ZERO: Scalar = Scalar(0);

    pub fn from_thousandths(thousandths: u64) -> Self {
        Scalar(thousandths)
    }

    /// Rounds to the nearest thousandth; `None` for negative, non-finite or huge values.
    pub fn from_f64(value: f64) -> Option<Self> {
        let scaled = (value * 1000.0).round();
        (value.is_finite() && scaled >= 0.0 && scaled < u64::MAX as f64 / 2.0)
            .then_some(Scalar(scaled as u64))
    }

    pub fn thousandths(self) -> u64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn checked_add(self, other: Scalar) -> Option<Scalar> {
        self.0.checked_add(other.0).map(Scalar)
    }

    pub fn checked_sub(self, other: Scalar) -> Option<Scalar> {
        self.0.checked_sub(other.0).map(Scalar)
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, fraction) = (self.0 / 1000, self.0 % 1000);
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:03}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Sorted, disjoint, non-adjacent inclusive ranges of `u64` (ports, typically).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new(ranges: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut all: Vec<(u64, u64)> = ranges
            .into_iter()
            .map(|(a, b)| (a.min(b), a.max(b)))
            .collect();
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (begin, end) in all {
            match merged.last_mut() {
                Some(last) if begin <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((begin, end)),
            }
        }
        Ranges(merged)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().copied()
    }

    /// How many values the ranges hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a + 1).sum()
    }

    pub fn contains(&self, other: &Ranges) -> bool {
        other
            .0
            .iter()
            .all(|&(begin, end)| self.0.iter().any(|&(a, b)| a <= begin && end <= b))
    }

    pub fn union(&self, other: &Ranges) -> Ranges {
        Ranges::new(self.iter().chain(other.iter()))
    }

    /// The values of `self` that are not in `other`.
    pub fn difference(&self, other: &Ranges) -> Ranges {
        let mut out = Vec::new();
        for (mut begin, end) in self.iter() {
            for (cut_begin, cut_end) in other.iter() {
                if cut_end < begin || cut_begin > end {
                    continue;
                }
                if cut_begin > begin {
                    out.push((begin, cut_begin - 1));
                }
                match cut_end.checked_add(1) {
                    Some(next) if cut_end < end => begin = next,
                    _ => {
                        begin = u64::MAX;
                        break;
                    }
                }
            }
            if begin != u64::MAX && begin <= end {
                out.push((begin, end));
            }
        }
        Ranges::new(out)
    }
}

/// One resource's value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Scalar(Scalar),
    Ranges(Ranges),
    Set(BTreeSet<String>),
}

impl Value {
    fn kind(&self) -> Kind {
        match self {
            Value::Scalar(_) => Kind::Scalar,
            Value::Ranges(_) => Kind::Ranges,
            Value::Set(_) => Kind::Set,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Value::Scalar(s) => *s == Scalar::ZERO,
            Value::Ranges(r) => r.is_empty(),
            Value::Set(s) => s.is_empty(),
        }
    }

    fn contains(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => a >= b,
            (Value::Ranges(a), Value::Ranges(b)) => a.contains(b),
            (Value::Set(a), Value::Set(b)) => b.is_subset(a),
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Scalar(s) => write!(f, "{s}"),
            Value::Ranges(r) => {
                let items: Vec<String> = r.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                write!(f, "[{}]", items.join(","))
            }
            Value::Set(s) => {
                let items: Vec<&str> = s.iter().map(String::as_str).collect();
                write!(f, "{{{}}}", items.join(","))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Scalar,
    Ranges,
    Set,
}

/// Where a resource sits in the bag: its name, its role, and its kind (a name used with two
/// kinds is two resources, never a silent merge).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    // Shared strings: bags are cloned and merged constantly (the allocator does it per agent per
    // cycle), and copying a key must not allocate.
    name: Arc<str>,
    role: Arc<str>,
    kind: Kind,
}

/// A normalised bag of resources.
///
/// Shared on clone and copied on the first change (the allocator clones an agent's bag into an
/// offer, the agent's allocation and the framework's holdings every cycle: a clone costs a count).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resources {
    entries: Arc<BTreeMap<Key, Value>>,
}

impl Resources {
    pub fn new() -> Self {
        Resources::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds one resource (no-op for an empty value).
    pub fn push(&mut self, name: &str, role: &str, value: Value) {
        if value.is_empty() {
            return;
        }
        let key = Key {
            name: name.into(),
            role: role.into(),
            kind: value.kind(),
        };
        self.merge(key, &value);
    }

    /// Adds `value` under `key` (whose kind is the value's).
    fn merge(&mut self, key: Key, value: &Value) {
        let entries = Arc::make_mut(&mut self.entries);
        match (entries.get_mut(&key), value) {
            (None, value) => {
                entries.insert(key, value.clone());
            }
            (Some(Value::Scalar(a)), Value::Scalar(b)) => {
                *a = a.checked_add(*b).unwrap_or(Scalar(u64::MAX))
            }
            (Some(Value::Ranges(a)), Value::Ranges(b)) => *a = a.union(b),
            (Some(Value::Set(a)), Value::Set(b)) => a.extend(b.iter().cloned()),
            (Some(held), value) => *held = value.clone(), // unreachable: the key includes the kind
        }
    }

    /// `(name, role, value)` in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Value)> {
        self.entries.iter().map(|(k, v)| (&*k.name, &*k.role, v))
    }

    /// The total of scalar `name` over all roles.
    pub fn scalar(&self, name: &str) -> Scalar {
        let total = self
            .iter()
            .filter(|(n, _, _)| *n == name)
            .filter_map(|(_, _, v)| match v {
                Value::Scalar(s) => Some(s.0),
                _ => None,
            })
            .fold(0u64, u64::saturating_add);
        Scalar(total)
    }

    /// The union of ranges `name` over all roles.
    pub fn ranges(&self, name: &str) -> Ranges {
        let mut all = Ranges::default();
        for (n, _, v) in self.iter() {
            if let (true, Value::Ranges(r)) = (n == name, v) {
                all = all.union(r);
            }
        }
        all
    }

    /// The resources reserved for `role` (or unreserved, for `*`).
    pub fn for_role(&self, role: &str) -> Resources {
        let entries = self.entries.iter().filter(|(k, _)| &*k.role == role);
        Resources {
            entries: Arc::new(entries.map(|(k, v)| (k.clone(), v.clone())).collect()),
        }
    }

    pub fn add(&mut self, other: &Resources) {
        if self.entries.is_empty() && other.entries.values().all(|v| !v.is_empty()) {
            // Nothing to merge with: a copy (the allocator's common case, one clone of the tree).
            self.entries = other.entries.clone();
            return;
        }
        for (key, value) in other.entries.iter() {
            if !value.is_empty() {
                self.merge(key.clone(), value);
            }
        }
    }

    /// True when every resource of `other` is held here (same name, role and kind) in at least
    /// that quantity.
    pub fn contains(&self, other: &Resources) -> bool {
        other.entries.iter().all(|(key, value)| {
            self.entries
                .get(key)
                .is_some_and(|held| held.contains(value))
        })
    }

    /// `self - other`, or `None` when `other` is not contained in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if Arc::ptr_eq(&self.entries, &other.entries) {
            return Some(Resources::new());
        }
        if !self.contains(other) {
            return None;
        }
        if other.is_empty() {
            return Some(self.clone());
        }
        let mut out = self.clone();
        let entries = Arc::make_mut(&mut out.entries);
        for (key, value) in other.entries.iter() {
            let held = entries.get_mut(key)?;
            match (held, value) {
                (Value::Scalar(a), Value::Scalar(b)) => *a = a.checked_sub(*b)?,
                (Value::Ranges(a), Value::Ranges(b)) => *a = a.difference(b),
                (Value::Set(a), Value::Set(b)) => a.retain(|item| !b.contains(item)),
                _ => return None,
            }
            if entries.get(key).is_some_and(Value::is_empty) {
                entries.remove(key);
            }
        }
        Some(out)
    }
}

impl std::ops::Add<&Resources> for Resources {
    type Output = Resources;

    fn add(mut self, other: &Resources) -> Resources {
        Resources::add(&mut self, other);
        self
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, role, value)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            f.write_str(name)?;
            if role != ANY_ROLE {
                write!(f, "({role})")?;
            }
            write!(f, ":{value}")?;
        }
        Ok(())
    }
}

/// A resource text that does not parse: where (0-based byte offset) and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("resources {text:?}, column {column}: expected {expected}, found {found}")]
pub struct ParseError {
    pub text: String,
    /// 1-based column of the offending character.
    pub column: usize,
    pub expected: String,
    pub found: String,
}

impl FromStr for Resources {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        Parser { text, at: 0 }.resources()
    }
}

impl serde::Serialize for Resources {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Resources {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn error(&self, expected: &str) -> ParseError {
        let found = match self.rest().chars().next() {
            Some(c) => format!("`{c}`"),
            None => "the end".to_string(),
        };
        ParseError {
            text: self.text.to_string(),
            column: self.text[..self.at].chars().count() + 1,
            expected: expected.to_string(),
            found,
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_spaces(&mut self) {
        let trimmed = self.rest().trim_start();
        self.at = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char, expected: &str) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn word(&mut self, what: &str) -> Result<&str, ParseError> {
        self.skip_spaces();
        let length = self
            .rest()
            .find(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '*')))
            .unwrap_or(self.rest().len());
        if length == 0 {
            return Err(self.error(what));
        }
        let start = self.at;
        self.at += length;
        Ok(&self.text[start..self.at])
    }

    fn number(&mut self) -> Result<u64, ParseError> {
        self.skip_spaces();
        let length = self
            .rest()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(self.rest().len());
        let value = self.rest()[..length]
            .parse::<u64>()
            .map_err(|_| self.error("a whole number"))?;
        self.at += length;
        Ok(value)
    }

    fn scalar(&mut self) -> Result<Scalar, ParseError> {
        self.skip_spaces();
        let start = self.at;
        let whole = self.number()?;
        let mut thousandths = 0u64;
        if self.rest().starts_with('.') {
            self.at += 1;
            let digits: String = self
                .rest()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if digits.is_empty() {
                return Err(self.error("digits after the decimal point"));
            }
            self.at += digits.len();
            // Round to three decimals, as Mesos does.
            let mut padded: Vec<u64> = digits
                .bytes()
                .map(|b| u64::from(b - b'0'))
                .chain([0, 0, 0])
                .collect();
            padded.truncate(digits.len().max(3) + 1);
            thousandths = padded[0] * 100 + padded[1] * 10 + padded[2];
            if padded.get(3).is_some_and(|d| *d >= 5) {
                thousandths += 1;
            }
        }
        whole
            .checked_mul(1000)
            .and_then(|w| w.checked_add(thousandths))
            .map(Scalar)
            .ok_or_else(|| {
                Parser {
                    text: self.text,
                    at: start,
                }
                .error("a smaller number")
            })
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        if self.eat('[') {
            let mut ranges = Vec::new();
            loop {
                let begin = self.number()?;
                let end = if self.eat('-') { self.number()? } else { begin };
                if end < begin {
                    return Err(self.error("a range whose end is not below its beginning"));
                }
                ranges.push((begin, end));
                if self.eat(']') {
                    return Ok(Value::Ranges(Ranges::new(ranges)));
                }
                self.expect(',', "`,` or `]` in a range list")?;
            }
        }
        if self.eat('{') {
            let mut items = BTreeSet::new();
            if self.eat('}') {
                return Ok(Value::Set(items));
            }
            loop {
                items.insert(self.word("a set item")?.to_string());
                if self.eat('}') {
                    return Ok(Value::Set(items));
                }
                self.expect(',', "`,` or `}` in a set")?;
            }
        }
        self.skip_spaces();
        if self.rest().starts_with('-') {
            return Err(self.error("a non-negative number"));
        }
        if !self.rest().starts_with(|c: char| c.is_ascii_digit()) {
            return Err(self.error("a number, `[` ranges or `{` a set"));
        }
        Ok(Value::Scalar(self.scalar()?))
    }

    fn resources(mut self) -> Result<Resources, ParseError> {
        let mut out = Resources::new();
        let mut kinds: BTreeMap<String, Kind> = BTreeMap::new();
        loop {
            self.skip_spaces();
            if self.rest().is_empty() {
                return Ok(out);
            }
            if self.eat(';') {
                continue;
            }
            let name_at = self.at;
            let name = self.word("a resource name")?.to_string();
            let role = if self.eat('(') {
                let role = self.word("a role name")?.to_string();
                self.expect(')', "`)` after the role")?;
                role
            } else {
                ANY_ROLE.to_string()
            };
            self.expect(':', "`:` after the resource name")?;
            let value = self.value()?;
            if let Some(kind) = kinds.insert(name.clone(), value.kind()) {
                if kind != value.kind() {
                    let at_name = Parser {
                        text: self.text,
                        at: name_at,
                    };
                    return Err(at_name.error(&format!("`{name}` to be a {kind:?} as before")));
                }
            }
            out.push(&name, &role, value);
            self.skip_spaces();
            if !self.rest().is_empty() {
                self.expect(';', "`;` between resources")?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(text: &str) -> Resources {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn check_error(text: &str, column: usize, expected: &str) {
        let err = text.parse::<Resources>().unwrap_err();
        assert_eq!(
            (err.column, err.expected.as_str()),
            (column, expected),
            "{err}"
        );
    }

    #[test]
    fn parses_and_prints_the_mesos_text_form() {
        let text = "cpus:4;mem:1024;disk:100;ports:[31000-32000,40000-40010];zones:{a,b}";
        let parsed = r(text);
        assert_eq!(parsed.scalar("cpus"), Scalar::from_thousandths(4000));
        assert_eq!(parsed.ranges("ports").count(), 1001 + 11);
        assert_eq!(
            parsed.to_string(),
            "cpus:4;disk:100;mem:1024;ports:[31000-32000,40000-40010];zones:{a,b}"
        );
        assert_eq!(r(&parsed.to_string()), parsed);
    }

    #[test]
    fn roles_and_fractions() {
        let parsed = r("cpus(web):2.5; cpus:0.25 ;mem(web):1.0005");
        assert_eq!(parsed.scalar("cpus").to_string(), "2.75");
        assert_eq!(
            parsed.for_role("web").to_string(),
            "cpus(web):2.5;mem(web):1.001"
        );
        assert_eq!(parsed.for_role("*").to_string(), "cpus:0.25");
    }

    #[test]
    fn normalises_zero_and_adjacent_ranges() {
        assert_eq!(
            r("cpus:0;ports:[1-2,3-5,10-10]").to_string(),
            "ports:[1-5,10-10]"
        );
        assert!(r("").is_empty());
    }

    #[test]
    fn errors_say_where_and_what() {
        check_error("cpus:four", 6, "a number, `[` ranges or `{` a set");
        check_error("cpus 4", 6, "`:` after the resource name");
        check_error("cpus:-1", 6, "a non-negative number");
        check_error(
            "ports:[5-3]",
            11,
            "a range whose end is not below its beginning",
        );
        check_error("ports:[1-3", 11, "`,` or `]` in a range list");
        check_error("cpus(web:1", 9, "`)` after the role");
        check_error("cpus:1;cpus:[1-2]", 8, "`cpus` to be a Scalar as before");
        let err = "mem:1 x".parse::<Resources>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "resources \"mem:1 x\", column 7: expected `;` between resources, found `x`"
        );
    }

    #[test]
    fn subtraction_of_ranges_and_sets() {
        let total = r("ports:[31000-32000];zones:{a,b}");
        let used = r("ports:[31000-31000,31500-31600];zones:{a}");
        let left = total.checked_sub(&used).unwrap();
        assert_eq!(
            left.to_string(),
            "ports:[31001-31499,31601-32000];zones:{b}"
        );
        assert_eq!(left.checked_sub(&used), None);
    }

    /// Bags as the text form allows them: each name with one kind (cpus, mem: scalars; ports:
    /// ranges; zones: a set), any role.
    fn resources() -> impl Strategy<Value = Resources> {
        let role = prop::sample::select(vec!["*", "web", "batch"]);
        let item = prop_oneof![
            (prop::sample::select(vec!["cpus", "mem"]), 0u64..100_000)
                .prop_map(|(n, t)| (n, Value::Scalar(Scalar(t)))),
            prop::collection::vec((0u64..200, 0u64..20), 0..4).prop_map(|v| {
                (
                    "ports",
                    Value::Ranges(Ranges::new(v.into_iter().map(|(a, l)| (a, a + l)))),
                )
            }),
            prop::collection::btree_set("[a-d]", 0..3).prop_map(|s| ("zones", Value::Set(s))),
        ];
        prop::collection::vec((role, item), 0..6).prop_map(|items| {
            let mut out = Resources::new();
            for (role, (name, value)) in items {
                out.push(name, role, value);
            }
            out
        })
    }

    proptest! {
        #[test]
        fn text_form_round_trips(a in resources()) {
            prop_assert_eq!(a.to_string().parse::<Resources>(), Ok(a.clone()));
        }

        #[test]
        fn adding_then_subtracting_gives_back(a in resources(), b in resources()) {
            let sum = a.clone() + &b;
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            // Ranges and sets are unions, so only disjoint ones subtract back exactly.
            let disjoint = b.iter().all(|(n, role, v)| match v {
                Value::Scalar(_) => true,
                _ => a.iter().all(|(m, other_role, w)| !(n == m && role == other_role && w.kind() == v.kind())),
            });
            if disjoint {
                prop_assert_eq!(sum.checked_sub(&b), Some(a.clone()));
            }
        }

        #[test]
        fn addition_commutes(a in resources(), b in resources()) {
            prop_assert_eq!(a.clone() + &b, b.clone() + &a);
        }

        #[test]
        fn contains_matches_subtraction(a in resources(), b in resources()) {
            prop_assert!(a.contains(&a));
            prop_assert!(a.contains(&Resources::new()));
            prop_assert_eq!(a.contains(&b), a.checked_sub(&b).is_some());
            if let Some(rest) = a.checked_sub(&b) {
                prop_assert_eq!(rest + &b, a);
            }
        }
    }
}
