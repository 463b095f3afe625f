//! The policy object: the FFI-safe face of a [`Policy`](crate::Policy).

// abi_stable 0.11's `#[sabi_trait]` expansion implements foreign traits inside a const block.
#![allow(non_local_definitions)]

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec};

use crate::{Decision, Hint, Snapshot};

/// A policy object as the host sees it: the FFI-safe face of a [`Policy`](crate::Policy).
///
/// New methods may be appended in 1.x releases, after the last one, with a default body (run
/// for an object built against an interface that predates them).
#[sabi_trait]
pub trait PolicyObject: Send {
    /// Ranks the tasks of `snapshot`; see [`Policy::rank`](crate::Policy::rank).
    fn rank(&mut self, snapshot: &Snapshot) -> RResult<RVec<Decision>, RString>;

    /// Takes a new configuration; see [`Policy::reload`](crate::Policy::reload).
    #[sabi(last_prefix_field)]
    fn reload(&mut self, config: RStr<'_>) -> RResult<(), RString>;

    /// Ranks the tasks of `snapshot` knowing `hint` (interface 1.1); see
    /// [`Policy::rank_hinted`](crate::Policy::rank_hinted). An object built against 1.0 runs
    /// [`rank`](Self::rank).
    fn rank_hinted(&mut self, snapshot: &Snapshot, hint: &Hint) -> RResult<RVec<Decision>, RString> {
        let _ = hint;
        self.rank(snapshot)
    }
}

/// An owned policy object, as the root module's `new` returns it.
pub type PolicyBox = PolicyObject_TO<'static, RBox<()>>;
