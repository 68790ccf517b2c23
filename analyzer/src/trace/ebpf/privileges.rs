//! The capabilities the tracer needs, which of them this process lacks, and giving them up once
//! the programs are loaded and attached.
//!
//! Loading and attaching need CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN. Everything after — map
//! reads and updates on the fds already held, the ring buffer, detaching by closing — needs none
//! of them, so a trace runs most of its time without them. Capabilities belong to threads, not
//! processes: `drop_loading` acts on the thread that calls it, and threads created afterwards
//! inherit the reduced sets.

use caps::errors::CapsError;
use caps::{CapSet, Capability};

/// What loading and attaching may need.
pub const LOADING: [Capability; 3] = [Capability::CAP_BPF, Capability::CAP_PERFMON, Capability::CAP_SYS_ADMIN];

/// The loading capabilities this thread lacks, when loading cannot work without them (none of
/// CAP_SYS_ADMIN, and not both of CAP_BPF and CAP_PERFMON); `None` when it can.
pub fn missing() -> Option<Vec<Capability>> {
    let effective = caps::read(None, CapSet::Effective).unwrap_or_default();
    let has = |cap: Capability| effective.contains(&cap);
    let able = (has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON)) || has(Capability::CAP_SYS_ADMIN);
    (!able).then(|| LOADING.into_iter().filter(|&cap| !has(cap)).collect())
}

/// "CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN".
pub fn names(capabilities: &[Capability]) -> String {
    let names: Vec<String> = capabilities.iter().map(ToString::to_string).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// Gives up the loading capabilities in the calling thread for good: effective first (it must stay
/// within permitted), then permitted and inheritable, so they cannot be raised again.
pub fn drop_loading() -> Result<(), CapsError> {
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        for cap in LOADING {
            caps::drop(None, set, cap)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named_in_a_sentence() {
        assert_eq!(names(&LOADING), "CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN");
        assert_eq!(names(&LOADING[..2]), "CAP_BPF and CAP_PERFMON");
        assert_eq!(names(&LOADING[2..]), "CAP_SYS_ADMIN");
    }

    #[test]
    fn a_thread_gives_up_loading_capabilities_for_good() {
        // In a thread of its own: the test harness's other threads keep theirs.
        let after = std::thread::spawn(|| {
            drop_loading().unwrap();
            (missing(), caps::read(None, CapSet::Permitted).unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(after.0, Some(LOADING.to_vec()));
        assert!(LOADING.iter().all(|cap| !after.1.contains(cap)), "{:?}", after.1);
    }
}
