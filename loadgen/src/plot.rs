//! Latency-by-percentile charts, drawn as PNG files.
//!
//! The chart is the classic HdrHistogram percentile plot: the x axis is the
//! "number of nines" of a percentile, `log10(1 / (1 - p))`, so 0%, 90%, 99%,
//! 99.9%, ... are evenly spaced and the tail, where latency problems live,
//! gets as much room as the median. The y axis is latency on a linear scale,
//! in milliseconds when the largest value drawn is over 10 ms and in
//! microseconds otherwise. Each [`Series`] is one line, named in a legend.
//!
//! The 100th percentile (the maximum) has infinitely many nines, so it can not
//! sit on that axis: it is left out of the line and printed in the legend
//! instead ("append (max 12.4 ms)"). The same holds for any point beyond
//! [`NINES_AXIS_MAX`].
//!
//! Layout: [`validate`] and the axis helpers are pure; [`render_png`] draws
//! into memory and encodes; only [`write_percentile_plot`] touches the disk.
//!
//! Text is rendered by plotters' pure-Rust `ab_glyph` backend from a subset
//! of DejaVu Sans embedded in the binary (`loadgen/assets/`, with its
//! license), so drawing needs no system fonts, fontconfig or freetype. The
//! subset covers printable ASCII and Latin-1 (which has `µ`); other characters
//! in a title or label are left blank.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::register_font;

/// One latency distribution to draw: a label and (percentile in 0..=100, latency in microseconds) points.
///
/// Points may come in any order; they are drawn sorted by percentile.
pub struct Series {
    /// Legend text for this line.
    pub label: String,
    /// `(percentile, latency_us)` pairs: percentile in `0.0..=100.0`, latency
    /// in microseconds, finite and not negative.
    pub points: Vec<(f64, f64)>,
}

/// Width of the PNG written by [`write_percentile_plot`].
pub const PLOT_WIDTH_PX: u32 = 1200;
/// Height of the PNG written by [`write_percentile_plot`].
pub const PLOT_HEIGHT_PX: u32 = 720;

/// Most series one chart takes: one per palette colour, so no two lines share
/// a colour.
pub const SERIES_COUNT_MAX: usize = LINE_COLORS.len();
/// Most points one series takes. An HdrHistogram percentile iteration yields a
/// few hundred; this only stops a runaway caller from allocating without end.
pub const POINTS_PER_SERIES_MAX: usize = 1_000_000;

/// The x axis always reaches at least 99% (two nines), even for a short run.
pub const NINES_AXIS_MIN: u32 = 2;
/// The x axis stops at 99.99999% (seven nines); points past it are not drawn.
pub const NINES_AXIS_MAX: u32 = 7;

/// Above this largest latency (in µs) the y axis is in milliseconds.
pub const MILLIS_THRESHOLD_US: f64 = 10_000.0;

/// The Okabe-Ito palette, which stays distinguishable with the common
/// colour-vision deficiencies, with brown in place of its yellow: yellow lines
/// vanish on white.
const LINE_COLORS: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(230, 159, 0),   // orange
    RGBColor(0, 0, 0),       // black
    RGBColor(128, 64, 0),    // brown
];

/// Family name the embedded font is registered under. plotters asks for
/// "sans-serif" wherever a style names no family, so this covers those too.
const FONT_FAMILY: &str = "sans-serif";
/// DejaVu Sans cut down to ASCII and Latin-1; see `assets/README.md`.
const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");

const TITLE_FONT_PX: u32 = 30;
const AXIS_DESCRIPTION_FONT_PX: u32 = 22;
const TICK_LABEL_FONT_PX: u32 = 18;
const LEGEND_FONT_PX: u32 = 18;
const LINE_WIDTH_PX: u32 = 3;

