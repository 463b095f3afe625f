//! The interface between the xsched host and its policy plugins.
//!
//! A policy plugin is a `cdylib` that the host loads at run time. Each period the host hands it a
//! [`Snapshot`] of every task in every domain, and the plugin answers with a global ranking: one
//! [`Decision`] (class, then order; lower goes first) per task it manages. Tasks it leaves out
//! are unmanaged: the host never parks them.
//!
//! # Writing a plugin
//!
//! Implement the plain Rust trait [`Policy`] and export it with [`export_policy!`]; the macro
//! builds the root module and wraps every call in `catch_unwind`, so a panic in the policy comes
//! back to the host as an error ("policy panicked: …") instead of unwinding across the FFI
//! boundary. A plugin needs no `unsafe` and no `extern`. The plugin crate depends on this crate
//! and on `abi_stable` (the macro's expansion names it). See `plugins/README.md` and
//! `plugins/template/`.
//!
//! # What crosses the boundary
//!
//! Everything here that the host and a plugin exchange is `#[repr(C)]` and [`StableAbi`], built
//! from `abi_stable`'s FFI-safe std types. The plugin exports a [`PolicyMod`] (a prefix type)
//! whose `new` returns a [`PolicyBox`], a `#[sabi_trait]` object ([`PolicyObject`]).
//!
//! # Versions
//!
//! This crate's package version is the interface version ([`INTERFACE_VERSION`]). The host
//! accepts a plugin ([`accept`]) when:
//! 1. its root module is named [`ROOT_MODULE_NAME`] (else: not an xsched plugin);
//! 2. it was built against the host's major version (a 1.y plugin loads in any 1.z host, older
//!    or newer; a 2.x plugin is refused);
//! 3. abi_stable's layout checker finds the types of the root module, and of everything it
//!    reaches, compatible: same names, fields and sizes, from a compatible version of this
//!    package. [`PolicyMod`] and the vtable of [`PolicyObject`] are prefix types: the side
//!    built against the newer minor version may have more fields, appended after the last one
//!    (see [`accept`] for why xsched checks in both directions, unlike abi_stable's default).
//!
//! So a 1.x release may only *append*: fields at the end of [`PolicyMod`] (the host reads them
//! as `Option`), methods with a default body at the end of [`PolicyObject`] (an older plugin's
//! object runs the default), and new types. 1.1 appended [`PolicyObject::rank_hinted`] and its
//! [`Hint`]. [`Snapshot`], [`TaskView`], [`DomainInfo`] and
//! [`Decision`] are plain `repr(C)` structs, frozen for all of 1.x: a richer snapshot would
//! be a new type passed by a new, appended method. Anything else is 2.0.

use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RErr, ROk, RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

mod accept;
pub mod config;
pub mod memo;
#[cfg(any(test, feature = "next-minor"))]
#[doc(hidden)]
pub mod next_minor;
mod object;
pub mod testing;
mod types;

pub use accept::{accept, Refusal};
pub use object::{PolicyBox, PolicyObject, PolicyObject_TO};
pub use types::{Decision, DomainInfo, Hint, Snapshot, TaskView};

#[doc(hidden)]
pub use abi_stable;

/// The plugin interface version: this crate's package version, checked at load time.
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of the root module every xsched policy plugin exports (`RootModule::NAME`).
pub const ROOT_MODULE_NAME: &str = "xsched_policy";

/// A policy, as a plugin author writes it: plain Rust, no FFI types.
///
/// [`export_policy!`] turns an implementation into a plugin. Every call is made inside
/// `catch_unwind`: a panic becomes an error for the host, and the policy object is dropped
/// (every later call fails) since its state may be half-updated.
pub trait Policy: Send + Sized + 'static {
    /// The policy's name, for the host's logs.
    const NAME: &'static str;

    /// Builds the policy from its configuration: the text of the policy file, or `""` when the
    /// user gave none. An error should say where and what (line and problem).
    fn new(config: &str) -> Result<Self, String>;

    /// Ranks the tasks of one period. Tasks left out are unmanaged: the host never parks them.
    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String>;

    /// Ranks the tasks of one period as [`Self::rank`] does, told by the host which tasks are
    /// runnable and which changed since the last call ([`Hint`]), so that a policy need not
    /// visit every task (interface 1.x hosts from 1.1 call this one). By default: [`Self::rank`].
    fn rank_hinted(&mut self, snapshot: &Snapshot, hint: &Hint) -> Result<Vec<Decision>, String> {
        let _ = hint;
        self.rank(snapshot)
    }

    /// Takes a new configuration (SIGHUP). On error the policy must keep its old configuration.
    /// By default it is rebuilt from scratch, which drops any state it had.
    fn reload(&mut self, config: &str) -> Result<(), String> {
        *self = Self::new(config)?;
        Ok(())
    }
}

