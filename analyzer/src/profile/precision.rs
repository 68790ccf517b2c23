//! How tight a profile is: per phase, its precision, recall and F1 against the syscalls a workload
//! was seen making.
//!
//! Precision is the share of what the profile allows that was observed; recall the share of what
//! was observed that the profile allows. Recall below 1.0 means the profile denies a syscall a real
//! workload made — the one failure a profile must never have — so `denied` names those syscalls
//! and callers say so loudly. F1 (the harmonic mean of the two) is the figure B-Side publishes,
//! which makes the profiles comparable with the peers'.
//!
//! What a workload observed is taken as it would run under the profile: a syscall glibc gives up
//! on when it fails with `ENOSYS` (`ENOSYS_FALLBACKS`: `clone3` where `clone` is allowed, `rseq`) is
//! a fallback, not a denial, and the call glibc makes instead counts as observed.

use serde::{Deserialize, Serialize};

use super::{ENOSYS_FALLBACKS, Profiles, SyscallSet};
use crate::syscalls;
use crate::trace::{Phase, Trace};

/// The phases a profile is measured in: the two that are enforced one after the other.
pub const MEASURED_PHASES: [Phase; 2] = [Phase::Init, Phase::Serving];

/// What `traces` observed in `phase`, together (native and compat names).
pub fn observed(traces: &[&Trace], phase: Phase) -> SyscallSet {
    traces.iter().flat_map(|trace| trace.phases.get(phase).names()).map(str::to_owned).collect()
}

impl Profiles {
    /// Per measured phase, what its file allows (names a runtime knows: the file leaves the others
    /// out) against what `observed` gives for the phase.
    pub fn precision(&self, observed: impl Fn(Phase) -> SyscallSet) -> Vec<(Phase, Precision)> {
        MEASURED_PHASES
            .into_iter()
            .map(|phase| {
                let set = if phase == Phase::Init { &self.init } else { &self.serving };
                let allowed: SyscallSet = set.iter().filter(|name| syscalls::is_known(name)).cloned().collect();
                (phase, Precision::measure(&allowed, &observed(phase)))
            })
            .collect()
    }
}

/// One profile measured against one set of observations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Precision {
    /// Syscalls the profile allows.
    pub allowed: usize,
    /// Syscalls observed.
    pub observed: usize,
    /// Allowed and observed.
    pub hits: usize,
    /// `hits / allowed`; 1.0 for a profile that allows nothing.
    pub precision: f64,
    /// `hits / observed`; 1.0 when nothing was observed.
    pub recall: f64,
    /// The harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
    /// Observed but not allowed: what the profile would deny the workload (recall < 1.0).
    pub denied: Vec<String>,
    /// Observed, not allowed, and answered with `ENOSYS` that glibc falls back from.
    pub fallbacks: Vec<String>,
}

impl Precision {
    /// Measures the profile `allowed` against what was `observed`.
    pub fn measure(allowed: &SyscallSet, observed: &SyscallSet) -> Precision {
        let mut fallbacks = Vec::new();
        let mut effective = SyscallSet::new();
        for name in observed {
            let fallback = ENOSYS_FALLBACKS.iter().find(|(first, _)| first == name).map(|(_, instead)| *instead);
            match fallback {
                Some(instead) if !allowed.contains(name) && instead.is_none_or(|instead| allowed.contains(instead)) => {
                    fallbacks.push(name.clone());
                    effective.extend(instead.map(str::to_owned));
                }
                _ => {
                    effective.insert(name.clone());
                }
            }
        }
        let observed = &effective;
        let hits = allowed.intersection(observed).count();
        let ratio = |part: usize, whole: usize| if whole == 0 { 1.0 } else { part as f64 / whole as f64 };
        let precision = ratio(hits, allowed.len());
        let recall = ratio(hits, observed.len());
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        Precision {
            allowed: allowed.len(),
            observed: observed.len(),
            hits,
            precision,
            recall,
            f1,
            denied: observed.difference(allowed).cloned().collect(),
            fallbacks,
        }
    }

    /// Whether the profile allows everything observed (recall 1.0).
    pub fn complete(&self) -> bool {
        self.denied.is_empty()
    }

