//! What `cargo xtask experiment` writes: `EXPERIMENTS.md`, `EXPERIMENTS.json` and
//! `docs/experiments.svg`, from this run's cells and the previous run's for the cells not measured.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::RELEASES;
use super::cell::{Cell, PhaseDiff, Score, SuiteResult};
use super::suite::same_test;
use crate::bench::plot::Bar;
use crate::bench::report::Machine;

/// A cell that could not be measured, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Failure {
    pub app: String,
    pub release: String,
    pub error: String,
}

/// Writes the three files under `out` and returns the Markdown.
pub fn write(out: &Path, measured: &[Cell], failures: &[Failure]) -> Result<String> {
    let json_path = out.join("EXPERIMENTS.json");
    let mut cells = previous_cells(&json_path);
    // A cell that failed this time is not shown with what an earlier run measured.
    cells.retain(|old| !failures.iter().any(|failure| (&failure.app, &failure.release) == (&old.app, &old.release)));
    for cell in measured {
        cells.retain(|old| (&old.app, &old.release) != (&cell.app, &cell.release));
        cells.push(cell.clone());
    }
    // Judged again at every write, so cells from earlier runs follow how names are compared now.
    for cell in &mut cells {
        let suite = &mut cell.suite;
        let failed_unconfined: BTreeSet<String> =
            suite.unconfined.failures.iter().map(|name| same_test(name)).collect();
        let mut failed_more: BTreeSet<String> = suite.profiled.worse_than(&suite.unconfined).into_iter().collect();
        failed_more.extend(
            suite.failed_more.iter().map(|name| same_test(name)).filter(|name| !failed_unconfined.contains(name)),
        );
        suite.failed_more = failed_more.into_iter().collect();
    }
    let release_order = |release: &str| RELEASES.iter().position(|&known| known == release);
    cells.sort_by(|a, b| a.app.cmp(&b.app).then(release_order(&a.release).cmp(&release_order(&b.release))));
    changes_between_releases(&mut cells);
    let machine = Machine::describe();
    let markdown = markdown(&machine, &cells, failures)?;
    std::fs::write(out.join("EXPERIMENTS.md"), &markdown).context("cannot write EXPERIMENTS.md")?;
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "machine": machine,
        "cells": cells,
        "failures": failures,
    }))?;
    std::fs::write(&json_path, json + "\n").context("cannot write EXPERIMENTS.json")?;
    std::fs::create_dir_all(out.join("docs"))?;
    std::fs::write(out.join("docs/experiments.svg"), chart(&cells)).context("cannot write docs/experiments.svg")?;
    Ok(markdown)
}

/// Each cell's changes from the nearest older release of the same application among `cells`
/// (sorted by application, then release): the names allowed per phase added and removed, as
/// `seccomp-refine diff` of the two profile directories lists them.
fn changes_between_releases(cells: &mut [Cell]) {
    for index in 0..cells.len() {
        let (older, rest) = cells.split_at_mut(index);
        let cell = &mut rest[0];
        cell.diff_from_previous = match older.last().filter(|previous| previous.app == cell.app) {
            Some(previous) => [
                ("init", &previous.allowed.init, &cell.allowed.init),
                ("serving", &previous.allowed.serving, &cell.allowed.serving),
                ("container", &previous.allowed.container, &cell.allowed.container),
            ]
            .into_iter()
            .map(|(phase, before, after)| PhaseDiff {
                phase: phase.to_owned(),
                added: after.difference(before).cloned().collect(),
                removed: before.difference(after).cloned().collect(),
            })
            .collect(),
            None => Vec::new(),
        };
    }
}

fn previous_cells(path: &Path) -> Vec<Cell> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| serde_json::from_value(value.get("cells")?.clone()).ok())
        .unwrap_or_default()
}

fn chart(cells: &[Cell]) -> String {
    let mut bars = Vec::new();
    for cell in cells {
        let chart = format!("allowed syscalls, {} (Docker's default: {})", cell.app, cell.docker_default);
        for (phase, count) in [
            ("init", cell.allowed.init.len()),
            ("serving", cell.allowed.serving.len()),
            ("container", cell.allowed.container.len()),
        ] {
            bars.push(Bar {
                chart: chart.clone(),
                label: format!("{} ({}) {phase}", cell.release, short_glibc(&cell.glibc)),
                value: count as f64,
                spread: None,
            });
        }
    }
    crate::bench::plot::svg(&bars)
}

/// `2.36-9+deb12u10` → `glibc 2.36`.
fn short_glibc(version: &str) -> String {
    format!("glibc {}", version.split('-').next().unwrap_or(version))
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "0".to_owned() } else { format!("{}: {}", names.len(), names.join(", ")) }
}

