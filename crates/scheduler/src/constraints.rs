//! Placement constraints: Marathon's `[field, OPERATOR, value?]` rules, their validation and
//! their evaluation against a candidate agent.
//!
//! The field is `hostname` (also `@hostname`), `@region`, `@zone`, or the name of an agent
//! attribute. Attribute values are compared in their text form (drover agents declare
//! attributes as `rack:r1;zone:a`, see [`parse_attributes`]); numbers compare as numbers
//! rounded to thousandths, as Mesos scalars do in Marathon.
//!
//! | operator | value | accepts the candidate when |
//! |---|---|---|
//! | `UNIQUE` | none | no placed instance has the candidate's value |
//! | `CLUSTER` | optional | the candidate's value is the value (or, without one, that of the first placed instance) |
//! | `GROUP_BY` | optional count n | the candidate's value is new, or at least n values are used and it is among the least used |
//! | `LIKE` / `UNLIKE` | regex | the value fully matches / does not match |
//! | `MAX_PER` | count n | fewer than n placed instances have the candidate's value |
//! | `IS` | text or number | the value is exactly this |
//!
//! An agent without the attribute only satisfies `UNLIKE`. Decisions come with a human reason
//! for the launch queue ("why is this not launching").

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Marathon's message for an unknown operator.
pub const OPERATOR_INVALID: &str =
    "operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS";
pub const WRONG_ARITY: &str = "Each constraint must have either 2 or 3 fields";
pub const ILLEGAL: &str = "illegal constraint specification";
pub const UNIQUE_NO_VALUE: &str = "UNIQUE does not accept a value";
pub const GROUP_BY_INT: &str = "GROUP BY must define an integer value or else no value at all";
pub const MAX_PER_INT: &str = "MAX_PER requires an integer value";
pub const LIKE_NEEDS_REGEX: &str = "LIKE and UNLIKE require a non-empty, regular expression value";
pub const INVALID_REGEX: &str = "is not a valid regular expression";
pub const IS_TEXT_ONLY: &str = "IS only supports Mesos text and float values (see http://mesos.apache.org/documentation/latest/attributes-resources/)";

/// Upper bound on a compiled LIKE/UNLIKE pattern, so a hostile pattern cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operator {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    Is,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster => "CLUSTER",
            Operator::GroupBy => "GROUP_BY",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
            Operator::MaxPer => "MAX_PER",
            Operator::Is => "IS",
        }
    }

    /// Marathon accepts operators in any case.
    pub fn parse(text: &str) -> Option<Operator> {
        Some(match text.to_ascii_uppercase().as_str() {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster,
            "GROUP_BY" => Operator::GroupBy,
            "LIKE" => Operator::Like,
            "UNLIKE" => Operator::Unlike,
            "MAX_PER" => Operator::MaxPer,
            "IS" => Operator::Is,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Constraint {
    pub field: String,
    pub operator: Operator,
    pub value: Option<String>,
}

impl Constraint {
    /// Builds a constraint from its JSON array form, with Marathon's rules and messages.
    pub fn from_parts(parts: &[String]) -> Result<Constraint, &'static str> {
        if parts.len() < 2 || parts.len() > 3 {
            return Err(WRONG_ARITY);
        }
        let field = parts[0].clone();
        if field.is_empty() {
            return Err(ILLEGAL);
        }
        let operator = Operator::parse(&parts[1]).ok_or(OPERATOR_INVALID)?;
        let value = parts.get(2).cloned();
        let is_int = |v: &Option<String>| v.as_deref().is_some_and(|s| s.parse::<i32>().is_ok());
        match operator {
            Operator::Unique if value.is_some() => return Err(UNIQUE_NO_VALUE),
            Operator::GroupBy if value.is_some() && !is_int(&value) => return Err(GROUP_BY_INT),
            Operator::MaxPer if !is_int(&value) => return Err(MAX_PER_INT),
            Operator::Like | Operator::Unlike => match value.as_deref() {
                None | Some("") => return Err(LIKE_NEEDS_REGEX),
                Some(pattern) => {
                    full_match_regex(pattern).map_err(|_| INVALID_REGEX)?;
                }
            },
            Operator::Is => {
                let v = value.as_deref().unwrap_or("");
                let ok = v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'.' | b'-'));
                if !ok {
                    return Err(IS_TEXT_ONLY);
                }
            }
            _ => {}
        }
        Ok(Constraint {
            field,
            operator,
            value,
        })
    }

    /// `["hostname", "UNIQUE"]`, `["rack", "GROUP_BY", "2"]`.
    pub fn to_json(&self) -> Value {
        match &self.value {
            Some(v) => json!([self.field, self.operator.as_str(), v]),
            None => json!([self.field, self.operator.as_str()]),
        }
    }

    fn describe(&self) -> String {
        match &self.value {
            Some(v) => format!("{} {} {}", self.field, self.operator.as_str(), v),
            None => format!("{} {}", self.field, self.operator.as_str()),
        }
    }
}

