//! `cargo xtask experiment [APP…] [--releases …] [--rounds N]`: the research tables reproduced —
//! syscalls allowed per application and phase against Docker's default, what each profile denied,
//! and how the profiles move across Debian releases — with each application's test suite as the
//! judge of "nothing denied".
//!
//! For each application (`apps`, data only) and release, a cell (`cell`) builds the image offline
//! (debootstrap of that release, `docker import`, cached like the stand-ins), then runs the
//! product's own commands on it and the suite (`suite`) with and without the profiles. Results go
//! to `EXPERIMENTS.md`, `EXPERIMENTS.json` and `docs/experiments.svg` (`report`); cells this run
//! did not measure are kept from the previous `EXPERIMENTS.json`. What each column means is in
//! `docs/experiments.md`.

mod apps;
mod cell;
#[path = "../../../analyzer/src/profile/docker_default.rs"]
mod docker_default;
mod report;
mod suite;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::images::{self, Rootfs};
use crate::{build, machine};
use apps::{APPS, App};

/// The releases an experiment can run on, oldest first: the version tables diff neighbours.
pub const RELEASES: &[&str] = &["bullseye", "bookworm", "trixie"];

/// What `cargo xtask experiment` was asked.
pub struct Options {
    pub apps: Vec<String>,
    pub releases: Vec<String>,
    pub rounds: usize,
    /// The seccomp-refine binary; built in release mode when not given.
    pub seccomp_refine: Option<PathBuf>,
    /// Where EXPERIMENTS.md, EXPERIMENTS.json and docs/experiments.svg go; the cells' files go to
    /// `target/experiment/` under the project, or to `OUT/cells` when given.
    pub out: Option<PathBuf>,
}

pub fn run(options: &Options) -> Result<()> {
    let known: Vec<&str> = APPS.iter().map(|app| app.name).collect();
    for name in &options.apps {
        if !known.contains(&name.as_str()) {
            bail!("no application named `{name}` in the experiment (known: {})", known.join(", "));
        }
    }
    for release in &options.releases {
        if !RELEASES.contains(&release.as_str()) {
            bail!("no release named `{release}` (known: {})", RELEASES.join(", "));
        }
    }
    if options.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if !machine::is_root() {
        bail!("the experiment traces and enforces containers and needs root; run `sudo -E cargo xtask experiment`");
    }
    let chosen: Vec<&App> =
        APPS.iter().filter(|app| options.apps.is_empty() || options.apps.iter().any(|name| name == app.name)).collect();
    let releases: Vec<&str> = RELEASES
        .iter()
        .copied()
        .filter(|release| options.releases.is_empty() || options.releases.iter().any(|name| name == release))
        .collect();
    let mut host_packages = vec!["debootstrap", "curl"];
    host_packages.extend(chosen.iter().flat_map(|app| app.host_packages.iter().copied()));
    machine::apt_install(&host_packages)?;
    let seccomp_refine = match &options.seccomp_refine {
        Some(path) => path.clone(),
        None => {
            build::build_all()?;
            crate::project_root().join("target/release/seccomp-refine")
        }
    };
    machine::mount_kernel_filesystems()?;
    machine::ensure_docker()?;
    let out = options.out.clone().unwrap_or_else(crate::project_root);
    let cells_dir = match &options.out {
        Some(out) => out.join("cells"),
        None => crate::project_root().join("target/experiment"),
    };
    let started = Instant::now();
    let pairs: Vec<(&App, &str)> =
        chosen.iter().flat_map(|&app| releases.iter().map(move |&release| (app, release))).collect();
    let images = build_images(&pairs);
    let mut cells = Vec::new();
    let mut failures = Vec::new();
    for ((app, release), image) in pairs.into_iter().zip(images) {
        match image.and_then(|image| measure(app, release, &image, options.rounds, &seccomp_refine, &cells_dir)) {
            Ok(cell) => cells.push(cell),
            Err(error) => {
                let error = format!("{error:#}");
                eprintln!("xtask: experiment {} on {release} failed: {error}", app.name);
                failures.push(report::Failure { app: app.name.to_owned(), release: release.to_owned(), error });
            }
        }
        // Every finished cell is written at once: a long run interrupted keeps what it measured.
        report::write(&out, &cells, &failures)?;
    }
    println!("xtask: experiment took {:.0} s", started.elapsed().as_secs_f64());
    let markdown = report::write(&out, &cells, &failures)?;
    println!("\n{markdown}");
    if !failures.is_empty() {
        bail!("{} of {} cells failed; see EXPERIMENTS.md", failures.len(), failures.len() + cells.len());
    }
    Ok(())
}

/// Every cell's image, built side by side (debootstrap mostly waits on the network), four at a
/// time; each with the seconds it took.
fn build_images(pairs: &[(&App, &str)]) -> Vec<Result<(String, f64)>> {
    let mut images = Vec::new();
    for chunk in pairs.chunks(4) {
        std::thread::scope(|scope| {
            let builds: Vec<_> = chunk
                .iter()
                .map(|&(app, release)| {
                    scope.spawn(move || {
                        let started = Instant::now();
                        ensure_image(app, release).map(|image| (image, started.elapsed().as_secs_f64()))
                    })
                })
                .collect();
            images.extend(builds.into_iter().map(|build| build.join().expect("image build thread panicked")));
        });
    }
    images
}

fn measure(
    app: &App,
    release: &str,
    (image, image_seconds): &(String, f64),
    rounds: usize,
    seccomp_refine: &Path,
    cells_dir: &Path,
) -> Result<cell::Cell> {
    let work = cell::work_dir(cells_dir, app.name, release);
    let setup = cell::Setup { seccomp_refine, app, release, image, work: &work, image_seconds: *image_seconds };
    cell::run(&setup, rounds)
}

/// `seccomp-refine/APP:RELEASE`, imported from a cached debootstrap tarball. The recipe's hash is
/// in the tarball's name and the image's label, so changing an application's data rebuilds it.
fn ensure_image(app: &App, release: &str) -> Result<String> {
    let tag = format!("seccomp-refine/{}:{release}", app.name);
    let fixup = format!("set -e\n{}", app.fixups.join("\n"));
    let rootfs_recipe = hash(&(app.packages, &fixup));
    let recipe = format!("{:016x}", hash(&(rootfs_recipe, app.changes)));
    let label = Command::new("docker")
        .args(["image", "inspect", "--format", "{{index .Config.Labels \"io.seccomp-refine.recipe\"}}", &tag])
        .output()
        .context("cannot run docker image inspect")?;
    if label.status.success() && String::from_utf8_lossy(&label.stdout).trim() == recipe {
        return Ok(tag);
    }
    let name = format!("experiment-{}-{:08x}", app.name, rootfs_recipe as u32);
    let tarball = images::rootfs_tarball(&Rootfs { name: &name, release, packages: app.packages, fixup: &fixup })?;
    let mut changes: Vec<String> = app.changes.iter().map(|&change| change.to_owned()).collect();
    changes.push(format!("LABEL io.seccomp-refine.recipe={recipe} io.seccomp-refine.experiment={release}"));
    images::import(&tarball, &changes.iter().map(String::as_str).collect::<Vec<_>>(), &tag)?;
    Ok(tag)
}

/// Docker's default profile as the product's report counts it: the names it allows outright and
/// those it allows for most arguments.
fn docker_default_count() -> usize {
    docker_default::ALLOWED.len() + docker_default::ALLOWED_WITH_ARGUMENTS.len()
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
