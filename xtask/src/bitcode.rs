//! `cargo xtask bitcode nginx|redis`: an application's whole-program LLVM bitcode, built from
//! Debian bookworm's own sources with clang-19, for `seccomp-refine bitcode`.
//!
//! The recipe follows the Temporal Specialization artifacts: compile every file to bitcode
//! (`-flto`), link with lld's LTO and `--save-temps`, and keep the merged module
//! (`*.0.5.precodegen.bc`). Two differences, both for the analysis: files are compiled with
//! `-O2 -Xclang -disable-llvm-passes` (Debian's `-O2` semantics, `_FORTIFY_SOURCE` included, but
//! no LLVM pass, so every struct member access keeps its type instead of becoming a byte
//! offset) and LTO runs at `-O0`; `opt -passes=mem2reg` then puts locals in SSA form and
//! debug info is stripped. The result is cached as `target/bitcode/<app>.bc` with the recipe
//! that made it, so a second run takes milliseconds.
//!
//! Sources come from `apt-get source --download-only`, which needs a `deb-src` entry: when none
//! exists, one for bookworm is added in its own file. The security archive does not always
//! serve the Debian patch set (nginx's), but the upstream tarball always comes; patches are
//! applied when they are there (redis's).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::machine::{self, as_root, run, succeeds};
use crate::project_root;

const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/seccomp-refine-src.sources";
const DEB_SRC: &str = "\
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

/// The compiler and tools every recipe uses.
const TOOLS: &[&str] = &["clang-19", "lld-19", "llvm-19", "make", "patch", "xz-utils"];

/// Compiler flags: Debian's optimisation level and hardening, bitcode objects, no LLVM passes.
const CFLAGS: &str = "-O2 -Xclang -disable-llvm-passes -flto -g0 -fstack-protector-strong -fPIC -D_FORTIFY_SOURCE=2";
/// Linker flags: LTO at -O0 through lld, keeping the merged module; Debian's relro/now.
const LDFLAGS: &str = "-flto -fuse-ld=lld-19 -Wl,--lto-O0 -Wl,--save-temps -Wl,-z,relro -Wl,-z,now";

pub struct App {
    pub name: &'static str,
    /// The Debian source package.
    package: &'static str,
    /// Libraries the build links against (Debian's Build-Depends that matter for the binary).
    build_deps: &'static [&'static str],
    /// Shell commands run in the unpacked source tree, with `$BITCODE_CFLAGS`, `$BITCODE_LDFLAGS`, `$JOBS` set.
    build: &'static str,
    /// The merged module the link leaves, relative to the source tree.
    precodegen: &'static str,
}

