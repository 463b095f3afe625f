//! Subcommands of the `xsched` binary.

mod park;
mod probe;
mod profile;
mod ps;
mod run;
mod settings;
mod timeline;

use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Args, Parser, Subcommand};
use xsched::profile::Profile;

/// The forms of a domain spec, for the help of every `--domain` (a macro: `concat!` takes only
/// literals).
macro_rules! domain_forms {
    () => {
        "NAME=qemu:RAMFILE[,qmp=SOCK][,machine=q35|pc] (a QEMU guest's shared RAM file and QMP socket) | \
         NAME=qemu-process:QMP_SOCKET[,pid=N] (any QEMU guest, through its process's memory) | \
         NAME=libvirt:DOMAIN[,uri=qemu:///system] (a libvirt domain by its name) | \
         NAME=core:FILE (a guest's ELF core dump: read only) | NAME=xen:DOMID (a Xen domain); \
         each may end in ,floor=P%,cap=P% (its share of the host CPU budget)"
    };
}
pub(crate) use domain_forms;

/// A system-wide process scheduler that spans virtual machines.
#[derive(Debug, Parser)]
#[command(name = "xsched", version, about, arg_required_else_help = true, args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, `xsched --plugin PATH --domain …` runs the scheduling loop.
    #[command(flatten)]
    run: Option<run::RunArgs>,
    /// More log lines: -v info, -vv debug, -vvv trace [default: warnings and errors; RUST_LOG
    /// overrides both flags].
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Errors only in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

impl Cli {
    /// The log level the flags ask for.
    pub fn log_level(&self) -> log::LevelFilter {
        match (self.quiet, self.verbose) {
            (true, _) => log::LevelFilter::Error,
            (false, 0) => log::LevelFilter::Warn,
            (false, 1) => log::LevelFilter::Info,
            (false, 2) => log::LevelFilter::Debug,
            (false, _) => log::LevelFilter::Trace,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Find the guest kernel in a domain and print where it is.
    Probe(probe::ProbeArgs),
    /// Park a task: take it off the CPU until it is unparked (journaled first).
    Park(park::TaskArgs),
    /// Unpark a task parked by xsched.
    Unpark(park::TaskArgs),
    /// Unpark what the journal says is parked (after a crash, or to clean up).
    Release(park::ReleaseArgs),
    /// Run the scheduling loop with a policy plugin.
    Run(run::RunArgs),
    /// List every task of every domain in one table.
    Ps(ps::PsArgs),
    /// Draw a loop trace (`run --trace`) as a timeline picture, one lane per task.
    Timeline(timeline::TimelineArgs),
    /// Kernel layout profiles.
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // Before the first pause. The loop reloads its policy on SIGHUP; for the rest it is a stop.
    let runs_loop = matches!(cli.command, None | Some(Command::Run(_)));
    xsched::interrupt::install(&xsched::interrupt::stop_signals(!runs_loop)).context("installing signal handlers")?;
    let Some(command) = cli.command else {
        return match cli.run {
            Some(args) => run::run(&args),
            None => anyhow::bail!("nothing to do: give a subcommand, or --plugin and --domain to run the loop (see --help)"),
        };
    };
    match command {
        Command::Run(args) => run::run(&args),
        Command::Probe(args) => probe::run(&args),
        Command::Profile(command) => profile::run(command),
        Command::Ps(args) => ps::run(&args),
        Command::Park(args) => park::park(&args),
        Command::Unpark(args) => park::unpark(&args),
        Command::Release(args) => park::release(&args),
        Command::Timeline(args) => timeline::run(&args),
    }
}

/// `--kernels`, the flag of every command that attaches a domain.
#[derive(Clone, Debug, Default, Args)]
pub struct KernelsArg {
    /// Directory of kernel profiles [default: $XSCHED_KERNELS, else ./kernels, else
    /// /usr/share/xsched/kernels, else the source tree's].
    #[arg(long)]
    kernels: Option<PathBuf>,
}

impl KernelsArg {
    /// This flag, or `kernels` where it was not given (from a settings file: the command line
    /// wins).
    pub fn or(&self, kernels: Option<PathBuf>) -> Self {
        Self { kernels: self.kernels.clone().or(kernels) }
    }

    /// Every profile in the directory (see [`kernels_dir`]).
    pub fn profiles(&self) -> anyhow::Result<Vec<Profile>> {
        Ok(Profile::load_dir(&kernels_dir(self.kernels.clone()))?.into_iter().map(|(_, p)| p).collect())
    }
}

/// Where the kernel profiles are: `--kernels`, else `$XSCHED_KERNELS` (unless empty), else `./kernels`, else the
/// system directory, else the source tree this binary was built from.
fn kernels_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| env_path("XSCHED_KERNELS"))
        .or_else(|| Some(PathBuf::from("kernels")).filter(|p| p.is_dir()))
        .or_else(|| Some(PathBuf::from("/usr/share/xsched/kernels")).filter(|p| p.is_dir()))
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels")))
}

/// The path in the environment variable `name`; unset or empty is none (an empty path is never
/// meant as one).
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from)
}
