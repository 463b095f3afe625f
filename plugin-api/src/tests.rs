//! Panics stay on the plugin's side, and the version rules hold: checked in-process with
//! `LibHeader::from_module`, the same checks the host runs on a loaded library.

use abi_stable::library::LibHeader;
use abi_stable::std_types::RVec;

use super::*;

/// Ranks every task in class 0; panics on request (`"panic"` config, or a task named "boom").
struct Toy {
    reloads: u32,
}

impl Policy for Toy {
    const NAME: &'static str = "toy";

    fn new(config: &str) -> Result<Self, String> {
        match config {
            "panic" => panic!("asked to panic"),
            "bad" => Err("line 1: bad config".into()),
            _ => Ok(Self { reloads: 0 }),
        }
    }

    fn rank(&mut self, snapshot: &Snapshot) -> Result<Vec<Decision>, String> {
        if snapshot.tasks.iter().any(|t| t.comm() == "boom") {
            panic!("boom at {}", snapshot.time_ns);
        }
        Ok(snapshot.tasks.iter().map(|t| t.decide(0, u64::from(self.reloads))).collect())
    }

    /// Ranks only the hinted runnable tasks, in class 1 (so a test sees which call ran).
    fn rank_hinted(&mut self, snapshot: &Snapshot, hint: &Hint) -> Result<Vec<Decision>, String> {
        Ok(hint.runnable.iter().filter_map(|&i| snapshot.tasks.get(i as usize)).map(|t| t.decide(1, 0)).collect())
    }

    fn reload(&mut self, config: &str) -> Result<(), String> {
        if config == "bad" {
            return Err("line 1: bad config".into());
        }
        self.reloads += 1;
        Ok(())
    }
}

fn task(comm: &str) -> TaskView {
    TaskView { running: true, ..crate::testing::task(1, 7, comm) }
}

fn snapshot(comms: &[&str]) -> Snapshot {
    Snapshot { time_ns: 5, tasks: comms.iter().map(|c| task(c)).collect(), ..Snapshot::default() }
}

#[test]
fn calls_go_through_the_root_module() {
    let module = root_module_of::<Toy>();
    assert_eq!(module.name().as_str(), "toy");
    let mut policy = (module.new())(RStr::from_str("")).into_result().expect("new");
    let got = policy.rank(&snapshot(&["a"])).into_result().expect("rank");
    assert_eq!(got, RVec::from(vec![Decision { domain: 1, pid: 7, start_time: 1_000, class: 0, order: 0 }]));
    assert_eq!(policy.reload(RStr::from_str("ok")).into_result(), Ok(()));
    assert_eq!(policy.rank(&snapshot(&["a"])).into_result().map(|d| d[0].order), Ok(1));
    let e = policy.reload(RStr::from_str("bad")).into_result().expect_err("an error");
    assert_eq!(e.as_str(), "line 1: bad config");
}

#[test]
fn a_panic_becomes_an_error_and_poisons_the_policy() {
    let new = root_module_of::<Toy>().new();
    let e = new(RStr::from_str("panic")).into_result().err().expect("an error");
    assert_eq!(e.as_str(), "policy panicked: asked to panic");

    let mut policy = new(RStr::from_str("")).into_result().expect("new");
    let e = policy.rank(&snapshot(&["a", "boom"])).into_result().expect_err("an error");
    assert_eq!(e.as_str(), "policy panicked: boom at 5");
    let e = policy.rank(&snapshot(&["a"])).into_result().expect_err("an error");
    assert!(e.as_str().contains("unusable after an earlier panic (policy panicked: boom at 5)"), "{e}");
    let e = policy.reload(RStr::from_str("")).into_result().expect_err("an error");
    assert!(e.as_str().contains("unusable"), "{e}");
}

use crate::next_minor as next;

