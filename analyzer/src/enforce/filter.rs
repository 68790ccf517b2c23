//! The serving profile as a classic-BPF seccomp program, and the container profile `enforce`
//! starts a container under.
//!
//! The program is linear and checks syscall numbers only: a filter whose answer for a number
//! never depends on the arguments is folded into the kernel's per-syscall action cache, so the
//! allowed (hot) syscalls cost no BPF run at all. Everything it does not allow — another ABI
//! (i386, x32), a syscall outside the profile — gets the chosen action, so `--action log` really
//! denies nothing.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::profile::ERRNO_ENOSYS;
use crate::profile::read::{is_allow_action, read_allowlist, read_profile};
use crate::syscalls::Arch;

/// What the serving filter does to a syscall outside the serving profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Fail it with ENOSYS, as the profiles answer everything they deny: glibc then falls back to
    /// an older call where it has one (`clone3` → `clone`, which every profile with `clone` leaves
    /// `clone3` out for), where EPERM would fail the caller (a `pthread_create` while serving).
    Errno,
    /// Let it run and log it to the kernel audit log (an audit run: nothing is denied).
    Log,
    /// Kill the process with SIGSYS.
    Kill,
}

impl Action {
    fn ret(self) -> u32 {
        match self {
            Action::Errno => SECCOMP_RET_ERRNO | ERRNO_ENOSYS,
            Action::Log => SECCOMP_RET_LOG,
            Action::Kill => SECCOMP_RET_KILL_PROCESS,
        }
    }
}

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// x32 syscalls are x86_64 numbers with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

/// A compiled filter, as `struct sock_filter` instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub insns: Vec<libc::sock_filter>,
}

impl Filter {
    /// Allows exactly the x86_64 syscalls `allowed`; `action` for everything else.
    pub fn allowlist(allowed: &[u32], action: Action) -> Filter {
        let mut numbers = allowed.to_vec();
        numbers.sort_unstable();
        numbers.dedup();
        let deny = action.ret();
        let mut insns = vec![
            stmt(BPF_LD_W_ABS, DATA_ARCH),
            jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(BPF_RET_K, deny),
            stmt(BPF_LD_W_ABS, DATA_NR),
            jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
            stmt(BPF_RET_K, deny),
        ];
        // A pair per syscall keeps every jump offset at 0 or 1, whatever the profile's size.
        for number in numbers {
            insns.push(jump(BPF_JMP_JEQ_K, number, 0, 1));
            insns.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        }
        insns.push(stmt(BPF_RET_K, deny));
        Filter { insns }
    }

    /// The serving filter of a Docker/OCI allowlist profile.
    pub fn from_profile(path: &Path, action: Action) -> Result<Filter> {
        let allowed = read_allowlist(path)?;
        let numbers: Vec<u32> = allowed.iter().filter_map(|name| Arch::X86_64.number(name)).collect();
        if numbers.is_empty() {
            bail!("{} allows no x86_64 syscall: it is not a serving profile", path.display());
        }
        Ok(Filter::allowlist(&numbers, action))
    }

    /// The instructions as the kernel reads them (8 bytes each), for writing into a process.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.insns.len() * 8);
        for insn in &self.insns {
            bytes.extend_from_slice(&insn.code.to_ne_bytes());
            bytes.push(insn.jt);
            bytes.push(insn.jf);
            bytes.extend_from_slice(&insn.k.to_ne_bytes());
        }
        bytes
    }
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Syscalls the switch itself makes under the container's filter.
pub const SWITCH_SYSCALLS: [&str; 2] = ["prctl", "seccomp"];

