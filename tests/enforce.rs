//! `enforce` end to end: real containers switched to their serving profile by the real kernel.
//!
//! Profiles come from the tool itself (`trace` of the stand-in images, once per test binary run,
//! and of small programs in `tests/data/`); only deliberate removals (`dup2`) are edited in. Every assertion reads the processes
//! themselves: `/proc/PID/status` (Seccomp_filters, NoNewPrivs), their replies and their logs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use crate::tracer::tracer_missing;
use crate::util::{Container, docker, eventually, image_missing, output, read_json, seccomp_refine, stderr};

/// Profiles `trace` wrote for `image` under `workload` (with its static analysis), made once and
/// shared by the tests.
fn traced_profiles(image: &str, workload: &str, cell: &'static OnceLock<PathBuf>) -> PathBuf {
    cell.get_or_init(|| {
        let name = image.split(':').next().unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("enforce-{name}"));
        let out = output(seccomp_refine().args(["trace", "--force", "-o"]).arg(&dir).args([
            image,
            "--duration",
            "15s",
            "--workload",
            workload,
        ]));
        assert!(out.status.success(), "trace {image}: {}", stderr(&out));
        dir
    })
    .clone()
}

/// nginx's profiles traced with one curl (shared with `arguments`).
pub fn nginx_profiles() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    traced_profiles("nginx:latest", "curl -sf http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/ -o /dev/null", &CELL)
}

fn redis_profiles() -> PathBuf {
    static CELL: OnceLock<PathBuf> = OnceLock::new();
    traced_profiles("redis:latest", "redis-cli -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT set k v", &CELL)
}

/// A copy of the profiles in `from` whose serving profile leaves out `removed`.
fn profiles_without(from: &Path, removed: &[&str], dir: &Path) -> PathBuf {
    std::fs::copy(from.join("seccomp.json"), dir.join("seccomp.json")).unwrap();
    let mut serving = read_json(&from.join("seccomp-serving.json"));
    let allowed = serving["syscalls"][0]["names"].as_array_mut().unwrap();
    for name in removed {
        assert!(allowed.iter().any(|known| known == name), "{name} was in the traced serving profile");
    }
    allowed.retain(|name| !removed.contains(&name.as_str().unwrap()));
    std::fs::write(dir.join("seccomp-serving.json"), serving.to_string()).unwrap();
    dir.to_owned()
}

/// A running `seccomp-refine enforce`, its stderr collected line by line; interrupted (Ctrl-C)
/// and its container removed when dropped.
struct Enforcer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stats: PathBuf,
    /// The container it started (none with --attach).
    started: Option<String>,
}

