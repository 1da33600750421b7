//! Marathon's `PathId`: the slash-separated names of apps and groups.
//!
//! An id is absolute (`/arm-demo/group1/ubuntu1`) or relative (`ubuntu1`, `../group1`, `./x`).
//! Relative ids are resolved against the enclosing group: `ubuntu1` inside `/arm-demo/group1` is
//! `/arm-demo/group1/ubuntu1`; `.` stays, `..` goes one level up (never above the root).
//!
//! Parsing follows Marathon: leading and trailing slashes are trimmed, empty segments (`a//b`)
//! are dropped, and the id is absolute when the text starts with `/`. Parsing never fails;
//! [`PathId::validate`] says whether every segment is a valid name:
//!
//! - a name is one or more dot-separated labels, each label lowercase letters, digits and `-`,
//!   not starting or ending with `-` (Marathon's
//!   `^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$`);
//! - `.` and `..` are accepted as segments for relative navigation only: after resolution
//!   ([`PathId::resolve`]) an id never contains them.
//!
//! - at most [`MAX_DEPTH`] segments (a drover bound; Marathon has none).
//!
//! The error text is Marathon's own (see [`INVALID_SEGMENT`]). Its regular expression ends in
//! `|(\.|\.\.)$` because Marathon's segment pattern admits the navigation segments; that is the
//! exact string Marathon answers with, so clients matching on it keep working.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The segment regular expression, as Marathon prints it in its error message.
pub const SEGMENT_PATTERN: &str = r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$";

/// Marathon's message for an id with an invalid segment.
pub const INVALID_SEGMENT: &str = concat!(
    "must fully match regular expression '",
    r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$",
    "'"
);

/// Marathon's message for an id whose last segment is a REST keyword.
pub const RESERVED_KEYWORD: &str =
    "must not end with any of the following reserved keywords: restart, tasks, versions, ., ..";

/// Marathon's message for an empty id where one is needed.
pub const EMPTY_PATH: &str = "Path must contain at least one path element";

/// Deepest id accepted. Marathon has no limit; drover has one so that a hostile id cannot
/// build a group tree deep enough to exhaust the stack of the code walking it.
pub const MAX_DEPTH: usize = 64;

/// drover's message for an id deeper than [`MAX_DEPTH`].
pub const TOO_DEEP: &str = "must not have more than 64 path elements";

/// Last segments that would collide with REST routes (`/v2/apps/<id>/tasks`, ...).
const RESERVED: [&str; 5] = ["restart", "tasks", "versions", ".", ".."];

/// An app or group id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId {
    absolute: bool,
    segments: Vec<String>,
}

impl PathId {
    /// The root group `/`.
    pub fn root() -> PathId {
        PathId {
            absolute: true,
            segments: Vec::new(),
        }
    }

