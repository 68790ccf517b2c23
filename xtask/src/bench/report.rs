//! What `cargo xtask bench` writes: `BENCHMARKS.md`, `BENCHMARKS.json` and `docs/benchmarks.svg`.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::harness::Samples;
pub use super::plot::Bar;
use crate::project_root;

/// One benchmark's results: tables for people, samples for machines.
#[derive(Debug, Serialize, Deserialize)]
pub struct Section {
    pub name: String,
    /// When it was measured (`write` stamps it): sections from earlier runs are kept when a run
    /// measures only some benchmarks, and each says when it was measured.
    #[serde(default)]
    pub measured_at: String,
    /// What was compared, how, and the goal.
    pub description: String,
    pub tables: Vec<Table>,
    pub samples: Vec<Samples>,
    /// Figures the plot draws.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bars: Vec<Bar>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table { headers: headers.iter().map(|&header| header.to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// Where and on what the benchmarks ran.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub date: String,
    pub host: String,
    pub cpus: String,
    pub memory: String,
    pub kernel: String,
    pub versions: Vec<(String, String)>,
}

impl Machine {
    /// The machine and the tools' versions as a markdown list, the header of every written page.
    pub fn write_list(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "- date: {}\n- machine: {} ({}; {} RAM)\n- kernel: {}",
            self.date, self.host, self.cpus, self.memory, self.kernel
        )?;
        for (name, version) in &self.versions {
            writeln!(out, "- {name}: {version}")?;
        }
        Ok(())
    }

    pub fn describe() -> Machine {
        let tool_version = |program: &str, args: &[&str]| {
            let out = Command::new(program).args(args).output().ok().filter(|out| out.status.success());
            out.map(|out| {
                let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
                text.lines().next().unwrap_or_default().trim().to_owned()
            })
            .unwrap_or_else(|| "not installed".to_owned())
        };
        let versions = [
            (
                "seccomp-refine",
                // Dirty only for changes besides the bench's own outputs, which a partial run
                // (`cargo xtask bench static`) finds already rewritten by the run before it.
                tool_version(
                    "sh",
                    &[
                        "-c",
                        "commit=$(git -C \"$0\" rev-parse --short HEAD) && if git -C \"$0\" diff --quiet HEAD -- . \
                         ':!BENCHMARKS.md' ':!BENCHMARKS.json' ':!docs/benchmarks.svg'; then echo $commit; \
                         else echo $commit-dirty; fi",
                        project_root().to_str().unwrap_or("."),
                    ],
                ),
            ),
            ("rustc", tool_version("rustc", &["--version"])),
            ("docker", tool_version("docker", &["version", "--format", "{{.Server.Version}}"])),
            ("wrk", tool_version("sh", &["-c", "wrk -v 2>&1 | head -1"])),
            ("strace", tool_version("strace", &["-V"])),
            ("bpftrace", tool_version("bpftrace", &["--version"])),
            ("sysdig", tool_version("sysdig", &["--version"])),
            ("objdump", tool_version("objdump", &["--version"])),
        ];
        Machine {
            date: tool_version("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            host: tool_version("hostname", &[]),
            cpus: tool_version("sh", &["-c", "echo $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"]),
            memory: tool_version("sh", &["-c", "free -h | awk '/Mem:/ {print $2}'"]),
            kernel: tool_version("uname", &["-r"]),
            versions: versions.into_iter().map(|(name, version)| (name.to_owned(), version)).collect(),
        }
    }
}

/// Writes the three files and returns the Markdown. Sections this run did not measure are kept
/// from the previous `BENCHMARKS.json`, in `order`.
pub fn write(machine: &Machine, measured: Vec<Section>, order: &[&str]) -> Result<String> {
    let root = project_root();
    let mut sections = previous_sections(&root.join("BENCHMARKS.json"));
    for mut section in measured {
        section.measured_at = machine.date.clone();
        sections.retain(|old| old.name != section.name);
        sections.push(section);
    }
    sections.sort_by_key(|section| order.iter().position(|&name| name == section.name));
    let sections = &sections[..];
    let markdown = markdown(machine, sections)?;
    std::fs::write(root.join("BENCHMARKS.md"), &markdown).context("cannot write BENCHMARKS.md")?;
    let json = serde_json::to_string_pretty(&serde_json::json!({ "machine": machine, "benchmarks": sections }))?;
    std::fs::write(root.join("BENCHMARKS.json"), json + "\n").context("cannot write BENCHMARKS.json")?;
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(
        root.join("docs/benchmarks.svg"),
        super::plot::svg(sections.iter().flat_map(|section| &section.bars)),
    )
    .context("cannot write the plot")?;
    Ok(markdown)
}

/// What an earlier run wrote; nothing when there is no readable file.
fn previous_sections(path: &std::path::Path) -> Vec<Section> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| serde_json::from_value(value.get("benchmarks")?.clone()).ok())
        .unwrap_or_default()
}

fn markdown(machine: &Machine, sections: &[Section]) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "# Benchmarks\n")?;
    writeln!(out, "Written by `cargo xtask bench`. Every comparison runs the product and its peer in the same run,")?;
    writeln!(out, "interleaved, after a warm-up; ratios are medians over rounds with their range. Absolute numbers")?;
    writeln!(out, "depend on a shared, noisy machine and are shown for context only.\n")?;
    writeln!(out, "![benchmarks](docs/benchmarks.svg)\n")?;
    machine.write_list(&mut out)?;
    for section in sections {
        writeln!(out, "\n## {}\n\n{} (Measured {}.)\n", section.name, section.description, section.measured_at)?;
        for table in &section.tables {
            writeln!(out, "| {} |", table.headers.join(" | "))?;
            writeln!(out, "|{}", "---|".repeat(table.headers.len()))?;
            for row in &table.rows {
                writeln!(out, "| {} |", row.join(" | "))?;
            }
            writeln!(out)?;
        }
    }
    Ok(out)
}
