//! Test suites: their sources, a run against a container, and what a run's output says.
//!
//! A suite runs three times per cell: against the container under its profiles (as `verify`'s
//! workload), against the same image with no seccomp at all (the baseline the profiled run is
//! judged against), and as `trace`'s workload — what the container does under it, phase by phase
//! and process by process, is the part of "everything observed" the trace's short workload did not
//! reach.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::apps::{App, Suite};
use crate::bench::output;
use crate::machine::run;

/// What one run of a suite printed, counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The failed tests, by name (`[err]` and `[exception]` lines).
    pub failures: Vec<String>,
}

impl Outcome {
    /// Counts the marker lines of a suite's output.
    pub fn parse(text: &str) -> Outcome {
        let mut outcome = Outcome::default();
        for line in text.lines() {
            let Some((marker, name)) = line.trim().split_once("]:") else { continue };
            match marker {
                "[ok" => outcome.passed += 1,
                "[skip" | "[ignore" => outcome.skipped += 1,
                "[err" | "[exception" => {
                    outcome.failed += 1;
                    outcome.failures.push(name.trim().to_owned());
                }
                _ => {}
            }
        }
        outcome
    }

    /// Tests that fail here and not in `baseline`, by name as `same_test` sees it.
    pub fn worse_than(&self, baseline: &Outcome) -> Vec<String> {
        let before: BTreeSet<String> = baseline.failures.iter().map(|name| same_test(name)).collect();
        self.failures.iter().map(|name| same_test(name)).filter(|name| !before.contains(name)).collect()
    }
}

/// A failure's name with what differs from run to run taken out: handles and addresses (runs of
/// eight or more hex digits, e.g. Tcl's `sock55d4ee41d770` in an exception).
pub fn same_test(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut run = String::new();
    for c in name.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() >= 8 { "…" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// A suite ready to run for one application and release.
pub struct Prepared<'a> {
    pub suite: &'a Suite,
    pub script: PathBuf,
    /// The unpacked source tree, for suites that come from one.
    pub source: Option<Source>,
}

/// An upstream source tree and the Debian version it came from.
#[derive(Clone)]
pub struct Source {
    pub dir: PathBuf,
    pub version: String,
}

/// Writes the script and fetches the suite's source for `release`.
pub fn prepare<'a>(app: &'a App, release: &str, work: &Path) -> Result<Prepared<'a>> {
    let script = work.join("suite.sh");
    std::fs::write(&script, app.suite.script).with_context(|| format!("cannot write {}", script.display()))?;
    let source = app.suite.source.map(|package| fetch_source(package, release)).transpose()?;
    Ok(Prepared { suite: &app.suite, script, source })
}