/// Writes a latency-by-percentile PNG (x: percentile on a log "number of nines" axis, y: latency) to `path`.
///
/// The image is [`PLOT_WIDTH_PX`] by [`PLOT_HEIGHT_PX`], 8-bit RGB, whatever
/// the file name's extension. An existing file at `path` is replaced.
///
/// Errors (never a panic) when `series` is empty or holds more than
/// [`SERIES_COUNT_MAX`] series, when a series has no points or more than
/// [`POINTS_PER_SERIES_MAX`], when a percentile is not a finite number in
/// `0..=100` or a latency is not finite and non-negative, and when drawing or
/// writing the file fails; the message names the series, point or path.
pub fn write_percentile_plot(path: &Path, title: &str, series: &[Series]) -> Result<(), String> {
    let png_bytes = render_png(title, series)?;
    std::fs::write(path, png_bytes).map_err(|error| format!("writing percentile plot to {}: {error}", path.display()))
}

/// Checks the input contract of [`write_percentile_plot`].
pub fn validate(series: &[Series]) -> Result<(), String> {
    if series.is_empty() {
        return Err("no series to plot: need at least one".to_string());
    }
    if series.len() > SERIES_COUNT_MAX {
        return Err(format!("{} series to plot, at most {SERIES_COUNT_MAX} fit in one chart", series.len()));
    }
    for one in series {
        let label = &one.label;
        if one.points.is_empty() {
            return Err(format!("series {label:?} has no points"));
        }
        if one.points.len() > POINTS_PER_SERIES_MAX {
            return Err(format!(
                "series {label:?} has {} points, at most {POINTS_PER_SERIES_MAX} allowed",
                one.points.len()
            ));
        }
        for (point_index, &(percentile, latency_us)) in one.points.iter().enumerate() {
            if !(percentile.is_finite() && (0.0..=100.0).contains(&percentile)) {
                return Err(format!(
                    "series {label:?} point {point_index}: percentile {percentile} is not a \
                     finite number in 0..=100"
                ));
            }
            if !(latency_us.is_finite() && latency_us >= 0.0) {
                return Err(format!(
                    "series {label:?} point {point_index}: latency {latency_us} µs is not a \
                     finite, non-negative number"
                ));
            }
        }
    }
    Ok(())
}

/// The x coordinate of `percentile` (in `0..=100`): `log10(1 / (1 - p))`,
/// 0 for 0%, 1 for 90%, 2 for 99%; infinite for 100%.
pub fn nines_of_percentile(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

/// Tick label for a whole number of nines: "0%", "90%", "99%", "99.9%", ...
pub fn nines_label(nines: u32) -> String {
    match nines {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        _ => format!("99.{}%", "9".repeat(nines as usize - 2)),
    }
}

/// Where the x axis ends, in whole nines: the smallest whole number of nines
/// that reaches every point below 100%, within
/// `NINES_AXIS_MIN..=NINES_AXIS_MAX`. Expects validated input.
pub fn nines_axis_end(series: &[Series]) -> u32 {
    let nines_max = series
        .iter()
        .flat_map(|one| one.points.iter())
        .map(|&(percentile, _)| nines_of_percentile(percentile))
        .filter(|nines| nines.is_finite())
        .fold(0.0_f64, f64::max)
        .min(f64::from(NINES_AXIS_MAX));
    // 99.9% is 3 nines only up to rounding (2.9999999999999996 or
    // 3.0000000000000004); without the slack the axis could grow by a
    // whole empty decade.
    let whole = (nines_max - 1e-9).ceil().max(0.0) as u32;
    whole.clamp(NINES_AXIS_MIN, NINES_AXIS_MAX)
}

/// Unit of the y axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyUnit {
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
}

impl LatencyUnit {
    /// Milliseconds when `latency_max_us` is over [`MILLIS_THRESHOLD_US`],
    /// else microseconds.
    pub fn for_max_us(latency_max_us: f64) -> Self {
        if latency_max_us > MILLIS_THRESHOLD_US {
            LatencyUnit::Millis
        } else {
            LatencyUnit::Micros
        }
    }