    /// One line: `precision 0.25, recall 1.00, F1 0.40 (10 of 40 allowed were observed)`, and the
    /// denied syscalls when recall is below 1.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "precision {:.2}, recall {:.2}, F1 {:.2} ({} of {} allowed were observed)",
            self.precision, self.recall, self.f1, self.hits, self.allowed
        );
        if !self.fallbacks.is_empty() {
            line.push_str(&format!("; ENOSYS fallbacks {}", self.fallbacks.join(" ")));
        }
        if !self.complete() {
            line.push_str(&format!("; RECALL BELOW 1: denies observed {}", self.denied.join(" ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &str) -> SyscallSet {
        names.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn precision_recall_and_f1_per_case() {
        // (allowed, observed, precision, recall, f1, denied)
        let cases = [
            // clone3 is answered ENOSYS and glibc calls clone; without rseq glibc carries on.
            ("clone read", "clone3 read", 1.0, 1.0, 1.0, ""),
            ("clone read write", "clone3 rseq read", 2.0 / 3.0, 1.0, 0.8, ""),
            ("read", "clone3 read", 1.0, 0.5, 2.0 / 3.0, "clone3"),
            ("clone3 read", "clone3 read", 1.0, 1.0, 1.0, ""),
            ("read write", "read write", 1.0, 1.0, 1.0, ""),
            ("read write openat close", "read write", 0.5, 1.0, 2.0 / 3.0, ""),
            ("read write openat close mmap", "read", 0.2, 1.0, 1.0 / 3.0, ""),
            ("read", "read write", 1.0, 0.5, 2.0 / 3.0, "write"),
            ("read openat", "read write", 0.5, 0.5, 0.5, "write"),
            ("openat", "read write", 0.0, 0.0, 0.0, "read write"),
            ("", "read", 1.0, 0.0, 0.0, "read"),
            ("read", "", 0.0, 1.0, 0.0, ""),
            ("", "", 1.0, 1.0, 1.0, ""),
        ];
        for (allowed, observed, precision, recall, f1, denied) in cases {
            let measured = Precision::measure(&set(allowed), &set(observed));
            let case = format!("allowed [{allowed}], observed [{observed}]: {measured:?}");
            assert!((measured.precision - precision).abs() < 1e-9, "precision of {case}");
            assert!((measured.recall - recall).abs() < 1e-9, "recall of {case}");
            assert!((measured.f1 - f1).abs() < 1e-9, "F1 of {case}");
            assert_eq!(measured.denied, set(denied).into_iter().collect::<Vec<_>>(), "denied of {case}");
            assert_eq!(measured.complete(), denied.is_empty(), "{case}");
            assert_eq!(measured.allowed, set(allowed).len(), "{case}");
        }
        let fallback = Precision::measure(&set("clone read write"), &set("clone3 rseq read"));
        assert_eq!((fallback.observed, fallback.hits), (2, 2), "clone and read are what runs");
        assert_eq!(fallback.fallbacks, ["clone3", "rseq"]);
        assert!(fallback.describe().ends_with("; ENOSYS fallbacks clone3 rseq"), "{}", fallback.describe());
    }

    #[test]
    fn profiles_are_measured_per_phase_as_their_files_allow() {
        let mut trace =
            Trace::new(crate::trace::Source::Ebpf, crate::syscalls::Arch::X86_64, "6.18".into(), Default::default());
        trace.phases.init.record("bind", 1, 0);
        trace.phases.serving.record("accept4", 1, 0);
        let mut wider = trace.clone();
        wider.phases.serving.record("kill", 1, 0);
        let profiles = Profiles::from_sets(
            crate::syscalls::Arch::X86_64,
            set("bind openat syscall_500"),
            set("accept4"),
            SyscallSet::new(),
        );
        let own = profiles.precision(|phase| observed(&[&trace], phase));
        assert_eq!(own.iter().map(|(phase, _)| *phase).collect::<Vec<_>>(), MEASURED_PHASES);
        let (_, init) = &own[0];
        assert_eq!(init.allowed, profiles.init.len() - 1, "syscall_500 is in no file");
        assert!(own.iter().all(|(_, measured)| measured.complete()));
        let wide = profiles.precision(|phase| observed(&[&trace, &wider], phase));
        assert_eq!(wide[1].1.denied, ["kill"], "the union of the traces is what counts");
    }

    #[test]
    fn the_line_says_when_recall_is_below_one() {
        let complete = Precision::measure(&set("read write openat close"), &set("read write"));
        assert_eq!(complete.describe(), "precision 0.50, recall 1.00, F1 0.67 (2 of 4 allowed were observed)");
        let short = Precision::measure(&set("read"), &set("read write futex"));
        assert!(short.describe().ends_with("; RECALL BELOW 1: denies observed futex write"), "{}", short.describe());
    }
}
