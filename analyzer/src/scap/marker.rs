//! The phase marker applied to a capture's event stream, once per container.
//!
//! A capture records syscalls, not function calls or connections, so only the markers that
//! are syscalls or time work here: `syscall:NAME` (the container's first NAME), `after:DURATION`
//! (from the container's first event in the capture) and `auto` (the first accept, accept4,
//! epoll_wait or epoll_pwait after a listen). `symbol:` and `ready:tcp:` are refused with the
//! reason. The event that fires the marker is the first of `serving`; an event belongs to
//! `serving` when its timestamp is at or after the firing time, so events from other CPUs that
//! arrive late in the file still land in the phase they happened in.

use crate::trace::{MarkerSpec, Phase, PhaseMarker};

use super::names::{KernelName, Sys, kernel_name};
use super::tables::PPM_SC_NAMES;

/// The syscalls `auto` treats as "the server is waiting for requests".
const AUTO_WAITS: &[&str] = &["accept", "accept4", "epoll_wait", "epoll_pwait"];

/// A marker prepared for the event stream.
pub struct Plan {
    spec: String,
    rule: Rule,
}

enum Rule {
    /// Fires on the first syscall whose profile name is `name`.
    Syscall { name: String, codes: Box<[bool]> },
    /// Fires this many nanoseconds after the container's first event.
    After(u64),
    /// Fires on the first of `waits` after any of `listens`.
    Auto { listens: Box<[bool]>, waits: Box<[bool]> },
}

/// Where one container's marker stands.
#[derive(Clone, Debug, Default)]
pub struct MarkerState {
    fired_at: Option<u64>,
    pid: Option<u32>,
    listen_seen: bool,
}

impl MarkerState {
    /// The phase of an event at `ts` (nanoseconds since the epoch).
    #[inline]
    pub fn phase_at(&self, ts: u64) -> Phase {
        match self.fired_at {
            Some(at) if ts >= at => Phase::Serving,
            _ => Phase::Init,
        }
    }
}

impl Plan {
    pub fn new(spec: &MarkerSpec) -> Result<Plan, String> {
        let rule = match spec {
            MarkerSpec::Syscall(name) => Rule::Syscall { name: name.clone(), codes: codes_named(&[name.as_str()]) },
            MarkerSpec::After(duration) => Rule::After(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)),
            MarkerSpec::Auto => Rule::Auto { listens: codes_named(&["listen"]), waits: codes_named(AUTO_WAITS) },
            MarkerSpec::Symbol { .. } => {
                return Err(format!(
                    "`{spec}` cannot work on a capture: a capture records syscalls, not function calls; \
                     use syscall:NAME, after:DURATION or auto"
                ));
            }
            MarkerSpec::ReadyTcp(_) => {
                return Err(format!(
                    "`{spec}` cannot work on a capture: there is no live container to connect to; \
                     use auto (the first accept after a listen), syscall:NAME or after:DURATION"
                ));
            }
        };
        Ok(Plan { spec: spec.to_string(), rule })
    }

    /// Looks at one syscall of a container whose first event was at `start`, before it is counted.
    #[inline]
    pub fn observe(&self, state: &mut MarkerState, sys: Sys, ts: u64, start: u64, pid: u32) {
        if state.fired_at.is_some() {
            return;
        }
        let fired_at = match &self.rule {
            Rule::Syscall { name, codes } => matches(codes, &[name.as_str()], sys).then_some(ts),
            Rule::After(delay) => {
                let at = start.saturating_add(*delay);
                (ts >= at).then_some(at)
            }
            Rule::Auto { listens, waits } => {
                if matches(listens, &["listen"], sys) {
                    state.listen_seen = true;
                }
                (state.listen_seen && matches(waits, AUTO_WAITS, sys)).then_some(ts)
            }
        };
        if let Some(at) = fired_at {
            state.fired_at = Some(at);
            state.pid = (!matches!(self.rule, Rule::After(_))).then_some(pid);
        }
    }

    /// What `trace.json` says about the marker of a container that ran from `start` to `end`.
    pub fn outcome(&self, state: &MarkerState, start: u64, end: u64) -> PhaseMarker {
        let detail = match (&self.rule, state.fired_at) {
            (Rule::Auto { .. }, Some(_)) => {
                "auto on a capture: the first accept, accept4, epoll_wait or epoll_pwait after a listen \
                 (a capture has no function calls for a symbol marker)"
                    .to_owned()
            }
            (_, Some(_)) => return self.fired(state, start),
            (Rule::Syscall { name, .. }, None) => {
                format!("did not fire: the container made no {name} in the capture; everything counts as init")
            }
            (Rule::After(delay), None) => format!(
                "did not fire: the capture ends {} after the container's first event, before {}; \
                 everything counts as init",
                humantime::format_duration(std::time::Duration::from_nanos(end.saturating_sub(start))),
                humantime::format_duration(std::time::Duration::from_nanos(*delay)),
            ),
            (Rule::Auto { .. }, None) => "did not fire: no accept, accept4, epoll_wait or epoll_pwait after a listen \
                 in the capture; everything counts as init"
                .to_owned(),
        };
        PhaseMarker { detail: Some(detail), ..self.fired(state, start) }
    }

    fn fired(&self, state: &MarkerState, start: u64) -> PhaseMarker {
        PhaseMarker {
            spec: self.spec.clone(),
            fired: state.fired_at.is_some(),
            at_ns: state.fired_at.map(|at| at.saturating_sub(start)),
            pid: state.pid,
            detail: None,
            ..PhaseMarker::default()
        }
    }
}

