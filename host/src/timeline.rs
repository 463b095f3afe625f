//! Timeline pictures of a loop trace, like the paper's Figure 2: one lane per task, showing
//! when it was on its guest's runqueue, when xsched held it parked, when it slept, and how much
//! CPU its guest kernel accounted to it in each period. SVG or PNG; the text is laid out with a
//! TrueType font: `$XSCHED_FONT`, else DejaVu Sans from Debian's `fonts-dejavu-core`.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::run::trace::{Decision, TraceLine};
use crate::text::printable;

/// What a task was doing over a stretch of time, as xsched saw it at the periods' starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Runnable: running or waiting on its runqueue.
    Queued,
    /// Held parked by xsched.
    Parked,
    /// Sleeping (wanting no CPU).
    Sleeping,
}

impl Activity {
    fn of(decision: Decision, state: &str) -> Self {
        match decision {
            Decision::Park | Decision::Parked => Self::Parked,
            Decision::Unpark => Self::Queued,
            Decision::Run | Decision::Idle if state == "R" => Self::Queued,
            Decision::Run | Decision::Idle => Self::Sleeping,
        }
    }
}

/// A stretch of one activity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    /// Start, seconds.
    pub from: f64,
    /// End, seconds.
    pub to: f64,
    /// What the task was doing.
    pub activity: Activity,
}

/// One task's lane.
#[derive(Clone, Debug, PartialEq)]
pub struct Lane {
    /// `domain/comm pid`.
    pub name: String,
    /// Its activities over time, merged where they repeat.
    pub spans: Vec<Span>,
    /// Per period: (start, end, share of one CPU its kernel accounted to it, 0–1).
    pub cpu: Vec<(f64, f64, f64)>,
}

/// A marked moment (a phase change), drawn as a vertical line with its label.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    /// Seconds since the loop started.
    pub at: f64,
    /// What begins there.
    pub label: String,
}

/// The lanes of a trace, ordered by domain, name and pid. Between a task's first and last line
/// in the trace, a period it is missing from counts as sleeping (the policy ranked only tasks
/// that wanted a CPU); its CPU share is known for periods it is in at both ends.
pub fn lanes(trace: &[TraceLine]) -> Vec<Lane> {
    type Key = (String, String, i32);
    let key = |t: &crate::run::trace::TraceTask| (t.domain.clone(), t.comm.clone(), t.pid);
    let mut seen: BTreeMap<Key, (usize, usize)> = BTreeMap::new();
    for (i, line) in trace.iter().enumerate() {
        for task in &line.tasks {
            seen.entry(key(task)).and_modify(|(_, last)| *last = i).or_insert((i, i));
        }
    }
    let mut lanes: BTreeMap<Key, Lane> = seen
        .keys()
        .map(|k| (k.clone(), Lane { name: format!("{}/{} {}", k.0, k.1, k.2), spans: Vec::new(), cpu: Vec::new() }))
        .collect();
    for (i, (line, next)) in trace.iter().zip(trace.iter().skip(1)).enumerate() {
        let (from, to) = (line.t, next.t);
        if to <= from {
            continue;
        }
        for (k, lane) in &mut lanes {
            let (first, last) = seen[k];
            if i < first || i >= last {
                continue;
            }
            let now = line.tasks.iter().find(|t| key(t) == *k);
            let activity = now.map_or(Activity::Sleeping, |t| Activity::of(t.decision, &t.state));
            match lane.spans.last_mut() {
                Some(span) if span.activity == activity && span.to == from => span.to = to,
                _ => lane.spans.push(Span { from, to, activity }),
            }
            let later = next.tasks.iter().find(|t| key(t) == *k);
            if let (Some(now), Some(later)) = (now, later) {
                let ran = later.runtime_ns.saturating_sub(now.runtime_ns) as f64 / 1e9;
                lane.cpu.push((from, to, (ran / (to - from)).clamp(0.0, 1.0)));
            }
        }
    }
    lanes.into_values().collect()
}

