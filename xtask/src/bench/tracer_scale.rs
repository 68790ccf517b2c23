//! tracer-scale: 20 containers (10 nginx, 10 redis stand-ins) traced at once by one tracer.
//!
//! Every round puts the same background load on all 20 containers (a request loop on each nginx,
//! `redis-benchmark` on each redis) and measures one nginx under wrk, without a tracer and with
//! `seccomp-refine trace --attach` on all 20: the ratio is the tracer's overhead per container when
//! it watches many. The tracer's map memory comes from the kernel (`memlock` of each BPF map in
//! `/proc/PID/fdinfo`), for one container and for all 20. Every traced round must give 20 complete
//! traces (no lost events) that are not mixed up: each holds its own container, only its own
//! program, and the syscalls its load makes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::harness::{Variant, interleave, median};
use super::report::{Bar, Section, Table};
use super::tracer_overhead::{Background, wrk};
use super::{Context, docker_run, output};

const PER_IMAGE: usize = 10;

struct Fleet {
    nginx: Vec<Member>,
    redis: Vec<Member>,
}

struct Member {
    id: String,
    ip: String,
}

impl Fleet {
    fn start() -> Result<Fleet> {
        let start = |image: &str| -> Result<Member> {
            let id = docker_run(&[image])?;
            let ip = output(Command::new("docker").args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &id]))?;
            Ok(Member { id, ip })
        };
        let mut fleet = Fleet { nginx: Vec::new(), redis: Vec::new() };
        for _ in 0..PER_IMAGE {
            fleet.nginx.push(start("nginx:latest")?);
            fleet.redis.push(start("redis:latest")?);
        }
        sleep(Duration::from_secs(3));
        Ok(fleet)
    }

    fn members(&self) -> impl Iterator<Item = (&'static str, &Member)> {
        self.nginx.iter().map(|member| ("nginx", member)).chain(self.redis.iter().map(|member| ("redis", member)))
    }

    /// The same load on every container but the measured one, for as long as the children run.
    fn background_load(&self) -> Result<Vec<Background>> {
        let mut load = Vec::new();
        for member in &self.nginx[1..] {
            let script = format!("while :; do curl -s -o /dev/null http://{}/; sleep 0.05; done", member.ip);
            load.push(Background::new(spawn_quiet(Command::new("sh").args(["-c", &script]))?));
        }
        for member in &self.redis {
            let script = format!("while :; do redis-benchmark -h {} -n 200 -c 2 -q >/dev/null; done", member.ip);
            load.push(Background::new(spawn_quiet(Command::new("sh").args(["-c", &script]))?));
        }
        Ok(load)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let ids: Vec<&str> = self.nginx.iter().chain(&self.redis).map(|member| member.id.as_str()).collect();
        let _ = Command::new("docker").args(["rm", "-f"]).args(ids).output();
    }
}

fn spawn_quiet(cmd: &mut Command) -> Result<Child> {
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().with_context(|| format!("cannot start {cmd:?}"))
}

pub fn run(context: &Context) -> Result<Section> {
    let fleet = Fleet::start()?;
    let measured_url = format!("http://{}/", fleet.nginx[0].ip);
    let single_memory = map_memory_kib(context, &fleet, 1)?;
    let total = fleet.members().count();
    let traced = format!("{total} containers traced");
    let mut all_memory = Vec::new();
    let mut checks = Vec::new();
    let samples = {
        let mut variants = [
            Variant::new("untraced", || {
                let load = fleet.background_load()?;
                let throughput = wrk(&measured_url);
                stop_all(load);
                throughput
            }),
            Variant::new(traced.as_str(), || {
                let dir = std::env::temp_dir().join(format!("seccomp-refine-bench-scale-{}", std::process::id()));
                std::fs::remove_dir_all(&dir).ok();
                let tracer = start_tracer(context, &fleet, total, &dir)?;
                let load = fleet.background_load()?;
                let throughput = wrk(&measured_url)?;
                all_memory.push(memlock_kib(tracer.pid())? as f64);
                stop_all(load);
                tracer.stop("INT")?;
                checks.push(check_traces(&fleet, &dir)?);
                std::fs::remove_dir_all(&dir).ok();
                Ok(throughput)
            }),
        ];
        interleave("requests/s", true, context.rounds, &mut variants)?
    };
    let ratio = samples.ratio(&traced, "untraced");
    let mut table =
        Table::new(&["measured nginx, throughput traced / untraced (median, range)", "requests/s untraced (median)"]);
    table.row(vec![ratio.to_string(), format!("{:.0}", samples.median("untraced"))]);
    let all_containers = format!("{total} containers");
    let mut memory = Table::new(&["tracer map memory (memlock, KiB)", "one container", &all_containers]);
    memory.row(vec![
        "all maps of the tracer".to_owned(),
        single_memory.to_string(),
        format!("{:.0}", median(&all_memory)),
    ]);
    let mut traces = Table::new(&["traced round", "traces complete", "events lost", "mixed up"]);
    for (round, check) in checks.iter().enumerate() {
        traces.row(vec![
            (round + 1).to_string(),
            format!("{} of {}", check.complete, check.total),
            check.lost.to_string(),
            if check.mixed.is_empty() { "none".to_owned() } else { check.mixed.join("; ") },
        ]);
    }
    Ok(Section {
        name: "tracer-scale".to_owned(),
        measured_at: String::new(),
        description: format!(
            "{PER_IMAGE} nginx and {PER_IMAGE} redis stand-ins under the same background load in every round; one nginx \
             measured with wrk, untraced and with one `seccomp-refine trace --attach` on all {total} containers, \
             interleaved, {} measured rounds after {} warm-up. Each traced round's {total} traces are checked: \
             complete, nothing lost, each holding only its own container's program and the syscalls of its load.",
            context.rounds.measured, context.rounds.warmup
        ),
        tables: vec![table, memory, traces],
        samples: vec![samples],
        bars: vec![Bar {
            chart: "tracer overhead: nginx throughput / untraced (wrk)".to_owned(),
            label: format!("with {traced}"),
            value: ratio.median,
            spread: Some((ratio.min, ratio.max)),
        }],
    })
}

