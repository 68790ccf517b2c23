//! The serving profile as a classic-BPF seccomp program, and the container profile `enforce`
//! starts a container under.
//!
//! The program checks syscall numbers: a filter whose answer for a number never depends on the
//! arguments is folded into the kernel's per-syscall action cache, so the allowed (hot) syscalls
//! cost no BPF run at all. To fill that cache the kernel runs the filter for every syscall number
//! inside the switch's `seccomp` call, while the process is held, so the numbers are found by a
//! binary search (a few comparisons each) rather than one list (about 60 on average), which made
//! that call take twice as long. The same call converts and JIT-compiles the program, in time that
//! grows with its length, so the search is over runs of consecutive allowed numbers (one or two
//! comparisons a run, whatever its length) and a full-width argument word is compared unmasked:
//! nginx's serving program went from 329 instructions to 208 (its install from 58 to 49 µs), and
//! to 184 with leaves of up to 8 runs. Only the syscalls the profile narrows by argument
//! (`syscalls::args`) jump to a block of their own that compares the arguments; they alone run
//! the filter each time. Everything it does not allow — another ABI (i386, x32), a syscall
//! outside the profile, a narrowed one with other arguments — gets the chosen action, so
//! `--action log` really denies nothing.

use std::path::Path;

use anyhow::{Result, bail};

use crate::profile::ERRNO_ENOSYS;
use crate::profile::read::{read_allowlist, read_profile};
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
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_RET_K: u16 = 0x06;

const BPF_ALU_AND_K: u16 = 0x54;
const BPF_JMP_JA: u16 = 0x05;
/// `args[0]` in `struct seccomp_data` (after `nr`, `arch` and `instruction_pointer`).
const DATA_ARGS: u32 = 16;

/// One way a narrowed syscall is allowed: every (argument index, mask, value) holds.
pub type ArgRule = Vec<(u8, u64, u64)>;

/// A compiled filter, as `struct sock_filter` instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub insns: Vec<libc::sock_filter>,
}

impl Filter {
    /// Like `allowlist`, and each syscall of `narrowed` only when one of its rules holds (a
    /// number also in `allowed` is allowed whatever its arguments).
    pub fn allowlist_with_args(allowed: &[u32], narrowed: &[(u32, Vec<ArgRule>)], action: Action) -> Filter {
        let deny = action.ret();
        let mut entries: Vec<(u32, Leads)> = allowed.iter().map(|&number| (number, Leads::Allow)).collect();
        let blocks: Vec<Vec<libc::sock_filter>> = narrowed.iter().map(|(_, rules)| block(rules, deny)).collect();
        entries.extend(narrowed.iter().enumerate().map(|(index, (number, _))| (*number, Leads::Block(index))));
        // Stable: a number both allowed and narrowed keeps its `Allow`, listed first.
        entries.sort_by_key(|(number, _)| *number);
        entries.dedup_by_key(|(number, _)| *number);
        let mut insns = vec![
            stmt(BPF_LD_W_ABS, DATA_ARCH),
            jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(BPF_RET_K, deny),
            stmt(BPF_LD_W_ABS, DATA_NR),
            jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
            stmt(BPF_RET_K, deny),
        ];
        let tree = Tree::search(&runs(&entries), deny);
        let tree_at = insns.len();
        insns.extend(tree.insns);
        let mut starts = Vec::with_capacity(blocks.len());
        for block in blocks {
            starts.push(insns.len());
            insns.extend(block);
        }
        for (at, index) in tree.jumps {
            let at = tree_at + at;
            insns[at].k = (starts[index] - at - 1) as u32;
        }
        Filter { insns }
    }

    /// Allows exactly the x86_64 syscalls `allowed`; `action` for everything else.
    pub fn allowlist(allowed: &[u32], action: Action) -> Filter {
        Filter::allowlist_with_args(allowed, &[], action)
    }

