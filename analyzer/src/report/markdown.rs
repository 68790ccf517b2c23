//! `report.md`.

use std::fmt::Write as _;

use super::Summary;

fn mark(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "**removed**" }
}

pub fn render(summary: &Summary) -> String {
    let input = summary.input;
    let mut md = String::new();
    let _ = writeln!(md, "# seccomp-refine report: {}\n", input.title);
    let _ = writeln!(md, "## Allowed syscalls per phase, against Docker's default profile\n");
    let _ = writeln!(
        md,
        "| profile | allowed | Docker default allowances removed | allowed beyond Docker's default | narrowed by argument |"
    );
    let _ = writeln!(md, "|---|---:|---:|---|---|");
    for count in &summary.counts {
        let beyond = if count.beyond_docker.is_empty() { "—".to_owned() } else { count.beyond_docker.join(", ") };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {beyond} | {} |",
            count.label,
            count.allowed,
            count.removed_vs_docker,
            count.narrowed_cell()
        );
    }
    let _ = writeln!(
        md,
        "\nCounts are {} syscalls. Docker's default is moby's `default.json` for an unprivileged container \
         (`clone`, `personality` and `socket` count as allowed: most of their calls pass). `init` and `serving` \
         are enforced one after the other; `seccomp.json` is what the runtime applies at start.\n",
        input.profiles.arch
    );
    if !summary.arguments.is_empty() {
        let _ = writeln!(md, "## Argument rules\n");
        let _ = writeln!(md, "| phase | syscall | allowed only with | observed |");
        let _ = writeln!(md, "|---|---|---|---|");
        for row in &summary.arguments {
            let _ = writeln!(md, "| {} | `{}` | {} | {} |", row.phase, row.syscall, row.allowed, row.observed);
        }
        let _ = writeln!(
            md,
            "\nA value is allowed when every reachable site and every observed call of the syscall in the phase \
             pass a known value; the rule allows all of them.\n"
        );
    }
    if !summary.precision.is_empty() {
        let _ = writeln!(md, "## Precision against what this run observed\n");
        for failure in summary.recall_failures() {
            let _ = writeln!(md, "**{failure}**\n");
        }
        let _ = writeln!(
            md,
            "| phase | allowed | observed | allowed and observed | precision | recall | F1 | static-only grants |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in &summary.precision {
            let measured = &row.measured;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} |",
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
        let _ = writeln!(md, "\n{}\n", super::PRECISION_NOTE);
    }
    let _ = writeln!(md, "## Dangerous syscalls\n");
    let _ = writeln!(md, "| category | syscall | Docker default | container | init | serving |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (category, rows) in &summary.dangerous {
        for (name, [docker, container, init, serving]) in rows {
            let _ = writeln!(
                md,
                "| {category} | `{name}` | {} | {} | {} | {} |",
                mark(*docker),
                mark(*container),
                mark(*init),
                mark(*serving)
            );
        }
    }
    let _ = writeln!(md, "\n## Evidence\n");
    for (key, value) in summary.evidence() {
        let _ = writeln!(md, "- **{key}:** {value}");
    }
    if let Some(sites) = input.unresolved_static_sites.filter(|sites| !sites.is_empty()) {
        let _ = writeln!(
            md,
            "\n### Unresolved static sites\n\n| module | function | address | reason |\n|---|---|---|---|"
        );
        for site in sites {
            let _ = writeln!(md, "| `{}` | `{}` | `{}` | {} |", site.module, site.function, site.address, site.reason);
        }
    }
    if let Some(verify) = input.verify {
        let _ = writeln!(md, "\n## Verification\n\n```\n{verify}\n```");
    }
    let _ = writeln!(md, "\n## Syscalls per phase\n");
    for (label, set) in [
        ("init", &input.profiles.init),
        ("serving", &input.profiles.serving),
        ("container (seccomp.json)", &input.profiles.container),
    ] {
        let names: Vec<&str> = set.iter().map(String::as_str).collect();
        let _ = writeln!(md, "**{label}** ({}): {}\n", names.len(), names.join(" "));
    }
    md
}