impl Enforcer {
    fn start(args: &[&str], stats_dir: &Path) -> Enforcer {
        let stats = stats_dir.join("stats.json");
        let mut child = seccomp_refine()
            .arg("enforce")
            .arg("--stats")
            .arg(&stats)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .expect("seccomp-refine enforce starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = BufReader::new(child.stderr.take().unwrap());
        let sink = lines.clone();
        std::thread::spawn(move || {
            reader.lines().map_while(Result::ok).for_each(|line| sink.lock().unwrap().push(line))
        });
        let mut enforcer = Enforcer { child, lines, stats, started: None };
        let line = enforcer.wait_line(60, |line| line.contains("seccomp-refine: enforcing"));
        let id = line.split(" (").nth(1).and_then(|rest| rest.split(')').next()).unwrap().to_owned();
        if !args.contains(&"--attach") {
            enforcer.started = Some(id);
        }
        enforcer
    }

    fn container(&self) -> &str {
        self.started.as_deref().expect("a container started by enforce")
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line matching `wanted`, waiting up to `seconds`.
    fn wait_line(&mut self, seconds: u64, wanted: impl Fn(&str) -> bool) -> String {
        let found = eventually(seconds, || self.lines().into_iter().find(|line| wanted(line)));
        found.unwrap_or_else(|| panic!("no such line from enforce; it said:\n{}", self.lines().join("\n")))
    }

    /// Lines of switches of `outcome` ("switched", "refused"), waiting until there are `count`.
    fn wait_switches(&mut self, seconds: u64, outcome: &str, count: usize) -> Vec<String> {
        let prefix = format!("seccomp-refine: {outcome} pid ");
        let found = eventually(seconds, || {
            let lines: Vec<String> = self.lines().into_iter().filter(|line| line.starts_with(&prefix)).collect();
            (lines.len() >= count).then_some(lines)
        });
        found.unwrap_or_else(|| {
            panic!("fewer than {count} `{outcome}` lines; enforce said:\n{}", self.lines().join("\n"))
        })
    }

    /// Ctrl-C: the exit status and the `--stats` JSON.
    fn interrupt(&mut self) -> (ExitStatus, Value) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().unwrap();
        (status, read_json(&self.stats))
    }
}

impl Drop for Enforcer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
        if let Some(id) = &self.started {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

/// The pid of the switched process named in a "switched pid N (…)" line.
fn switched_pid(line: &str) -> u32 {
    line.split("pid ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap().parse().unwrap()
}

/// (NoNewPrivs, Seccomp_filters) of a thread.
fn seccomp_of(pid: u32, tid: u32) -> (u32, u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    let field = |name: &str| status.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok()).unwrap();
    (field("NoNewPrivs:"), field("Seccomp_filters:"))
}

fn main_pid(container: &str) -> u32 {
    docker(&["inspect", "--format", "{{.State.Pid}}", container]).parse().unwrap()
}

fn children(pid: u32) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    text.split_whitespace().map(|child| child.parse().unwrap()).collect()
}

fn http_status(ip: &str) -> String {
    let out =
        output(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{ip}/")]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip_of(container: &str) -> String {
    docker(&["inspect", "--format", "{{.NetworkSettings.IPAddress}}", container])
}

/// A process's state letter (`S` sleeping, `T` stopped, `t` traced, …).
fn state_of(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..].chars().next().unwrap()
}

/// The bytes of `pid`'s executable mappings of `binary` (its path in the container) that differ
/// from the file, as (file offset, byte in memory): a uprobe's breakpoints, which the kernel
/// writes into the memory of each process it is set for.
fn breakpoints(pid: u32, binary: &str) -> Vec<(u64, u8)> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut file = std::fs::File::open(format!("/proc/{pid}/root{binary}")).unwrap();
    let mut memory = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut found = Vec::new();
    for line in maps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || !fields[1].contains('x') || fields[5] != binary {
            continue;
        }
        let (start, end) = fields[0].split_once('-').unwrap();
        let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        let offset = u64::from_str_radix(fields[2], 16).unwrap();
        let (mut on_disk, mut in_memory) = (vec![0; (end - start) as usize], vec![0; (end - start) as usize]);
        file.seek(SeekFrom::Start(offset)).unwrap();
        let length = file.read(&mut on_disk).unwrap();
        memory.seek(SeekFrom::Start(start)).unwrap();
        memory.read_exact(&mut in_memory).unwrap();
        found.extend(
            (0..length).filter(|&at| on_disk[at] != in_memory[at]).map(|at| (offset + at as u64, in_memory[at])),
        );
    }
    found
}

/// The master keeps the marker's one breakpoint (it has not switched, and forks the workers);
/// the switched workers soon have none (a probe is closed after the switch): their loop runs
/// without a trap.
fn check_breakpoints(master: u32, workers: &[u32]) {
    let nginx = "/usr/sbin/nginx";
    let in_master = breakpoints(master, nginx);
    assert!(matches!(in_master.as_slice(), [(_, 0xcc)]), "the master's breakpoint: {in_master:x?}");
    for &worker in workers {
        let cleared = eventually(5, || breakpoints(worker, nginx).is_empty().then_some(()));
        let left = breakpoints(worker, nginx);
        assert!(cleared.is_some(), "switched worker {worker} still has the marker's breakpoint: {left:x?}");
    }
}

