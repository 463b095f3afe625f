//! The main job end to end: `xsched-demo` with shortened phases on two fresh lab guests, checked
//! from its output files. The shares come from the guests' own /proc and the host's accounting
//! of each QEMU; the targets are the issue's: the background task gets under 1 % while a
//! higher-priority task is busy and runs when they all sleep. The same run plays the operator's
//! baseline once (priority scenario, u1's QEMU at twice u2's host weight, bkup at nice 19 in u1),
//! which must show the inversion xsched fixes. Reaction times are reported, not asserted.

mod common;

use std::path::Path;
use std::process::Command;

use common::{workspace, xsched_bin};
use serde_json::Value;

fn number(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or_else(|| panic!("{path:?} missing in {v}"))
}

fn variant<'a>(scenario: &'a Value, name: &str) -> &'a Value {
    let variants = scenario["variants"].as_array().expect("variants");
    variants.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no variant {name} in {}", scenario["name"]))
}

/// A variant's phase called `label`.
fn phase<'a>(variant: &'a Value, label: &str) -> &'a Value {
    let phases = variant["phases"].as_array().expect("phases");
    phases.iter().find(|p| p["label"] == label).unwrap_or_else(|| panic!("no phase {label} in {}", variant["name"]))
}

#[test]
fn the_demo_meets_its_targets_and_draws_its_pictures() {
    for name in ["priority", "idle"] {
        common::plugin(name);
    }
    let out = tempfile_dir();
    let status = Command::new(env!("CARGO_BIN_EXE_xsched-demo"))
        .args(["--phase-ms", "2500", "--baseline", "priority:weights-u1-nice19", "--out"])
        .arg(&out)
        .arg("--xsched")
        .arg(xsched_bin())
        .current_dir(workspace())
        .status()
        .expect("run xsched-demo");
    assert!(status.success(), "xsched-demo failed: {status}");

    let summary: Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary.json")).expect("json");
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    let scenarios = summary["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.iter().map(|s| s["name"].as_str().expect("name")).collect::<Vec<_>>(), ["priority", "idle"]);
    for s in scenarios {
        let name = s["name"].as_str().expect("name");
        let (without, with) = (variant(s, "without"), variant(s, "xsched"));
        // Without xsched the background task takes its guest's share (the problem exists) ...
        let bg_without = number(without, &["background", "while_foreground_busy"]);
        assert!(bg_without > 20.0, "{name}: without xsched the background got only {bg_without:.1}%");
        // ... with it, under 1 % while a higher-priority task is busy, and the CPU when all sleep.
        let busy = number(with, &["background", "while_foreground_busy"]);
        let idle = number(with, &["background", "while_all_idle"]);
        assert!(busy < 1.0, "{name}: the background got {busy:.2}% while a higher-priority task was busy\n{report}");
        assert!(idle >= 50.0, "{name}: the background got only {idle:.1}% while all others slept\n{report}");
        assert!(s["met_by"].as_array().expect("met_by").contains(&Value::from("xsched")), "{name}: xsched not among {}", s["met_by"]);
        let followed = s["reactions"].as_array().expect("reactions").len();
        assert_eq!(followed as u64, s["expected_reactions"].as_u64().expect("expected"), "{name}: phase changes not followed\n{report}");
        assert!(s["console_problems"].as_array().expect("problems").is_empty(), "{name}: {}", s["console_problems"]);
        // What xsched costs the VMs is measured and reported (a figure, not a timed target).
        let (kept, own) = (number(s, &["vm_cpu_kept"]), number(s, &["xsched_cpu"]));
        assert!(kept > 0.0 && own > 0.0, "{name}: host cost not measured");
        assert!(report.contains("of the host CPU they got without xsched"), "{name}: the report gives the host cost");
        println!("{name}: the VMs kept {kept:.1} % of their host CPU; xsched used {own:.2} %");
        // Every variant has its timeline, drawn from its trace (xsched's, or the observer's).
        for v in s["variants"].as_array().expect("variants") {
            for file in [v["picture"].as_str().expect("picture"), v["trace"].as_str().expect("trace")] {
                assert_non_empty(&out.join(file));
            }
            let svg = std::fs::read_to_string(out.join(v["picture"].as_str().expect("picture"))).expect("svg");
            assert!(svg.starts_with("<svg") && svg.contains("parked by xsched"), "{name}/{}: not a timeline picture", v["name"]);
            for task in s["tasks"].as_array().expect("tasks") {
                assert!(svg.contains(&format!("/{} ", task.as_str().expect("task"))), "{name}/{}: no lane for {task}", v["name"]);
            }
        }
    }

    // The operator's way without xsched: u1's QEMU at twice u2's host CPU weight, bkup at nice
    // 19 inside u1. While web is busy and db sleeps, bkup is u1's only work, and the host weight
    // meant for db gives it the larger share of the CPU: bkup outranks web.
    let priority = &scenarios[0];
    let weighted = variant(priority, "weights-u1-nice19");
    let host_weights = &weighted["host_weights"];
    assert!(number(host_weights, &["u1"]) == 2.0 * number(host_weights, &["u2"]), "weights not 2:1: {host_weights}");
    assert_eq!(weighted["background_setting"], "nice 19");
    let web_busy = phase(weighted, "web busy");
    let bkup = number(web_busy, &["tasks", "bkup"]);
    let (u1, u2) = (number(web_busy, &["hosts", "u1"]), number(web_busy, &["hosts", "u2"]));
    assert!(bkup > 20.0, "weights and nice: bkup got only {bkup:.1}% while web was busy\n{report}");
    assert!(u1 > u2, "weights and nice: bkup's VM got {u1:.1}% of the host CPU, web's {u2:.1}%: no inversion\n{report}");
    assert!(!weighted["meets_targets"].as_bool().expect("meets_targets"), "weights and nice met the targets\n{report}");
    // xsched, in the same phase: bkup parked, and the host CPU goes to web's VM.
    let fixed = phase(variant(priority, "xsched"), "web busy");
    let (bkup, u1, u2) = (number(fixed, &["tasks", "bkup"]), number(fixed, &["hosts", "u1"]), number(fixed, &["hosts", "u2"]));
    assert!(bkup < 1.0 && u2 > u1, "with xsched while web was busy: bkup {bkup:.1}%, host u1 {u1:.1}%, u2 {u2:.1}%\n{report}");
    println!("weights-u1-nice19 while web busy: bkup {:.1}%, host u1 {:.1}% / u2 {:.1}%", number(web_busy, &["tasks", "bkup"]), number(web_busy, &["hosts", "u1"]), number(web_busy, &["hosts", "u2"]));
    let _ = std::fs::remove_dir_all(&out);
}

fn assert_non_empty(path: &Path) {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert!(len > 0, "{} is missing or empty", path.display());
}

/// A fresh output folder in the temp directory.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("xsched-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