fn stop_all(load: Vec<Background>) {
    for child in load {
        let _ = child.stop("TERM");
    }
}

/// `trace --attach` on the first `count` containers, into `dir`, once its programs are attached.
fn start_tracer(context: &Context, fleet: &Fleet, count: usize, dir: &Path) -> Result<Background> {
    let mut cmd = Command::new(&context.seccomp_refine);
    cmd.args(["trace", "--force", "--no-static", "--duration", "10m", "-o"]).arg(dir);
    for (_, member) in fleet.members().take(count) {
        cmd.args(["--attach", &member.id]);
    }
    let tracer =
        Background::new(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().context("cannot start the tracer")?);
    sleep(Duration::from_secs(4));
    Ok(tracer)
}

/// The tracer's map memory when watching `count` containers, with no load.
fn map_memory_kib(context: &Context, fleet: &Fleet, count: usize) -> Result<u64> {
    let dir = std::env::temp_dir().join(format!("seccomp-refine-bench-scale-one-{}", std::process::id()));
    let tracer = start_tracer(context, fleet, count, &dir)?;
    let memory = memlock_kib(tracer.pid());
    tracer.stop("INT")?;
    std::fs::remove_dir_all(&dir).ok();
    memory
}

/// The `memlock` the kernel charges for every BPF map `pid` holds open, in KiB.
fn memlock_kib(pid: u32) -> Result<u64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let info = std::fs::read_to_string(entry?.path()).unwrap_or_default();
        if info.lines().any(|line| line.starts_with("map_type:")) {
            let memlock = info.lines().find_map(|line| line.strip_prefix("memlock:")).map(str::trim);
            bytes += memlock.and_then(|value| value.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    if bytes == 0 {
        bail!("no BPF maps found open in process {pid}");
    }
    Ok(bytes / 1024)
}

struct Check {
    total: usize,
    complete: usize,
    lost: u64,
    mixed: Vec<String>,
}

/// Each container's trace: its own id, only its own program, its load's syscalls, nothing lost.
fn check_traces(fleet: &Fleet, dir: &Path) -> Result<Check> {
    let mut check = Check { total: 0, complete: 0, lost: 0, mixed: Vec::new() };
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("no traces in {}", dir.display()))? {
        let path = entry?.path().join("trace.json");
        let trace: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        check.total += 1;
        check.lost += trace["lost_events"].as_u64().unwrap_or(0);
        if trace["lost_events"] == 0 {
            check.complete += 1;
        }
        let id = trace["target"]["container_id"].as_str().unwrap_or_default().to_owned();
        let Some((kind, _)) = fleet.members().find(|(_, member)| member.id == id) else {
            check.mixed.push(format!("{}: not one of the fleet", path.display()));
            continue;
        };
        seen.insert(id.clone());
        // Debian's /usr/bin/redis-server is a link to redis-check-rdb, the file a trace names.
        let (program, characteristic) =
            if kind == "nginx" { ("/usr/sbin/nginx", "accept4") } else { ("/usr/bin/redis-check-rdb", "epoll_wait") };
        let programs: Vec<&str> =
            trace["executables"].as_array().into_iter().flatten().filter_map(|file| file["path"].as_str()).collect();
        if programs.iter().any(|path| *path != program) {
            check.mixed.push(format!("{kind} {}: programs {programs:?}", &id[..12]));
        }
        if trace["phases"]["serving"]["syscalls"][characteristic].is_null() {
            check.mixed.push(format!("{kind} {}: no {characteristic} in serving", &id[..12]));
        }
    }
    if seen.len() != fleet.members().count() {
        check.mixed.push(format!("{} of {} containers have a trace", seen.len(), fleet.members().count()));
    }
    Ok(check)
}