/// The pids of a `--stats` list of processes (`held`, `late_probes`).
fn pids(list: &Value) -> Vec<u32> {
    list.as_array().unwrap().iter().map(|process| process["pid"].as_u64().unwrap() as u32).collect()
}

#[test]
fn nginx_workers_switch_serve_under_load_and_are_denied_what_serving_leaves_out() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let dir = tempfile::tempdir().unwrap();
    let profiles = profiles_without(&nginx_profiles(), &["dup2"], dir.path());
    let mut enforcer = Enforcer::start(&["nginx:latest", "--profiles", profiles.to_str().unwrap()], dir.path());
    let container = enforcer.container().to_owned();
    let switched: Vec<u32> = enforcer.wait_switches(30, "switched", 2).iter().map(|line| switched_pid(line)).collect();
    let master = main_pid(&container);
    let mut workers = children(master);
    workers.sort_unstable();
    let mut sorted = switched.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, workers, "the switched processes are exactly the master's workers");
    // The master stays in init: Docker's one filter, no NO_NEW_PRIVS; each worker has one more.
    let (master_nnp, master_filters) = seccomp_of(master, master);
    assert_eq!((master_nnp, master_filters), (0, 1));
    for &worker in &workers {
        assert_eq!(seccomp_of(worker, worker), (1, master_filters + 1), "worker {worker}");
    }
    check_breakpoints(master, &workers);
    // Serving under load.
    let ip = ip_of(&container);
    let wrk = output(Command::new("wrk").args(["-t2", "-c8", "-d3s", &format!("http://{ip}/")]));
    let report = String::from_utf8_lossy(&wrk.stdout);
    assert!(wrk.status.success() && !report.contains("Non-2xx") && !report.contains("Socket errors"), "{report}");
    let requests: u64 = report.lines().find_map(|line| line.trim().split(" requests in").next()?.parse().ok()).unwrap();
    assert!(requests > 1000, "{report}");
    // Left out of serving: the log reopen's dup2 fails in the workers, which serve on.
    docker(&["kill", "--signal", "USR1", &container]);
    let denied = eventually(10, || {
        let logs = output(Command::new("docker").args(["logs", &container]));
        stderr(&logs).contains("dup2(STDERR_FILENO) failed (38: Function not implemented)").then_some(())
    });
    assert!(denied.is_some(), "no ENOSYS from dup2 in the log");
    assert_eq!(http_status(&ip), "200");
    // The master, still in init, reloads; the new workers, held at birth until they have the
    // marker of their own, are switched at their first loop entry.
    docker(&["exec", &container, "nginx", "-s", "reload"]);
    let lines = enforcer.wait_switches(30, "switched", 4);
    let respawned: Vec<u32> = lines[2..].iter().map(|line| switched_pid(line)).collect();
    let new_workers = eventually(10, || {
        let mut now = children(master);
        now.sort_unstable();
        (now.iter().all(|pid| !workers.contains(pid)) && now.len() == 2).then_some(now)
    })
    .expect("the reload replaced the workers");
    for &worker in &new_workers {
        assert!(respawned.contains(&worker), "new worker {worker} was switched: {lines:?}");
        assert_eq!(seccomp_of(worker, worker), (1, master_filters + 1), "new worker {worker}");
    }
    assert_eq!(seccomp_of(master, master), (0, master_filters), "the master still in init after its reload");
    check_breakpoints(master, &new_workers);
    assert_eq!(http_status(&ip), "200");
    // Ctrl-C ends enforcing and leaves the container running as it is.
    let (status, stats) = enforcer.interrupt();
    let held = pids(&stats["held"]);
    for worker in workers.iter().chain(&new_workers) {
        assert!(held.contains(worker), "worker {worker} was not held at birth for its probe: {stats}");
    }
    assert!(pids(&stats["late_probes"]).is_empty(), "every process was held at birth: {stats}");
    assert!(status.success(), "{status}");
    assert_eq!(docker(&["inspect", "--format", "{{.State.Running}}", &container]), "true");
    assert_eq!(stats["summary"]["switched"], 4, "{stats}");
    assert_eq!(stats["summary"]["refused"], 0);
    assert_eq!(stats["marker"], "symbol:ngx_process_events_and_timers@/usr/sbin/nginx");
    assert_eq!(http_status(&ip), "200");
}

