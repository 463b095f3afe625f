//! `xsched probe` against live lab guests and their core dumps, checked against what the guests
//! themselves say: `/proc/kallsyms`, `/proc/iomem`, the online CPU list, CPU flags, and the
//! VMCOREINFO note the guest kernel hands to QEMU's dump; and profiles built from a guest's own
//! memory (live, and from its dump) checked against the DWARF-built ones.

mod common;

use std::collections::BTreeMap;

use common::{domain_arg, kernels_dir, vmcoreinfo, xsched_ok, xsched_with_env};
use serde_json::Value;
use xsched_lab::{shared_lab, Guest, GuestSpec, Workload};

/// Start of the kernel's virtual map (`__START_KERNEL_map`), and `_text`'s link address in it.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;

/// Two guests booted at the same time: two independent KASLR draws; the second uses 5-level paging.
fn lab() -> &'static [Guest] {
    shared_lab(|| {
        vec![
            GuestSpec::new("p1").vcpus(2).workload(Workload::cpu("db")).view_interval_ms(0),
            GuestSpec::new("p2").la57(true).workload(Workload::sleep("idler")).view_interval_ms(0),
        ]
    })
}

fn probe(domain: &str) -> Value {
    let kernels = kernels_dir();
    let out = xsched_ok(&["probe", "--json", "--kernels", kernels.to_str().expect("utf-8 path"), "--domain", domain]);
    serde_json::from_str(&out).expect("probe prints JSON")
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The guest's own view of the kernel's location.
struct GuestTruth {
    virt_text: u64,
    virt_banner: u64,
    phys_text: u64,
    online_cpus: usize,
    la57: bool,
    release: String,
}

fn guest_truth(g: &Guest) -> GuestTruth {
    let kallsyms = g.exec_ok("awk '$3 == \"_text\" || $3 == \"linux_banner\" { print $3, $1 }' /proc/kallsyms").expect("kallsyms");
    let syms: BTreeMap<&str, u64> = kallsyms
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, addr)| (name, u64::from_str_radix(addr.trim(), 16).expect("hex address")))
        .collect();
    let iomem = g.exec_ok("grep 'Kernel code' /proc/iomem").expect("iomem");
    let start = iomem.trim().split('-').next().expect("range");
    let online = g.exec_ok("cat /sys/devices/system/cpu/online").expect("online");
    let online_cpus = online
        .trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().expect("cpu") - a.parse::<usize>().expect("cpu") + 1,
            None => 1,
        })
        .sum();
    GuestTruth {
        virt_text: syms["_text"],
        virt_banner: syms["linux_banner"],
        phys_text: u64::from_str_radix(start.trim(), 16).expect("hex"),
        online_cpus,
        la57: g.exec_ok("grep -c -w la57 /proc/cpuinfo || true").expect("cpuinfo").trim() != "0",
        release: g.exec_ok("uname -r").expect("uname").trim().to_string(),
    }
}

#[test]
fn probe_finds_each_live_kernel_where_the_guest_says_it_is() {
    let mut shifts = Vec::new();
    for g in lab() {
        let truth = guest_truth(g);
        assert_ne!(truth.virt_text, 0, "{}: kallsyms hides addresses", g.name());
        let p = probe(&domain_arg(g));
        eprintln!("{}: {p}", g.name());
        assert_eq!(p["release"], truth.release.as_str(), "{}", g.name());
        assert_eq!(u64_of(&p, "virt_text"), truth.virt_text, "{}: virtual _text", g.name());
        assert_eq!(u64_of(&p, "virt_shift"), truth.virt_text - 0xffff_ffff_8100_0000, "{}", g.name());
        assert_eq!(u64_of(&p, "phys_text"), truth.phys_text, "{}: physical _text", g.name());
        assert_eq!(p["phys_shift"].as_i64(), Some(truth.phys_text as i64 - 0x100_0000), "{}", g.name());
        assert_eq!(u64_of(&p, "banner_gpa") - truth.phys_text, truth.virt_banner - truth.virt_text, "{}: banner", g.name());
        assert_eq!(p["online_cpus"].as_array().map(Vec::len), Some(truth.online_cpus), "{}", g.name());
        assert_eq!(u64_of(&p, "paging_levels"), if truth.la57 { 5 } else { 4 }, "{}: paging mode", g.name());
        let pob = u64_of(&p, "page_offset_base");
        assert!(pob >= if truth.la57 { 0xff00_0000_0000_0000 } else { 0xffff_8000_0000_0000 }, "{}: {pob:#x}", g.name());
        shifts.push((u64_of(&p, "virt_shift"), p["phys_shift"].as_i64()));
    }
    assert!(lab()[1].spec().la57);
    assert_ne!(shifts[0], shifts[1], "two boots drew the same KASLR shifts");
}

