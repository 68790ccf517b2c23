//! `trace --exec`: a host command in a fresh cgroup v2, traced from its `execve` on, without any
//! container runtime.
//!
//! The child moves itself into the cgroup just before `execve` (the write to `cgroup.procs` still
//! counts for the old cgroup, as the kernel samples the cgroup at syscall entry), so the trace
//! starts exactly with that `execve`, in `init`: there is no runtime phase.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use anyhow::{Context, Result, bail};
use tracer_common::phase as kernel;

use super::cgroup::ExecCgroup;
use super::{Ended, Session};
use crate::docker::rootfs::Rootfs;
use crate::syscalls::Arch;
use crate::trace::ebpf::Config;
use crate::trace::{MarkerSpec, Source, Target, Trace};

/// What `trace --exec` runs and how.
pub struct ExecRequest {
    pub command: Vec<String>,
    pub marker: MarkerSpec,
    pub duration: std::time::Duration,
    pub ring_buffer_bytes: u32,
}

/// How the traced command ended.
pub struct ExecOutcome {
    pub trace: Trace,
    pub ended: Ended,
    /// The command's exit status, when it exited during the trace.
    pub status: Option<ExitStatus>,
}

pub async fn trace_command(request: &ExecRequest) -> Result<ExecOutcome> {
    crate::trace::ebpf::preflight()?;
    let program = find_program(&request.command[0])?;
    let cgroup = ExecCgroup::create()?;
    let relative = cgroup.path.strip_prefix(super::cgroup::v2_mount()?).unwrap_or(&cgroup.path);
    let target = Target {
        command: request.command.clone(),
        cgroup: Some(format!("/{}", relative.display())),
        ..Target::default()
    };
    let trace = Trace::new(Source::Ebpf, Arch::host(), kernel_release(), target);
    let config = Config { cgroup_path: None, ring_buffer_bytes: request.ring_buffer_bytes };
    let mut session = Session::start(&config, request.duration)?;
    let target = session.add_target(trace, Rootfs::host());
    session.follow(target, cgroup.id, Some(kernel::INIT))?;
    let entrypoint = program.to_str().context("the command's path is not UTF-8")?;
    session.arm_marker(target, &request.marker, entrypoint, &Rootfs::host())?;
    session.drop_privileges().await?;
    let mut child = spawn_in(&cgroup, &program, &request.command[1..])?;
    session.target_started(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (ended, waited) = session.run_until(child.wait()).await;
    let status = waited.and_then(Result::ok);
    if status.is_none() {
        let _ = child.start_kill();
    }
    let trace = session.finish()?.swap_remove(target);
    drop(cgroup);
    Ok(ExecOutcome { trace, ended, status })
}

/// Starts `program` inside `cgroup`; it joins the cgroup between fork and exec.
fn spawn_in(cgroup: &ExecCgroup, program: &Path, args: &[String]) -> Result<tokio::process::Child> {
    let procs_path = cgroup.path.join("cgroup.procs");
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .with_context(|| format!("cannot open {}", procs_path.display()))?;
    let procs_fd = procs.as_raw_fd();
    let mut command = std::process::Command::new(program);
    command.args(args);
    // SAFETY: the closure runs in the forked child and only calls write(2), which is
    // async-signal-safe, on an fd opened before the fork.
    unsafe {
        command.pre_exec(move || {
            // "0" moves the writing process itself.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = tokio::process::Command::from(command)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    drop(procs);
    Ok(child)
}

/// The absolute path of `name`, searched in PATH when it has no `/`: the traced `execve` is
/// then the only one (no failed attempts along PATH).
fn find_program(name: &str) -> Result<PathBuf> {
    if name.contains('/') {
        let path = std::path::absolute(name).with_context(|| format!("bad program path {name}"))?;
        if !path.is_file() {
            bail!("{name} does not exist");
        }
        return Ok(path);
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("`{name}` is not on PATH"))
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_or_refused() {
        assert!(find_program("sh").unwrap().is_absolute());
        let missing = find_program("no-such-program-here").unwrap_err().to_string();
        assert_eq!(missing, "`no-such-program-here` is not on PATH");
        assert!(find_program("/nonexistent/x").unwrap_err().to_string().contains("does not exist"));
    }
}
