//! `xsched profile gen`: write a kernel layout profile from a vmlinux with debug info, or from a
//! kernel image's own BTF and kallsyms.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

/// Profile subcommands.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Generate a profile from a vmlinux with DWARF debug info, or from a kernel image's BTF.
    Gen {
        /// The vmlinux (e.g. /usr/lib/debug/boot/vmlinux-RELEASE from the kernel's -dbg package).
        #[arg(long, required_unless_present = "image", conflicts_with = "image")]
        vmlinux: Option<PathBuf>,
        /// A kernel image without DWARF: a vmlinuz (e.g. /boot/vmlinuz-RELEASE) or a vmlinux with a
        /// .BTF section; struct layouts come from its BTF, symbols from its kallsyms tables.
        #[arg(long)]
        image: Option<PathBuf>,
        /// The kernel's System.map, to take symbols from instead of the image (with --image).
        #[arg(long, requires = "image")]
        system_map: Option<PathBuf>,
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
        ProfileCommand::Gen { vmlinux, image, system_map, output, kernels } => {
            let (input, profile) = match (vmlinux, image) {
                (Some(vmlinux), _) => {
                    let profile = xsched::profile::gen::generate(&vmlinux)?;
                    (vmlinux, profile)
                }
                (None, Some(image)) => {
                    let profile = xsched::profile::gen::generate_from_btf(&image, system_map.as_deref())?;
                    (image, profile)
                }
                (None, None) => anyhow::bail!("give --vmlinux or --image"),
            };
            let output = output.unwrap_or_else(|| kernels.unwrap_or_else(|| PathBuf::from("kernels")).join(format!("{}.json", profile.release)));
            xsched::files::create(&output)
                .and_then(|mut file| file.write_all(profile.to_json().as_bytes()))
                .with_context(|| format!("writing {}", output.display()))?;
            println!("{}: profile of Linux {} written to {}", input.display(), profile.release, output.display());
            Ok(())
        }
    }
}
