//! The `xsched` command line: wiring only; each subcommand lives in `cmd/`.

mod cmd;

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cmd::Cli::parse();
    if let Err(error) = cmd::run(cli) {
        eprintln!("xsched: {}", one_line(&error));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, skipping a cause whose text the line already holds
/// (error types that print their source themselves).
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
