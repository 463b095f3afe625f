//! `xsched-lab`: boot lab guests by hand, or fetch what they need.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use xsched_lab::{kernel, GuestSpec, KernelFiles, KernelPin, Lab};

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
        /// A guest: NAME[:ITEM,...]; items: kernel=PIN, vcpus=N, mem=MIB, sleepers=N, view=MS, la57,
        /// arg=KERNEL_WORD, or a workload COMM=KIND[*COUNT][@CGROUP] with KIND cpu, sleep, steered
        /// or phases:BUSY_MS:IDLE_MS. Example: u1:vcpus=2,db=cpu,web=phases:200:300,bkup=cpu@g1
        #[arg(long = "guest", required = true)]
        guests: Vec<String>,
        /// The kernel of the guests without kernel=: a pin in tests/lab/kernels/ (6.1, 6.12, 7.3)
        /// [default: $XSCHED_LAB_KERNEL, else 6.1].
        #[arg(long)]
        kernel: Option<KernelPin>,
    },
    /// Install the packages and fetch every pinned kernel (scripts/install-deps.sh).
    Fetch,
    /// Print where a pinned kernel's files are.
    Kernel {
        /// The pin (6.1, 6.12) [default: $XSCHED_LAB_KERNEL, else 6.1].
        #[arg(long)]
        kernel: Option<KernelPin>,
    },
    /// Remove guest directories (and kill QEMUs) left by lab processes that died.
    Sweep,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up { guests, kernel } => up(&guests, kernel),
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
        Cmd::Kernel { kernel } => {
            let k = KernelFiles::locate(&kernel.map_or_else(KernelPin::selected, Ok)?)?;
            println!("kernel: {}", k.pin.name);
            println!("release: {} ({})", k.pin.release, k.pin.version);
            println!("vmlinuz: {}", k.vmlinuz.display());
            println!("vmlinux: {}", k.vmlinux.display());
            println!("config: {}", k.config.display());
            println!("qemu_fw_cfg.ko: {}", k.fw_cfg_module.display());
            Ok(())
        }
    }
}

fn up(texts: &[String], kernel: Option<KernelPin>) -> Result<()> {
    let mut specs = texts.iter().map(|t| t.parse::<GuestSpec>()).collect::<Result<Vec<_>, _>>()?;
    for spec in specs.iter_mut().filter(|s| s.kernel.is_none()) {
        spec.kernel.clone_from(&kernel);
    }
    let guests = Lab::boot(&specs)?;
    for g in &guests {
        println!("guest {} (qemu pid {}, ready after {:?})", g.name(), g.qemu_pid(), g.boot_time().unwrap_or_default());
        println!("  kernel:  {}", g.kernel().pin);
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