impl Prepared<'_> {
    /// `sh SCRIPT`, its output to `out`, its detail log `log` emptied first (a suite may read its
    /// log back); the container comes from `SECCOMP_REFINE_*` (set by `verify` and `trace`, or by
    /// `unconfined`).
    pub fn command_line(&self, out: &Path, log: &Path) -> String {
        format!(": >{} && sh {} >{} 2>&1", quote(log), quote(&self.script), quote(out))
    }

    /// The script's environment; the tests' details go to `log`.
    pub fn env(&self, image: &str, log: &Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> =
            self.suite.env.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect();
        env.push(("SUITE_IMAGE".into(), image.to_owned()));
        env.push(("SUITE_LOG".into(), log.display().to_string()));
        if let Some(source) = &self.source {
            env.push(("SUITE_SRC".into(), source.dir.display().to_string()));
        }
        env
    }
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// The suite against `image` run with no seccomp profile at all (`seccomp=unconfined`): the
/// baseline the profiled run is judged against.
pub fn unconfined(suite: &Prepared<'_>, image: &str, port: u16, work: &Path) -> Result<Outcome> {
    let id = output(Command::new("docker").args([
        "run",
        "-d",
        "--log-opt",
        "max-size=10m",
        "--label",
        "io.seccomp-refine.experiment=1",
        "--security-opt",
        "seccomp=unconfined",
        image,
    ]))?;
    let result = unconfined_in(suite, image, &id, port, work);
    let _ = Command::new("docker").args(["rm", "-f", &id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    result
}

fn unconfined_in(suite: &Prepared<'_>, image: &str, id: &str, port: u16, work: &Path) -> Result<Outcome> {
    let host = output(Command::new("docker").args(["inspect", "--format", "{{.NetworkSettings.IPAddress}}", id]))?;
    wait_for_port(&host, port, Duration::from_secs(60))?;
    let out = work.join("suite-unconfined.out");
    let log = work.join("suite-unconfined.log");
    let status = Command::new("sh")
        .arg("-c")
        .arg(suite.command_line(&out, &log))
        .envs(suite.env(image, &log))
        .env("SECCOMP_REFINE_HOST", &host)
        .env("SECCOMP_REFINE_PORT", port.to_string())
        .env("SECCOMP_REFINE_CONTAINER", id)
        .status()
        .context("cannot run the suite")?;
    let outcome = Outcome::parse(&std::fs::read_to_string(&out).unwrap_or_default());
    if !status.success() && outcome == Outcome::default() {
        bail!("the suite failed before its first test ({status}); see {}", out.display());
    }
    Ok(outcome)
}

fn wait_for_port(host: &str, port: u16, within: Duration) -> Result<()> {
    let address: std::net::SocketAddr = format!("{host}:{port}").parse().context("a container address")?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{address} did not accept connections within {} s", within.as_secs())
}

/// The upstream tarball of Debian's source `package` for `release`, unpacked once under
/// `target/experiment/sources/`. apt reads a sources list of its own (a `deb-src` line for the
/// release) with its own lists and cache, so the host's apt configuration is never touched.
fn fetch_source(package: &str, release: &str) -> Result<Source> {
    let root = crate::project_root().join("target/experiment/sources").join(release);
    let dir = root.join(package);
    let version_file = root.join(format!("{package}.version"));
    if let Ok(version) = std::fs::read_to_string(&version_file) {
        return Ok(Source { dir, version: version.trim().to_owned() });
    }
    std::fs::create_dir_all(root.join("lists/partial"))?;
    std::fs::create_dir_all(root.join("cache/archives/partial"))?;
    let sources = root.join("sources.list");
    std::fs::write(&sources, format!("deb-src http://deb.debian.org/debian {release} main\n"))?;
    let apt = || {
        let mut apt = Command::new("apt-get");
        for (option, value) in [
            ("Dir::Etc::SourceList", sources.clone()),
            ("Dir::Etc::SourceParts", root.join("none")),
            ("Dir::State::Lists", root.join("lists")),
            ("Dir::Cache", root.join("cache")),
        ] {
            apt.arg("-o").arg(format!("{option}={}", value.display()));
        }
        apt.arg("-q");
        apt
    };
    println!("xtask: apt-get source {package} ({release}, a private deb-src list)");
    run(apt().arg("update").stdout(Stdio::null()))?;
    // Only the upstream tarball is needed (the suite is upstream's), so the URIs are enough.
    let uris = output(apt().args(["source", "--print-uris", package]))?;
    let (url, file) = uris
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?.trim_matches('\''), fields.next()?))
        })
        .find(|(_, file)| file.contains(".orig.tar."))
        .with_context(|| format!("apt-get source {package} lists no upstream tarball for {release}"))?;
    let version = file.trim_start_matches(&format!("{package}_")).split(".orig").next().unwrap_or(file).to_owned();
    let tarball = root.join(file);
    run(Command::new("curl").args(["-fsSL", "-o"]).arg(&tarball).arg(url))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    run(Command::new("tar").arg("-xf").arg(&tarball).arg("-C").arg(&dir).arg("--strip-components=1"))?;
    std::fs::write(&version_file, &version)?;
    Ok(Source { dir, version })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_counted_and_new_failures_named() {
        let baseline = Outcome::parse("[ok]: a (1 ms)\n[err]: b\n[ignore]: c: Not supported\nnoise\n");
        assert_eq!((baseline.passed, baseline.failed, baseline.skipped), (1, 1, 1));
        let profiled = Outcome::parse("[ok]: a\n[err]: b\n[exception]: Executing test client: boom\n[skip]: d\n");
        assert_eq!((profiled.passed, profiled.failed, profiled.skipped), (1, 2, 1));
        assert_eq!(profiled.worse_than(&baseline), ["Executing test client: boom"]);
        let reset =
            |handle: &str| format!("[exception]: Executing test client: error writing \"sock{handle}\": reset.");
        let (one, other) = (Outcome::parse(&reset("55d4ee41d770")), Outcome::parse(&reset("556bb4f72d70")));
        assert!(one.worse_than(&other).is_empty(), "the same failure with another socket handle");
        assert_eq!(same_test("db 12 in tests/unit/a.tcl"), "db 12 in tests/unit/a.tcl");
    }
}
