//! Test fixture: a plugin built against the next minor version of the interface (simulated by
//! `xsched_plugin_api::next_minor`), which today's host must still load.

use abi_stable::export_root_module;
use xsched_plugin_api::next_minor;

/// The export (in a module: the static `#[export_root_module]` adds has no docs).
#[allow(missing_docs)]
mod export {
    use super::*;

    /// Exports the next-minor root module.
    #[export_root_module]
    pub fn root_module() -> next_minor::PolicyModRef {
        next_minor::module()
    }
}