pub const APPS: &[App] = &[
    App {
        name: "nginx",
        package: "nginx",
        build_deps: &["libpcre2-dev", "libssl-dev", "zlib1g-dev", "libcrypt-dev"],
        // Debian's configure arguments (`nginx -V` of bookworm's nginx), without the dynamic
        // modules (geoip, image_filter, perl, xslt, mail, stream), which the nginx package does
        // not load. `-Wno-error`: nginx adds -Werror for clang, and clang-19 warns more.
        build: "./configure --with-cc=clang-19 --with-cc-opt=\"$BITCODE_CFLAGS -Wno-error\" \
            --with-ld-opt=\"$BITCODE_LDFLAGS -fPIC\" \
            --prefix=/usr/share/nginx --conf-path=/etc/nginx/nginx.conf \
            --http-log-path=/var/log/nginx/access.log --error-log-path=stderr \
            --lock-path=/var/lock/nginx.lock --pid-path=/run/nginx.pid \
            --modules-path=/usr/lib/nginx/modules --http-client-body-temp-path=/var/lib/nginx/body \
            --http-fastcgi-temp-path=/var/lib/nginx/fastcgi --http-proxy-temp-path=/var/lib/nginx/proxy \
            --http-scgi-temp-path=/var/lib/nginx/scgi --http-uwsgi-temp-path=/var/lib/nginx/uwsgi \
            --with-compat --with-debug --with-pcre-jit --with-http_ssl_module \
            --with-http_stub_status_module --with-http_realip_module --with-http_auth_request_module \
            --with-http_v2_module --with-http_dav_module --with-http_slice_module --with-threads \
            --with-http_addition_module --with-http_flv_module --with-http_gunzip_module \
            --with-http_gzip_static_module --with-http_mp4_module --with-http_random_index_module \
            --with-http_secure_link_module --with-http_sub_module --with-mail_ssl_module \
            --with-stream_ssl_module --with-stream_ssl_preread_module --with-stream_realip_module \
            && make -j\"$JOBS\"",
        precodegen: "objs/nginx.0.5.precodegen.bc",
    },
    App {
        name: "redis",
        package: "redis",
        build_deps: &["libjemalloc-dev", "liblzf-dev", "libsystemd-dev", "libssl-dev", "pkg-config"],
        // debian/rules: system jemalloc, systemd, TLS, liblzf. The bundled lua and hiredis are
        // compiled to bitcode too (they are linked into redis-server), hence llvm-ar.
        build: "make -j\"$JOBS\" V=1 CC=clang-19 AR=llvm-ar-19 RANLIB=llvm-ranlib-19 \
            CFLAGS=\"$BITCODE_CFLAGS -I/usr/include/liblzf\" \
            LDFLAGS=\"$BITCODE_LDFLAGS -Wl,-no-as-needed -ldl -latomic -llzf\" \
            USE_SYSTEM_JEMALLOC=yes USE_SYSTEMD=yes USE_JEMALLOC=yes BUILD_TLS=yes redis-server",
        precodegen: "src/redis-server.0.5.precodegen.bc",
    },
];

/// Where `cargo xtask bitcode NAME` leaves the bitcode.
pub fn output(name: &str) -> PathBuf {
    project_root().join("target/bitcode").join(format!("{name}.bc"))
}

/// `cargo xtask bitcode [NAME…]` (default: all).
pub fn build(names: &[String]) -> Result<()> {
    for name in names {
        if !APPS.iter().any(|app| app.name == name) {
            bail!("no bitcode recipe for `{name}` (known: nginx, redis)");
        }
    }
    for app in APPS.iter().filter(|app| names.is_empty() || names.iter().any(|name| name == app.name)) {
        build_app(app)?;
    }
    Ok(())
}

fn build_app(app: &App) -> Result<()> {
    let work = project_root().join("target/bitcode");
    let sources = work.join("src");
    std::fs::create_dir_all(&sources).with_context(|| format!("cannot create {}", sources.display()))?;
    let mut packages: Vec<&str> = TOOLS.to_vec();
    packages.extend(app.build_deps);
    machine::apt_install(&packages)?;
    let tarball = match find_file(&sources, app.package, ".orig.tar.")? {
        Some(tarball) => tarball,
        None => download(app, &sources)?,
    };
    let recipe = format!("{}\n{CFLAGS}\n{LDFLAGS}\n{}\n", tarball.display(), app.build);
    let output = output(app.name);
    let recipe_file = output.with_extension("recipe");
    if output.exists() && std::fs::read_to_string(&recipe_file).is_ok_and(|old| old == recipe) {
        println!("xtask: {} is up to date", output.display());
        return Ok(());
    }
    let tree = unpack(app, &sources, &tarball, &work)?;
    compile(app, &tree)?;
    let precodegen = tree.join(app.precodegen);
    println!("xtask: opt-19 -passes=mem2reg --strip-debug → {}", output.display());
    run(Command::new("opt-19").args(["--strip-debug", "-passes=mem2reg"]).arg(&precodegen).arg("-o").arg(&output))
        .with_context(|| format!("the build left no usable {}", precodegen.display()))?;
    std::fs::write(&recipe_file, recipe).with_context(|| format!("cannot write {}", recipe_file.display()))?;
    Ok(())
}