#[test]
fn a_core_dump_probes_like_the_live_guest_and_agrees_with_vmcoreinfo() {
    let g = &lab()[0];
    let core = g.dir().join("probe-test.core");
    g.qmp().expect("qmp").dump_guest_memory(&core).expect("dump-guest-memory");
    let live = probe(&domain_arg(g));
    let dumped = probe(&format!("old=core:{}", core.display()));
    for key in ["release", "phys_text", "virt_text", "phys_shift", "virt_shift", "paging_levels", "page_tables", "page_offset_base", "nr_cpu_ids", "online_cpus", "banner_gpa"] {
        assert_eq!(live[key], dumped[key], "{key}: live vs core");
    }
    // The dump alone gives the kernel's profile, from the BTF and kallsyms in its memory: the
    // same as the DWARF-built one, field for field and symbol for symbol.
    let generated = g.dir().join("from-core.json");
    xsched_ok(&["profile", "gen", "--core", core.to_str().expect("utf-8"), "-o", generated.to_str().expect("utf-8")]);
    let release = &g.kernel().pin.release;
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(kernels_dir().join(format!("{release}.json"))).expect("committed profile")).expect("json");
    let from_core: Value = serde_json::from_str(&std::fs::read_to_string(&generated).expect("generated profile")).expect("json");
    std::fs::remove_file(&generated).expect("remove profile");
    assert_eq!(from_core, committed, "the profile built from the core dump differs from the DWARF-built one");
    let info = vmcoreinfo(&core);
    std::fs::remove_file(&core).expect("remove core");
    assert!(!info.is_empty(), "the dump carries no VMCOREINFO (qemu_fw_cfg not loaded?)");
    assert_eq!(info["OSRELEASE"], dumped["release"].as_str().expect("release"));
    assert_eq!(u64::from_str_radix(&info["KERNELOFFSET"], 16).expect("hex"), u64_of(&dumped, "virt_shift"));
    // VMCOREINFO_NUMBER prints a signed decimal: phys_base is negative when the kernel sits
    // physically lower than its virtual offset in the kernel map.
    let phys_base = info["NUMBER(phys_base)"].parse::<i64>().map(|n| n as u64);
    let virt_text = u64_of(&dumped, "virt_text");
    assert_eq!(phys_base.expect("phys_base"), u64_of(&dumped, "phys_text").wrapping_sub(virt_text - START_KERNEL_MAP));
    assert_eq!(info["NUMBER(pgtable_l5_enabled)"], if u64_of(&dumped, "paging_levels") == 5 { "1" } else { "0" });
}

#[test]
fn probe_without_a_matching_profile_builds_one_from_the_guests_own_btf_and_kallsyms() {
    let g = &lab()[0];
    let empty = g.dir().join("no-profiles");
    let cache = g.dir().join("profile-cache");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let _ = std::fs::remove_dir_all(&cache);
    let run = |kernels: &std::path::Path| {
        let domain = domain_arg(g);
        let args = ["probe", "--json", "--kernels", kernels.to_str().expect("utf-8"), "--domain", &domain];
        let out = xsched_with_env(&args, &[("XSCHED_PROFILE_CACHE", &cache)]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "probe failed: {err}");
        let json: Value = serde_json::from_slice(&out.stdout).expect("probe prints JSON");
        (json, err)
    };
    let release = &g.kernel().pin.release;
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(kernels_dir().join(format!("{release}.json"))).expect("committed profile"))
            .expect("json");

    // Built from the guest's memory, said in one line, and cached with where it came from.
    let (built, err) = run(&empty);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    assert!(err.contains("built one for Linux") && err.contains(release.as_str()) && err.contains("BTF and kallsyms"), "{err}");
    let file = cache.join(format!("{release}.json"));
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("cached profile")).expect("json");
    assert!(cached["source"].as_str().is_some_and(|s| s.contains("running guest") && s.contains("VMCOREINFO")), "{cached}");
    assert_eq!(cached["profile"], committed, "the profile built from the guest differs from the DWARF-built one");
    // The same answers as with the committed profile.
    let reference = probe(&domain_arg(g));
    for key in ["release", "phys_text", "virt_text", "phys_shift", "virt_shift", "page_tables", "page_offset_base", "online_cpus"] {
        assert_eq!(built[key], reference[key], "{key}: built vs committed profile");
    }

    // The next attach uses the cache.
    let (again, err) = run(&empty);
    assert!(err.contains("using") && err.contains(file.to_str().expect("utf-8")), "{err}");
    assert_eq!(again["virt_text"], reference["virt_text"]);

    // A profile whose banner differs by one character matches nothing: the guest's own is built.
    let real = std::fs::read_to_string(kernels_dir().join(format!("{release}.json"))).expect("committed profile");
    std::fs::write(empty.join("forged.json"), real.replacen("#1 SMP", "#2 SMP", 1)).expect("write");
    std::fs::remove_dir_all(&cache).expect("clear the cache");
    let (rebuilt, err) = run(&empty);
    assert!(err.contains("built one for Linux"), "{err}");
    assert_eq!(rebuilt["virt_text"], reference["virt_text"]);

    // ps reads the guest through the built profile too.
    let domain = domain_arg(g);
    let out = xsched_with_env(&["ps", "--kernels", empty.to_str().expect("utf-8"), "--domain", &domain], &[("XSCHED_PROFILE_CACHE", &cache)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains(" init "), "ps failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&empty).expect("cleanup");
    std::fs::remove_dir_all(&cache).expect("cleanup");
}