/// The interface as a hypothetical 2.0 would have it (same layout, new major version).
#[allow(dead_code, clippy::wrong_self_convention)]
mod v2 {
    use super::*;

    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PolicyModRef)))]
    pub struct PolicyMod {
        pub name: RStr<'static>,
        #[sabi(last_prefix_field)]
        pub new: extern "C" fn(config: RStr<'_>) -> RResult<PolicyBox, RString>,
    }

    impl RootModule for PolicyModRef {
        declare_root_module_statics! {PolicyModRef}
        const BASE_NAME: &'static str = ROOT_MODULE_NAME;
        const NAME: &'static str = ROOT_MODULE_NAME;
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("2.0.0");
    }

    pub fn module() -> PolicyModRef {
        PolicyMod { name: RStr::from_str("toy-2"), new: super::root_module_of::<Toy>().new() }.leak_into_prefix()
    }
}

/// A header as a loaded library would have it, for `module`.
fn header<M: RootModule>(module: M) -> &'static LibHeader {
    Box::leak(Box::new(LibHeader::from_module(module)))
}

#[test]
fn an_older_minor_plugin_loads_in_a_newer_host() {
    // A plugin built against this interface, loaded by a host of the next minor version.
    let module = accept::<next::PolicyModRef>(header(root_module_of::<Toy>())).expect("a plugin of this minor version in a host of the next");
    assert_eq!(module.name().as_str(), "toy");
    assert!(module.describe().is_none(), "a field the plugin predates reads as None");
    let mut policy = (module.new())(RStr::from_str("")).into_result().expect("new");
    assert_eq!(policy.summary().as_str(), "(no summary: an older plugin)", "a method it predates runs its default");
    assert_eq!(policy.rank(&snapshot(&["a"])).into_result().map(|d| d.len()), Ok(1));

    // abi_stable's own check refuses this direction (its issue #118): why `accept` exists.
    assert!(header(root_module_of::<Toy>()).init_root_module::<next::PolicyModRef>().is_err());
}

/// The interface as 1.0 had it: a policy object without `rank_hinted`.
#[allow(dead_code, non_local_definitions, clippy::wrong_self_convention)]
mod v1_0 {
    use super::*;
    use abi_stable::sabi_trait;
    use abi_stable::std_types::RBox;

    #[sabi_trait]
    pub trait PolicyObject: Send {
        fn rank(&mut self, snapshot: &Snapshot) -> RResult<RVec<Decision>, RString>;

        #[sabi(last_prefix_field)]
        fn reload(&mut self, config: RStr<'_>) -> RResult<(), RString>;
    }

    pub type PolicyBox = PolicyObject_TO<'static, RBox<()>>;

    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PolicyModRef)))]
    #[sabi(missing_field(option))]
    pub struct PolicyMod {
        pub name: RStr<'static>,
        #[sabi(last_prefix_field)]
        pub new: extern "C" fn(config: RStr<'_>) -> RResult<PolicyBox, RString>,
    }

    impl RootModule for PolicyModRef {
        declare_root_module_statics! {PolicyModRef}
        const BASE_NAME: &'static str = ROOT_MODULE_NAME;
        const NAME: &'static str = ROOT_MODULE_NAME;
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
    }

    /// Ranks every task in class 0.
    struct Plain;

    impl PolicyObject for Plain {
        fn rank(&mut self, snapshot: &Snapshot) -> RResult<RVec<Decision>, RString> {
            ROk(snapshot.tasks.iter().map(|t| t.decide(0, 0)).collect())
        }

        fn reload(&mut self, _: RStr<'_>) -> RResult<(), RString> {
            ROk(())
        }
    }

    extern "C" fn new(_: RStr<'_>) -> RResult<PolicyBox, RString> {
        ROk(PolicyObject_TO::from_value(Plain, TD_Opaque))
    }

    pub fn module() -> PolicyModRef {
        PolicyMod { name: RStr::from_str("plain-1.0"), new }.leak_into_prefix()
    }
}

#[test]
fn the_hinted_rank_reaches_the_policy_and_a_1_0_plugin_ranks_in_full() {
    let snap = snapshot(&["a", "b", "c"]);
    let hint = Hint { runnable: RVec::from(vec![1]), changed: abi_stable::std_types::RNone };
    let mut policy = (root_module_of::<Toy>().new())(RStr::from_str("")).into_result().expect("new");
    let got = policy.rank_hinted(&snap, &hint).into_result().expect("rank");
    assert_eq!(got.iter().map(|d| d.class).collect::<Vec<_>>(), [1], "the policy's own rank_hinted ran");
    // A plugin built against 1.0 has no rank_hinted: the call runs its rank.
    let module = accept::<PolicyModRef>(header(v1_0::module())).expect("a 1.0 plugin in this host");
    let mut old = (module.new())(RStr::from_str("")).into_result().expect("new");
    let got = old.rank_hinted(&snap, &hint).into_result().expect("rank");
    assert_eq!(got.iter().map(|d| d.class).collect::<Vec<_>>(), [0, 0, 0], "the 1.0 object's rank ran");
}

