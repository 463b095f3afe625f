//! Test fixture: a plugin that claims interface 1.0 but whose root module has another layout.
//!
//! It does not use `xsched-plugin-api`: it declares a root module of its own, named like
//! xsched's, as a plugin built against another interface would.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RStr;
use abi_stable::{declare_root_module_statics, export_root_module, StableAbi};

/// The root module as this other interface has it.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PolicyModRef)))]
pub struct PolicyMod {
    /// The policy's name.
    #[sabi(last_prefix_field)]
    pub name: RStr<'static>,
}

impl RootModule for PolicyModRef {
    declare_root_module_statics! {PolicyModRef}
    const BASE_NAME: &'static str = "xsched_policy";
    const NAME: &'static str = "xsched_policy";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
}

/// The export (in a module: the static `#[export_root_module]` adds has no docs).
#[allow(missing_docs)]
mod export {
    use super::*;

    /// Exports the root module.
    #[export_root_module]
    pub fn root_module() -> PolicyModRef {
        PolicyMod { name: RStr::from_str("testing-layout") }.leak_into_prefix()
    }
}
