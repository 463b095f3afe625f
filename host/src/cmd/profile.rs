//! `xsched profile gen`: write a kernel layout profile from a vmlinux with debug info.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

/// Profile subcommands.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Generate a profile from a vmlinux with DWARF debug info.
    Gen {
        /// The vmlinux (e.g. /usr/lib/debug/boot/vmlinux-RELEASE from the kernel's -dbg package).
        #[arg(long)]
        vmlinux: PathBuf,
        /// Output file [default: kernels/RELEASE.json].
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

/// Runs a profile subcommand.
pub fn run(command: ProfileCommand) -> anyhow::Result<()> {
    match command {
        ProfileCommand::Gen { vmlinux, output } => {
            let profile = xsched::profile::gen::generate(&vmlinux)?;
            let output = output.unwrap_or_else(|| PathBuf::from("kernels").join(format!("{}.json", profile.release)));
            std::fs::write(&output, profile.to_json()).with_context(|| format!("writing {}", output.display()))?;
            println!("{}: profile of Linux {} written to {}", vmlinux.display(), profile.release, output.display());
            Ok(())
        }
    }
}