    /// How many microseconds one of this unit is.
    pub fn micros_per_unit(self) -> f64 {
        match self {
            LatencyUnit::Micros => 1.0,
            LatencyUnit::Millis => 1_000.0,
        }
    }

    /// The unit's symbol, as printed on the axis.
    pub fn symbol(self) -> &'static str {
        match self {
            LatencyUnit::Micros => "µs",
            LatencyUnit::Millis => "ms",
        }
    }
}

/// A y tick label: up to three decimals, trailing zeros dropped ("25", "2.5",
/// "0.125"), which also hides float noise such as 0.30000000000000004.
fn y_tick_label(latency: &f64) -> String {
    let fixed = format!("{latency:.3}");
    fixed.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A latency in `unit` with three significant digits, e.g. "12.4 ms".
fn format_latency(latency_us: f64, unit: LatencyUnit) -> String {
    let value = latency_us / unit.micros_per_unit();
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {}", unit.symbol())
}

/// The x axis: linear in nines from 0 to a whole number of nines, with bold
/// grid lines and tick labels at whole nines and light ones at the 50% and
/// 80% marks of each decade (50%, 80%, 95%, 98%, 99.5%, 99.8%, ...).
///
/// Its own type because plotters' `WithKeyPoints` over an `f64` range has no
/// value formatter, so its mesh can not be drawn.
struct NinesAxis {
    linear: RangedCoordf64,
    bold_points: Vec<f64>,
    light_points: Vec<f64>,
}

impl NinesAxis {
    fn new(nines_end: u32) -> Self {
        NinesAxis {
            linear: (0.0..f64::from(nines_end)).into(),
            bold_points: (0..=nines_end).map(f64::from).collect(),
            light_points: (0..nines_end)
                .flat_map(|decade| [2.0_f64, 5.0].map(|ratio| f64::from(decade) + ratio.log10()))
                .collect(),
        }
    }
}

impl Ranged for NinesAxis {
    // Only used when no label formatter is set; `draw_chart` always sets one.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, nines: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(nines, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light_points.clone()
        } else {
            self.bold_points.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.linear.range()
    }
}

/// One series as it is drawn: x in nines, y in the chart's unit.
struct DrawnSeries {
    legend: String,
    points: Vec<(f64, f64)>,
}

/// Draws the chart and returns the PNG file's bytes.
pub fn render_png(title: &str, series: &[Series]) -> Result<Vec<u8>, String> {
    validate(series)?;
    register_embedded_font()?;

    let nines_end = nines_axis_end(series);
    let nines_end_f = f64::from(nines_end);
    let drawable = |&&(percentile, _): &&(f64, f64)| nines_of_percentile(percentile) <= nines_end_f;

    // The unit and the y range follow the drawn points only: the maximum is in
    // the legend, and a single outlier would otherwise flatten every line.
    let drawn_latency_max_us = series
        .iter()
        .flat_map(|one| one.points.iter().filter(drawable))
        .map(|&(_, latency_us)| latency_us)
        .fold(0.0_f64, f64::max);
    let unit = LatencyUnit::for_max_us(drawn_latency_max_us);
    let drawn: Vec<DrawnSeries> = series
        .iter()
        .map(|one| {
            let mut points: Vec<(f64, f64)> = one
                .points
                .iter()
                .filter(drawable)
                .map(|&(percentile, latency_us)| (nines_of_percentile(percentile), latency_us / unit.micros_per_unit()))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let latency_max_us = one.points.iter().map(|&(_, latency_us)| latency_us).fold(0.0, f64::max);
            // The maximum may be far above the drawn points, so it gets its own unit.
            let latency_max = format_latency(latency_max_us, LatencyUnit::for_max_us(latency_max_us));
            DrawnSeries { legend: format!("{} (max {latency_max})", one.label), points }
        })
        .collect();
    // An all-zero run still needs a y range of non-zero height.
    let y_end = (drawn_latency_max_us / unit.micros_per_unit() * 1.08).max(1.0);

    let mut rgb = vec![0u8; PLOT_WIDTH_PX as usize * PLOT_HEIGHT_PX as usize * 3];
    draw_chart(&mut rgb, title, &drawn, nines_end, y_end, unit)
        .map_err(|error| format!("drawing percentile plot {title:?}: {error}"))?;
    encode_png(&rgb).map_err(|error| format!("encoding percentile plot {title:?} as PNG: {error}"))
}

