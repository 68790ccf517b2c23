//! The report: what the profiles allow per phase, measured against Docker's default profile, which
//! dangerous syscalls each phase removes, how precise each phase is against what the run observed
//! (`profile::Precision`, with the syscalls granted on static reachability alone), and how much to
//! trust the evidence (events lost, the phase marker, unresolved static sites, the runtime
//! baseline, verification).
//!
//! `report.md` for reading in a repository, `report.html` for a browser: self-contained (inline
//! CSS and an inline SVG chart, no scripts, nothing fetched). Both are rendered from one
//! [`Summary`], computed here without IO.

mod html;
mod markdown;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::callgraph::UnresolvedSite;
use crate::profile::{Analysis, Precision, Profiles, RuntimeSource, SyscallSet, docker_default, observed};
use crate::syscalls::Arch;
use crate::syscalls::args::{pairs_of, show_value};
use crate::trace::{Phase, Trace};
use crate::verify::VerifyReport;

/// What a report is made of; everything but the profiles is optional.
pub struct ReportInput<'a> {
    /// What the report is about, usually the image.
    pub title: &'a str,
    pub profiles: &'a Profiles,
    pub trace: Option<&'a Trace>,
    /// The trace merged with the static analysis, when it ran: the static-only grants per phase.
    pub analysis: Option<&'a Analysis>,
    /// `None` when static analysis did not run; `Some(&[])` when it ran and resolved everything.
    pub unresolved_static_sites: Option<&'a [UnresolvedSite]>,
    pub verify: Option<&'a VerifyReport>,
}