    /// The serving filter of a Docker/OCI allowlist profile.
    ///
    /// A name allowed only under argument conditions is compiled with them when every rule for it
    /// reads as equality under a mask (what `profile` writes); otherwise it is allowed whatever
    /// its arguments, which never denies what the profile allows.
    pub fn from_profile(path: &Path, action: Action) -> Result<Filter> {
        let allowed = read_allowlist(path)?;
        let conditional = read_profile(path)?.argument_rules();
        let mut narrowed: Vec<(u32, Vec<ArgRule>)> = Vec::new();
        let mut numbers: Vec<u32> = Vec::new();
        for name in &allowed {
            let Some(number) = Arch::X86_64.number(name) else { continue };
            let rules =
                conditional.get(name).and_then(|rules| rules.iter().map(|rule| compiled(rule.as_deref()?)).collect());
            match rules {
                Some(rules) => narrowed.push((number, rules)),
                None => numbers.push(number),
            }
        }
        if numbers.is_empty() && narrowed.is_empty() {
            bail!("{} allows no x86_64 syscall: it is not a serving profile", path.display());
        }
        Ok(Filter::allowlist_with_args(&numbers, &narrowed, action))
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

/// What a syscall number leads to.
#[derive(Clone, Copy)]
enum Leads {
    Allow,
    /// The argument checks of `narrowed[index]`.
    Block(usize),
}

/// Runs a leaf of the search compares one by one.
const LEAF: usize = 8;

/// Consecutive numbers that lead to the same place: a single number costs one comparison, a
/// longer run two, so a profile allowing whole stretches of the table makes a short program —
/// shorter to compile and to fold into the action cache at the switch, while the process is held.
#[derive(Clone, Copy)]
struct Run {
    first: u32,
    last: u32,
    leads: Leads,
}

/// `entries` (sorted, one per number) with the allowed numbers that follow each other merged.
/// Numbers missing from the table are not bridged: they stay denied.
fn runs(entries: &[(u32, Leads)]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::with_capacity(entries.len());
    for &(number, leads) in entries {
        match (runs.last_mut(), leads) {
            (Some(run), Leads::Allow)
                if matches!(run.leads, Leads::Allow) && run.last.checked_add(1) == Some(number) =>
            {
                run.last = number;
            }
            _ => runs.push(Run { first: number, last: number, leads }),
        }
    }
    runs
}

/// Part of the binary search over syscall numbers, `A` holding the number.
struct Tree {
    insns: Vec<libc::sock_filter>,
    /// The `JA` of each narrowed number (at, index into `narrowed`), whose offset is known only
    /// once the blocks are laid out.
    jumps: Vec<(usize, usize)>,
}

impl Tree {
    /// Every number below the middle run goes left, the others right (through a `JA` when the
    /// left half is too long for an 8-bit offset).
    fn search(runs: &[Run], deny: u32) -> Tree {
        if runs.len() <= LEAF {
            return Tree::leaf(runs, deny);
        }
        let (low, high) = runs.split_at(runs.len() / 2);
        let pivot = high[0].first;
        let (low, high) = (Tree::search(low, deny), Tree::search(high, deny));
        let insns = match u8::try_from(low.insns.len()) {
            Ok(skip) => vec![jump(BPF_JMP_JGE_K, pivot, skip, 0)],
            Err(_) => vec![jump(BPF_JMP_JGE_K, pivot, 0, 1), stmt(BPF_JMP_JA, low.insns.len() as u32)],
        };
        let mut node = Tree { insns, jumps: Vec::new() };
        node.append(low);
        node.append(high);
        node
    }

    /// The comparisons of each run in order, then the deny, the allow, and a `JA` per narrowed
    /// number. A number above a run goes on to the next one; below it, it is below every later
    /// run too, so it is denied.
    fn leaf(runs: &[Run], deny: u32) -> Tree {
        let compared: usize = runs.iter().map(|run| if run.first == run.last { 1 } else { 2 }).sum();
        let (deny_at, allow_at) = (compared, compared + 1);
        let mut insns = Vec::with_capacity(compared + 2 + runs.len());
        let mut jumps = Vec::new();
        let offset = |from: usize, to: usize| (to - from - 1) as u8;
        for run in runs {
            // Each narrowed number's `JA` comes after the allow.
            let target = match run.leads {
                Leads::Allow => allow_at,
                Leads::Block(index) => {
                    jumps.push((allow_at + 1 + jumps.len(), index));
                    allow_at + jumps.len()
                }
            };
            if run.first == run.last {
                insns.push(jump(BPF_JMP_JEQ_K, run.first, offset(insns.len(), target), 0));
            } else {
                insns.push(jump(BPF_JMP_JGT_K, run.last, 1, 0));
                let at = insns.len();
                insns.push(jump(BPF_JMP_JGE_K, run.first, offset(at, target), offset(at, deny_at)));
            }
        }
        insns.push(stmt(BPF_RET_K, deny));
        insns.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        insns.extend(jumps.iter().map(|_| stmt(BPF_JMP_JA, 0)));
        Tree { insns, jumps }
    }

    fn append(&mut self, other: Tree) {
        let offset = self.insns.len();
        self.jumps.extend(other.jumps.into_iter().map(|(at, index)| (at + offset, index)));
        self.insns.extend(other.insns);
    }
}

/// The argument checks of one narrowed syscall: each rule allows when all its comparisons hold,
/// else the next rule is tried; `deny` after the last.
fn block(rules: &[ArgRule], deny: u32) -> Vec<libc::sock_filter> {
    let mut block = Vec::new();
    for rule in rules {
        let mut checks = Vec::new();
        for &(index, mask, value) in rule {
            for (half, shift) in [(0u32, 0u32), (4, 32)] {
                let (mask, value) = ((mask >> shift) as u32, (value >> shift) as u32);
                if mask == 0 {
                    continue;
                }
                checks.push(stmt(BPF_LD_W_ABS, DATA_ARGS + 8 * u32::from(index) + half));
                if mask != u32::MAX {
                    checks.push(stmt(BPF_ALU_AND_K, mask));
                }
                checks.push(jump(BPF_JMP_JEQ_K, value & mask, 0, 0));
            }
        }
        checks.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
        // A failed comparison skips the rest of this rule, to the next one (or the deny).
        let len = checks.len();
        for (position, insn) in checks.iter_mut().enumerate() {
            if insn.code == BPF_JMP_JEQ_K {
                insn.jf = u8::try_from(len - position - 1).expect("a rule is a few instructions");
            }
        }
        block.extend(checks);
    }
    block.push(stmt(BPF_RET_K, deny));
    block
}

/// A profile rule's conditions as (index, mask, value), when each is `SCMP_CMP_EQ` or
/// `SCMP_CMP_MASKED_EQ` on an argument that exists.
fn compiled(rule: &[crate::profile::ArgMatch]) -> Option<ArgRule> {
    rule.iter()
        .map(|arg| {
            let index = u8::try_from(arg.index).ok().filter(|&index| index < 6)?;
            match arg.op.as_str() {
                "SCMP_CMP_EQ" => Some((index, u64::MAX, arg.value)),
                "SCMP_CMP_MASKED_EQ" => Some((index, arg.value, arg.value_two)),
                _ => None,
            }
        })
        .collect()
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
    let file = read_profile(path)?;
    if file.is_denylist() {
        bail!("{} is a denylist (defaultAction {}): enforce needs an allowlist", path.display(), file.default_action());
    }
    Ok(file.with_allowed(&SWITCH_SYSCALLS).to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `filter` returns for syscall `nr` of `arch` with `args`, run as the kernel runs it;
    /// whether the kernel's action cache could follow it there (a constant outcome: no argument
    /// loaded); and how many instructions it ran.
    fn run(filter: &Filter, arch: u32, nr: u32, args: [u64; 6]) -> (u32, bool, usize) {
        let (mut a, mut pc, mut cacheable) = (0u32, 0usize, true);
        for ran in 1.. {
            let insn = filter.insns[pc];
            pc += 1;
            match insn.code {
                BPF_LD_W_ABS => {
                    a = match insn.k {
                        DATA_NR => nr,
                        DATA_ARCH => arch,
                        k => {
                            cacheable = false;
                            let arg = args[(k - DATA_ARGS) as usize / 8];
                            if k % 8 == 0 { arg as u32 } else { (arg >> 32) as u32 }
                        }
                    }
                }
                BPF_ALU_AND_K => a &= insn.k,
                BPF_JMP_JA => pc += insn.k as usize,
                BPF_JMP_JEQ_K | BPF_JMP_JGE_K | BPF_JMP_JGT_K => {
                    let holds = match insn.code {
                        BPF_JMP_JEQ_K => a == insn.k,
                        BPF_JMP_JGE_K => a >= insn.k,
                        _ => a > insn.k,
                    };
                    pc += usize::from(if holds { insn.jt } else { insn.jf });
                }
                BPF_RET_K => return (insn.k, cacheable, ran),
                code => panic!("unexpected instruction {code:#x}"),
            }
        }
        unreachable!()
    }

    /// The program as it was built before runs (one comparison per number, every argument word
    /// masked): the reference the program made of runs must agree with.
    mod before_runs {
        use super::super::*;

        pub fn allowlist_with_args(allowed: &[u32], narrowed: &[(u32, Vec<ArgRule>)], action: Action) -> Filter {
            let deny = action.ret();
            let mut entries: Vec<(u32, Leads)> = allowed.iter().map(|&number| (number, Leads::Allow)).collect();
            let blocks: Vec<_> = narrowed.iter().map(|(_, rules)| block(rules, deny)).collect();
            entries.extend(narrowed.iter().enumerate().map(|(index, (number, _))| (*number, Leads::Block(index))));
            entries.sort_by_key(|(number, _)| *number);
            entries.dedup_by_key(|(number, _)| *number);
            let mut insns = vec![
                stmt(BPF_LD_W_ABS, DATA_ARCH),
                jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
                stmt(BPF_RET_K, deny),
                stmt(BPF_LD_W_ABS, DATA_NR),
                jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
                stmt(BPF_RET_K, deny),
            ];
            let (tree, jumps) = search(&entries, deny);
            let tree_at = insns.len();
            insns.extend(tree);
            let mut starts = Vec::new();
            for block in blocks {
                starts.push(insns.len());
                insns.extend(block);
            }
            for (at, index) in jumps {
                let at = tree_at + at;
                insns[at].k = (starts[index] - at - 1) as u32;
            }
            Filter { insns }
        }

        type Part = (Vec<libc::sock_filter>, Vec<(usize, usize)>);

        fn search(entries: &[(u32, Leads)], deny: u32) -> Part {
            if entries.len() <= LEAF {
                return leaf(entries, deny);
            }
            let (low, high) = entries.split_at(entries.len() / 2);
            let pivot = high[0].0;
            let (low, high) = (search(low, deny), search(high, deny));
            let mut insns = match u8::try_from(low.0.len()) {
                Ok(skip) => vec![jump(BPF_JMP_JGE_K, pivot, skip, 0)],
                Err(_) => vec![jump(BPF_JMP_JGE_K, pivot, 0, 1), stmt(BPF_JMP_JA, low.0.len() as u32)],
            };
            let mut jumps = Vec::new();
            for (part_insns, part_jumps) in [low, high] {
                let offset = insns.len();
                jumps.extend(part_jumps.into_iter().map(|(at, index)| (at + offset, index)));
                insns.extend(part_insns);
            }
            (insns, jumps)
        }

        fn leaf(entries: &[(u32, Leads)], deny: u32) -> Part {
            let count = entries.len();
            let mut insns = Vec::new();
            let mut jumps = Vec::new();
            for (position, (number, leads)) in entries.iter().enumerate() {
                let target = match leads {
                    Leads::Allow => count + 1,
                    Leads::Block(index) => {
                        jumps.push((count + 2 + jumps.len(), *index));
                        count + 1 + jumps.len()
                    }
                };
                insns.push(jump(BPF_JMP_JEQ_K, *number, (target - position - 1) as u8, 0));
            }
            insns.push(stmt(BPF_RET_K, deny));
            insns.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
            insns.extend(jumps.iter().map(|_| stmt(BPF_JMP_JA, 0)));
            (insns, jumps)
        }

        fn block(rules: &[ArgRule], deny: u32) -> Vec<libc::sock_filter> {
            let mut block = Vec::new();
            for rule in rules {
                let mut checks = Vec::new();
                for &(index, mask, value) in rule {
                    for (half, shift) in [(0u32, 0u32), (4, 32)] {
                        let (mask, value) = ((mask >> shift) as u32, (value >> shift) as u32);
                        if mask == 0 {
                            continue;
                        }
                        checks.push(stmt(BPF_LD_W_ABS, DATA_ARGS + 8 * u32::from(index) + half));
                        checks.push(stmt(BPF_ALU_AND_K, mask));
                        checks.push(jump(BPF_JMP_JEQ_K, value & mask, 0, 0));
                    }
                }
                checks.push(stmt(BPF_RET_K, SECCOMP_RET_ALLOW));
                let len = checks.len();
                for (position, insn) in checks.iter_mut().enumerate() {
                    if insn.code == BPF_JMP_JEQ_K {
                        insn.jf = (len - position - 1) as u8;
                    }
                }
                block.extend(checks);
            }
            block.push(stmt(BPF_RET_K, deny));
            block
        }
    }

    /// Narrowed syscalls with their rules, as `allowlist_with_args` takes them.
    type Narrowed = Vec<(u32, Vec<ArgRule>)>;

    /// Profiles of every shape a table gives: none, one, stretches, isolated numbers, numbers
    /// both allowed and narrowed, numbers past the table's end, and the arguments of nginx's
    /// serving profile (full masks, several rules, two comparisons, the upper half).
    fn shapes() -> Vec<(Vec<u32>, Narrowed)> {
        let all: Vec<u32> = Arch::X86_64.syscalls().map(|(nr, _)| nr).collect();
        let every_third: Vec<u32> = all.iter().copied().step_by(3).collect();
        let stretches: Vec<u32> = all.iter().copied().filter(|nr| nr % 40 < 25 || nr % 97 == 0).collect();
        let full = u64::from(u32::MAX);
        let nginx: Narrowed = vec![
            (72, [1, 2, 3, 4, 7, 16].iter().map(|&cmd| vec![(1, full, cmd)]).collect()),
            (55, vec![vec![(1, full, 1), (2, full, 4)], vec![(1, full, 6), (2, full, 11)]]),
            (62, vec![vec![(1, full, 9)]]),
            (28, vec![vec![(2, full, 4)], vec![(2, full, 14)]]),
            (157, vec![vec![(0, full, 4)], vec![(0, u64::MAX, 8)]]),
            (234, vec![vec![(2, 0xf, 6)], vec![(2, 0xffff_0000_ffff_ffff, 1 << 32 | 33)]]),
        ];
        let outside = vec![0, 1, 2, 599, 600, u32::MAX];
        vec![
            (vec![], vec![]),
            (vec![39], vec![]),
            (all[..5].to_vec(), vec![]),
            (every_third.clone(), nginx.clone()),
            (stretches.clone(), nginx.clone()),
            (stretches.into_iter().filter(|nr| *nr != 72).collect(), nginx.clone()),
            (all.clone(), vec![]),
            (all, nginx.clone()),
            (outside, nginx[..2].to_vec()),
        ]
    }

    #[test]
    fn runs_give_the_verdicts_one_comparison_per_number_gave() {
        let arches = [AUDIT_ARCH_X86_64, 0x4000_0003];
        let values = [0, 1, 2, 4, 6, 8, 9, 11, 14, 16, 33, 0x16, 1 << 32 | 1, 1 << 32 | 33, u64::MAX];
        for (allowed, narrowed) in shapes() {
            for action in [Action::Errno, Action::Log, Action::Kill] {
                let runs = Filter::allowlist_with_args(&allowed, &narrowed, action);
                let before = before_runs::allowlist_with_args(&allowed, &narrowed, action);
                assert!(runs.insns.len() <= before.insns.len());
                let numbers = (0..=600).flat_map(|nr| [nr, nr | X32_SYSCALL_BIT]).chain([u32::MAX]);
                for (arch, nr) in arches.iter().flat_map(|&arch| numbers.clone().map(move |nr| (arch, nr))) {
                    for (first, second) in values.iter().flat_map(|&a| values.iter().map(move |&b| (a, b))) {
                        let args = [first, first, second, second, first, second];
                        let (ret, cacheable, _) = run(&runs, arch, nr, args);
                        let (ret_before, cacheable_before, _) = run(&before, arch, nr, args);
                        assert_eq!(
                            (ret, cacheable),
                            (ret_before, cacheable_before),
                            "syscall {nr:#x} of arch {arch:#x} with {args:x?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_allowlist_is_a_search_the_action_cache_follows() {
        let all: Vec<u32> = Arch::X86_64.syscalls().map(|(nr, _)| nr).collect();
        let every_other: Vec<u32> = all.iter().copied().step_by(2).collect();
        let deny = SECCOMP_RET_ERRNO | 38;
        for allowed in [&[][..], &[39, 0, 39, 110], &all[..5], &every_other, &all] {
            let filter = Filter::allowlist(allowed, Action::Errno);
            for nr in (0..1024).chain([X32_SYSCALL_BIT, X32_SYSCALL_BIT | 39]) {
                let (ret, cacheable, ran) = run(&filter, AUDIT_ARCH_X86_64, nr, [0; 6]);
                assert_eq!(
                    ret == SECCOMP_RET_ALLOW,
                    allowed.contains(&nr),
                    "syscall {nr} of {} allowed",
                    allowed.len()
                );
                assert!(ret == SECCOMP_RET_ALLOW || ret == deny);
                assert!(cacheable);
                // A search, not a list: a few comparisons per number, whatever the profile's size.
                assert!(ran <= 30, "syscall {nr} ran {ran} instructions");
            }
            assert_eq!(run(&filter, 0x4000_0003, 39, [0; 6]).0, deny, "i386");
            assert_eq!(filter.bytes().len(), filter.insns.len() * 8);
        }
        assert_eq!(run(&Filter::allowlist(&[0], Action::Log), AUDIT_ARCH_X86_64, 1, [0; 6]).0, SECCOMP_RET_LOG);
    }

    #[test]
    fn a_narrowed_syscall_is_allowed_only_with_its_arguments() {
        // socket (41) with AF_UNIX, or with AF_INET and a type of 1 under the mask 0xf.
        let rules = vec![vec![(0, u64::MAX, 1)], vec![(0, u64::MAX, 2), (1, 0xf, 1)]];
        let all: Vec<u32> = Arch::X86_64.syscalls().map(|(nr, _)| nr).filter(|&nr| nr != 41).collect();
        // `read` (0) both allowed and narrowed: allowed whatever its arguments.
        let filter = Filter::allowlist_with_args(&all, &[(41, rules.clone()), (0, rules)], Action::Errno);
        let socket = |args: [u64; 6]| run(&filter, AUDIT_ARCH_X86_64, 41, args);
        assert_eq!(socket([1, 5, 0, 0, 0, 0]).0, SECCOMP_RET_ALLOW);
        assert_eq!(socket([2, 0x81, 0, 0, 0, 0]).0, SECCOMP_RET_ALLOW);
        assert_eq!(socket([2, 2, 0, 0, 0, 0]).0, SECCOMP_RET_ERRNO | 38);
        assert_eq!(socket([1 << 32 | 1, 1, 0, 0, 0, 0]).0, SECCOMP_RET_ERRNO | 38, "the upper half compared too");
        assert!(!socket([1, 5, 0, 0, 0, 0]).1, "the cache cannot answer for a narrowed syscall");
        let (ret, cacheable, _) = run(&filter, AUDIT_ARCH_X86_64, 0, [7; 6]);
        assert_eq!((ret, cacheable), (SECCOMP_RET_ALLOW, true));
    }

    #[test]
    fn a_real_kernel_denies_what_the_filter_leaves_out() {
        // getppid (110) left out: in a forked child under the filter it fails with ENOSYS, while
        // getpid (39) still works.
        let numbers: Vec<u32> = Arch::X86_64.syscalls().map(|(nr, _)| nr).filter(|&nr| nr != 110).collect();
        let filter = Filter::allowlist(&numbers, Action::Errno);
        assert_in_child_under(&filter, || denied(libc::SYS_getppid, [0; 3]) && allowed(libc::SYS_getpid, [0; 3]));
    }

    #[test]
    fn a_real_kernel_denies_a_narrowed_syscall_with_other_arguments() {
        // socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC) is allowed; socket(AF_PACKET) and
        // socket(AF_UNIX, SOCK_DGRAM) are denied; getpid stays allowed by number.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seccomp-serving.json");
        let names: Vec<&str> = Arch::X86_64.syscalls().map(|(_, name)| name).collect();
        let socket = vec![
            crate::profile::ArgCondition { index: 0, mask: 0xffff_ffff, values: vec![1] },
            crate::profile::ArgCondition { index: 1, mask: 0xf, values: vec![1] },
        ];
        let args = crate::profile::ArgRules::from([("socket".to_owned(), socket)]);
        let profile = crate::profile::DockerProfile::allowlist_with_args(Arch::X86_64, names, &args);
        std::fs::write(&path, profile.to_json()).unwrap();
        let filter = Filter::from_profile(&path, Action::Errno).unwrap();
        assert_in_child_under(&filter, || {
            allowed(libc::SYS_socket, [libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0])
                && denied(libc::SYS_socket, [libc::AF_PACKET, libc::SOCK_RAW, 0])
                && denied(libc::SYS_socket, [libc::AF_UNIX, libc::SOCK_DGRAM, 0])
                && allowed(libc::SYS_getpid, [0; 3])
        });
    }

    /// Installs `filter` in a forked child, which then runs `check` (raw syscalls only); the child
    /// must say yes.
    fn assert_in_child_under(filter: &Filter, check: fn() -> bool) {
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
                libc::_exit(if check() { 0 } else { 4 });
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    }

    /// Whether syscall `nr` with these first three arguments fails with the filter's ENOSYS.
    fn denied(nr: libc::c_long, args: [libc::c_int; 3]) -> bool {
        // SAFETY: a raw syscall whose arguments are plain integers.
        unsafe { libc::syscall(nr, args[0], args[1], args[2]) == -1 && *libc::__errno_location() == libc::ENOSYS }
    }

    /// Whether syscall `nr` with these first three arguments succeeds.
    fn allowed(nr: libc::c_long, args: [libc::c_int; 3]) -> bool {
        // SAFETY: as in `denied`.
        unsafe { libc::syscall(nr, args[0], args[1], args[2]) >= 0 }
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
