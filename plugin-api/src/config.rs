//! Building blocks for policy configuration files: task matchers and within-class orders.
//!
//! Plain serde types (nothing here crosses the FFI boundary), shared by the bundled policies and
//! free for any plugin. They validate while they deserialize, so a format crate that tracks
//! positions (`toml`) reports the line of a bad value.
//!
//! ```toml
//! # One matcher: every field given must match; an empty table matches every task.
//! match = { domain = "guest1", comm = "postgres*" }
//! # Several: any of them.
//! match = [{ comm = "web*" }, { uid = 33 }]
//! ```

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::{Snapshot, TaskView};

/// A name pattern: exact (`"postgres"`), a prefix (`"web*"`), or anything (`"*"`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Pattern {
    /// The fixed text.
    text: String,
    /// Whether `text` is a prefix (the pattern ended in `*`).
    prefix: bool,
}

impl Pattern {
    /// Whether `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        if self.prefix {
            s.starts_with(&self.text)
        } else {
            s == self.text
        }
    }
}

impl TryFrom<String> for Pattern {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let (text, prefix) = match s.strip_suffix('*') {
            Some(text) => (text, true),
            None => (s.as_str(), false),
        };
        if text.contains('*') {
            return Err(format!("pattern {s:?}: `*` may only end a pattern (\"web*\")"));
        }
        if text.is_empty() && !prefix {
            return Err("empty pattern (use \"*\" for anything)".into());
        }
        Ok(Self { text: text.to_owned(), prefix })
    }
}

/// Matches tasks: every field given must match; with no field it matches every task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskMatch {
    /// The domain's name.
    pub domain: Option<Pattern>,
    /// The task's command name.
    pub comm: Option<Pattern>,
    /// The task's pid (thread id).
    pub pid: Option<i32>,
    /// The task's process id: matches every thread of the process.
    pub tgid: Option<i32>,
    /// The task's real uid (a task whose uid is unknown does not match).
    pub uid: Option<u32>,
    /// The task's cgroup v2 path, e.g. `"/system.slice/*"` (unknown: no match).
    pub cgroup: Option<Pattern>,
}

impl TaskMatch {
    /// Whether `task`, of the domain named `domain`, matches.
    pub fn matches(&self, task: &TaskView, domain: &str) -> bool {
        self.domain.as_ref().is_none_or(|p| p.matches(domain))
            && self.comm.as_ref().is_none_or(|p| p.matches(task.comm()))
            && self.pid.is_none_or(|pid| pid == task.pid)
            && self.tgid.is_none_or(|tgid| tgid == task.tgid)
            && self.uid.is_none_or(|uid| task.uid() == Some(uid))
            && self.cgroup.as_ref().is_none_or(|p| task.cgroup().is_some_and(|c| p.matches(c)))
    }
}

/// One matcher (a table) or several (an array of tables); matches when any of them does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnyOf(pub Vec<TaskMatch>);

impl AnyOf {
    /// Whether a matcher names no domain: then it matches in every domain, and any guest can
    /// claim what it gives by the names and ids it chooses (comm, uid, cgroup).
    pub fn is_unscoped(&self) -> bool {
        self.0.iter().any(|m| m.domain.is_none())
    }

    /// Warns on stderr, once at load, when `what` (e.g. "rule 3 (backup)") of `policy` is
    /// [unscoped](Self::is_unscoped).
    pub fn warn_if_unscoped(&self, policy: &str, what: &str) {
        if self.is_unscoped() {
            eprintln!(
                "xsched: policy {policy}: warning: {what} names no domain, so any guest can claim it by naming its tasks so; \
                 scope it with `domain = …` (the README's \"What a guest can and cannot claim\")"
            );
        }
    }

    /// Whether `task` of `snapshot` matches any of the matchers.
    pub fn matches(&self, task: &TaskView, snapshot: &Snapshot) -> bool {
        let domain = snapshot.domain_name(task.domain);
        self.0.iter().any(|m| m.matches(task, domain))
    }
}