/// Where a lane's band sits inside its row (fractions of the row height).
const BAND: (f64, f64) = (0.15, 0.85);

/// The picture formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// SVG text.
    Svg,
    /// A PNG bitmap.
    Png,
}

impl Format {
    /// The format a file name asks for: PNG for `.png`, else SVG.
    pub fn of_path(path: &Path) -> Self {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("png") => Self::Png,
            _ => Self::Svg,
        }
    }
}

/// Where a bitmap's font is looked for when `$XSCHED_FONT` is unset.
const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws `lanes` between `start` and `end` seconds, with `marks`, into `path` (`-`: standard
/// output) in `format`. Every text in the picture (task names come from guests) is shown through
/// [`printable`], so an SVG is well-formed XML whatever the names hold.
pub fn draw_picture(path: &Path, format: Format, title: &str, lanes: &[Lane], marks: &[Mark], range: (f64, f64)) -> anyhow::Result<()> {
    let rows = u32::try_from(lanes.len()).unwrap_or(u32::MAX).max(1);
    let size = (1200, 170_u32.saturating_add(rows.saturating_mul(70)));
    let drawing = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    register_font()?;
    let bytes = match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw(&root, title, lanes, marks, range).map_err(|e| drawing(&e))?;
                root.present().map_err(|e| drawing(&e))?;
            }
            svg.into_bytes()
        }
        Format::Png => {
            let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
                draw(&root, title, lanes, marks, range).map_err(|e| drawing(&e))?;
                root.present().map_err(|e| drawing(&e))?;
            }
            encode_png(&pixels, size).map_err(|e| drawing(&e))?
        }
    };
    crate::files::write_output(path, &bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Gives plotters the font the text is laid out (and, in a bitmap, drawn) with, once per process.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = REGISTERED.get_or_init(|| {
        let path = std::env::var_os("XSCHED_FONT").filter(|p| !p.is_empty()).map_or_else(|| std::path::PathBuf::from(DEFAULT_FONT), std::path::PathBuf::from);
        let hint = "a timeline needs a TrueType font: install fonts-dejavu-core, or set XSCHED_FONT to a .ttf file";
        let mut bytes = Vec::new();
        crate::files::open_input(&path)
            .and_then(|mut file| std::io::Read::read_to_end(&mut file, &mut bytes))
            .map_err(|e| format!("font {}: {e} ({hint})", path.display()))?;
        // plotters keeps registered fonts for the life of the process: this one is read once.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("font {}: not a TrueType font ({hint})", path.display()))
    });
    result.clone().map_err(anyhow::Error::msg)
}

