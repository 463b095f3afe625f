//! `xsched probe`: find the guest kernel in a domain and print where it is.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use xsched::domain::DomainSpec;
use xsched::linux::flavour::Flavour;
use xsched::linux::discover::locate_live_or_build;
use xsched::memory::Pause;

/// Arguments of `xsched probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[arg(long, help = concat!("The domain, as ", super::domain_forms!(), "."))]
    domain: DomainSpec,
    #[command(flatten)]
    kernels: super::KernelsArg,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Probes the domain: searches its RAM for the kernel while it runs, pauses it to confirm the
/// find (leaving a guest someone else paused as it is, and saying so), resumes it.
pub fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let mut profiles = args.kernels.profiles()?;
    let mut mem = args.domain.open().with_context(|| format!("domain {}", args.domain.name))?;
    let started = Instant::now();
    let (location, pause) = locate_live_or_build(mem.as_mut(), &mut profiles).with_context(|| format!("domain {}", args.domain.name))?;
    if pause == Pause::HeldByOthers {
        eprintln!("xsched: domain {} is paused by someone else: read as it is, and left paused", args.domain.name);
    }
    let elapsed = started.elapsed();
    log::info!("probe took {elapsed:?}");
    let l = &location;
    let flavour = Flavour::of(&profiles[l.profile_index]).with_context(|| format!("domain {}", args.domain.name))?;
    if args.json {
        let report = json!({
            "domain": args.domain.name,
            "release": l.release,
            "scheduler": flavour.to_string(),
            "banner_gpa": l.banner.raw(),
            "phys_text": l.phys_text.raw(),
            "virt_text": l.virt_text.raw(),
            "phys_shift": l.phys_shift,
            "virt_shift": l.virt_shift,
            "paging_levels": l.page_tables.mode.levels(),
            "page_tables": l.page_tables.root.raw(),
            "page_offset_base": l.page_offset_base.raw(),
            "nr_cpu_ids": l.nr_cpu_ids,
            "online_cpus": l.online_cpus,
            "paused_by_others": pause == Pause::HeldByOthers,
        });
        println!("{report}");
    } else {
        println!("domain:           {}", args.domain.name);
        println!("kernel release:   {}", xsched::text::printable(&l.release));
        println!("scheduler:        {flavour}");
        println!("physical shift:   {:#x} (_text at physical {})", l.phys_shift, l.phys_text);
        println!("virtual shift:    {:#x} (_text at {})", l.virt_shift, l.virt_text);
        println!("paging:           {} (root table at {})", l.page_tables.mode, l.page_tables.root);
        println!("direct map base:  {}", l.page_offset_base);
        println!("CPUs:             {} online of {} possible", l.online_cpus.len(), l.nr_cpu_ids);
    }
    Ok(())
}