/// Per `ppm_sc` code: is its profile name one of `names`? (Only codes named like one of them,
/// or renamed on the way, can be.)
fn codes_named(names: &[&str]) -> Box<[bool]> {
    let candidate = |name: &str| names.contains(&name) || matches!(name, "umount" | "send" | "recv");
    PPM_SC_NAMES
        .iter()
        .enumerate()
        .map(|(code, &name)| {
            candidate(name)
                && matches!(kernel_name(Sys::Code(code as u16)), KernelName::Native(name) if names.contains(&name))
        })
        .collect()
}

#[inline]
fn matches(codes: &[bool], names: &[&str], sys: Sys) -> bool {
    match sys {
        Sys::Code(code) => codes.get(usize::from(code)).copied().unwrap_or(false),
        // Rare: a number the driver's tables did not know.
        Sys::Native(_) => matches!(kernel_name(sys), KernelName::Native(name) if names.contains(&name)),
        Sys::Unknown => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scap::names::of_event;

    const LISTEN_X: u16 = 25;
    const ACCEPT4_6_X: u16 = 389;
    const READ_X: u16 = 7;

    fn plan(text: &str) -> Plan {
        Plan::new(&text.parse().unwrap()).unwrap()
    }

    #[test]
    fn syscall_marker_fires_on_the_first_call_and_it_is_serving() {
        let plan = plan("syscall:accept4");
        let mut state = MarkerState::default();
        plan.observe(&mut state, of_event(READ_X), 100, 100, 7);
        assert_eq!(state.phase_at(100), Phase::Init);
        plan.observe(&mut state, of_event(ACCEPT4_6_X), 150, 100, 8);
        plan.observe(&mut state, of_event(ACCEPT4_6_X), 170, 100, 9);
        assert_eq!((state.phase_at(149), state.phase_at(150)), (Phase::Init, Phase::Serving));
        let outcome = plan.outcome(&state, 100, 200);
        assert_eq!((outcome.fired, outcome.at_ns, outcome.pid), (true, Some(50), Some(8)));
    }

    #[test]
    fn auto_needs_a_listen_first() {
        let plan = plan("auto");
        let mut state = MarkerState::default();
        plan.observe(&mut state, of_event(ACCEPT4_6_X), 110, 100, 7);
        assert_eq!(state.fired_at, None, "an accept before any listen is not the serving loop");
        plan.observe(&mut state, of_event(LISTEN_X), 120, 100, 7);
        plan.observe(&mut state, of_event(ACCEPT4_6_X), 130, 100, 7);
        assert_eq!(state.fired_at, Some(130));
        assert!(plan.outcome(&state, 100, 200).detail.unwrap().contains("after a listen"));
    }

    #[test]
    fn after_fires_at_the_deadline_and_says_why_when_it_cannot() {
        let plan = plan("after:1s");
        let mut state = MarkerState::default();
        plan.observe(&mut state, of_event(READ_X), 900_000_000, 0, 7);
        let outcome = plan.outcome(&state, 0, 900_000_000);
        assert!(!outcome.fired);
        assert_eq!(
            outcome.detail.unwrap(),
            "did not fire: the capture ends 900ms after the container's first event, before 1s; everything counts as init"
        );
        plan.observe(&mut state, of_event(READ_X), 2_000_000_000, 0, 7);
        assert_eq!(state.fired_at, Some(1_000_000_000));
        assert_eq!(plan.outcome(&state, 0, 2_000_000_000).at_ns, Some(1_000_000_000));
    }

    #[test]
    fn syscall_marker_matches_profile_names_not_event_names() {
        const UMOUNT_X: u16 = 259; // sysdig's `umount`, which on x86_64 is umount2
        let plan = plan("syscall:umount2");
        let mut state = MarkerState::default();
        plan.observe(&mut state, of_event(UMOUNT_X), 120, 100, 7);
        assert_eq!(state.fired_at, Some(120));
    }

    #[test]
    fn markers_a_capture_cannot_show_are_refused() {
        for text in ["symbol:ngx_worker", "ready:tcp:80"] {
            let err = Plan::new(&text.parse().unwrap()).err().unwrap();
            assert!(err.contains("cannot work on a capture"), "{err}");
        }
        assert!(Plan::new(&MarkerSpec::After(Duration::from_secs(1))).is_ok());
    }
}
