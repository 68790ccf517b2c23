//! Local stand-ins for the official `nginx:latest` and `redis:latest` images.
//!
//! This project's machines reach no container registry, so the images the product is demonstrated
//! and tested on are built from Debian bookworm packages: `debootstrap --variant=minbase`, then
//! `docker import` with the official image's default command. The rootfs tarball is cached under
//! `target/images/`, so a rebuild takes seconds. A tag that already exists is never replaced.
//! `cargo xtask experiment` makes its images per Debian release through the same `Rootfs` cache.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::machine::{self, as_root, run, succeeds};
use crate::project_root;

pub struct Standin {
    /// Short name, as given to `cargo xtask images NAME` and `seccomp-refine trace NAME`.
    pub name: &'static str,
    pub tag: &'static str,
    /// Debian packages installed into the rootfs.
    packages: &'static str,
    /// `docker import --change` instructions mirroring the official image.
    changes: &'static [&'static str],
    /// Shell run inside the rootfs after debootstrap, to match the official image's layout.
    fixup: &'static str,
}

pub const STANDINS: &[Standin] = &[
    Standin {
        name: "nginx",
        tag: "nginx:latest",
        packages: "nginx",
        changes: &[
            r#"CMD ["nginx", "-g", "daemon off;"]"#,
            // The official image also sets STOPSIGNAL SIGQUIT, which `docker import` does not accept.
            "EXPOSE 80/tcp",
            "LABEL io.seccomp-refine.standin=debian-bookworm",
        ],
        // Like the official image: logs go to the container's stdout and stderr.
        fixup: "ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log",
    },
    Standin {
        name: "redis",
        tag: "redis:latest",
        packages: "redis-server",
        changes: &[
            r#"CMD ["redis-server", "--protected-mode", "no"]"#,
            "EXPOSE 6379/tcp",
            "WORKDIR /data",
            "LABEL io.seccomp-refine.standin=debian-bookworm",
        ],
        fixup: "mkdir -p /data",
    },
];

impl Standin {
    /// Whether a command line names this image (`nginx`, `nginx:latest`, `docker.io/library/nginx`…).
    pub fn named_in(&self, args: &[String]) -> bool {
        args.iter().any(|arg| {
            let arg = arg.trim_start_matches("docker.io/").trim_start_matches("library/");
            arg == self.name || arg == self.tag
        })
    }
}

/// `cargo xtask images [NAME…]`.
pub fn build(names: &[String]) -> Result<()> {
    for name in names {
        if !STANDINS.iter().any(|standin| standin.name == name) {
            bail!("no stand-in named `{name}` (known: nginx, redis)");
        }
    }
    machine::ensure_docker()?;
    let chosen: Vec<&Standin> =
        STANDINS.iter().filter(|standin| names.is_empty() || names.iter().any(|name| name == standin.name)).collect();
    // debootstrap spends most of its time waiting on the network, so the images build side by side.
    std::thread::scope(|scope| {
        let builds: Vec<_> = chosen.iter().map(|standin| scope.spawn(|| fill_tag(standin))).collect();
        builds.into_iter().try_for_each(|build| build.join().expect("image build thread panicked"))
    })
}

/// For `cargo xtask run`: the image must exist; pull it, or build the stand-in if pulling fails.
pub fn ensure_available(standin: &Standin) -> Result<()> {
    if image_exists(standin.tag) {
        return Ok(());
    }
    if succeeds(as_root("docker").args(["pull", "--quiet", standin.tag])) {
        println!("xtask: pulled {}", standin.tag);
        return Ok(());
    }
    println!("xtask: {} is not present and cannot be pulled; building the local stand-in", standin.tag);
    fill_tag(standin)
}

pub fn image_exists(tag: &str) -> bool {
    succeeds(as_root("docker").args(["image", "inspect", tag]))
}

fn fill_tag(standin: &Standin) -> Result<()> {
    if image_exists(standin.tag) {
        println!("xtask: {} already exists; left as it is", standin.tag);
        return Ok(());
    }
    let rootfs = Rootfs { name: standin.name, release: "bookworm", packages: standin.packages, fixup: standin.fixup };
    import(&rootfs_tarball(&rootfs)?, standin.changes, standin.tag)
}

/// `docker import TARBALL TAG` with `--change` instructions.
pub fn import(tarball: &Path, changes: &[&str], tag: &str) -> Result<()> {
    println!("xtask: docker import {} as {tag}", tarball.display());
    let mut import = as_root("docker");
    import.arg("import");
    for change in changes {
        import.args(["--change", change]);
    }
    run(import.arg(tarball).arg(tag))
}

/// A root filesystem made by debootstrap: which release, with which packages, then fixed up how.
pub struct Rootfs<'a> {
    /// Names the cached tarball, `target/images/NAME-RELEASE-rootfs.tar`.
    pub name: &'a str,
    /// A Debian release debootstrap knows (bullseye, bookworm, trixie).
    pub release: &'a str,
    /// Packages to include, comma-separated.
    pub packages: &'a str,
    /// Shell run inside the rootfs (chroot) after debootstrap.
    pub fixup: &'a str,
}

/// The cached rootfs tarball, made with debootstrap on first use.
pub fn rootfs_tarball(spec: &Rootfs<'_>) -> Result<PathBuf> {
    let dir = project_root().join("target/images");
    let tarball = dir.join(format!("{}-{}-rootfs.tar", spec.name, spec.release));
    if tarball.exists() {
        return Ok(tarball);
    }
    if !machine::on_path("debootstrap") {
        machine::apt_install(&["debootstrap"])?;
    }
    let rootfs = dir.join(format!("{}-{}-rootfs", spec.name, spec.release));
    if rootfs.exists() {
        // A previous debootstrap was interrupted: start over rather than trust a half-made tree.
        run(as_root("rm").arg("-rf").arg(&rootfs))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("xtask: debootstrap --variant=minbase --include={} {} (about a minute)", spec.packages, spec.release);
    run(as_root("debootstrap")
        .args(["--variant=minbase", &format!("--include={}", spec.packages), spec.release])
        .arg(&rootfs)
        .arg("http://deb.debian.org/debian")
        .stdout(std::process::Stdio::null()))?;
    run(as_root("chroot").arg(&rootfs).args(["sh", "-c", spec.fixup]))?;
    // The package cache is half the rootfs and the official images ship without it.
    run(as_root("sh")
        .args(["-c", r#"rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*"#, "sh"])
        .arg(&rootfs))?;
    write_tarball(&rootfs, &tarball)?;
    run(as_root("rm").arg("-rf").arg(&rootfs))?;
    Ok(tarball)
}

fn write_tarball(rootfs: &Path, tarball: &Path) -> Result<()> {
    let partial = tarball.with_extension("tar.partial");
    run(as_root("tar").arg("-C").arg(rootfs).arg("-cf").arg(&partial).arg("."))?;
    std::fs::rename(&partial, tarball).with_context(|| format!("cannot write {}", tarball.display()))
}
