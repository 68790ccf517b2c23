//! A cgroup parent made for one `verify` run: the container is created under it
//! (`HostConfig.CgroupParent`), so the perf watch on it sees the container from its first task
//! and nothing else. Removed from every hierarchy when dropped, however the run ends.

use std::path::PathBuf;

use anyhow::{Result, bail};

/// The parent, created in the cgroup v2 hierarchy (or the v1 `perf_event` one).
pub struct CgroupParent {
    /// The name, also the path Docker is given (`/<name>`).
    pub name: String,
    /// The directory the watch opens.
    pub dir: PathBuf,
}

impl CgroupParent {
    pub fn create() -> Result<CgroupParent> {
        let root = watch_root()?;
        let name = format!("seccomp-refine-verify-{}-{}", std::process::id(), super::perf::now_ns() % 1_000_000_007);
        let dir = root.join(&name);
        if let Err(err) = std::fs::create_dir(&dir) {
            bail!("cannot create the cgroup {} ({err}); verify needs root", dir.display());
        }
        Ok(CgroupParent { name, dir })
    }

    /// What Docker's cgroupfs driver takes as `CgroupParent`.
    pub fn docker_path(&self) -> String {
        format!("/{}", self.name)
    }
}

/// Every mounted cgroup hierarchy (v1 controllers and v2), from `/proc/self/mounts`.
fn hierarchies() -> Vec<(PathBuf, String, String)> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, path, fstype @ ("cgroup" | "cgroup2"), options, ..] => {
                    Some((PathBuf::from(path), fstype.to_string(), options.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// Where perf can scope events to a cgroup: the v2 hierarchy, else a v1 `perf_event` one.
fn watch_root() -> Result<PathBuf> {
    let all = hierarchies();
    let v2 = all.iter().find(|(_, fstype, _)| fstype == "cgroup2");
    let v1 =
        all.iter().find(|(_, fstype, options)| fstype == "cgroup" && options.split(',').any(|o| o == "perf_event"));
    match v2.or(v1) {
        Some((path, _, _)) => Ok(path.clone()),
        None => {
            bail!("no cgroup v2 or perf_event hierarchy is mounted; verify scopes its watch to the container's cgroup")
        }
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        // runc made the same-named parent in every hierarchy; the container's own cgroup is gone
        // once Docker removed it, but the kernel may need a moment to release it.
        for (root, _, _) in hierarchies() {
            let dir = root.join(&self.name);
            for _ in 0..20 {
                match std::fs::remove_dir(&dir) {
                    Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    _ => break,
                }
            }
        }
    }
}