#[test]
fn a_newer_minor_plugin_loads_in_an_older_host() {
    let module = accept::<PolicyModRef>(header(next::module())).expect("a plugin of the next minor version in a host of this one");
    assert_eq!(module.name().as_str(), "next-minor");
    let mut policy = (module.new())(RStr::from_str("")).into_result().expect("new");
    assert_eq!(policy.rank(&snapshot(&["a"])).into_result().map(|d| d.len()), Ok(0));
}

#[test]
fn another_major_version_is_refused() {
    let refused = accept::<PolicyModRef>(header(v2::module())).err();
    assert_eq!(refused, Some(Refusal::Version { plugin: "2.0.0".into(), host: INTERFACE_VERSION.into() }));
    let shown = refused.map(|r| r.to_string()).unwrap_or_default();
    assert!(shown.starts_with("incompatible interface version: built against 2.0.0"), "{shown}");
    let refused = accept::<v2::PolicyModRef>(header(root_module_of::<Toy>())).err();
    assert!(matches!(refused, Some(Refusal::Version { .. })), "{refused:?}");
}

#[test]
fn a_layout_mismatch_is_refused() {
    /// Claims 1.0 but its `new` takes something else.
    #[allow(dead_code, clippy::wrong_self_convention)]
    mod odd {
        use super::*;

        #[repr(C)]
        #[derive(StableAbi)]
        #[sabi(kind(Prefix(prefix_ref = PolicyModRef)))]
        pub struct PolicyMod {
            pub name: RStr<'static>,
            #[sabi(last_prefix_field)]
            pub new: extern "C" fn(config: u32) -> RResult<PolicyBox, RString>,
        }

        impl RootModule for PolicyModRef {
            declare_root_module_statics! {PolicyModRef}
            const BASE_NAME: &'static str = ROOT_MODULE_NAME;
            const NAME: &'static str = ROOT_MODULE_NAME;
            const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
        }

        extern "C" fn new(_: u32) -> RResult<PolicyBox, RString> {
            RErr("never called".into())
        }

        pub fn module() -> PolicyModRef {
            PolicyMod { name: RStr::from_str("odd"), new }.leak_into_prefix()
        }
    }
    let refused = accept::<PolicyModRef>(header(odd::module())).err();
    assert!(matches!(&refused, Some(Refusal::Layout { plugin, .. }) if plugin == "1.0.0"), "{refused:?}");
}

#[test]
fn another_root_module_is_not_a_policy() {
    #[allow(dead_code, clippy::wrong_self_convention)]
    mod other {
        use super::*;

        #[repr(C)]
        #[derive(StableAbi)]
        #[sabi(kind(Prefix(prefix_ref = OtherRef)))]
        pub struct Other {
            #[sabi(last_prefix_field)]
            pub x: u32,
        }

        impl RootModule for OtherRef {
            declare_root_module_statics! {OtherRef}
            const BASE_NAME: &'static str = "other";
            const NAME: &'static str = "other";
            const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
        }
    }
    let refused = accept::<PolicyModRef>(header(other::Other { x: 1 }.leak_into_prefix())).err();
    assert_eq!(refused, Some(Refusal::NotAPolicy { name: "other".into() }));
}

#[test]
fn the_interface_version_is_the_package_version() {
    assert!(INTERFACE_VERSION.starts_with("1."));
    assert_eq!(PolicyModRef::VERSION_STRINGS.version.as_str(), INTERFACE_VERSION);
    let minor = |v: &str| v.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
    assert_eq!(minor(next::VERSION), minor(INTERFACE_VERSION).map(|m| m + 1), "next_minor::VERSION must follow the real one");
}
