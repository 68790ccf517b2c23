//! Record layouts and constants shared by the kernel programs (`tracer-ebpf`) and the userspace
//! loader (`seccomp-refine`'s `trace` module).
//!
//! Everything here is `no_std`, `#[repr(C)]` and defined exactly once, so the two sides cannot
//! disagree on a layout. The `user` feature adds the `aya::Pod` impls userspace needs.
#![no_std]

/// Syscall numbers the per-cgroup tables have room for; the highest x86_64 number is below this.
pub const SYSCALL_SLOTS: usize = 512;

/// The phases a container's syscalls are recorded in.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The container runtime's own work in the container's cgroup, before the entrypoint runs.
    Runtime = 0,
    /// From the entrypoint's start until the phase marker fires.
    Init = 1,
    /// After the phase marker.
    Serving = 2,
}
