//! `--plot FILE.svg`: throughput and latency over time as a hand-written
//! SVG (stacked panels of line series sharing the time axis). No plotting
//! crate: a few hundred bytes of markup per series is all it takes, and the
//! generator keeps its dependencies few.

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub panels: Vec<Panel>,
    /// Vertical lines with a label (e.g. the start of each sweep step).
    pub markers: Vec<(f64, String)>,
}

pub const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 250.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const GAP: f64 = 60.0;

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about five
/// ticks up to `max`.
pub fn tick_step(max: f64) -> f64 {
    if !(max > 0.0 && max.is_finite()) {
        return 1.0;
    }
    let raw = max / 5.0;
    let pow = 10f64.powf(raw.log10().floor());
    let m = raw / pow;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * pow
}

/// A tick label: no decimals for large values, SI suffixes past thousands.
pub fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn svg(chart: &Chart) -> String {
    let n = chart.panels.len().max(1) as f64;
    let height = TOP + n * PANEL_HEIGHT + (n - 1.0) * GAP + 50.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let all_x = chart
        .panels
        .iter()
        .flat_map(|p| p.series.iter())
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(chart.markers.iter().map(|m| m.0));
    let (x_min, x_max) = all_x.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (x_min, x_max) = if x_min.is_finite() && x_max > x_min {
        (x_min, x_max)
    } else {
        (0.0, 1.0)
    };
    let sx = |x: f64| LEFT + (x - x_min) / (x_max - x_min) * plot_w;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"25\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n",
        WIDTH / 2.0,
        esc(&chart.title)
    );
    for (i, panel) in chart.panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_HEIGHT + GAP);
        let bottom = top + PANEL_HEIGHT;
        let y_max_data = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|y| y.is_finite())
            .fold(0.0f64, f64::max);
        let step = tick_step(y_max_data);
        let y_max = ((y_max_data / step).ceil() * step).max(step);
        let sy = |y: f64| bottom - y / y_max * PANEL_HEIGHT;
        // Grid, y ticks, frame.
        let mut t = 0.0;
        while t <= y_max + step / 2.0 {
            let y = sy(t);
            let _ = writeln!(
                out,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0,
                tick_label(t)
            );
            t += step;
        }
        let _ = writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{top}\" width=\"{plot_w}\" height=\"{PANEL_HEIGHT}\" \
             fill=\"none\" stroke=\"#444\"/>\
             <text transform=\"translate(18,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            top + PANEL_HEIGHT / 2.0,
            esc(&panel.y_label)
        );
        // X ticks.
        let xstep = tick_step(x_max - x_min);
        let mut x = (x_min / xstep).ceil() * xstep;
        while x <= x_max + 1e-9 {
            let _ = writeln!(
                out,
                "<line x1=\"{0:.1}\" y1=\"{bottom}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#444\"/>\
                 <text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{3}</text>",
                sx(x),
                bottom + 5.0,
                bottom + 18.0,
                tick_label(x)
            );
            x += xstep;
        }
        for (x, label) in &chart.markers {
            let _ = writeln!(
                out,
                "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{bottom}\" stroke=\"#999\" \
                 stroke-dasharray=\"4 3\"/><text x=\"{1:.1}\" y=\"{2:.1}\" font-size=\"10\" \
                 fill=\"#555\">{3}</text>",
                sx(*x),
                sx(*x) + 3.0,
                top + 12.0,
                esc(label)
            );
        }
        // Series and legend.
        for (k, s) in panel.series.iter().enumerate() {
            // A NaN value breaks the line (between sweep steps).
            for segment in s.points.split(|p| p.1.is_nan()).filter(|g| !g.is_empty()) {
                let pts: Vec<String> = segment
                    .iter()
                    .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                    .collect();
                let _ = writeln!(
                    out,
                    "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" points=\"{}\"/>",
                    s.color,
                    pts.join(" ")
                );
            }
            let lx = LEFT + 10.0 + k as f64 * 150.0;
            let _ = writeln!(
                out,
                "<line x1=\"{lx}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"{2}\" \
                 stroke-width=\"3\"/><text x=\"{3}\" y=\"{4:.1}\">{5}</text>",
                top - 8.0,
                lx + 20.0,
                s.color,
                lx + 25.0,
                top - 4.0,
                esc(&s.name)
            );
        }
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n</svg>",
        LEFT + plot_w / 2.0,
        height - 12.0,
        esc(&chart.x_label)
    );
    out
}

/// Writes the chart; a failure is a warning, not the end of the run.
pub fn write(path: &std::path::Path, chart: &Chart) {
    match std::fs::write(path, svg(chart)) {
        Ok(()) => eprintln!("plot written to {}", path.display()),
        Err(e) => eprintln!("WARNING: cannot write the plot to {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(1_000_000.0), 200_000.0);
        assert_eq!(tick_step(3.0), 1.0);
        assert_eq!(tick_step(0.0), 1.0);
        assert_eq!(tick_label(200_000.0), "200k");
        assert_eq!(tick_label(1_500_000.0), "1.5M");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(0.0), "0");
    }

    #[test]
    fn svg_has_every_series_and_marker() {
        let chart = Chart {
            title: "t <1>".into(),
            x_label: "s".into(),
            panels: vec![Panel {
                y_label: "y".into(),
                series: vec![Series {
                    name: "a".into(),
                    color: COLORS[0],
                    points: vec![
                        (1.0, 5.0),
                        (2.0, 7.0),
                        (2.5, f64::NAN),
                        (3.0, 1.0),
                        (4.0, 2.0),
                    ],
                }],
            }],
            markers: vec![(1.5, "step 2".into())],
        };
        let s = svg(&chart);
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2, "a NaN breaks the line");
        assert!(s.contains("step 2"));
        assert!(s.contains("t &lt;1&gt;"));
    }
}