#[test]
fn a_container_of_the_same_image_next_to_the_target_is_never_stopped_or_switched() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let neighbour = Container::start(&["nginx:latest"]);
    let neighbour_ip = neighbour.ip();
    let neighbour_master = main_pid(&neighbour.id);
    let dir = tempfile::tempdir().unwrap();
    let profiles = nginx_profiles();
    let mut enforcer = Enforcer::start(&["nginx:latest", "--profiles", profiles.to_str().unwrap()], dir.path());
    enforcer.wait_switches(30, "switched", 2);
    // The neighbour's workers run the same binary inode through the uprobe on every request.
    let wrk = output(Command::new("wrk").args(["-t1", "-c4", "-d2s", &format!("http://{neighbour_ip}/")]));
    assert!(wrk.status.success());
    for worker in children(neighbour_master) {
        assert_eq!(seccomp_of(worker, worker), (0, 1), "neighbour worker {worker} untouched");
        assert!(!matches!(state_of(worker), 'T' | 't'), "neighbour worker {worker} not stopped");
    }
    assert_eq!(http_status(&neighbour_ip), "200");
    let (_, stats) = enforcer.interrupt();
    let pids: Vec<u64> = stats["switches"].as_array().unwrap().iter().map(|s| s["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 2, "only the target's two workers: {stats}");
    assert!(pids.iter().all(|&pid| !children(neighbour_master).contains(&(pid as u32))));
}

/// Runs nginx under `profile`, enforces in it with --attach, and checks both workers are refused
/// for `reason`, left exactly as they were, and serve on.
fn check_refused(profile: &Path, reason: &str) {
    let profiles = nginx_profiles();
    let target = Container::start(&["--security-opt", &format!("seccomp={}", profile.display()), "nginx:latest"]);
    let ip = target.ip();
    assert!(eventually(20, || (http_status(&ip) == "200").then_some(())).is_some());
    let dir = tempfile::tempdir().unwrap();
    let mut enforcer = Enforcer::start(&["--attach", &target.id, "--profiles", profiles.to_str().unwrap()], dir.path());
    // Attached: the workers reach the marker at their next loop iteration, on a request.
    let refused = eventually(30, || {
        http_status(&ip);
        let lines: Vec<String> =
            enforcer.lines().into_iter().filter(|line| line.starts_with("seccomp-refine: refused pid ")).collect();
        (lines.len() >= 2).then_some(lines)
    })
    .unwrap_or_else(|| panic!("no refusals: {:?}", enforcer.lines()));
    assert!(refused.iter().all(|line| line.contains(reason)), "{refused:?}");
    let master = main_pid(&target.id);
    for worker in children(master) {
        // Nothing half-done: no NO_NEW_PRIVS without the filter.
        assert_eq!(seccomp_of(worker, worker), (0, 1), "worker {worker}");
        assert!(!matches!(state_of(worker), 'T' | 't'), "worker {worker} runs on");
    }
    assert_eq!(http_status(&ip), "200");
    let (status, stats) = enforcer.interrupt();
    assert!(status.success());
    assert_eq!((stats["summary"]["refused"].as_u64(), stats["summary"]["switched"].as_u64()), (Some(2), Some(0)));
}

#[test]
fn preflight_refuses_when_the_init_profile_denies_seccomp_and_the_app_lives_on() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let profiles = nginx_profiles();
    // The traced container profile as is: runc installs its filter before the app runs, so the
    // app never called seccomp, and the profile denies it (ENOSYS).
    let denied = read_json(&profiles.join("seccomp.json"));
    let allowed = denied["syscalls"][0]["names"].as_array().unwrap();
    assert!(!allowed.iter().any(|name| name == "seccomp"), "the traced profile allows seccomp");
    check_refused(&profiles.join("seccomp.json"), "its filters deny seccomp");
}

