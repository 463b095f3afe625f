//! The `xsched` command line: wiring only; each subcommand lives in `cmd/`.

mod cmd;

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cmd::Cli::parse();
    if let Err(error) = cmd::run(cli) {
        eprintln!("xsched: {error:#}");
        std::process::exit(1);
    }
}