fn draw_chart(
    rgb: &mut [u8],
    title: &str,
    series: &[DrawnSeries],
    nines_end: u32,
    y_end: f64,
    unit: LatencyUnit,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, (PLOT_WIDTH_PX, PLOT_HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;

    let x_range = NinesAxis::new(nines_end);

    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT_FAMILY, TITLE_FONT_PX))
        .margin(24)
        // Room for the last x tick label ("99.9999%"), centred on the edge.
        .margin_right(56)
        .x_label_area_size(64)
        .y_label_area_size(96)
        .build_cartesian_2d(x_range, 0.0..y_end)?;

    let x_label_formatter = |nines: &f64| nines_label(nines.round().max(0.0) as u32);
    chart
        .configure_mesh()
        .x_desc("Percentile")
        .y_desc(format!("Latency ({})", unit.symbol()))
        .x_label_formatter(&x_label_formatter)
        .y_label_formatter(&y_tick_label)
        .y_max_light_lines(1)
        .axis_desc_style((FONT_FAMILY, AXIS_DESCRIPTION_FONT_PX))
        .label_style((FONT_FAMILY, TICK_LABEL_FONT_PX))
        .bold_line_style(RGBColor(200, 200, 200))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    for (one, &color) in series.iter().zip(LINE_COLORS.iter()) {
        chart
            .draw_series(LineSeries::new(one.points.iter().copied(), color.stroke_width(LINE_WIDTH_PX)))?
            .label(one.legend.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(LINE_WIDTH_PX)));
    }
    chart
        .configure_series_labels()
        // The lines rise to the right, so the upper left is where they are not.
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT_FAMILY, LEGEND_FONT_PX))
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .margin(12)
        .draw()?;

    root.present()?;
    Ok(())
}

fn encode_png(rgb: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    assert_eq!(rgb.len(), PLOT_WIDTH_PX as usize * PLOT_HEIGHT_PX as usize * 3);
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, PLOT_WIDTH_PX, PLOT_HEIGHT_PX);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(png_bytes)
}

