//! `xsched timeline TRACE -o OUT.svg`: draws a loop trace (`xsched run --trace`) as one lane per
//! task.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use xsched::run::trace::read_trace;
use xsched::timeline::{draw_picture, lanes, Format, Mark};

/// Arguments of `xsched timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// The trace file written by `xsched run --trace` (`-`: standard input).
    trace: PathBuf,
    /// The picture to write: PNG if its name ends in .png, else SVG (`-`: SVG to standard output).
    #[arg(short, long)]
    output: PathBuf,
    /// The picture's title [default: the trace's file name].
    #[arg(long)]
    title: Option<String>,
    /// Mark a moment, as SECONDS=LABEL (seconds since the loop started; repeatable).
    #[arg(long = "mark", value_parser = parse_mark)]
    marks: Vec<Mark>,
    /// Only tasks whose name is one of these (repeatable) [default: every task in the trace].
    #[arg(long = "comm")]
    comms: Vec<String>,
}

fn parse_mark(text: &str) -> Result<Mark, String> {
    let (at, label) = text.split_once('=').ok_or("expected SECONDS=LABEL")?;
    let at: f64 = at.trim().parse().map_err(|_| format!("{at:?} is not a number of seconds"))?;
    Ok(Mark { at, label: label.to_owned() })
}

/// Reads the trace and writes the picture.
pub fn run(args: &TimelineArgs) -> anyhow::Result<()> {
    let trace = read_trace(&args.trace)?;
    let (Some(first), Some(last)) = (trace.first(), trace.last()) else {
        anyhow::bail!("trace {}: no periods in it", args.trace.display());
    };
    let mut lanes = lanes(&trace);
    if !args.comms.is_empty() {
        lanes.retain(|l| args.comms.iter().any(|c| l.name.split_once('/').is_some_and(|(_, rest)| rest.split(' ').next() == Some(c))));
    }
    let title = args.title.clone().unwrap_or_else(|| args.trace.display().to_string());
    draw_picture(&args.output, Format::of_path(&args.output), &title, &lanes, &args.marks, (first.t, last.t)).with_context(|| format!("timeline of {}", args.trace.display()))?;
    let summary = format!("{}: {} tasks, {} periods, {:.1} s", args.output.display(), lanes.len(), trace.len(), last.t - first.t);
    if xsched::files::is_standard_stream(&args.output) {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_parse_and_bad_ones_say_why() {
        assert_eq!(parse_mark("2.5=db idle"), Ok(Mark { at: 2.5, label: "db idle".into() }));
        assert_eq!(parse_mark("soon=x"), Err("\"soon\" is not a number of seconds".into()));
        assert_eq!(parse_mark("2.5"), Err("expected SECONDS=LABEL".into()));
    }
}
