//! `xsched profile gen`: write a kernel layout profile from a vmlinux with debug info.

use std::io::Write;
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
        /// Output file [default: RELEASE.json in the --kernels directory].
        #[arg(short, long, conflicts_with = "kernels")]
        output: Option<PathBuf>,
        /// The directory of kernel profiles to write RELEASE.json into [default: ./kernels].
        #[arg(long)]
        kernels: Option<PathBuf>,
    },
}

/// Runs a profile subcommand.
pub fn run(command: ProfileCommand) -> anyhow::Result<()> {
    match command {
        ProfileCommand::Gen { vmlinux, output, kernels } => {
            let profile = xsched::profile::gen::generate(&vmlinux)?;
            let output = output.unwrap_or_else(|| kernels.unwrap_or_else(|| PathBuf::from("kernels")).join(format!("{}.json", profile.release)));
            xsched::files::create(&output)
                .and_then(|mut file| file.write_all(profile.to_json().as_bytes()))
                .with_context(|| format!("writing {}", output.display()))?;
            println!("{}: profile of Linux {} written to {}", vmlinux.display(), profile.release, output.display());
            Ok(())
        }
    }
}
