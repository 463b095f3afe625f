//! Test fixture: a policy that fails on demand, to show that the host survives a panic (it comes
//! back as an error) and that what it parked is released when the plugin takes the whole
//! process down (abort, segfault) or never returns.
//!
//! Config `""`: `rank` panics at once. `"panic"`: `new` panics. `"after=N PREFIX [HOW]"`: the
//! first N calls of `rank` rank every runnable user task whose comm starts with PREFIX in one
//! class (by pid), so the host parks some; call N+1 fails as HOW says: `panic` (the default),
//! `abort` (the process aborts), `segfault` (it dies of SIGSEGV) or `hang` (never returns).

use xsched_plugin_api::{export_policy, Decision, Policy, Snapshot};

/// Panics on demand.
pub struct Panicky {
    /// Calls of `rank` left before it panics.
    calls_left: u32,
    /// Only tasks whose comm starts with this are ranked.
    prefix: String,
    /// How call N+1 fails.
    failure: Failure,
}

/// How `rank` fails when its calls run out.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Panic,
    Abort,
    Segfault,
    Hang,
}

impl Failure {
    fn parse(word: Option<&str>) -> Result<Self, String> {
        match word {
            None | Some("panic") => Ok(Self::Panic),
            Some("abort") => Ok(Self::Abort),
            Some("segfault") => Ok(Self::Segfault),
            Some("hang") => Ok(Self::Hang),
            Some(other) => Err(format!("line 1: {other:?} is none of panic, abort, segfault, hang")),
        }
    }

    fn fail(self, tasks: usize) -> ! {
        match self {
            Self::Panic => panic!("rank panics as configured ({tasks} tasks)"),
            Self::Abort => std::process::abort(),
            // SAFETY: none: this write is the fault the fixture exists to make.
            Self::Segfault => unsafe {
                std::ptr::null_mut::<u8>().write_volatile(1);
                unreachable!("a write to address 0 faults")
            },
            Self::Hang => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
        }
    }
}

impl Policy for Panicky {
    const NAME: &'static str = "testing-panic";

    fn new(config: &str) -> Result<Self, String> {
        if config == "panic" {
            panic!("told to panic in new");
        }
        let mut words = config.split_whitespace();
        let calls_left = match words.next().and_then(|w| w.strip_prefix("after=")) {
            Some(n) => n.parse().map_err(|e| format!("line 1: after={n}: {e}"))?,
            None => 0,
        };
        let prefix = words.next().unwrap_or_default().to_string();
        Ok(Self { calls_left, prefix, failure: Failure::parse(words.next())? })
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        if self.calls_left == 0 {
            self.failure.fail(snapshot.tasks.len());
        }
        self.calls_left -= 1;
        Ok(snapshot
            .tasks
            .iter()
            .filter(|t| t.runnable && !t.kthread && t.comm().starts_with(&self.prefix))
            .map(|t| t.decide(0, u64::try_from(t.pid).unwrap_or(u64::MAX)))
            .collect())
    }
}

export_policy!(Panicky);
