//! The benchmark plot: one horizontal bar panel per chart named in the bars, as SVG.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

const WIDTH: f64 = 760.0;
const LABEL_WIDTH: f64 = 300.0;
const BAR_HEIGHT: f64 = 18.0;
const GAP: f64 = 6.0;

/// One bar of the plot: a group (chart panel), a label and a value, with an optional spread.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bar {
    pub chart: String,
    pub label: String,
    pub value: f64,
    pub spread: Option<(f64, f64)>,
}

/// Draws every chart (in order of first appearance) stacked vertically.
pub fn svg<'a>(bars: impl IntoIterator<Item = &'a Bar>) -> String {
    let bars: Vec<&Bar> = bars.into_iter().collect();
    let mut charts: Vec<&str> = Vec::new();
    for bar in &bars {
        if !charts.contains(&bar.chart.as_str()) {
            charts.push(&bar.chart);
        }
    }
    let mut body = String::new();
    let mut y = 10.0;
    for chart in charts {
        let members: Vec<&&Bar> = bars.iter().filter(|bar| bar.chart == chart).collect();
        y = panel(&mut body, chart, &members, y) + 20.0;
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{y}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn panel(out: &mut String, title: &str, bars: &[&&Bar], top: f64) -> f64 {
    let scale_max =
        bars.iter().map(|bar| bar.spread.map_or(bar.value, |(_, max)| max.max(bar.value))).fold(0.0, f64::max);
    let scale = (WIDTH - LABEL_WIDTH - 60.0) / if scale_max > 0.0 { scale_max } else { 1.0 };
    let _ = writeln!(out, "<text x=\"10\" y=\"{}\" font-weight=\"bold\">{}</text>", top + 12.0, escape(title));
    let mut y = top + 22.0;
    for bar in bars {
        let width = bar.value * scale;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y}\" width=\"{width:.1}\" height=\"{BAR_HEIGHT}\" fill=\"#4a7ab5\"/>\
             <text x=\"{:.1}\" y=\"{}\">{}</text>",
            LABEL_WIDTH - 6.0,
            y + 13.0,
            escape(&bar.label),
            LABEL_WIDTH + width + 4.0,
            y + 13.0,
            format_value(bar.value),
        );
        if let Some((min, max)) = bar.spread {
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"black\"/>",
                LABEL_WIDTH + min * scale,
                LABEL_WIDTH + max * scale,
                y + BAR_HEIGHT / 2.0
            );
        }
        y += BAR_HEIGHT + GAP;
    }
    y
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.3}") }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
