//! The tracer's kernel programs. This is the foundation's smoke program (per-cgroup syscall
//! table); the tracer issue replaces it with the full set.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id,
    macros::{map, raw_tracepoint},
    maps::HashMap,
    programs::RawTracePointContext,
};

#[map]
static PHASES: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn seccomp_refine_sys_enter(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: the helper has no preconditions.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is read, not kept.
    let _ = unsafe { PHASES.get(&cgroup) };
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