fn full_match_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// Where an instance runs, or would run: the agent's hostname and attributes.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    pub hostname: &'a str,
    pub attributes: &'a BTreeMap<String, String>,
}

impl<'a> Placement<'a> {
    pub fn new(hostname: &'a str, attributes: &'a BTreeMap<String, String>) -> Self {
        Placement {
            hostname,
            attributes,
        }
    }

    /// The value of a constraint field here.
    pub fn value(&self, field: &str) -> Option<&'a str> {
        match field {
            "hostname" | "@hostname" => Some(self.hostname),
            _ => self.attributes.get(field).map(String::as_str),
        }
    }
}

/// Agent attributes in drover's text form: `rack:r1;zone:a` → {rack: r1, zone: a}.
pub fn parse_attributes(text: &str) -> BTreeMap<String, String> {
    text.split(';')
        .filter_map(|item| item.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Attribute values compare as Mesos does in Marathon: numbers rounded to thousandths.
fn same_value(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (scalar(a), scalar(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn scalar(text: &str) -> Option<i64> {
    let valid = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|&b| b == b'.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.');
    if !valid {
        return None;
    }
    let x: f64 = text.parse().ok()?;
    let thousandths = (x * 1000.0).round();
    if thousandths.is_finite() && thousandths.abs() < 9.0e18 {
        Some(thousandths as i64)
    } else {
        None
    }
}

/// Checks every constraint; the first that rejects gives the reason.
///
/// `placed` are the agents of the app's instances already placed (one entry per instance).
pub fn check(
    constraints: &[Constraint],
    candidate: &Placement<'_>,
    placed: &[Placement<'_>],
) -> Result<(), String> {
    constraints
        .iter()
        .try_for_each(|c| check_one(c, candidate, placed))
}

/// Checks one constraint. `Err` carries a sentence for the launch queue.
pub fn check_one(
    c: &Constraint,
    candidate: &Placement<'_>,
    placed: &[Placement<'_>],
) -> Result<(), String> {
    let Some(value) = candidate.value(&c.field) else {
        return if c.operator == Operator::Unlike {
            Ok(())
        } else {
            Err(format!(
                "{}: the agent has no attribute {}",
                c.describe(),
                c.field
            ))
        };
    };
    let reject = |why: String| Err(format!("{}: {}", c.describe(), why));
    let count_same = || {
        placed
            .iter()
            .filter(|p| p.value(&c.field).is_some_and(|v| same_value(v, value)))
            .count()
    };
    match c.operator {
        Operator::Unique => match count_same() {
            0 => Ok(()),
            n => reject(format!("{n} instance(s) already on {} {value}", c.field)),
        },
        Operator::Cluster => {
            let target = match &c.value {
                Some(v) if !v.is_empty() => Some(v.as_str()),
                _ => placed.first().map(|p| p.value(&c.field).unwrap_or("")),
            };
            match target {
                None => Ok(()),
                Some(t) if same_value(t, value) => Ok(()),
                Some(t) => reject(format!("the agent has {value}, instances run on {t}")),
            }
        }
        Operator::Is => {
            let want = c.value.as_deref().unwrap_or("");
            if same_value(want, value) {
                Ok(())
            } else {
                reject(format!("the agent has {value}"))
            }
        }
        Operator::Like | Operator::Unlike => {
            let pattern = c.value.as_deref().unwrap_or("");
            let Ok(re) = full_match_regex(pattern) else {
                return reject("the pattern is not a valid regular expression".into());
            };
            let matched = re.is_match(value);
            match (c.operator, matched) {
                (Operator::Like, false) => reject(format!("{value} does not match")),
                (Operator::Unlike, true) => reject(format!("{value} matches")),
                _ => Ok(()),
            }
        }
        Operator::MaxPer => {
            let max = c
                .value
                .as_deref()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            let n = count_same();
            if (n as i64) < max {
                Ok(())
            } else {
                reject(format!("{n} instance(s) already on {} {value}", c.field))
            }
        }
        Operator::GroupBy => {
            let minimum_groups = c
                .value
                .as_deref()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                .max(0) as usize;
            // Instances per value, among placed instances that have the field.
            let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
            for p in placed {
                if let Some(v) = p.value(&c.field) {
                    let key = groups
                        .keys()
                        .find(|k| same_value(k, v))
                        .copied()
                        .unwrap_or(v);
                    *groups.entry(key).or_insert(0) += 1;
                }
            }
            let here = groups
                .iter()
                .find(|(k, _)| same_value(k, value))
                .map(|(_, n)| *n);
            let Some(here) = here else {
                return Ok(()); // a value with no instance yet is the emptiest group
            };
            let least = groups.values().copied().min().unwrap_or(0);
            if groups.len() < minimum_groups {
                reject(format!(
                    "{} of {minimum_groups} {} values used, waiting for an agent with another one",
                    groups.len(),
                    c.field
                ))
            } else if here > least {
                reject(format!(
                    "{here} instance(s) on {value}, another {} has only {least}",
                    c.field
                ))
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(parts: &[&str]) -> Constraint {
        let parts: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        Constraint::from_parts(&parts).unwrap()
    }

    struct Agents(Vec<(String, BTreeMap<String, String>)>);

    impl Agents {
        fn new(specs: &[(&str, &str)]) -> Agents {
            Agents(
                specs
                    .iter()
                    .map(|(h, a)| (h.to_string(), parse_attributes(a)))
                    .collect(),
            )
        }
        fn get(&self, i: usize) -> Placement<'_> {
            Placement::new(&self.0[i].0, &self.0[i].1)
        }
        fn list(&self, idx: &[usize]) -> Vec<Placement<'_>> {
            idx.iter().map(|&i| self.get(i)).collect()
        }
    }

    fn agents() -> Agents {
        Agents::new(&[
            ("a1", "rack:r1;cores:4"),
            ("a2", "rack:r1;cores:8"),
            ("a3", "rack:r2;cores:4.0"),
            ("a4", ""),
        ])
    }

    #[test]
    fn rules_and_messages() {
        let err = |parts: &[&str]| {
            let parts: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
            Constraint::from_parts(&parts).unwrap_err()
        };
        assert_eq!(err(&["hostname"]), WRONG_ARITY);
        assert_eq!(err(&["a", "b", "c", "d"]), WRONG_ARITY);
        assert_eq!(err(&["", "UNIQUE"]), ILLEGAL);
        assert_eq!(err(&["hostname", "FOO"]), OPERATOR_INVALID);
        assert_eq!(err(&["hostname", "UNIQUE", "x"]), UNIQUE_NO_VALUE);
        assert_eq!(err(&["rack", "GROUP_BY", "two"]), GROUP_BY_INT);
        assert_eq!(err(&["rack", "MAX_PER"]), MAX_PER_INT);
        assert_eq!(err(&["rack", "LIKE"]), LIKE_NEEDS_REGEX);
        assert_eq!(err(&["rack", "LIKE", "("]), INVALID_REGEX);
        assert_eq!(err(&["rack", "IS", "{a,b}"]), IS_TEXT_ONLY);
        assert_eq!(c(&["hostname", "unique"]).operator, Operator::Unique);
        assert_eq!(
            c(&["rack", "GROUP_BY"]).to_json(),
            json!(["rack", "GROUP_BY"])
        );
        assert_eq!(
            c(&["rack", "max_per", "2"]).to_json(),
            json!(["rack", "MAX_PER", "2"])
        );
    }

    #[test]
    fn unique_and_max_per() {
        let a = agents();
        let unique = c(&["hostname", "UNIQUE"]);
        assert!(check_one(&unique, &a.get(0), &a.list(&[1, 2])).is_ok());
        let why = check_one(&unique, &a.get(0), &a.list(&[0])).unwrap_err();
        assert!(why.contains("hostname UNIQUE"), "{why}");
        let rack_unique = c(&["rack", "UNIQUE"]);
        assert!(check_one(&rack_unique, &a.get(1), &a.list(&[0])).is_err());
        assert!(check_one(&rack_unique, &a.get(2), &a.list(&[0])).is_ok());
        let max2 = c(&["rack", "MAX_PER", "2"]);
        assert!(check_one(&max2, &a.get(0), &a.list(&[1])).is_ok());
        assert!(check_one(&max2, &a.get(0), &a.list(&[0, 1])).is_err());
    }

    #[test]
    fn cluster_like_is() {
        let a = agents();
        let cluster = c(&["rack", "CLUSTER", "r2"]);
        assert!(check_one(&cluster, &a.get(2), &[]).is_ok());
        assert!(check_one(&cluster, &a.get(0), &[]).is_err());
        let first = c(&["rack", "CLUSTER"]);
        assert!(check_one(&first, &a.get(0), &[]).is_ok());
        assert!(check_one(&first, &a.get(1), &a.list(&[0])).is_ok());
        assert!(check_one(&first, &a.get(2), &a.list(&[0])).is_err());
        let like = c(&["hostname", "LIKE", "a[12]"]);
        assert!(check_one(&like, &a.get(1), &[]).is_ok());
        assert!(check_one(&like, &a.get(2), &[]).is_err());
        // a full match, not a search
        assert!(check_one(&c(&["hostname", "LIKE", "a"]), &a.get(0), &[]).is_err());
        let unlike = c(&["rack", "UNLIKE", "r1"]);
        assert!(check_one(&unlike, &a.get(0), &[]).is_err());
        assert!(check_one(&unlike, &a.get(2), &[]).is_ok());
        assert!(check_one(&unlike, &a.get(3), &[]).is_ok()); // no attribute: UNLIKE holds
        let is = c(&["cores", "IS", "4"]);
        assert!(check_one(&is, &a.get(0), &[]).is_ok());
        assert!(check_one(&is, &a.get(2), &[]).is_ok()); // 4.0 == 4
        assert!(check_one(&is, &a.get(1), &[]).is_err());
        let why = check_one(&is, &a.get(3), &[]).unwrap_err();
        assert!(why.contains("no attribute cores"), "{why}");
    }

    #[test]
    fn group_by_spreads() {
        let a = agents();
        let g = c(&["rack", "GROUP_BY"]);
        // new value: always fine
        assert!(check_one(&g, &a.get(2), &a.list(&[0])).is_ok());
        // r1 has 2, r2 has 1: r1 refused, r2 accepted
        assert!(check_one(&g, &a.get(0), &a.list(&[0, 1, 2])).is_err());
        assert!(check_one(&g, &a.get(2), &a.list(&[0, 1, 2])).is_ok());
        // with a count, a used value waits until enough values are in use
        let g2 = c(&["rack", "GROUP_BY", "2"]);
        let why = check_one(&g2, &a.get(1), &a.list(&[0])).unwrap_err();
        assert!(why.contains("1 of 2"), "{why}");
        assert!(check_one(&g2, &a.get(2), &a.list(&[0])).is_ok());
        assert!(check_one(&g2, &a.get(1), &a.list(&[0, 2])).is_ok());
    }

    #[test]
    fn all_constraints() {
        let a = agents();
        let cs = vec![c(&["hostname", "UNIQUE"]), c(&["rack", "IS", "r1"])];
        assert!(check(&cs, &a.get(1), &a.list(&[0])).is_ok());
        assert!(check(&cs, &a.get(2), &a.list(&[0])).is_err());
        assert!(check(&[], &a.get(3), &[]).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(field in "[a-z@]{0,8}", op in "[A-Z_]{0,8}", value in ".{0,10}",
                        host in "[a-z0-9]{1,4}", attr in "[a-z:;0-9.]{0,20}", n in 0usize..5) {
            let parts = vec![field, op, value];
            if let Ok(c) = Constraint::from_parts(&parts) {
                let attrs = parse_attributes(&attr);
                let cand = Placement::new(&host, &attrs);
                let placed = vec![cand; n];
                let _ = check_one(&c, &cand, &placed);
            }
        }

        #[test]
        fn max_per_never_exceeds(max in 1usize..5, hosts in proptest::collection::vec(0usize..3, 0..20)) {
            // Greedy placement honouring MAX_PER never puts more than max on a host.
            let names = ["h0", "h1", "h2"];
            let none = BTreeMap::new();
            let cons = c(&["hostname", "MAX_PER", &max.to_string()]);
            let mut placed: Vec<Placement<'_>> = Vec::new();
            for h in hosts {
                let cand = Placement::new(names[h], &none);
                if check_one(&cons, &cand, &placed).is_ok() {
                    placed.push(cand);
                }
            }
            for name in names {
                prop_assert!(placed.iter().filter(|p| p.hostname == name).count() <= max);
            }
        }

        #[test]
        fn group_by_stays_even(hosts in proptest::collection::vec(0usize..3, 0..30)) {
            // Once every value has an instance, whatever order offers come in, the counts per
            // value never differ by more than one.
            let names = ["h0", "h1", "h2"];
            let none = BTreeMap::new();
            let cons = c(&["hostname", "GROUP_BY"]);
            let mut placed: Vec<Placement<'_>> = Vec::new();
            for h in [0, 1, 2].into_iter().chain(hosts) {
                let cand = Placement::new(names[h], &none);
                if check_one(&cons, &cand, &placed).is_ok() {
                    placed.push(cand);
                }
            }
            let counts: Vec<usize> = names.iter()
                .map(|n| placed.iter().filter(|p| p.hostname == *n).count())
                .filter(|&n| n > 0)
                .collect();
            if let (Some(max), Some(min)) = (counts.iter().max(), counts.iter().min()) {
                prop_assert!(max - min <= 1);
            }
        }
    }
}