/// The tests that failed only under the profile, each that failed in the traced run (no profile)
/// too marked: that run is as slow as the profiled one, so those are timing, not the profile.
fn timing_marked(suite: &SuiteResult) -> Vec<String> {
    let traced: BTreeSet<String> = suite.traced.failures.iter().map(|name| same_test(name)).collect();
    suite
        .failed_more
        .iter()
        .map(
            |name| {
                if traced.contains(name) { format!("{name} (failed traced with no profile too)") } else { name.clone() }
            },
        )
        .collect()
}

fn score(score: &Score) -> String {
    format!("{:.2} (P {:.2}, R {:.2})", score.f1, score.precision, score.recall)
}

fn markdown(machine: &Machine, cells: &[Cell], failures: &[Failure]) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "# Experiments\n")?;
    writeln!(
        out,
        "Written by `cargo xtask experiment`; how to run it and what each column means: docs/experiments.md."
    )?;
    writeln!(out, "Each cell is one application on one Debian release, built offline with debootstrap, traced with a")?;
    writeln!(out, "short workload, analysed, verified, enforced, and judged by its test suite.\n")?;
    writeln!(out, "![allowed syscalls](docs/experiments.svg)\n")?;
    machine.write_list(&mut out)?;

    writeln!(out, "\n## Allowed syscalls, against Docker's default\n")?;
    writeln!(
        out,
        "| application | release | glibc | package | Docker default | container | init | serving | reduction (container) | F1 init | F1 serving | F1 container |"
    )?;
    writeln!(out, "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|")?;
    for cell in cells {
        let reduction = 100.0 * (1.0 - cell.allowed.container.len() as f64 / cell.docker_default as f64);
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {reduction:.0} % | {} | {} | {} |",
            cell.app,
            cell.release,
            cell.glibc,
            cell.package,
            cell.docker_default,
            cell.allowed.container.len(),
            cell.allowed.init.len(),
            cell.allowed.serving.len(),
            score(&cell.scores.init),
            score(&cell.scores.serving),
            score(&cell.scores.container),
        )?;
    }

    writeln!(out, "\n## Denied syscalls, and the test suites as the judge\n")?;
    writeln!(
        out,
        "| application | release | verify (seccomp.json) | enforce | test suite (missing) | suite under | suite passed / failed / skipped | same suite, no profile | failed only under the profile |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for cell in cells {
        let suite = &cell.suite;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} | {} |",
            cell.app,
            cell.release,
            list(&cell.denied_verify),
            cell.denied_enforce.as_deref().map_or_else(|| "not enforced".to_owned(), list),
            list(&cell.denied_suite),
            suite.under,
            suite.profiled.passed,
            suite.profiled.failed,
            suite.profiled.skipped,
            suite.unconfined.passed,
            suite.unconfined.failed,
            suite.unconfined.skipped,
            list(&timing_marked(suite)),
        )?;
    }
    writeln!(out, "\nEnforcement per cell (the marker each process switched at, or why there was none):\n")?;
    for cell in cells {
        writeln!(out, "- {} on {}: {}", cell.app, cell.release, cell.enforce)?;
    }

    writeln!(out, "\n## Time of each step (seconds)\n")?;
    let steps: Vec<String> = cells.iter().flat_map(|cell| cell.times.iter().map(|timing| timing.step.clone())).fold(
        Vec::new(),
        |mut steps, step| {
            if !steps.contains(&step) {
                steps.push(step);
            }
            steps
        },
    );
    writeln!(out, "| application | release | binary | rounds | {} |", steps.join(" | "))?;
    writeln!(out, "|---|---|---|---:|{}", "---:|".repeat(steps.len()))?;
    for cell in cells {
        let times: Vec<String> = steps
            .iter()
            .map(|step| {
                cell.times
                    .iter()
                    .find(|timing| &timing.step == step)
                    .map_or_else(String::new, |timing| format!("{:.1}", timing.seconds))
            })
            .collect();
        // The build profile is what matters for the times: target/debug or target/release.
        let binary = Path::new(&cell.binary)
            .parent()
            .and_then(Path::file_name)
            .map_or_else(String::new, |dir| dir.to_string_lossy().into_owned());
        writeln!(out, "| {} | {} | {binary} | {} | {} |", cell.app, cell.release, cell.rounds, times.join(" | "))?;
    }

    writeln!(out, "\n## Across releases\n")?;
    let apps: BTreeSet<&str> = cells.iter().map(|cell| cell.app.as_str()).collect();
    for app in apps {
        writeln!(out, "### {app}\n")?;
        writeln!(out, "| release | glibc | package | init | serving | container | changes from the release before |")?;
        writeln!(out, "|---|---|---|---:|---:|---:|---|")?;
        for cell in cells.iter().filter(|cell| cell.app == app) {
            let changes: Vec<String> = cell
                .diff_from_previous
                .iter()
                .map(|phase| {
                    if phase.added.is_empty() && phase.removed.is_empty() {
                        return format!("{}: same", phase.phase);
                    }
                    let names = phase
                        .added
                        .iter()
                        .map(|name| format!("+{name}"))
                        .chain(phase.removed.iter().map(|name| format!("−{name}")))
                        .collect::<Vec<_>>();
                    format!("{}: {}", phase.phase, names.join(" "))
                })
                .collect();
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell.release,
                short_glibc(&cell.glibc),
                cell.package,
                cell.allowed.init.len(),
                cell.allowed.serving.len(),
                cell.allowed.container.len(),
                if changes.is_empty() { "—".to_owned() } else { changes.join("; ") },
            )?;
        }
        writeln!(out)?;
    }

    writeln!(out, "## Test suites\n")?;
    let mut described = BTreeSet::new();
    for cell in cells {
        if described.insert(&cell.app) {
            let sources: Vec<String> = cells
                .iter()
                .filter(|other| other.app == cell.app)
                .filter_map(|other| Some(format!("{} on {}", other.suite_source.as_deref()?, other.release)))
                .collect();
            let sources =
                if sources.is_empty() { String::new() } else { format!(" (upstream {})", sources.join(", ")) };
            writeln!(out, "- {}: {}{sources}", cell.app, cell.suite.description)?;
        }
    }
    if !failures.is_empty() {
        writeln!(out, "\n## Cells that could not be measured\n")?;
        for failure in failures {
            writeln!(out, "- {} on {}: {}", failure.app, failure.release, failure.error)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::cell::{Scores, Sets};

    fn cell(release: &str, serving: &[&str]) -> Cell {
        let names = |names: &[&str]| names.iter().map(|&name| name.to_owned()).collect::<BTreeSet<_>>();
        let score = Score { precision: 1.0, recall: 1.0, f1: 1.0 };
        Cell {
            app: "nginx".into(),
            release: release.into(),
            image: format!("seccomp-refine/nginx:{release}"),
            glibc: String::new(),
            package: String::new(),
            suite_source: None,
            docker_default: 0,
            allowed: Sets { init: names(&["read"]), serving: names(serving), container: names(&["read"]) },
            observed: Sets::default(),
            scores: Scores { init: score, serving: score, container: score },
            denied_verify: Vec::new(),
            denied_enforce: None,
            enforce: String::new(),
            denied_suite: Vec::new(),
            suite: Default::default(),
            diff_from_previous: Vec::new(),
            times: Vec::new(),
            binary: String::new(),
            rounds: 1,
        }
    }

    /// One cell measured again moves the changes on both sides of it, in one write.
    #[test]
    fn changes_follow_the_cells_written_and_not_the_run_that_measured_them() {
        let changes = |cell: &Cell| -> Vec<(String, Vec<String>, Vec<String>)> {
            let serving = cell.diff_from_previous.iter().filter(|phase| phase.phase == "serving");
            serving.map(|phase| (phase.phase.clone(), phase.added.clone(), phase.removed.clone())).collect()
        };
        let mut cells =
            vec![cell("bullseye", &["read", "stat"]), cell("bookworm", &["read", "statx"]), cell("trixie", &["read"])];
        changes_between_releases(&mut cells);
        assert!(cells[0].diff_from_previous.is_empty());
        assert_eq!(changes(&cells[1]), [("serving".into(), vec!["statx".into()], vec!["stat".into()])]);
        assert_eq!(changes(&cells[2]), [("serving".into(), vec![], vec!["statx".into()])]);
        cells[1] = cell("bookworm", &["read", "stat"]);
        changes_between_releases(&mut cells);
        assert_eq!(changes(&cells[1]), [("serving".into(), vec![], vec![])]);
        assert_eq!(changes(&cells[2]), [("serving".into(), vec![], vec!["stat".into()])]);
    }

    /// A test that failed traced without a profile too is marked as timing; one that failed only
    /// under the profile is not.
    #[test]
    fn failures_the_traced_run_shares_are_marked_as_timing() {
        let outcome = |text: &str| crate::experiment::suite::Outcome::parse(text);
        let suite = SuiteResult {
            traced: outcome("[exception]: Executing test client: error writing \"sock55d4ee41d770\": reset.\n"),
            failed_more: vec![
                same_test("Executing test client: error writing \"sock556bb4f72d70\": reset."),
                "maxmemory - policy allkeys-lru".into(),
            ],
            ..Default::default()
        };
        assert_eq!(
            timing_marked(&suite),
            [
                format!("{} (failed traced with no profile too)", suite.failed_more[0]),
                "maxmemory - policy allkeys-lru".to_owned()
            ]
        );
    }
}