/// RGB pixels of a `size` bitmap as a PNG file.
fn encode_png(pixels: &[u8], (width, height): (u32, u32)) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, lanes: &[Lane], marks: &[Mark], (start, end): (f64, f64)) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (_, height) = root.dim_in_pixel();
    let (upper, key) = root.split_vertically(height.saturating_sub(LEGEND_HEIGHT));
    let rows = lanes.len().max(1) as f64;
    let end = if end > start { end } else { start + 1.0 };
    let mut chart = ChartBuilder::on(&upper)
        .caption(printable(title), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(170)
        .build_cartesian_2d(start..end, 0.0..rows)?;
    chart.configure_mesh().disable_y_mesh().y_labels(0).x_desc("seconds").light_line_style(WHITE.mix(0.0)).draw()?;

    // Lane k is drawn in row (rows - 1 - k): the first lane on top.
    let row = |k: usize| rows - 1.0 - k as f64;
    let queued = GREEN.mix(0.35).filled();
    let parked = RED.mix(0.55).filled();
    for (k, lane) in lanes.iter().enumerate() {
        let (lo, hi) = (row(k) + BAND.0, row(k) + BAND.1);
        let band = |activity, style: ShapeStyle| {
            lane.spans.iter().filter(move |s| s.activity == activity).map(move |s| Rectangle::new([(s.from, lo), (s.to, hi)], style))
        };
        chart.draw_series(band(Activity::Queued, queued))?;
        chart.draw_series(band(Activity::Parked, parked))?;
        let sleeping = lane.spans.iter().filter(|s| s.activity == Activity::Sleeping);
        chart.draw_series(sleeping.map(|s| PathElement::new(vec![(s.from, lo), (s.to, lo)], BLACK.mix(0.4))))?;
        chart.draw_series(cpu_steps(&lane.cpu, lo, hi).into_iter().map(|path| PathElement::new(path, BLUE.stroke_width(1))))?;
        let (x, y) = chart.backend_coord(&(start, row(k) + 0.5));
        upper.draw(&Text::new(printable(&lane.name).into_owned(), (x - 8, y), TextStyle::from(("sans-serif", 15).into_font()).pos(label_anchor())))?;
    }
    for mark in marks.iter().filter(|m| m.at >= start && m.at <= end) {
        chart.draw_series([PathElement::new(vec![(mark.at, 0.0), (mark.at, rows)], BLACK.mix(0.6))])?;
        let (x, y) = chart.backend_coord(&(mark.at, rows));
        upper.draw(&Text::new(printable(&mark.label).into_owned(), (x + 4, y + 4), ("sans-serif", 13)))?;
    }
    legend(&key)?;
    Ok(())
}

/// The CPU shares as step lines between `lo` (0 %) and `hi` (100 %), one path per stretch of
/// consecutive periods (no line across the gaps).
fn cpu_steps(cpu: &[(f64, f64, f64)], lo: f64, hi: f64) -> Vec<Vec<(f64, f64)>> {
    let mut paths: Vec<Vec<(f64, f64)>> = Vec::new();
    for &(from, to, share) in cpu {
        let y = lo + share * (hi - lo);
        match paths.last_mut() {
            Some(path) if path.last().is_some_and(|&(x, _)| x == from) => path.extend([(from, y), (to, y)]),
            _ => paths.push(vec![(from, y), (to, y)]),
        }
    }
    paths
}

/// Right-aligned, vertically centred text.
fn label_anchor() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Right, VPos::Center)
}

/// The height of the key below the chart, pixels.
const LEGEND_HEIGHT: u32 = 30;