    /// Parses Marathon's text form. Total: invalid names are kept and reported by
    /// [`PathId::validate`].
    pub fn parse(text: &str) -> PathId {
        PathId {
            absolute: text.starts_with('/'),
            segments: text
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// An absolute id from segments (not validated).
    pub fn from_segments<I, S>(segments: I) -> PathId
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        PathId {
            absolute: true,
            segments: segments.into_iter().map(Into::into).collect(),
        }
    }

    pub fn is_absolute(&self) -> bool {
        self.absolute
    }

    /// `/` (absolute, no segment).
    pub fn is_root(&self) -> bool {
        self.absolute && self.segments.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The last segment (`ubuntu1` of `/arm-demo/group1/ubuntu1`), if any.
    pub fn name(&self) -> Option<&str> {
        self.segments.last().map(String::as_str)
    }

    /// The enclosing group; the root's parent is the root.
    pub fn parent(&self) -> PathId {
        let mut segments = self.segments.clone();
        segments.pop();
        PathId {
            absolute: self.absolute,
            segments,
        }
    }

    /// This id with one more segment. `name` may itself contain slashes (`a/b`).
    pub fn child(&self, name: &str) -> PathId {
        let mut segments = self.segments.clone();
        segments.extend(
            name.split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        PathId {
            absolute: self.absolute,
            segments,
        }
    }

    /// This id made absolute against `base` (an absolute group id), with `.` and `..` applied.
    /// An absolute id ignores `base` but still has its navigation segments applied.
    pub fn resolve(&self, base: &PathId) -> PathId {
        let mut out: Vec<String> = Vec::new();
        let start: &[String] = if self.absolute { &[] } else { &base.segments };
        for segment in start.iter().chain(self.segments.iter()) {
            match segment.as_str() {
                "." => {}
                ".." => {
                    out.pop();
                }
                _ => out.push(segment.clone()),
            }
        }
        PathId {
            absolute: true,
            segments: out,
        }
    }

    /// True when `self` is a strict ancestor of `other` (`/a` of `/a/b`, the root of every
    /// non-root id). Both are compared as given (resolve them first).
    pub fn is_ancestor_of(&self, other: &PathId) -> bool {
        self.absolute == other.absolute
            && self.segments.len() < other.segments.len()
            && other.segments.starts_with(&self.segments)
    }

    /// True when `self` is `other` or one of its ancestors (Marathon's `includes`, reversed).
    pub fn includes(&self, other: &PathId) -> bool {
        self == other || self.is_ancestor_of(other)
    }

    /// Checks every segment against Marathon's name rules; the error is Marathon's message.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.segments.len() > MAX_DEPTH {
            Err(TOO_DEEP)
        } else if self.segments.iter().all(|s| is_valid_segment(s)) {
            Ok(())
        } else {
            Err(INVALID_SEGMENT)
        }
    }

    /// Checks that the last segment is not a REST keyword (`tasks`, `versions`, `restart`).
    pub fn check_not_reserved(&self) -> Result<(), &'static str> {
        match self.segments.last() {
            Some(last) if RESERVED.contains(&last.as_str()) => Err(RESERVED_KEYWORD),
            _ => Ok(()),
        }
    }

    /// Marathon's "safe" form used in task ids: segments joined by `_` (`arm-demo_group1_ubuntu1`).
    pub fn safe_path(&self) -> String {
        self.segments.join("_")
    }

    /// Marathon's hostname form: segments reversed, joined by `.` (`ubuntu1.group1.arm-demo`).
    pub fn to_hostname(&self) -> String {
        let mut segments: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        segments.reverse();
        segments.join(".")
    }
}

/// One segment against Marathon's name rules (`.` and `..` accepted as navigation).
pub fn is_valid_segment(segment: &str) -> bool {
    if segment == "." || segment == ".." {
        return true;
    }
    !segment.is_empty() && segment.split('.').all(is_valid_label)
}

fn is_valid_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            edge_ok(first) && edge_ok(last) && bytes.iter().all(|&b| edge_ok(b) || b == b'-')
        }
        _ => false,
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.absolute {
            if self.segments.is_empty() {
                return f.write_str("/");
            }
            for segment in &self.segments {
                write!(f, "/{segment}")?;
            }
            Ok(())
        } else {
            f.write_str(&self.segments.join("/"))
        }
    }
}

impl FromStr for PathId {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(PathId::parse(s))
    }
}

