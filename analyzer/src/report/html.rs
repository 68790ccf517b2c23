//! `report.html`: one file, no scripts, nothing fetched; the chart is inline SVG.

use std::fmt::Write as _;

use super::Summary;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const BAR_HEIGHT: usize = 28;
const GAP: usize = 12;
const LABEL_WIDTH: usize = 200;
const BAR_SPACE: usize = 400;

/// Horizontal bars, one per count; each `rect.bar` carries its label and count as data attributes.
fn chart(summary: &Summary) -> String {
    let largest = summary.counts.iter().map(|count| count.allowed).max().unwrap_or(1).max(1);
    let height = summary.counts.len() * (BAR_HEIGHT + GAP) + GAP;
    let width = LABEL_WIDTH + BAR_SPACE + 60;
    let mut svg = format!(
        r#"<svg id="phase-chart" width="{width}" height="{height}" role="img" aria-label="allowed syscalls per phase">"#
    );
    for (index, count) in summary.counts.iter().enumerate() {
        let y = GAP + index * (BAR_HEIGHT + GAP);
        let bar = (count.allowed * BAR_SPACE).div_ceil(largest).max(1);
        let class = if index == 0 { "bar docker" } else { "bar" };
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect class="{class}" data-label="{}" data-count="{}" x="{LABEL_WIDTH}" y="{y}" width="{bar}" height="{BAR_HEIGHT}"/><text x="{}" y="{}">{}</text>"#,
            LABEL_WIDTH - 8,
            y + BAR_HEIGHT / 2 + 5,
            escape(count.label),
            escape(count.label),
            count.allowed,
            LABEL_WIDTH + bar + 6,
            y + BAR_HEIGHT / 2 + 5,
            count.allowed
        );
    }
    svg.push_str("</svg>");
    svg
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem;color:#222}\
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}\
td.num{text-align:right}.removed{color:#0a6b2c;font-weight:600}.allowed{color:#9a3412}\
rect.bar{fill:#2563eb}rect.docker{fill:#9ca3af}svg text{font-size:14px}code{font-size:90%}\
pre{background:#f5f5f5;padding:1rem;overflow:auto}";

pub fn render(summary: &Summary) -> String {
    let input = summary.input;
    let title = escape(input.title);
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>seccomp-refine: {title}</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = writeln!(html, "<h1>seccomp-refine report: {title}</h1>");
    let _ = writeln!(html, "<h2>Allowed syscalls per phase</h2>\n{}", chart(summary));
    let _ = writeln!(
        html,
        "<table id=\"counts\"><tr><th>profile</th><th>allowed</th><th>Docker default allowances removed</th><th>allowed beyond Docker's default</th><th>narrowed by argument</th></tr>"
    );
    for count in &summary.counts {
        let beyond =
            if count.beyond_docker.is_empty() { "—".to_owned() } else { escape(&count.beyond_docker.join(", ")) };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{beyond}</td><td>{}</td></tr>",
            escape(count.label),
            count.allowed,
            count.removed_vs_docker,
            escape(&count.narrowed_cell())
        );
    }
    let _ = writeln!(html, "</table>");
    if !summary.arguments.is_empty() {
        let _ = writeln!(html, "<h2>Argument rules</h2>");
        let _ = writeln!(
            html,
            "<table id=\"arguments\"><tr><th>phase</th><th>syscall</th><th>allowed only with</th><th>observed</th></tr>"
        );
        for row in &summary.arguments {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                row.phase,
                escape(&row.syscall),
                escape(&row.allowed),
                escape(&row.observed)
            );
        }
        let _ = writeln!(html, "</table>");
    }
    if !summary.precision.is_empty() {
        let _ = writeln!(html, "<h2>Precision against what this run observed</h2>");
        for failure in summary.recall_failures() {
            let _ = writeln!(html, "<p class=\"allowed\"><b>{}</b></p>", escape(&failure));
        }
        let _ = writeln!(
            html,
            "<table id=\"precision\"><tr><th>phase</th><th>allowed</th><th>observed</th><th>allowed and observed</th><th>precision</th><th>recall</th><th>F1</th><th>static-only grants</th></tr>"
        );
        for row in &summary.precision {
            let measured = &row.measured;
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{}</td></tr>",
                row.phase.as_str(),
                measured.allowed,
                measured.observed,
                measured.hits,
                measured.precision,
                measured.recall,
                measured.f1,
                row.static_only.map_or("—".to_owned(), |count| count.to_string())
            );
        }
        let _ = writeln!(html, "</table><p>{}</p>", escape(super::PRECISION_NOTE));
    }
    let _ = writeln!(html, "<h2>Dangerous syscalls</h2>");
    let _ = writeln!(
        html,
        "<table id=\"dangerous\"><tr><th>category</th><th>syscall</th><th>Docker default</th><th>container</th><th>init</th><th>serving</th></tr>"
    );
    for (category, rows) in &summary.dangerous {
        for (name, allowed) in rows {
            let cells: String = allowed
                .iter()
                .map(|&allowed| match allowed {
                    true => "<td class=\"allowed\">allowed</td>",
                    false => "<td class=\"removed\">removed</td>",
                })
                .collect();
            let _ = writeln!(html, "<tr><td>{category}</td><td><code>{name}</code></td>{cells}</tr>");
        }
    }
    let _ = writeln!(html, "</table>\n<h2>Evidence</h2>\n<ul>");
    for (key, value) in summary.evidence() {
        let _ = writeln!(html, "<li><b>{key}:</b> {}</li>", escape(&value));
    }
    let _ = writeln!(html, "</ul>");
    if let Some(sites) = input.unresolved_static_sites.filter(|sites| !sites.is_empty()) {
        let _ = writeln!(
            html,
            "<h3>Unresolved static sites</h3><table><tr><th>module</th><th>function</th><th>address</th><th>reason</th></tr>"
        );
        for site in sites {
            let _ = writeln!(
                html,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
                escape(&site.module),
                escape(&site.function),
                escape(&site.address),
                escape(&site.reason)
            );
        }
        let _ = writeln!(html, "</table>");
    }
    if let Some(verify) = input.verify {
        let _ = writeln!(html, "<h2>Verification</h2><pre>{}</pre>", escape(&verify.to_string()));
    }
    let _ = writeln!(html, "<h2>Syscalls per phase</h2>");
    for (label, set) in [
        ("init", &input.profiles.init),
        ("serving", &input.profiles.serving),
        ("container (seccomp.json)", &input.profiles.container),
    ] {
        let names: Vec<&str> = set.iter().map(String::as_str).collect();
        let _ = writeln!(
            html,
            "<details><summary>{label} ({})</summary><p><code>{}</code></p></details>",
            names.len(),
            escape(&names.join(" "))
        );
    }
    html.push_str("</body></html>\n");
    html
}