/// Registers the embedded font with plotters once per process; later calls
/// return the first call's outcome.
fn register_embedded_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES)
                .map_err(|_| "the embedded plot font is not a valid TrueType font".to_string())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    /// A made-up but realistic distribution: flat body, growing tail, and a
    /// 100% point well above the rest, at HdrHistogram-like percentile steps.
    fn synthetic_series(label: &str, base_us: f64, tail_us: f64) -> Series {
        let mut points: Vec<(f64, f64)> = (0..=110)
            .map(|step| {
                let nines = f64::from(step) * 0.05;
                let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
                let latency_us = base_us * (1.0 + 0.15 * nines) + tail_us * ((1.3 * nines).exp() - 1.0) / 700.0;
                (percentile, latency_us)
            })
            .collect();
        let last_us = points.last().map_or(base_us, |point| point.1);
        points.push((100.0, last_us * 2.5));
        Series { label: label.to_string(), points }
    }

    fn two_series() -> Vec<Series> {
        vec![
            synthetic_series("append 1 KiB, 64 in flight", 180.0, 9_000.0),
            synthetic_series("append 64 KiB, 16 in flight", 420.0, 16_000.0),
        ]
    }

    fn u32_be(bytes: &[u8]) -> u32 {
        u32::from_be_bytes(bytes.try_into().expect("four bytes"))
    }

    #[test]
    fn two_series_make_a_png_of_the_expected_size_with_both_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        // No .png extension on purpose: the format must not depend on it.
        let path = dir.path().join("latency");
        write_percentile_plot(&path, "wormdb append latency", &two_series()).expect("plot written");

        let bytes = std::fs::read(&path).expect("plot readable");
        assert_eq!(bytes[..8], PNG_SIGNATURE);
        assert_eq!(u32_be(&bytes[8..12]), 13, "IHDR length");
        assert_eq!(&bytes[12..16], b"IHDR");
        assert_eq!(u32_be(&bytes[16..20]), PLOT_WIDTH_PX);
        assert_eq!(u32_be(&bytes[20..24]), PLOT_HEIGHT_PX);
        assert_eq!(bytes[24], 8, "bit depth");
        assert_eq!(bytes[25], 2, "colour type RGB");

        // Decode and look for each line's colour: the lines were drawn.
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().expect("PNG header decodes");
        let mut rgb = vec![0; reader.output_buffer_size().expect("buffer size")];
        let frame = reader.next_frame(&mut rgb).expect("PNG frame decodes");
        assert_eq!((frame.width, frame.height), (PLOT_WIDTH_PX, PLOT_HEIGHT_PX));
        let pixel_count_of =
            |color: RGBColor| rgb.chunks_exact(3).filter(|pixel| pixel[..] == [color.0, color.1, color.2]).count();
        for color in &LINE_COLORS[..2] {
            assert!(pixel_count_of(*color) > 500, "too few pixels of line colour {color:?}");
        }
        assert_eq!(pixel_count_of(LINE_COLORS[2]), 0, "a third line was drawn");
    }

    #[test]
    fn replaces_an_existing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latency.png");
        std::fs::write(&path, b"old contents").expect("old file written");
        write_percentile_plot(&path, "t", &two_series()).expect("plot written");
        assert_eq!(std::fs::read(&path).expect("readable")[..8], PNG_SIGNATURE);
    }

    #[test]
    fn no_series_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latency.png");
        let error = write_percentile_plot(&path, "t", &[]).expect_err("no series");
        assert!(error.contains("no series"), "{error}");
        assert!(!path.exists());
    }

    #[test]
    fn a_series_without_points_is_an_error_naming_it() {
        let series = vec![
            synthetic_series("fine", 100.0, 1_000.0),
            Series { label: "empty one".to_string(), points: Vec::new() },
        ];
        let error = render_png("t", &series).expect_err("empty points");
        assert!(error.contains("\"empty one\" has no points"), "{error}");
    }

    #[test]
    fn too_many_series_is_an_error() {
        let series: Vec<Series> =
            (0..=SERIES_COUNT_MAX).map(|index| synthetic_series(&format!("s{index}"), 100.0, 1_000.0)).collect();
        let error = render_png("t", &series).expect_err("too many series");
        assert!(error.contains("at most"), "{error}");
    }

    #[test]
    fn non_finite_or_out_of_range_values_are_errors_not_panics() {
        let bad_points = [
            ((f64::NAN, 10.0), "percentile NaN"),
            ((f64::INFINITY, 10.0), "percentile inf"),
            ((-0.5, 10.0), "percentile -0.5"),
            ((100.5, 10.0), "percentile 100.5"),
            ((50.0, f64::NAN), "latency NaN"),
            ((50.0, f64::INFINITY), "latency inf"),
            ((50.0, f64::NEG_INFINITY), "latency -inf"),
            ((50.0, -1.0), "latency -1"),
        ];
        for (bad_point, expected) in bad_points {
            let series = [Series { label: "bad".to_string(), points: vec![(0.0, 5.0), bad_point, (99.0, 20.0)] }];
            let error = render_png("t", &series).expect_err("bad point rejected");
            assert!(error.contains("\"bad\" point 1"), "{error}");
            assert!(error.contains(expected), "{error} should mention {expected}");
        }
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing-dir").join("latency.png");
        let error = write_percentile_plot(&path, "t", &two_series()).expect_err("no such directory");
        assert!(error.contains("missing-dir"), "{error}");
    }

    #[test]
    fn edge_case_inputs_still_draw() {
        let cases: [(&str, Vec<(f64, f64)>); 4] = [
            ("one point", vec![(50.0, 10.0)]),
            ("only the maximum", vec![(100.0, 10.0)]),
            ("all zero", vec![(0.0, 0.0), (99.0, 0.0), (100.0, 0.0)]),
            ("unsorted", vec![(99.9, 30.0), (0.0, 1.0), (90.0, 5.0)]),
        ];
        for (label, points) in cases {
            let series = [Series { label: label.to_string(), points }];
            let png_bytes = render_png(label, &series).unwrap_or_else(|error| panic!("{label}: {error}"));
            assert_eq!(png_bytes[..8], PNG_SIGNATURE, "{label}");
        }
    }

    #[test]
    fn nines_axis_maps_percentiles_and_labels_ticks() {
        assert_eq!(nines_of_percentile(0.0), 0.0);
        assert!((nines_of_percentile(90.0) - 1.0).abs() < 1e-12);
        assert!((nines_of_percentile(99.9) - 3.0).abs() < 1e-9);
        assert!(nines_of_percentile(100.0).is_infinite());
        let labels: Vec<String> = (0..=5).map(nines_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
    }

    #[test]
    fn nines_axis_end_covers_the_points_within_limits() {
        let with_top = |top_percentile: f64| {
            [Series { label: "s".to_string(), points: vec![(0.0, 1.0), (top_percentile, 2.0), (100.0, 3.0)] }]
        };
        assert_eq!(nines_axis_end(&with_top(50.0)), NINES_AXIS_MIN);
        assert_eq!(nines_axis_end(&with_top(99.9)), 3, "99.9% is exactly three nines");
        assert_eq!(nines_axis_end(&with_top(99.95)), 4);
        assert_eq!(nines_axis_end(&with_top(99.999_999_999)), NINES_AXIS_MAX, "capped");
    }

    #[test]
    fn unit_switches_to_milliseconds_above_ten_ms() {
        assert_eq!(LatencyUnit::for_max_us(10_000.0), LatencyUnit::Micros);
        assert_eq!(LatencyUnit::for_max_us(10_000.1), LatencyUnit::Millis);
        assert_eq!(format_latency(12_345.0, LatencyUnit::Millis), "12.3 ms");
        assert_eq!(format_latency(950.0, LatencyUnit::Micros), "950 µs");
        assert_eq!(format_latency(1.234, LatencyUnit::Micros), "1.23 µs");
        let tick_labels: Vec<String> = [0.0, 25.0, 2.5, 0.1 + 0.2, 0.125].iter().map(y_tick_label).collect();
        assert_eq!(tick_labels, ["0", "25", "2.5", "0.3", "0.125"]);
    }

    #[test]
    fn embedded_font_registers() {
        register_embedded_font().expect("embedded font is valid");
        register_embedded_font().expect("registering twice is fine");
    }

    /// Renders a demo chart for a person to look at: set
    /// `WORMDB_PLOT_DEMO_PATH=/tmp/plot_demo.png` (without it the chart goes
    /// to a temporary file and is only checked to exist).
    #[test]
    fn demo_plot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = std::env::var_os("WORMDB_PLOT_DEMO_PATH")
            .map_or_else(|| dir.path().join("plot_demo.png"), std::path::PathBuf::from);
        let mut series = two_series();
        series.push(synthetic_series("read by tag, 8 in flight", 90.0, 4_000.0));
        write_percentile_plot(&path, "wormdb-loadgen demo: latency by percentile", &series).expect("demo plot written");
        assert!(path.exists());
    }
}
