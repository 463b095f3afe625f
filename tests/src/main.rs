//! `xsched-lab`: boot lab guests by hand, or fetch what they need.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use xsched_lab::{kernel, GuestSpec, Lab};

/// The xsched guest lab.
#[derive(Debug, Parser)]
#[command(name = "xsched-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Boot guests and keep them up until Ctrl-C (then stop them and remove their files).
    Up {
        /// A guest: NAME[:ITEM,...]; items: vcpus=N, mem=MIB, sleepers=N, view=MS, la57,
        /// arg=KERNEL_WORD, or a workload COMM=KIND[*COUNT][@CGROUP] with KIND cpu, sleep, steered
        /// or phases:BUSY_MS:IDLE_MS. Example: u1:vcpus=2,db=cpu,web=phases:200:300,bkup=cpu@g1
        #[arg(long = "guest", required = true)]
        guests: Vec<String>,
    },
    /// Install the packages and fetch the pinned kernel (scripts/install-deps.sh).
    Fetch,
    /// Print where the pinned kernel's files are.
    Kernel,
    /// Remove guest directories (and kill QEMUs) left by lab processes that died.
    Sweep,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up { guests } => up(&guests),
        Cmd::Fetch => {
            let script = kernel::install_script();
            let status = Command::new(&script).status().with_context(|| format!("run {}", script.display()))?;
            if !status.success() {
                bail!("{} failed: {status}", script.display());
            }
            Ok(())
        }
        Cmd::Sweep => {
            xsched_lab::cleanup::sweep();
            Ok(())
        }
        Cmd::Kernel => {
            let k = xsched_lab::KernelFiles::locate()?;
            println!("release: {} ({})", k.pin.release, k.pin.version);
            println!("vmlinuz: {}", k.vmlinuz.display());
            println!("vmlinux: {}", k.vmlinux.display());
            println!("config: {}", k.config.display());
            println!("qemu_fw_cfg.ko: {}", k.fw_cfg_module.display());
            Ok(())
        }
    }
}

fn up(texts: &[String]) -> Result<()> {
    let specs = texts.iter().map(|t| t.parse::<GuestSpec>()).collect::<Result<Vec<_>, _>>()?;
    let guests = Lab::boot(&specs)?;
    for g in &guests {
        println!("guest {} (qemu pid {}, ready after {:?})", g.name(), g.qemu_pid(), g.boot_time().unwrap_or_default());
        println!("  ram:     {}", g.ram_file().display());
        println!("  qmp:     {}", g.qmp_socket().display());
        println!("  console: {}", g.console_path().display());
        println!("  control: {}", g.control_socket().display());
        println!("  vmlinux: {}", g.kernel().vmlinux.display());
        for (name, pids) in g.workload_pids() {
            println!("  workload {name}: pids {pids:?}");
        }
    }
    println!("up; Ctrl-C stops the guests");
    // The lab's signal watcher stops the guests and re-raises Ctrl-C; here we only watch for deaths.
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(dead) = guests.iter().find(|g| !g.is_running()) {
            bail!("guest {} stopped on its own; console: {}", dead.name(), dead.console_path().display());
        }
    }
}
