//! `xsched profile gen`: write a kernel layout profile from a vmlinux with debug info, or from the
//! BTF and kallsyms of a kernel image or of a guest's core dump.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use xsched::linux::discover;
use xsched::memory::core::CoreMemory;

/// Profile subcommands.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Generate a profile from a vmlinux with DWARF debug info, or from the BTF of a kernel image
    /// or of a guest's core dump.
    Gen {
        /// The vmlinux (e.g. /usr/lib/debug/boot/vmlinux-RELEASE from the kernel's -dbg package).
        #[arg(long, required_unless_present_any = ["image", "core"], conflicts_with_all = ["image", "core"])]
        vmlinux: Option<PathBuf>,
        /// A kernel image without DWARF: a vmlinuz (e.g. /boot/vmlinuz-RELEASE) or a vmlinux with a
        /// .BTF section; struct layouts come from its BTF, symbols from its kallsyms tables.
        #[arg(long, conflicts_with = "core")]
        image: Option<PathBuf>,
        /// A core dump of a guest (QEMU's `dump-guest-memory`, ELF): the profile is built from the
        /// BTF and kallsyms of the kernel in its memory, as attach builds one for a running guest.
        #[arg(long)]
        core: Option<PathBuf>,
        /// The kernel's System.map, to take symbols from instead of the image (with --image).
        #[arg(long, requires = "image")]
        system_map: Option<PathBuf>,
        /// Output file (`-`: standard output) [default: RELEASE.json in the --kernels directory].
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
        ProfileCommand::Gen { vmlinux, image, core, system_map, output, kernels } => {
            let (input, profile) = match (vmlinux, image, core) {
                (Some(vmlinux), _, _) => {
                    let profile = xsched::profile::gen::generate(&vmlinux)?;
                    (vmlinux, profile)
                }
                (None, Some(image), _) => {
                    let profile = xsched::profile::gen::generate_from_btf(&image, system_map.as_deref())?;
                    (image, profile)
                }
                (None, None, Some(core)) => {
                    let memory = CoreMemory::open(&core).with_context(|| core.display().to_string())?;
                    let built = discover::build(&memory).with_context(|| core.display().to_string())?;
                    (core, built.profile)
                }
                (None, None, None) => anyhow::bail!("give --vmlinux, --image or --core"),
            };
            let output = output.unwrap_or_else(|| kernels.unwrap_or_else(|| PathBuf::from("kernels")).join(format!("{}.json", profile.release)));
            xsched::files::write_output(&output, profile.to_json().as_bytes()).with_context(|| format!("writing {}", output.display()))?;
            if !xsched::files::is_standard_stream(&output) {
                println!("{}: profile of Linux {} written to {}", input.display(), profile.release, output.display());
            }
            Ok(())
        }
    }
}