impl<'de> Deserialize<'de> for AnyOf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyOfVisitor;

        impl<'de> Visitor<'de> for AnyOfVisitor {
            type Value = AnyOf;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a matcher table ({ comm = \"web*\" }) or an array of them")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AnyOf, A::Error> {
                TaskMatch::deserialize(de::value::MapAccessDeserializer::new(map)).map(|m| AnyOf(vec![m]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyOf, A::Error> {
                let mut all = Vec::new();
                while let Some(m) = seq.next_element()? {
                    all.push(m);
                }
                if all.is_empty() {
                    return Err(de::Error::invalid_length(0, &"at least one matcher (an empty list matches nothing)"));
                }
                Ok(AnyOf(all))
            }
        }

        deserializer.deserialize_any(AnyOfVisitor)
    }
}

/// How tasks are ordered within a class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Within {
    /// Least CPU time since the previous snapshot first: tasks of a class take turns.
    #[default]
    RecentCpu,
    /// Least CPU time in total first: evens out total CPU time within a class.
    TotalCpu,
    /// Lowest pid first: a fixed order, no turns.
    Pid,
}

impl Within {
    /// The order key of `task`.
    pub fn order(self, task: &TaskView) -> u64 {
        match self {
            Self::RecentCpu => task.runtime_delta_ns,
            Self::TotalCpu => task.runtime_ns,
            Self::Pid => u64::from(task.pid.unsigned_abs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(comm: &str, uid: Option<u32>, cgroup: Option<&str>) -> TaskView {
        TaskView {
            start_time: 1,
            tgid: 40,
            uid: uid.into(),
            cgroup: cgroup.map(Into::into).into(),
            ..crate::testing::task(0, 42, comm)
        }
    }

    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "match")]
        matches: AnyOf,
    }

    fn parse(text: &str) -> Result<AnyOf, String> {
        toml::from_str::<Doc>(text).map(|d| d.matches).map_err(|e| e.to_string())
    }

    #[test]
    fn patterns_are_exact_prefix_or_anything() {
        let p = |s: &str| Pattern::try_from(s.to_owned());
        assert!(p("web").is_ok_and(|p| p.matches("web") && !p.matches("web2")));
        assert!(p("web*").is_ok_and(|p| p.matches("web") && p.matches("webd") && !p.matches("we")));
        assert!(p("*").is_ok_and(|p| p.matches("") && p.matches("x")));
        assert!(p("w*b").is_err());
        assert!(p("").is_err());
    }

    #[test]
    fn a_matcher_needs_every_given_field() {
        let m = TaskMatch { comm: p("db*"), uid: Some(1000), ..TaskMatch::default() };
        assert!(m.matches(&task("dbd", Some(1000), None), "g"));
        assert!(!m.matches(&task("dbd", Some(0), None), "g"));
        assert!(!m.matches(&task("dbd", None, None), "g"), "an unknown uid matches no uid");
        let c = TaskMatch { cgroup: p("/batch/*"), ..TaskMatch::default() };
        assert!(c.matches(&task("x", None, Some("/batch/a")), "g"));
        assert!(!c.matches(&task("x", None, None), "g"));
        assert!(TaskMatch::default().matches(&task("x", None, None), "g"));
        let d = TaskMatch { domain: p("guest1"), tgid: Some(40), pid: Some(42), ..TaskMatch::default() };
        assert!(d.matches(&task("x", None, None), "guest1"));
        assert!(!d.matches(&task("x", None, None), "guest2"));
    }

    fn p(s: &str) -> Option<Pattern> {
        Pattern::try_from(s.to_owned()).ok()
    }

    #[test]
    fn any_of_reads_a_table_or_an_array() {
        assert_eq!(parse("match = { comm = \"a\" }").map(|a| a.0.len()), Ok(1));
        assert_eq!(parse("match = [{ comm = \"a\" }, { uid = 3 }]").map(|a| a.0.len()), Ok(2));
        let snap = Snapshot::default();
        let any = parse("match = [{ comm = \"a\" }, { uid = 3 }]").expect("parses");
        assert!(any.matches(&task("b", Some(3), None), &snap));
        assert!(!any.matches(&task("b", Some(4), None), &snap));
    }

    #[test]
    fn errors_give_the_line_and_the_problem() {
        let e = parse("\n\nmatch = { comm = \"w*b\" }").expect_err("an error");
        assert!(e.contains("line 3") && e.contains("may only end a pattern"), "{e}");
        let e = parse("\nmatch = [{ comm = \"a\" },\n { user = 3 }]").expect_err("an error");
        assert!(e.contains("line 3") && e.contains("unknown field `user`"), "{e}");
        let e = parse("match = []").expect_err("an error");
        assert!(e.contains("an empty list matches nothing"), "{e}");
        let e = parse("match = 3").expect_err("an error");
        assert!(e.contains("line 1") && e.contains("a matcher table"), "{e}");
    }

    #[test]
    fn within_orders() {
        let mut t = task("x", None, None);
        t.runtime_delta_ns = 5;
        t.runtime_ns = 9;
        assert_eq!(Within::RecentCpu.order(&t), 5);
        assert_eq!(Within::TotalCpu.order(&t), 9);
        assert_eq!(Within::Pid.order(&t), 42);
    }
}