#[test]
fn preflight_refuses_when_the_init_profile_kills_on_seccomp_and_the_app_lives_on() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let mut profile = read_json(&nginx_profiles().join("seccomp.json"));
    for rule in profile["syscalls"].as_array_mut().unwrap() {
        rule["names"].as_array_mut().unwrap().retain(|name| name != "seccomp");
    }
    let kill = serde_json::json!({"names": ["seccomp"], "action": "SCMP_ACT_KILL_PROCESS"});
    profile["syscalls"].as_array_mut().unwrap().push(kill);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kills-seccomp.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    check_refused(&path, "its filters kill a process that calls prctl or seccomp (SIGSYS)");
}

#[test]
fn redis_switches_every_thread_at_its_event_loop() {
    require!(tracer_missing().or_else(|| image_missing("redis:latest")));
    let profiles = redis_profiles();
    let dir = tempfile::tempdir().unwrap();
    let mut enforcer = Enforcer::start(&["redis:latest", "--profiles", profiles.to_str().unwrap()], dir.path());
    let container = enforcer.container().to_owned();
    let lines = enforcer.wait_switches(30, "switched", 1);
    let pid = switched_pid(&lines[0]);
    assert_eq!(pid, main_pid(&container), "redis-server itself runs the event loop");
    let threads: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    assert!(threads.len() > 1, "redis runs its background threads");
    for tid in threads {
        // TSYNC: every thread got the filter and NO_NEW_PRIVS.
        assert_eq!(seccomp_of(pid, tid), (1, 2), "thread {tid}");
    }
    let ip = ip_of(&container);
    let cli = |args: &[&str]| {
        let out = output(Command::new("redis-cli").args(["-h", &ip]).args(args));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(cli(&["set", "enforced", "yes"]), "OK");
    assert_eq!(cli(&["get", "enforced"]), "yes");
    let (status, stats) = enforcer.interrupt();
    assert!(status.success());
    // Where the trace's stack put the serving entry: aeProcessEvents, which aeMain calls in its
    // loop (unexported in Debian's binary, so named by its address).
    let derived = &read_json(&profiles.join("trace.json"))["phase_marker"]["serving_entry"]["entry"];
    let marker = format!("symbol:{}@{}", derived["function"].as_str().unwrap(), derived["binary"].as_str().unwrap());
    assert_eq!(stats["marker"], marker.as_str());
}

#[test]
fn enforce_refuses_bad_input_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(seccomp_refine().args(["enforce", "nginx:latest", "--profiles"]).arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("seccomp-serving.json") && err.lines().count() == 1, "{err}");
    let out = output(
        seccomp_refine().args(["enforce", "nginx:latest", "--phase-marker", "after:5s", "--profiles"]).arg(dir.path()),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("must be symbol:FUNCTION[@BINARY] or auto"), "{}", stderr(&out));
}

/// The image of `tests/data/NAME.c` (static, as `/NAME`, its command), named by a hash of the
/// source so that runs reuse it and an edit makes a new one.
fn image_of(name: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/data/{name}.c"));
    let mut hasher = DefaultHasher::new();
    std::fs::read(&source).unwrap().hash(&mut hasher);
    let image = format!("seccomp-refine-test/{name}:{:016x}", hasher.finish());
    if image_missing(&image).is_none() {
        return image;
    }
    let dir = tempfile::tempdir().unwrap();
    let out =
        output(Command::new("gcc").args(["-O1", "-static", "-pthread", "-o"]).arg(dir.path().join(name)).arg(source));
    assert!(out.status.success(), "gcc: {}", stderr(&out));
    let tar =
        format!("tar -C {} -cf - {name} | docker import --change 'CMD [\"/{name}\"]' - {image}", dir.path().display());
    let out = output(Command::new("sh").args(["-c", &tar]));
    assert!(out.status.success(), "docker import: {}", stderr(&out));
    image
}