impl Serialize for PathId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserializes from the string form and refuses invalid names with Marathon's message.
impl<'de> Deserialize<'de> for PathId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let id = PathId::parse(&text);
        id.validate().map_err(serde::de::Error::custom)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> PathId {
        PathId::parse(s)
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(p("/arm-demo/group1").to_string(), "/arm-demo/group1");
        assert_eq!(p("/").to_string(), "/");
        assert!(p("/").is_root());
        assert_eq!(p("a/b").to_string(), "a/b");
        assert!(!p("a/b").is_absolute());
        assert_eq!(p("//a//b/"), p("/a/b"));
        assert_eq!(p("").to_string(), "");
        assert_eq!("/x".parse::<PathId>().unwrap(), p("/x"));
    }

    #[test]
    fn relative_resolution() {
        let group = p("/arm-demo/group1");
        assert_eq!(p("ubuntu1").resolve(&group), p("/arm-demo/group1/ubuntu1"));
        assert_eq!(p("./x").resolve(&group), p("/arm-demo/group1/x"));
        assert_eq!(p("../x").resolve(&group), p("/arm-demo/x"));
        assert_eq!(p("../../../../x").resolve(&group), p("/x"));
        assert_eq!(p("/abs/./y/../z").resolve(&group), p("/abs/z"));
        assert_eq!(p("").resolve(&group), group);
    }

    #[test]
    fn parent_child_ancestry() {
        let id = p("/a/b/c");
        assert_eq!(id.parent(), p("/a/b"));
        assert_eq!(PathId::root().parent(), PathId::root());
        assert_eq!(p("/a").child("b").child("c"), id);
        assert_eq!(p("/a").child("b/c"), id);
        assert!(p("/a").is_ancestor_of(&id));
        assert!(PathId::root().is_ancestor_of(&id));
        assert!(!id.is_ancestor_of(&id));
        assert!(id.includes(&id));
        assert!(!p("/a/b/cd").is_ancestor_of(&p("/a/b/c")));
        assert!(!p("/a/bc").is_ancestor_of(&p("/a/b/c")));
        assert_eq!(id.name(), Some("c"));
        assert_eq!(id.safe_path(), "a_b_c");
        assert_eq!(id.to_hostname(), "c.b.a");
    }

    #[test]
    fn validation() {
        for ok in [
            "/a",
            "/arm-demo/group1/ubuntu1",
            "a.b-c.d",
            "../x",
            "./x",
            "/0",
            "x.y",
        ] {
            assert_eq!(p(ok).validate(), Ok(()), "{ok}");
        }
        for bad in [
            "/a b", "/A", "/-a", "/a-", "/a#b", "/a..b", "/a.", "/.a", "/a_b", "/ä",
        ] {
            assert_eq!(p(bad).validate(), Err(INVALID_SEGMENT), "{bad}");
        }
        assert_eq!(p(&"/a".repeat(MAX_DEPTH)).validate(), Ok(()));
        assert_eq!(p(&"/a".repeat(MAX_DEPTH + 1)).validate(), Err(TOO_DEEP));
        assert_eq!(p("/x/tasks").check_not_reserved(), Err(RESERVED_KEYWORD));
        assert_eq!(p("/x/tasks2").check_not_reserved(), Ok(()));
    }

    #[test]
    fn message_is_marathons() {
        assert_eq!(
            INVALID_SEGMENT,
            "must fully match regular expression '^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*\
             ([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$'"
        );
        assert!(INVALID_SEGMENT.contains(SEGMENT_PATTERN));
    }

    #[test]
    fn serde_round_trip() {
        let id = p("/arm-demo/group1");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"/arm-demo/group1\"");
        assert_eq!(serde_json::from_str::<PathId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<PathId>("\"/Bad\"").is_err());
        assert!(serde_json::from_str::<PathId>("3").is_err());
    }

    proptest! {
        #[test]
        fn segment_check_matches_regex(s in "[a-z0-9.\\-A_]{0,12}") {
            let re = regex::Regex::new(
                r"^(?:(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|\.|\.\.)$",
            ).unwrap();
            prop_assert_eq!(is_valid_segment(&s), re.is_match(&s));
        }

        #[test]
        fn resolve_is_absolute_and_clean(s in "[a-z./]{0,20}", base in "(/[a-z]{1,3}){0,3}") {
            let resolved = PathId::parse(&s).resolve(&PathId::parse(&base));
            prop_assert!(resolved.is_absolute());
            prop_assert!(resolved.segments().iter().all(|x| x != "." && x != ".." && !x.is_empty()));
            // Display then parse is the identity on resolved ids.
            prop_assert_eq!(PathId::parse(&resolved.to_string()), resolved);
        }

        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let id = PathId::parse(&s);
            let _ = id.validate();
            let _ = id.resolve(&PathId::root()).parent();
        }
    }
}
