//! The interface as its next minor version could have it, for compatibility tests only: a
//! field appended to the root module and a method (with a default body) appended to the policy
//! object, under the same type names. A plugin built against the real interface must load in
//! a host built against this one, and the other way round. Compiled for this crate's tests and
//! with the `next-minor` feature (for the host's tests); never part of the interface.

// abi_stable 0.11's `#[sabi_trait]` expansion implements foreign traits inside a const block.
#![allow(non_local_definitions, missing_docs, clippy::wrong_self_convention)]

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, ROk, RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, sabi_trait, StableAbi};

use crate::{Decision, Hint, Snapshot, ROOT_MODULE_NAME};

/// The version this module stands for: the real one's minor version plus one.
pub const VERSION: &str = "1.2.0";

/// The policy object, with `summary` appended.
#[sabi_trait]
pub trait PolicyObject: Send {
    fn rank(&mut self, snapshot: &Snapshot) -> RResult<RVec<Decision>, RString>;

    #[sabi(last_prefix_field)]
    fn reload(&mut self, config: RStr<'_>) -> RResult<(), RString>;

    fn rank_hinted(&mut self, snapshot: &Snapshot, hint: &Hint) -> RResult<RVec<Decision>, RString> {
        let _ = hint;
        self.rank(snapshot)
    }

    fn summary(&self) -> RString {
        RString::from("(no summary: an older plugin)")
    }
}

/// An owned policy object.
pub type PolicyBox = PolicyObject_TO<'static, RBox<()>>;

/// The root module, with `describe` appended.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PolicyModRef)))]
#[sabi(missing_field(option))]
pub struct PolicyMod {
    pub name: RStr<'static>,
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(config: RStr<'_>) -> RResult<PolicyBox, RString>,
    pub describe: extern "C" fn() -> RStr<'static>,
}

impl RootModule for PolicyModRef {
    declare_root_module_statics! {PolicyModRef}
    const BASE_NAME: &'static str = ROOT_MODULE_NAME;
    const NAME: &'static str = ROOT_MODULE_NAME;
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(VERSION);
}

/// A policy object of this version: it has a summary.
struct Summarized;

impl PolicyObject for Summarized {
    fn rank(&mut self, _: &Snapshot) -> RResult<RVec<Decision>, RString> {
        ROk(RVec::new())
    }

    fn reload(&mut self, _: RStr<'_>) -> RResult<(), RString> {
        ROk(())
    }

    fn summary(&self) -> RString {
        RString::from("a 1.2 object")
    }
}

extern "C" fn new(_: RStr<'_>) -> RResult<PolicyBox, RString> {
    ROk(PolicyObject_TO::from_value(Summarized, TD_Opaque))
}

extern "C" fn describe() -> RStr<'static> {
    RStr::from_str("a 1.2 plugin")
}

/// A root module as a plugin built against this version would export it.
pub fn module() -> PolicyModRef {
    PolicyMod { name: RStr::from_str("next-minor"), new, describe }.leak_into_prefix()
}
