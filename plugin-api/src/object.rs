//! The policy object: the FFI-safe face of a [`Policy`](crate::Policy).

// abi_stable 0.11's `#[sabi_trait]` expansion implements foreign traits inside a const block.
#![allow(non_local_definitions)]

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec};

use crate::{Decision, Snapshot};

/// A policy object as the host sees it: the FFI-safe face of a [`Policy`](crate::Policy).
///
/// New methods may be appended in 1.x releases, after `reload`, with a default body.
#[sabi_trait]
pub trait PolicyObject: Send {
    /// Ranks the tasks of `snapshot`; see [`Policy::rank`](crate::Policy::rank).
    fn rank(&mut self, snapshot: &Snapshot) -> RResult<RVec<Decision>, RString>;

    /// Takes a new configuration; see [`Policy::reload`](crate::Policy::reload).
    #[sabi(last_prefix_field)]
    fn reload(&mut self, config: RStr<'_>) -> RResult<(), RString>;
}

/// An owned policy object, as the root module's `new` returns it.
pub type PolicyBox = PolicyObject_TO<'static, RBox<()>>;
