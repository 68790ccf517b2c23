//! The human-readable summary of a `VerifyReport`, as `verify` prints it.

use std::fmt;

use super::{Denial, VerifyReport};

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runtime = self.runtime.as_deref().map(|runtime| format!(" ({runtime})")).unwrap_or_default();
        writeln!(f, "verify {} under {}{runtime}", self.image, self.profile)?;
        match (&self.start_error, self.ready_ms) {
            (Some(error), _) => writeln!(f, "started:  no — {error}")?,
            (None, Some(ms)) => writeln!(f, "started:  yes, ready after {ms} ms")?,
            (None, None) => writeln!(f, "started:  yes")?,
        }
        if let Some(workload) = &self.workload {
            let passed = workload.steps.iter().filter(|step| step.ok).count();
            writeln!(f, "workload: {} — {passed} of {} steps passed", workload.description, workload.steps.len())?;
            for step in &workload.steps {
                writeln!(f, "  {}  {}: {}", if step.ok { "ok  " } else { "FAIL" }, step.name, step.detail)?;
            }
        }
        if let Some(enforced) = &self.enforced {
            writeln!(f, "enforced: at {}, switched pids {:?}", enforced.marker, enforced.switched)?;
            for line in &enforced.not_switched {
                writeln!(f, "  {line}")?;
            }
        }
        if let Some(exited) = &self.exited {
            writeln!(f, "exited:   {exited}")?;
        }
        let failing: Vec<&Denial> = self.failing_denials().collect();
        if failing.is_empty() {
            writeln!(f, "denied:   nothing")?;
        } else {
            writeln!(f, "denied:   {} syscall(s)", failing.len())?;
            for denial in failing {
                writeln!(
                    f,
                    "  {:<8} {} ({}) errno {} by {} (pid {}) ×{}, first at {} ms",
                    denial.phase.as_str(),
                    denial.syscall,
                    denial.number,
                    denial.errno,
                    denial.process,
                    denial.pid,
                    denial.count,
                    denial.first_ms
                )?;
            }
        }
        for denial in self.denials.iter().filter(|denial| denial.fallback.is_some()) {
            let instead = denial.fallback.as_deref().unwrap_or_default();
            writeln!(
                f,
                "fallback: {} answered ENOSYS by the profile for {} ×{}; libc uses {instead} instead",
                denial.syscall, denial.process, denial.count
            )?;
        }
        if self.lost_events > 0 {
            writeln!(f, "lost:     {} events; {} possible denials unconfirmed", self.lost_events, self.unconfirmed)?;
        }
        write!(f, "result:   {}", if self.passed() { "passed" } else { "FAILED" })
    }
}