/// The key, in its own strip below the chart.
fn legend<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
    let y = 12;
    let items: [(&str, ShapeStyle); 3] = [
        ("on its runqueue", GREEN.mix(0.35).filled()),
        ("parked by xsched", RED.mix(0.55).filled()),
        ("CPU its kernel accounted (0-100% of the band)", BLUE.filled()),
    ];
    let mut x = 12;
    for (text, style) in items {
        root.draw(&Rectangle::new([(x, y - 6), (x + 18, y + 6)], style))?;
        root.draw(&Text::new(text, (x + 24, y - 7), ("sans-serif", 13)))?;
        x += 40 + 8 * i32::try_from(text.len()).unwrap_or(0);
    }
    root.draw(&PathElement::new(vec![(x, y + 4), (x + 18, y + 4)], BLACK.mix(0.4)))?;
    root.draw(&Text::new("sleeping", (x + 24, y - 7), ("sans-serif", 13)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::trace::TraceTask;

    fn line(t: f64, tasks: &[(&str, &str, Decision, u64)]) -> TraceLine {
        let tasks = tasks
            .iter()
            .map(|&(comm, state, decision, runtime_ns)| TraceTask {
                domain: "u1".into(),
                pid: if comm == "db" { 1 } else { 2 },
                comm: comm.into(),
                state: state.into(),
                queued: state == "R",
                running: false,
                decision,
                runtime_ns,
            })
            .collect();
        TraceLine { t, period: 0, tasks, wall: t }
    }

    #[test]
    fn lanes_merge_repeated_activities_and_measure_cpu_per_period() {
        let trace = [
            line(0.0, &[("db", "R", Decision::Run, 0), ("bkup", "R", Decision::Park, 0)]),
            line(0.1, &[("db", "R", Decision::Run, 100_000_000), ("bkup", "P", Decision::Parked, 1_000_000)]),
            line(0.2, &[("db", "S", Decision::Idle, 150_000_000), ("bkup", "P", Decision::Unpark, 1_000_000)]),
            line(0.3, &[("db", "S", Decision::Idle, 150_000_000), ("bkup", "R", Decision::Run, 100_000_000)]),
            line(0.4, &[("bkup", "R", Decision::Run, 200_000_000)]),
            line(0.5, &[("db", "R", Decision::Run, 150_000_000), ("bkup", "R", Decision::Run, 200_000_000)]),
        ];
        let lanes = lanes(&trace);
        let names: Vec<&str> = lanes.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["u1/bkup 2", "u1/db 1"]);
        let db = &lanes[1];
        assert_eq!(db.spans.iter().map(|s| (s.activity, s.from, s.to)).collect::<Vec<_>>(), [
            (Activity::Queued, 0.0, 0.2),
            (Activity::Sleeping, 0.2, 0.5)
        ]);
        let shares: Vec<f64> = db.cpu.iter().map(|c| (c.2 * 100.0).round()).collect();
        assert_eq!(shares, [100.0, 50.0, 0.0], "periods where db is missing at either end have no share");
        let bkup = &lanes[0];
        assert_eq!(bkup.spans.iter().map(|s| s.activity).collect::<Vec<_>>(), [Activity::Parked, Activity::Queued]);
    }

    #[test]
    fn a_picture_is_written() {
        let trace = [
            line(0.0, &[("db", "R", Decision::Run, 0)]),
            line(0.5, &[("db", "S", Decision::Idle, 400_000_000)]),
            line(1.0, &[("db", "S", Decision::Idle, 400_000_000)]),
        ];
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.svg");
        let marks = [Mark { at: 0.5, label: "db idle".into() }];
        draw_picture(&path, Format::of_path(&path), "test", &lanes(&trace), &marks, (0.0, 1.0)).expect("draw");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains("u1/db 1") && svg.contains("db idle"), "{svg}");

        // The same as a PNG: a decodable image of the same size, not blank.
        let png_path = dir.path().join("t.PNG");
        assert_eq!(Format::of_path(&png_path), Format::Png);
        draw_picture(&png_path, Format::Png, "test", &lanes(&trace), &marks, (0.0, 1.0)).expect("draw png");
        let decoder = png::Decoder::new(std::fs::File::open(&png_path).expect("png"));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).expect("a frame");
        assert_eq!((info.width, info.height), (1200, 240));
        let dark = pixels[..info.buffer_size()].chunks(3).filter(|p| p.iter().all(|&c| c < 100)).count();
        assert!(dark > 500, "text and axes are drawn ({dark} dark pixels)");
    }

    #[test]
    fn guest_names_with_control_bytes_leave_the_picture_well_formed() {
        let comm = String::from_utf8_lossy(b"\x1b[2J\x07<ev>&\nil\xff").into_owned();
        let trace = [line(0.0, &[(&comm, "R", Decision::Run, 0)]), line(1.0, &[(&comm, "R", Decision::Run, 1)])];
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.svg");
        draw_picture(&path, Format::Svg, "a\u{7}title", &lanes(&trace), &[Mark { at: 0.5, label: "\u{1b}]0;x\u{7}".into() }], (0.0, 1.0)).expect("draw");
        let svg = std::fs::read_to_string(&path).expect("svg");
        assert!(svg.contains("u1/?[2J?&lt;ev&gt;&amp;?il? 2"), "{svg}");
        let forbidden = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r') || matches!(c, '\u{fffe}' | '\u{ffff}');
        assert!(!svg.chars().any(forbidden), "{svg}");
        assert!(!svg.contains("&#"), "no character references either");
    }
}