/// Syscalls the seed project's security tables (and Docker's own restrictions) single out, by what
/// an attacker gains from them.
pub const DANGEROUS: &[(&str, &[&str])] = &[
    ("process creation and exec", &["clone", "clone3", "fork", "vfork", "execve", "execveat"]),
    ("debugging other processes", &["ptrace", "process_vm_readv", "process_vm_writev"]),
    (
        "identity and privileges",
        &["setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "capset"],
    ),
    ("networking", &["socket", "bind", "listen", "connect", "accept", "accept4"]),
    ("file permissions", &["chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat"]),
    ("memory", &["mprotect", "mremap"]),
    ("namespaces and mounts", &["mount", "umount2", "pivot_root", "chroot", "unshare", "setns"]),
    (
        "kernel interfaces",
        &["bpf", "perf_event_open", "keyctl", "init_module", "kexec_load", "userfaultfd", "io_uring_setup"],
    ),
];

/// One bar of the chart and row of the counts table.
pub struct Count {
    pub label: &'static str,
    /// Names the profile's native ABI knows (what a count of "syscalls" means everywhere).
    pub allowed: usize,
    /// How many of Docker's default allowances this set does without.
    pub removed_vs_docker: usize,
    /// Allowed here although Docker's default denies them.
    pub beyond_docker: Vec<String>,
    /// Allowed only with certain argument values.
    pub narrowed: Vec<String>,
}

impl Count {
    /// The "narrowed by argument" cell: how many, and which.
    pub fn narrowed_cell(&self) -> String {
        if self.narrowed.is_empty() {
            "0".to_owned()
        } else {
            format!("{} ({})", self.narrowed.len(), self.narrowed.join(", "))
        }
    }
}

/// A syscall a phase profile allows only with certain argument values, and what the trace
/// observed of them.
pub struct ArgumentRow {
    pub phase: Phase,
    pub syscall: String,
    /// The rule: `arg0 (domain) 0x1 AF_UNIX, 0x2 AF_INET; arg1 (type (without flags)) 0x1 SOCK_STREAM`.
    pub allowed: String,
    /// The values the trace observed, by argument; `—` when the syscall is reachable only.
    pub observed: String,
}

impl ArgumentRow {
    fn of(input: &ReportInput<'_>) -> Vec<ArgumentRow> {
        let profiles = input.profiles;
        let mut rows = Vec::new();
        for (phase, rules) in [(Phase::Init, &profiles.init_args), (Phase::Serving, &profiles.serving_args)] {
            for (name, conditions) in rules {
                let meaning =
                    |index: u8| pairs_of(name).find(|pair| pair.index == index).map_or("", |pair| pair.meaning);
                let shown = |index: u8, values: &mut dyn Iterator<Item = &u64>| {
                    values.map(|&value| show_value(name, index, value)).collect::<Vec<_>>().join(", ")
                };
                let allowed: Vec<String> = conditions
                    .iter()
                    .map(|condition| {
                        let values = shown(condition.index, &mut condition.values.iter());
                        format!("arg{} ({}) {values}", condition.index, meaning(condition.index))
                    })
                    .collect();
                let seen = input
                    .analysis
                    .and_then(|analysis| analysis.phases.get(&phase)?.get(name)?.observed.as_ref()?.args.clone());
                let observed = seen.map_or_else(
                    || "—".to_owned(),
                    |seen| {
                        let args: Vec<String> = seen
                            .iter()
                            .map(|(&index, values)| format!("arg{index} {}", shown(index, &mut values.iter())))
                            .collect();
                        args.join("; ")
                    },
                );
                rows.push(ArgumentRow { phase, syscall: name.clone(), allowed: allowed.join("; "), observed });
            }
        }
        rows
    }
}

/// A syscall and whether (Docker default, container, init, serving) allow it.
pub type DangerousRow = (&'static str, [bool; 4]);

/// One phase's profile measured against what the trace observed in that phase.
pub struct PhasePrecision {
    pub phase: Phase,
    pub measured: Precision,
    /// Allowed on static reachability alone (never observed); `None` without static analysis.
    pub static_only: Option<usize>,
}

/// Everything the renderers show.
pub struct Summary<'a> {
    pub input: &'a ReportInput<'a>,
    pub counts: Vec<Count>,
    /// Per category, per syscall: allowed by (Docker default, container, init, serving).
    pub dangerous: Vec<(&'static str, Vec<DangerousRow>)>,
    /// Per measured phase; empty without a trace.
    pub precision: Vec<PhasePrecision>,
    /// The phase profiles' argument rules.
    pub arguments: Vec<ArgumentRow>,
}

fn native(arch: Arch, names: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    names.into_iter().filter(|name| arch.number(name).is_some()).collect()
}

fn docker_default_set() -> SyscallSet {
    docker_default::ALLOWED.iter().chain(docker_default::ALLOWED_WITH_ARGUMENTS).map(|&name| name.to_owned()).collect()
}

impl<'a> Summary<'a> {
    pub fn new(input: &'a ReportInput<'a>) -> Summary<'a> {
        let profiles = input.profiles;
        let arch = profiles.arch;
        let docker = native(arch, docker_default_set());
        let count = |label, set: &SyscallSet, narrowed: Vec<String>| {
            let set = native(arch, set.iter().cloned());
            Count {
                label,
                allowed: set.len(),
                removed_vs_docker: docker.difference(&set).count(),
                beyond_docker: set.difference(&docker).cloned().collect(),
                narrowed: narrowed.into_iter().filter(|name| set.contains(name)).collect(),
            }
        };
        let names = |rules: &crate::profile::ArgRules| rules.keys().cloned().collect();
        let docker_narrowed = docker_default::ALLOWED_WITH_ARGUMENTS.iter().map(|&name| name.to_owned()).collect();
        let counts = vec![
            count("Docker default", &docker, docker_narrowed),
            count("container (seccomp.json)", &profiles.container, names(&profiles.container_args)),
            count("init", &profiles.init, names(&profiles.init_args)),
            count("serving", &profiles.serving, names(&profiles.serving_args)),
        ];
        let sets = [&docker, &profiles.container, &profiles.init, &profiles.serving];
        let dangerous = DANGEROUS
            .iter()
            .map(|&(category, names)| {
                let rows = names.iter().map(|&name| (name, sets.map(|set| set.contains(name)))).collect();
                (category, rows)
            })
            .collect();
        let precision = match input.trace {
            Some(trace) => profiles
                .precision(|phase| observed(&[trace], phase))
                .into_iter()
                .map(|(phase, measured)| PhasePrecision {
                    phase,
                    measured,
                    static_only: input.analysis.map(|analysis| analysis.static_only(phase).len()),
                })
                .collect(),
            None => Vec::new(),
        };
        Summary { input, counts, dangerous, precision, arguments: ArgumentRow::of(input) }
    }

    /// One sentence per phase whose profile denies a syscall the trace observed (recall below 1).
    pub fn recall_failures(&self) -> Vec<String> {
        self.precision
            .iter()
            .filter(|row| !row.measured.complete())
            .map(|row| {
                format!(
                    "RECALL BELOW 1: the {} profile denies syscalls this run observed in that phase: {}",
                    row.phase.as_str(),
                    row.measured.denied.join(" ")
                )
            })
            .collect()
    }

    /// Facts about the evidence, as (label, sentence).
    pub fn evidence(&self) -> Vec<(&'static str, String)> {
        let input = self.input;
        let mut facts = Vec::new();
        match input.trace {
            Some(trace) => {
                facts.push((
                    "source",
                    format!("{:?} trace, kernel {}, {}", trace.source, trace.kernel, trace.arch).to_lowercase(),
                ));
                let complete = if trace.complete { "complete" } else { "incomplete" };
                facts.push(("events lost", format!("{} ({complete})", trace.lost_events)));
                if let Some(reason) = &trace.incomplete_reason {
                    facts.push(("incomplete", reason.clone()));
                }
                let marker = &trace.phase_marker;
                let fired = match (marker.fired, marker.at_ns, marker.pid) {
                    (true, Some(at), Some(pid)) => format!("fired at {} ms in pid {pid}", at / 1_000_000),
                    (true, _, _) => "fired".to_owned(),
                    (false, _, _) => "did not fire: everything counts as init".to_owned(),
                };
                let detail = marker.detail.as_deref().map(|detail| format!("; {detail}")).unwrap_or_default();
                facts.push(("phase marker", format!("`{}` {fired}{detail}", marker.spec)));
                if let Some(entry) = &marker.serving_entry {
                    let stack = entry.stack.join(" ← ");
                    facts.push(("serving entry", format!("{entry}, from the stack at {}: {stack}", entry.found_at)));
                }
                for warning in &trace.warnings {
                    facts.push(("warning", warning.clone()));
                }
            }
            None => facts.push(("source", "no trace given".to_owned())),
        }
        facts.push(("runtime", self.runtime_sentence()));
        let sites = match input.unresolved_static_sites {
            None => "static analysis did not run".to_owned(),
            Some([]) => "none".to_owned(),
            Some(sites) => format!("{} (listed below)", sites.len()),
        };
        facts.push(("unresolved static sites", sites));
        if let Some(verify) = input.verify {
            let verdict = if verify.passed() { "passed" } else { "FAILED" };
            facts.push(("verification", format!("{verdict}; {} denied syscall(s)", verify.failing_denials().count())));
        }
        facts
    }

    /// Where the runtime's part of the container profile came from, one sentence.
    pub fn runtime_sentence(&self) -> String {
        let runtime = self.input.trace.and_then(|trace| trace.target.runtime.as_deref());
        match self.input.profiles.runtime_source {
            RuntimeSource::Traced(baseline) => format!(
                "traced: what the runtime did after installing the filter, joined with the baseline for {} \
                 (its scheduling-dependent calls vary between runs)",
                baseline.runtime
            ),
            RuntimeSource::Baseline(baseline) => format!(
                "baseline for {} ({}; {} syscalls){}",
                baseline.runtime,
                baseline.source,
                baseline.syscalls.len(),
                match runtime {
                    Some(runtime) => format!(", chosen for `{runtime}`"),
                    None => ", the default: the evidence names no runtime".to_owned(),
                }
            ),
        }
    }
}

/// What the precision table measures, under it in both reports.
const PRECISION_NOTE: &str = "Each phase's profile (the names its file allows) against the syscalls this run \
observed in that phase: precision is the share of allowed syscalls that were observed, recall the share of observed \
syscalls that are allowed (below 1.0 the profile denies something the workload did), F1 their harmonic mean. \
An observed call answered with ENOSYS that glibc falls back from (clone3 where clone is allowed) counts as its \
fallback. Static-only grants are allowed on static reachability alone. A wider workload observes more; see docs/precision.md.";

/// The files `write` writes.
pub const FILES: [&str; 2] = ["report.md", "report.html"];

/// Writes `report.md` and `report.html` into `dir` and returns their paths.
pub fn write(dir: &Path, input: &ReportInput) -> std::io::Result<Vec<PathBuf>> {
    let summary = Summary::new(input);
    let markdown_path = dir.join(FILES[0]);
    crate::output::write(&markdown_path, markdown::render(&summary).as_bytes())?;
    let html_path = dir.join(FILES[1]);
    crate::output::write(&html_path, html::render(&summary).as_bytes())?;
    Ok(vec![markdown_path, html_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> SyscallSet {
        names.iter().map(|&name| name.to_owned()).collect()
    }

    #[test]
    fn counts_compare_every_phase_with_docker() {
        let profiles = Profiles::from_sets(
            Arch::X86_64,
            set(&["read", "bind", "listen", "mount"]),
            set(&["read", "accept4"]),
            set(&["capset"]),
        );
        let input = ReportInput {
            title: "t",
            profiles: &profiles,
            trace: None,
            analysis: None,
            unresolved_static_sites: None,
            verify: None,
        };
        let summary = Summary::new(&input);
        let docker = &summary.counts[0];
        assert_eq!((docker.allowed, docker.removed_vs_docker), (309, 0));
        let init = &summary.counts[2];
        assert_eq!(init.allowed, profiles.init.len());
        assert_eq!(init.beyond_docker, ["mount"], "Docker's default denies mount");
        let (_, networking) = summary.dangerous.iter().find(|(category, _)| *category == "networking").unwrap();
        let listen = networking.iter().find(|(name, _)| *name == "listen").unwrap();
        assert_eq!(listen.1, [true, true, true, false], "listen is removed from serving only");
        assert!(summary.precision.is_empty(), "nothing observed, nothing to measure against");
    }

    #[test]
    fn precision_is_against_what_the_trace_observed_per_phase() {
        let mut trace = Trace::new(crate::trace::Source::Ebpf, Arch::X86_64, "6.18".into(), Default::default());
        trace.phases.init.record("bind", 1, 0);
        trace.phases.serving.record("accept4", 1, 0);
        trace.phases.serving.record("kill", 1, 0);
        let profiles =
            Profiles::from_sets(Arch::X86_64, set(&["bind", "listen"]), set(&["accept4"]), SyscallSet::new());
        let input = ReportInput {
            title: "t",
            profiles: &profiles,
            trace: Some(&trace),
            analysis: None,
            unresolved_static_sites: None,
            verify: None,
        };
        let summary = Summary::new(&input);
        let init = &summary.precision[0];
        assert_eq!((init.phase, init.measured.hits, init.measured.allowed), (Phase::Init, 1, profiles.init.len()));
        assert_eq!(init.static_only, None, "no static analysis ran");
        let serving = &summary.precision[1];
        assert_eq!(serving.measured.denied, ["kill"]);
        assert_eq!(summary.recall_failures().len(), 1);
        let markdown = markdown::render(&summary);
        assert!(
            markdown
                .contains("RECALL BELOW 1: the serving profile denies syscalls this run observed in that phase: kill")
        );
        let html = html::render(&summary);
        assert!(html.contains("id=\"precision\"") && html.contains("RECALL BELOW 1"));
    }
}
