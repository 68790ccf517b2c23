//! tracer-overhead: nginx under wrk, untraced and under each tracer, in the same run.
//!
//! One nginx stand-in container serves a fixed wrk load (threads, connections and duration fixed).
//! Each round measures its throughput untraced, under `seccomp-refine trace --attach`, under an
//! empty `raw_syscalls:sys_enter` program (bpftrace `tracepoint:raw_syscalls:sys_enter {}`: the
//! tracepoint's own cost, the floor of any syscall tracer), under a bpftrace per-cgroup syscall
//! counter (the usual ad-hoc eBPF answer) and under `strace -f` attached to every process of the
//! container (what ptrace-based recorders cost). The goal is judged against the floor, which is
//! measured twice a round: how far its two runs differ is the noise a miss is weighed against.
//! The tracer's own CPU time and peak RSS are sampled from /proc just before it is stopped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::harness::{Variant, at_least, interleave, median, range};
use super::report::{Bar, Section, Table};
use super::{Context, output};

const WRK_THREADS: &str = "2";
const WRK_CONNECTIONS: &str = "32";
const WRK_SECONDS: u64 = 10;
/// Keep at least this share of the throughput under an empty sys_enter program: below that floor
/// no syscall tracer can go on this kernel, since the tracepoint itself costs the rest.
const GOAL: f64 = 0.98;
const OURS: &str = "seccomp-refine trace --attach";
const EMPTY: &str = "empty sys_enter program";
const EMPTY_AGAIN: &str = "empty sys_enter program, again";
const UNTRACED: &str = "untraced";
const EMPTY_PROGRAM: &str = "tracepoint:raw_syscalls:sys_enter {}";

pub fn run(context: &Context) -> Result<Section> {
    let nginx = Nginx::start()?;
    let mut tracer_rss_mb = Vec::new();
    let mut tracer_cpu_percent = Vec::new();
    let samples = {
        let mut variants = [
            Variant::new(UNTRACED, || wrk(&nginx.url)),
            Variant::new(OURS, || {
                let (throughput, usage) = under_seccomp_refine(context, &nginx)?;
                tracer_rss_mb.push(usage.peak_rss_kb as f64 / 1024.0);
                tracer_cpu_percent.push(usage.cpu_seconds / WRK_SECONDS as f64 * 100.0);
                Ok(throughput)
            }),
            Variant::new(EMPTY, || under_bpftrace(EMPTY_PROGRAM, &nginx)),
            Variant::new("bpftrace per-cgroup counter", || {
                let program = format!(
                    "tracepoint:raw_syscalls:sys_enter /cgroup == cgroupid(\"{}\")/ {{ @[args->id] = count(); }}",
                    nginx.cgroup
                );
                under_bpftrace(&program, &nginx)
            }),
            Variant::new("strace -f", || under_strace(&nginx)),
            Variant::new(EMPTY_AGAIN, || under_bpftrace(EMPTY_PROGRAM, &nginx)),
        ];
        interleave("requests/s", true, context.rounds, &mut variants)?
    };
    let mut table = Table::new(&[
        "tracer",
        "throughput / untraced (median, range)",
        "throughput / empty program (median, range)",
        "requests/s (median)",
        "goal",
    ]);
    let noise = samples.ratio(EMPTY_AGAIN, EMPTY);
    let mut bars = Vec::new();
    for variant in &samples.variants {
        let label = variant.label.as_str();
        let untraced = samples.ratio(label, UNTRACED);
        let floor = samples.ratio(label, EMPTY);
        let goal = match label {
            OURS => format!("of the empty program: {}", at_least(GOAL, floor, noise, "the empty program")),
            _ => String::new(),
        };
        let against_floor = if label == UNTRACED || label == EMPTY { String::new() } else { floor.to_string() };
        table.row(vec![
            label.to_owned(),
            untraced.to_string(),
            against_floor,
            format!("{:.0}", samples.median(label)),
            goal,
        ]);
        bars.push(Bar {
            chart: "tracer overhead: nginx throughput / untraced (wrk)".to_owned(),
            label: label.to_owned(),
            value: untraced.median,
            spread: Some((untraced.min, untraced.max)),
        });
    }
    let floor = samples.ratio(OURS, EMPTY);
    bars.push(Bar {
        chart: "tracer overhead: seccomp-refine throughput / empty sys_enter program (wrk)".to_owned(),
        label: OURS.to_owned(),
        value: floor.median,
        spread: Some((floor.min, floor.max)),
    });
    let mut usage = Table::new(&["seccomp-refine tracer", "median", "range"]);
    for (what, values) in [("peak RSS (MB)", &tracer_rss_mb), ("CPU (% of one core)", &tracer_cpu_percent)] {
        let measured = &values[values.len() - context.rounds.measured..];
        let (min, max) = range(measured);
        usage.row(vec![what.to_owned(), format!("{:.1}", median(measured)), format!("{min:.1}–{max:.1}")]);
    }
    Ok(Section {
        name: "tracer-overhead".to_owned(),
        measured_at: String::new(),
        description: format!(
            "nginx stand-in under `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s`, {} measured rounds after {} \
             warm-up, variants interleaved. The floor is an empty program on `raw_syscalls:sys_enter` (bpftrace \
             `tracepoint:raw_syscalls:sys_enter {{}}`): what the tracepoint alone costs every syscall. It runs \
             twice a round (third and last): its second run against its first is the noise. Goal: `trace --attach` \
             keeps ≥ {GOAL} of the throughput under the empty program.",
            context.rounds.measured, context.rounds.warmup
        ),
        tables: vec![table, usage],
        samples: vec![samples],
        bars,
    })
}