/// The container profile `enforce` starts a container under: `path` (init ∪ serving ∪ runtime)
/// with `prctl` and `seccomp` allowed, so the serving filter can be installed — as JSON text for
/// the Docker API.
pub fn container_profile(path: &Path) -> Result<String> {
    let mut file = read_profile(path)?;
    if is_allow_action(&file.profile.default_action) {
        bail!(
            "{} is a denylist (defaultAction {}): enforce needs an allowlist",
            path.display(),
            file.profile.default_action
        );
    }
    let rules = file.json.get_mut("syscalls").and_then(|rules| rules.as_array_mut()).context("no syscalls")?;
    // Drop them from every other rule (the writer's explicit ENOSYS rule names them when the
    // trace never saw them), then allow them unconditionally.
    for rule in rules.iter_mut() {
        if let Some(names) = rule.get_mut("names").and_then(|names| names.as_array_mut()) {
            names.retain(|name| !SWITCH_SYSCALLS.contains(&name.as_str().unwrap_or_default()));
        }
    }
    rules.retain(|rule| rule["names"].as_array().is_none_or(|names| !names.is_empty()));
    rules.push(serde_json::json!({"names": SWITCH_SYSCALLS, "action": "SCMP_ACT_ALLOW"}));
    Ok(serde_json::to_string(&file.json).expect("JSON always serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowlist_is_linear_with_short_jumps() {
        let filter = Filter::allowlist(&[39, 0, 39, 110], Action::Errno);
        assert_eq!(filter.insns.len(), 6 + 2 * 3 + 1);
        assert!(filter.insns.iter().all(|insn| insn.jt <= 1 && insn.jf <= 1));
        let allowed: Vec<u32> =
            filter.insns.iter().filter(|insn| insn.code == BPF_JMP_JEQ_K).map(|insn| insn.k).skip(1).collect();
        assert_eq!(allowed, [0, 39, 110]);
        assert_eq!(filter.insns.last().unwrap().k, SECCOMP_RET_ERRNO | 38);
        assert_eq!(filter.bytes().len(), filter.insns.len() * 8);
        assert_eq!(Filter::allowlist(&[0], Action::Log).insns.last().unwrap().k, SECCOMP_RET_LOG);
    }

    #[test]
    fn a_real_kernel_denies_what_the_filter_leaves_out() {
        // getppid (110) left out: in a forked child under the filter it fails with ENOSYS, while
        // getpid (39) still works.
        let allowed: Vec<u32> = Arch::X86_64.syscalls().map(|(nr, _)| nr).filter(|&nr| nr != 110).collect();
        let filter = Filter::allowlist(&allowed, Action::Errno);
        let prog = libc::sock_fprog { len: filter.insns.len() as u16, filter: filter.insns.as_ptr().cast_mut() };
        // SAFETY: the child makes raw syscalls only and leaves with _exit; the parent waits for it.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above; `prog` outlives the calls.
            unsafe {
                libc::syscall(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if libc::syscall(libc::SYS_seccomp, 1, 0, &prog) != 0 {
                    libc::_exit(3);
                }
                let denied = libc::syscall(libc::SYS_getppid) == -1 && *libc::__errno_location() == libc::ENOSYS;
                let allowed = libc::syscall(libc::SYS_getpid) > 0;
                libc::_exit(if denied && allowed { 0 } else { 4 });
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }

    #[test]
    fn the_container_profile_allows_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seccomp.json");
        let profile = crate::profile::DockerProfile::allowlist(Arch::X86_64, ["read", "write"]);
        std::fs::write(&path, profile.to_json()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&container_profile(&path).unwrap()).unwrap();
        let rules = json["syscalls"].as_array().unwrap();
        let actions_of = |name: &str| -> Vec<&str> {
            rules
                .iter()
                .filter(|rule| rule["names"].as_array().unwrap().iter().any(|known| known == name))
                .map(|rule| rule["action"].as_str().unwrap())
                .collect()
        };
        assert_eq!(actions_of("seccomp"), ["SCMP_ACT_ALLOW"]);
        assert_eq!(actions_of("prctl"), ["SCMP_ACT_ALLOW"]);
        assert_eq!(actions_of("read"), ["SCMP_ACT_ALLOW"]);
        assert_eq!(actions_of("mkdir"), ["SCMP_ACT_ERRNO"]);
    }
}