/// The threads program's image (`tests/data/threads.c`), built once per run.
fn threads_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| image_of("threads"))
}

/// Enforces in the threads program (`diverge`: one thread with a filter of its own) and returns
/// the switch's log line, the process and (NoNewPrivs, Seccomp_filters) of each of its threads.
fn enforce_threads(diverge: bool) -> (String, u32, Vec<(u32, u32)>) {
    let image = threads_image();
    let dir = tempfile::tempdir().unwrap();
    let mut command = vec!["/threads"];
    if diverge {
        command.push("diverge");
    }
    let traced = dir.path().join("profiles");
    let mut trace = seccomp_refine();
    trace.args(["trace", "-o"]).arg(&traced).args([image, "--duration", "4s", "--phase-marker", "symbol:serve", "--"]);
    let out = output(trace.args(&command));
    assert!(out.status.success(), "trace: {}", stderr(&out));
    let mut args = vec![image, "--profiles", traced.to_str().unwrap(), "--phase-marker", "symbol:serve", "--"];
    args.extend(&command);
    let mut enforcer = Enforcer::start(&args, dir.path());
    let line = enforcer.wait_switches(30, "switched", 1).remove(0);
    let pid = switched_pid(&line);
    let mut threads: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    threads.sort_unstable();
    assert_eq!(threads.len(), 4);
    let states = threads.iter().map(|&tid| seccomp_of(pid, tid)).collect();
    assert!(!matches!(state_of(pid), 'T' | 't'), "running on");
    (line, pid, states)
}

#[test]
fn tsync_gives_every_thread_the_serving_filter() {
    require!(tracer_missing().or_else(crate::util::docker_missing));
    let (line, _, states) = enforce_threads(false);
    assert!(!line.contains("TSYNC"), "switched from the thread that hit the marker: {line}");
    assert_eq!(states, [(1, 2); 4]);
}

#[test]
fn a_thread_with_a_diverging_filter_makes_the_switch_retry_from_it() {
    require!(tracer_missing().or_else(crate::util::docker_missing));
    let (line, pid, states) = enforce_threads(true);
    // The main thread's TSYNC named thread 1 (the second), whose chain is one deeper; from there
    // every thread gets Docker's filter, thread 1's own and the serving one.
    assert!(line.contains("from its thread") && line.contains("(TSYNC)"), "{line}");
    assert!(!line.contains(&format!("from its thread {pid} ")), "{line}");
    assert_eq!(states, [(1, 3); 4]);
}

#[test]
fn verify_on_an_enforced_container_reports_serving_denials_by_phase() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let dir = tempfile::tempdir().unwrap();
    let profiles = profiles_without(&nginx_profiles(), &["dup2"], dir.path());
    let json = dir.path().join("verify.json");
    let out =
        output(seccomp_refine().args(["verify", "nginx:latest", "--enforce"]).arg(&profiles).arg("--json").arg(&json));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = read_json(&json);
    let switched: Vec<u64> =
        report["enforced"]["switched"].as_array().unwrap().iter().map(|pid| pid.as_u64().unwrap()).collect();
    // Two workers at start, two more after the built-in workload's reload.
    assert_eq!(switched.len(), 4, "{report}");
    let failing: Vec<&Value> =
        report["denials"].as_array().unwrap().iter().filter(|denial| denial.get("fallback").is_none()).collect();
    assert_eq!(failing.len(), 1, "only the serving profile's deliberate gap: {failing:?}");
    let denial = failing[0];
    assert_eq!(
        (&denial["syscall"], &denial["phase"], &denial["errno"], &denial["process"]),
        (&Value::from("dup2"), &Value::from("serving"), &Value::from(38), &Value::from("/usr/sbin/nginx"))
    );
    assert!(switched.contains(&denial["pid"].as_u64().unwrap()), "denied in a switched worker");
    // Everything else the workload did passed: the master reloaded, the workers kept serving.
    assert!(report["workload"]["steps"].as_array().unwrap().iter().all(|step| step["ok"] == true), "{report}");
}

