//! cgroup v2 from userspace: where the hierarchy is mounted, a cgroup's id, which cgroup a process
//! is in, and the throw-away cgroup `trace --exec` runs its command in.
//!
//! A cgroup's v2 id (what `bpf_get_current_cgroup_id` returns) is the inode number of its
//! directory. On hybrid hosts the v2 hierarchy is mounted at `/sys/fs/cgroup/unified`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup/unified` on hybrid hosts,
/// `/sys/fs/cgroup` on pure v2 ones).
pub fn v2_mount() -> Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").context("cannot read /proc/self/mountinfo")?;
    mounts
        .lines()
        .find_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let mount_point = fields.split(' ').nth(4)?;
            (rest.split(' ').next()? == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .context("no cgroup v2 hierarchy is mounted; mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`")
}

/// The v2 id of the cgroup at `path`.
pub fn id(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).with_context(|| format!("cannot stat cgroup {}", path.display()))?.ino())
}

/// The v2 cgroup path (relative to the hierarchy, e.g. `/docker/<id>`) process `pid` is in.
pub fn of_process(pid: u32) -> Result<String> {
    let file = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?;
    match text.lines().find_map(|line| line.strip_prefix("0::")) {
        Some(path) if path != "/" => Ok(path.to_owned()),
        _ => bail!("process {pid} is in no cgroup v2 of its own ({file})"),
    }
}

/// The processes in a cgroup.
pub fn processes(path: &Path) -> Vec<u32> {
    let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
    procs.lines().filter_map(|line| line.trim().parse().ok()).collect()
}

/// A cgroup made for one `trace --exec` run; removed (its leftover processes killed) on drop.
pub struct ExecCgroup {
    pub path: PathBuf,
    pub id: u64,
}

impl ExecCgroup {
    pub fn create() -> Result<ExecCgroup> {
        let parent = v2_mount()?.join("seccomp-refine");
        std::fs::create_dir_all(&parent).with_context(|| format!("cannot create cgroup {}", parent.display()))?;
        let path = parent.join(format!("exec-{}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("cannot create cgroup {}", path.display()))?;
        let id = id(&path)?;
        Ok(ExecCgroup { path, id })
    }
}

impl Drop for ExecCgroup {
    fn drop(&mut self) {
        // cgroup.kill (Linux 5.14) ends whatever the command left running, so rmdir can succeed.
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_has_a_v2_hierarchy_and_ids_are_inodes() {
        let mount = v2_mount().unwrap();
        assert_eq!(id(&mount).unwrap(), std::fs::metadata(&mount).unwrap().ino());
        // The root cgroup's id is 1 on every kernel.
        assert_eq!(id(&mount).unwrap(), 1);
    }
}
