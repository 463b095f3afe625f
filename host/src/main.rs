//! The `xsched` command line: wiring only; each subcommand lives in `cmd/`.

mod cmd;

use std::io::Write;

use clap::Parser;
use xsched::text::printable;

fn main() {
    let cli = match cmd::Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and bare `xsched` (the help, on stderr, exit status 2).
        Err(e) if !e.use_stderr() || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => fail(&usage_error(&e)),
    };
    // Log lines and the error line may quote what a guest wrote (a comm, a cgroup name, a file
    // that is not a journal): both are shown through `printable`.
    env_logger::Builder::new()
        .filter_level(cli.log_level())
        .parse_env(env_logger::Env::default())
        .format(|out, record| {
            let level = out.default_level_style(record.level());
            let message = record.args().to_string();
            writeln!(out, "[{} {level}{:<5}{level:#} {}] {}", out.timestamp(), record.level(), record.target(), printable(&message))
        })
        .init();
    if let Err(error) = cmd::run(cli) {
        fail(&one_line(&error));
    }
}

/// Prints `xsched: MESSAGE` as one line on stderr and exits with status 1.
fn fail(message: &str) -> ! {
    eprintln!("xsched: {}", printable(message));
    std::process::exit(1);
}

/// A command-line error on one line: clap's message up to its first blank line (the usage and
/// the pointer to --help follow it), without its `error: ` prefix.
fn usage_error(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let lines: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let line = lines.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
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