/// The container under load, removed when dropped.
struct Nginx {
    id: String,
    url: String,
    cgroup: String,
}

impl Nginx {
    fn start() -> Result<Nginx> {
        let id =
            output(Command::new("docker").args(["run", "-d", "--label", "io.seccomp-refine.bench=1", "nginx:latest"]))?;
        let ip = output(Command::new("docker").args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &id]))?;
        let nginx = Nginx { url: format!("http://{ip}/"), cgroup: format!("/sys/fs/cgroup/unified/docker/{id}"), id };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Command::new("curl").args(["-sf", "-o", "/dev/null", &nginx.url]).status().is_ok_and(|s| s.success()) {
            if Instant::now() > deadline {
                bail!("nginx did not answer on {} within 20 s", nginx.url);
            }
            sleep(Duration::from_millis(200));
        }
        Ok(nginx)
    }

    fn pids(&self) -> Result<Vec<String>> {
        let procs = std::fs::read_to_string(Path::new(&self.cgroup).join("cgroup.procs"))
            .with_context(|| format!("cannot read the processes of {}", self.cgroup))?;
        Ok(procs.lines().map(str::to_owned).collect())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.id]).output();
    }
}

/// Runs the fixed wrk load and returns requests per second.
pub fn wrk(url: &str) -> Result<f64> {
    wrk_for(url, WRK_SECONDS)
}

/// The fixed wrk load for `seconds`; requests per second.
pub fn wrk_for(url: &str, seconds: u64) -> Result<f64> {
    let duration = format!("{seconds}s");
    let report = output(Command::new("wrk").args(["-t", WRK_THREADS, "-c", WRK_CONNECTIONS, "-d", &duration, url]))?;
    report
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's report:\n{report}"))
}

/// What the tracer process used while the load ran.
struct Usage {
    peak_rss_kb: u64,
    cpu_seconds: f64,
}

fn under_seccomp_refine(context: &Context, nginx: &Nginx) -> Result<(f64, Usage)> {
    let out = tempfile_dir()?;
    let tracer = Command::new(&context.seccomp_refine)
        .args(["trace", "--force", "--no-static", "--attach", &nginx.id, "--duration", "10m", "-o"])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start seccomp-refine")?;
    let tracer = Background::new(tracer);
    // Attaching loads the programs and reads /proc; give it time before the load starts.
    sleep(Duration::from_secs(3));
    let throughput = wrk(&nginx.url)?;
    let usage = tracer.usage()?;
    tracer.stop("INT")?;
    let trace: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("trace.json"))?)?;
    let served = trace["phases"]["serving"]["syscalls"]["accept4"]["count"].as_u64().unwrap_or(0);
    if served == 0 {
        bail!("the attached trace saw no accept4: the tracer was not attached during the load");
    }
    std::fs::remove_dir_all(&out)?;
    Ok((throughput, usage))
}

/// The throughput while bpftrace runs `program`.
fn under_bpftrace(program: &str, nginx: &Nginx) -> Result<f64> {
    let child = Command::new("bpftrace")
        .args(["-e", program])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start bpftrace (apt-get install bpftrace)")?;
    let bpftrace = Background::new(child);
    sleep(Duration::from_secs(3));
    let throughput = wrk(&nginx.url)?;
    bpftrace.stop("INT")?;
    Ok(throughput)
}

fn under_strace(nginx: &Nginx) -> Result<f64> {
    let mut strace = Command::new("strace");
    strace.args(["-f", "-qq", "-o", "/dev/null"]);
    for pid in nginx.pids()? {
        strace.args(["-p", &pid]);
    }
    let child = strace.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("cannot start strace")?;
    let strace = Background::new(child);
    sleep(Duration::from_secs(2));
    let throughput = wrk(&nginx.url)?;
    strace.stop("INT")?;
    Ok(throughput)
}

/// A process running beside the load; killed if the benchmark fails before stopping it.
pub struct Background(Option<Child>);

impl Background {
    pub fn new(child: Child) -> Background {
        Background(Some(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    fn usage(&self) -> Result<Usage> {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let peak_rss_kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .context("no VmHWM")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(Usage { peak_rss_kb, cpu_seconds: ticks as f64 / 100.0 })
    }

    /// Sends `signal` and waits for the process to end.
    pub fn stop(mut self, signal: &str) -> Result<()> {
        // Left in place until it has been waited for: on an early return, `Drop` reaps it.
        let child = self.0.as_mut().expect("running");
        Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status()?;
        let status = child.wait()?;
        self.0 = None;
        if !status.success() && signal != "INT" {
            bail!("background process ended with {status}");
        }
        Ok(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("seccomp-refine-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