#[test]
fn action_log_denies_nothing_and_the_kernel_logs_what_serving_would_deny() {
    require!(tracer_missing().or_else(|| image_missing("nginx:latest")));
    let dir = tempfile::tempdir().unwrap();
    let profiles = profiles_without(&nginx_profiles(), &["dup2"], dir.path());
    let args = ["nginx:latest", "--profiles", profiles.to_str().unwrap(), "--action", "log"];
    let mut enforcer = Enforcer::start(&args, dir.path());
    let container = enforcer.container().to_owned();
    let workers: Vec<u32> = enforcer.wait_switches(30, "switched", 2).iter().map(|line| switched_pid(line)).collect();
    for &worker in &workers {
        assert_eq!(seccomp_of(worker, worker).1, seccomp_of(main_pid(&container), main_pid(&container)).1 + 1);
    }
    docker(&["kill", "--signal", "USR1", &container]);
    // SECCOMP_RET_LOG: an audit record (type 1326) per call, with the pid and the syscall (dup2 is 33).
    let logged = eventually(10, || {
        let kernel = output(&mut Command::new("dmesg"));
        let text = String::from_utf8_lossy(&kernel.stdout).into_owned();
        let logged: Vec<u32> = workers
            .iter()
            .copied()
            .filter(|pid| {
                text.lines().any(|line| {
                    line.contains("type=1326")
                        && line.contains(&format!(" pid={pid} "))
                        && line.contains(" syscall=33 ")
                })
            })
            .collect();
        (logged.len() == workers.len()).then_some(logged)
    });
    assert!(logged.is_some(), "no audit record of dup2 from both workers");
    let logs = stderr(&output(Command::new("docker").args(["logs", &container])));
    assert!(!logs.contains("dup2(STDERR_FILENO) failed"), "log lets the call run: {logs}");
    assert_eq!(http_status(&ip_of(&container)), "200");
}

/// Exit status of container `id` once it has stopped.
fn exit_code(id: &str, seconds: u64) -> Option<i64> {
    eventually(seconds, || {
        let state = docker(&["inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", id]);
        state.strip_prefix("false ").and_then(|code| code.parse().ok())
    })
}

#[test]
fn a_serving_profile_narrowed_by_argument_denies_a_packet_socket_no_evidence_showed() {
    require!(tracer_missing().or_else(crate::util::docker_missing));
    let image = image_of("packet");
    let dir = tempfile::tempdir().unwrap();
    let traced = dir.path().join("profiles");
    let out = output(seccomp_refine().args(["trace", "-o"]).arg(&traced).args([
        image.as_str(),
        "--duration",
        "4s",
        "--phase-marker",
        "symbol:serve",
    ]));
    assert!(out.status.success(), "trace: {}", stderr(&out));
    // socket is observed and reachable in serving with AF_INET only: narrowed to it.
    let serving = read_json(&traced.join("seccomp-serving.json"));
    let socket: Vec<&Value> = serving["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["names"] == serde_json::json!(["socket"]))
        .collect();
    assert_eq!(socket.len(), 1, "{socket:?}");
    assert_eq!(socket[0]["args"][0]["valueTwo"], libc::AF_INET);
    let args = [image.as_str(), "--profiles", traced.to_str().unwrap(), "--phase-marker", "symbol:serve"];
    let mut enforcer = Enforcer::start(&args, dir.path());
    let pid = switched_pid(&enforcer.wait_switches(30, "switched", 1)[0]);
    let container = enforcer.container().to_owned();
    assert_eq!((pid, seccomp_of(pid, pid)), (main_pid(&container), (1, 2)), "Docker's filter and the serving one");
    docker(&["exec", &container, "/packet", "trigger"]);
    // 0: socket(AF_PACKET) got ENOSYS from the serving filter, while socket(AF_INET) went through.
    assert_eq!(exit_code(&container, 20), Some(0), "enforce said:\n{}", enforcer.lines().join("\n"));
}