/// The root module of a policy plugin: what the host finds in the library.
///
/// A prefix type: 1.x releases may append fields after `new`; the accessors of appended fields
/// return `Option`, `None` for a plugin built before they existed.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PolicyModRef)))]
#[sabi(missing_field(option))]
pub struct PolicyMod {
    /// The policy's name ([`Policy::NAME`]).
    pub name: RStr<'static>,
    /// Builds a policy object from a configuration text.
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(config: RStr<'_>) -> RResult<PolicyBox, RString>,
}

impl RootModule for PolicyModRef {
    declare_root_module_statics! {PolicyModRef}
    const BASE_NAME: &'static str = ROOT_MODULE_NAME;
    const NAME: &'static str = ROOT_MODULE_NAME;
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Exports a [`Policy`] implementation as this library's xsched root module.
///
/// Use it once, at the root of a `cdylib` crate that depends on `xsched-plugin-api` and
/// `abi_stable`:
///
/// ```ignore
/// xsched_plugin_api::export_policy!(MyPolicy);
/// ```
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[allow(missing_docs)]
        #[doc(hidden)]
        mod __xsched_policy_export {
            #[allow(unused_imports)]
            use super::*;

            #[$crate::abi_stable::export_root_module]
            pub fn xsched_policy_root_module() -> $crate::PolicyModRef {
                $crate::root_module_of::<$policy>()
            }
        }
    };
}

/// Builds the root module for `P`; [`export_policy!`] calls it.
pub fn root_module_of<P: Policy>() -> PolicyModRef {
    PolicyMod { name: RStr::from_str(P::NAME), new: new_policy::<P> }.leak_into_prefix()
}

/// The root module's `new` for `P`: builds the policy inside `catch_unwind`.
extern "C" fn new_policy<P: Policy>(config: RStr<'_>) -> RResult<PolicyBox, RString> {
    match catch_unwind(|| P::new(config.as_str())) {
        Ok(Ok(policy)) => ROk(PolicyObject_TO::from_value(Guarded { policy: Some(policy), poisoned: None }, TD_Opaque)),
        Ok(Err(e)) => RErr(e.into()),
        Err(payload) => RErr(panicked(payload.as_ref()).into()),
    }
}

/// The message for a caught panic.
fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a non-string payload)");
    format!("policy panicked: {what}")
}

/// A [`Policy`] behind the FFI boundary: every call runs inside `catch_unwind`.
struct Guarded<P> {
    /// The policy; `None` once a call panicked.
    policy: Option<P>,
    /// What the panic said.
    poisoned: Option<String>,
}

impl<P: Policy> Guarded<P> {
    /// Runs `f` on the policy, turning a panic into an error and dropping the policy.
    fn call<T>(&mut self, f: impl FnOnce(&mut P) -> Result<T, String>) -> RResult<T, RString> {
        let Some(policy) = self.policy.as_mut() else {
            let why = self.poisoned.as_deref().unwrap_or("policy panicked");
            return RErr(format!("policy unusable after an earlier panic ({why})").into());
        };
        match catch_unwind(AssertUnwindSafe(|| f(policy))) {
            Ok(result) => result.map_err(RString::from).into(),
            Err(payload) => {
                let message = panicked(payload.as_ref());
                self.poisoned = Some(message.clone());
                let policy = self.policy.take();
                // Its state may be half-updated; its destructor may panic too.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(policy)));
                RErr(message.into())
            }
        }
    }
}

impl<P: Policy> PolicyObject for Guarded<P> {
    fn rank(&mut self, snapshot: &Snapshot) -> RResult<RVec<Decision>, RString> {
        self.call(|p| p.rank(snapshot).map(RVec::from))
    }

    fn reload(&mut self, config: RStr<'_>) -> RResult<(), RString> {
        self.call(|p| p.reload(config.as_str()))
    }

    fn rank_hinted(&mut self, snapshot: &Snapshot, hint: &Hint) -> RResult<RVec<Decision>, RString> {
        self.call(|p| p.rank_hinted(snapshot, hint).map(RVec::from))
    }
}

impl<P> Drop for Guarded<P> {
    fn drop(&mut self) {
        let policy = self.policy.take();
        // The host drops the object through the vtable: a panicking destructor must not unwind
        // into it either.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(policy)));
    }
}

#[cfg(test)]
mod tests;