/// The first file in `dir` named `<package>_…<marker>…`.
fn find_file(dir: &Path, package: &str, marker: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            name.starts_with(&prefix) && name.contains(marker)
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

fn download(app: &App, sources: &Path) -> Result<PathBuf> {
    ensure_deb_src(app.package)?;
    println!("xtask: apt-get source --download-only {} (into {})", app.package, sources.display());
    // The security archive may lack the Debian patch set (a 404 and a non-zero exit) while the
    // upstream tarball downloads fine: judge by the tarball, not the exit status.
    let out = Command::new("apt-get")
        .args(["source", "--download-only", app.package])
        .current_dir(sources)
        .output()
        .context("cannot run apt-get source")?;
    find_file(sources, app.package, ".orig.tar.")?.with_context(|| {
        format!(
            "apt-get source --download-only {} fetched no upstream tarball: {}",
            app.package,
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("no output")
        )
    })
}

/// Adds a bookworm `deb-src` entry (in its own file) when apt knows no source for `package`.
fn ensure_deb_src(package: &str) -> Result<()> {
    if succeeds(Command::new("apt-cache").args(["showsrc", "--only-source", package])) && has_sources(package) {
        return Ok(());
    }
    if !Path::new(DEB_SRC_FILE).exists() {
        println!("xtask: adding a deb-src entry for bookworm: {DEB_SRC_FILE}");
        let mut write = as_root("tee");
        write.arg(DEB_SRC_FILE).stdout(std::process::Stdio::null()).stdin(std::process::Stdio::piped());
        let mut child = write.spawn().context("cannot start tee")?;
        std::io::Write::write_all(&mut child.stdin.take().context("tee has no stdin")?, DEB_SRC.as_bytes())?;
        if !child.wait()?.success() {
            bail!("cannot write {DEB_SRC_FILE}");
        }
    }
    println!("xtask: apt-get update (source package lists)");
    run(as_root("apt-get").args(["update", "-q"]))
}

fn has_sources(package: &str) -> bool {
    Command::new("apt-cache")
        .args(["showsrc", "--only-source", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("Package:"))
}

/// A fresh source tree with the Debian patches applied when they were downloaded.
fn unpack(app: &App, sources: &Path, tarball: &Path, work: &Path) -> Result<PathBuf> {
    let tree = work.join("build").join(app.name);
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("cannot remove {}", tree.display()))?;
    }
    std::fs::create_dir_all(&tree)?;
    println!("xtask: unpacking {}", tarball.display());
    run(Command::new("tar").arg("-xf").arg(tarball).arg("--strip-components=1").arg("-C").arg(&tree))?;
    let Some(debian) = find_file(sources, app.package, ".debian.tar.")? else { return Ok(tree) };
    run(Command::new("tar").arg("-xf").arg(&debian).arg("-C").arg(&tree))?;
    let series = tree.join("debian/patches/series");
    let Ok(series) = std::fs::read_to_string(&series) else { return Ok(tree) };
    let patches: Vec<&str> =
        series.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).collect();
    println!("xtask: applying {} Debian patches from {}", patches.len(), debian.display());
    for patch in patches {
        run(Command::new("patch")
            .args(["-p1", "-N", "-s", "--no-backup-if-mismatch", "-i"])
            .arg(tree.join("debian/patches").join(patch))
            .current_dir(&tree))
        .with_context(|| format!("Debian patch {patch} does not apply"))?;
    }
    Ok(tree)
}

fn compile(app: &App, tree: &Path) -> Result<()> {
    let log = tree.with_extension("log");
    println!("xtask: building {} with clang-19 (LTO, whole-program bitcode; log: {})", app.name, log.display());
    let jobs = std::thread::available_parallelism().map_or(2, usize::from);
    let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let status = Command::new("sh")
        .args(["-c", app.build])
        .current_dir(tree)
        .env("BITCODE_CFLAGS", CFLAGS)
        .env("BITCODE_LDFLAGS", LDFLAGS)
        .env("JOBS", jobs.to_string())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("cannot start sh")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("building {} failed ({status}); see {}: {}", app.name, log.display(), tail.join(" | "));
    }
    Ok(())
}
