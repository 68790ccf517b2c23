//! profiles: how tight the profiles are and whether the application still works under them.
//!
//! For each stand-in (nginx, redis): a trace with a workload (`--no-static`: the dynamic
//! profiles), `analyze` over that trace (the static reach and the merged profiles, timed), and
//! `verify` of the merged container profile under the image's default workload — the paths a
//! short trace misses (nginx reload, log reopen; redis BGSAVE, CONFIG REWRITE): it must deny
//! nothing. A second trace runs the steps of that workload (`WIDE`), so that `seccomp-refine
//! precision` measures each profile per phase against the union of both traces' observations:
//! F1, and recall, which must be 1.0. The counts stand next to Docker's default profile and the
//! published numbers of the peers (sources in `docs/precision.md`). It runs once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::report::{Bar, Section, Table};
use super::{Context, output};

/// One application: the stand-in, and the workloads its traces run.
struct App {
    name: &'static str,
    image: &'static str,
    workload: &'static str,
    /// The steps of `verify`'s built-in workload (`analyzer/src/verify/workload.rs`) as a shell
    /// command, for a trace whose observations the precision is measured against.
    wide: &'static str,
    /// Published init / serving counts: seed, Temporal Specialization, SysPart.
    published: [(&'static str, u32, u32); 3],
}

const APPS: [App; 2] = [
    App {
        name: "nginx",
        image: "nginx:latest",
        workload: "wrk -t1 -c8 -d5s http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/ && \
                   curl -s http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/missing >/dev/null",
        wide: "url=http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT && \
               curl -sf $url/ >/dev/null && curl -s $url/seccomp-refine-missing >/dev/null && \
               wrk -t2 -c16 -d2s $url/ >/dev/null && \
               docker exec $SECCOMP_REFINE_CONTAINER nginx -s reload && sleep 1 && curl -sf $url/ >/dev/null && \
               docker kill -s USR1 $SECCOMP_REFINE_CONTAINER >/dev/null && sleep 1 && curl -sf $url/ >/dev/null",
        published: [("seed", 156, 147), ("Temporal Specialization", 104, 97), ("SysPart", 108, 104)],
    },
    App {
        name: "redis",
        image: "redis:latest",
        workload: "redis-benchmark -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT -n 5000 -q >/dev/null && \
                   redis-cli -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT SET bench 1 >/dev/null",
        wide: "cli() { redis-cli -h $SECCOMP_REFINE_HOST \"$@\"; } && \
               redis-benchmark -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT -q -n 2000 -c 10 \
                 -t ping,set,get,incr,lpush,lpop,sadd,hset >/dev/null && \
               cli -p $SECCOMP_REFINE_PORT BGSAVE >/dev/null && \
               until cli -p $SECCOMP_REFINE_PORT INFO persistence | grep -q rdb_bgsave_in_progress:0; do sleep 0.1; done && \
               conf=$(mktemp) && chmod 644 $conf && printf 'port 6380\\nprotected-mode no\\nsave \"\"\\nappendonly no\\n' >$conf && \
               docker cp $conf $SECCOMP_REFINE_CONTAINER:/data/seccomp-refine-rewrite.conf && rm $conf && \
               docker exec -d $SECCOMP_REFINE_CONTAINER redis-server /data/seccomp-refine-rewrite.conf && \
               until cli -p 6380 PING 2>/dev/null | grep -q PONG; do sleep 0.1; done && \
               cli -p 6380 CONFIG SET maxmemory-policy allkeys-lru >/dev/null && \
               cli -p 6380 CONFIG REWRITE >/dev/null && { cli -p 6380 SHUTDOWN NOSAVE || true; }",
        published: [("seed", 137, 129), ("Temporal Specialization", 90, 82), ("SysPart", 92, 85)],
    },
];

/// B-Side's published average F1 over its applications, and that of the two earlier tools it
/// compares with (Thévenon et al., Middleware 2024).
const PUBLISHED_F1: [(&str, f64); 3] =
    [("B-Side", 0.81), ("earlier tool compared by B-Side", 0.31), ("earlier tool compared by B-Side", 0.53)];

/// The profile directories measured, by their name in the tables.
const MEASURED: [(&str, &str); 3] = [
    ("dynamic", "dynamic (trace with a workload)"),
    ("merged", "merged (what `trace` writes)"),
    ("merged-bitcode", "merged, application from its bitcode"),
];

pub fn run(context: &Context) -> Result<Section> {
    let mut counts = Table::new(&["application", "profile", "init", "serving", "container (seccomp.json)"]);
    let mut precision = Table::new(&[
        "application",
        "profile",
        "phase",
        "allowed",
        "observed (both traces)",
        "precision",
        "recall",
        "F1",
        "static-only grants",
    ]);
    let mut times = Table::new(&["application", "analysis", "wall time (s)"]);
    let mut verified = Table::new(&["application", "verify of the merged seccomp.json", "denied syscalls", "workload"]);
    let mut bars = Vec::new();
    let mut short_of_recall = Vec::new();
    let work = std::env::temp_dir().join(format!("seccomp-refine-bench-profiles-{}", std::process::id()));
    for app in &APPS {
        let dir = work.join(app.name);
        let measured = measure(context, app, &dir)?;
        let docker_default = docker_default_count(&dir.join("merged/report.md"))?;
        let rows = [
            ("dynamic (trace with a workload)", measured.dynamic),
            ("static (reachable, before the always-allowed calls)", measured.reachable),
            ("merged (what `trace` writes)", measured.merged),
            ("merged: of which narrowed by argument", measured.narrowed),
            ("merged, application from its bitcode (`analyze --bitcode`)", measured.merged_bitcode),
        ];
        for (label, [init, serving, container]) in rows {
            counts.row(vec![
                app.name.to_owned(),
                label.to_owned(),
                init.to_string(),
                serving.to_string(),
                container.to_string(),
            ]);
        }
        counts.row(vec![
            app.name.to_owned(),
            "Docker default".to_owned(),
            String::new(),
            String::new(),
            docker_default.to_string(),
        ]);
        for (peer, init, serving) in app.published {
            counts.row(vec![
                app.name.to_owned(),
                format!("{peer} (published)"),
                init.to_string(),
                serving.to_string(),
                String::new(),
            ]);
        }
        for (label, phases) in &measured.precision {
            for (phase, row) in phases {
                if row.recall < 1.0 {
                    short_of_recall.push(format!("{} {label} {phase}: denies {}", app.name, row.denied.join(" ")));
                }
                precision.row(vec![
                    app.name.to_owned(),
                    (*label).to_owned(),
                    phase.clone(),
                    row.allowed.to_string(),
                    row.observed.to_string(),
                    format!("{:.2}", row.precision),
                    if row.recall < 1.0 { format!("**{:.2}**", row.recall) } else { format!("{:.2}", row.recall) },
                    format!("{:.2}", row.f1),
                    row.static_only.map_or("—".to_owned(), |count| count.to_string()),
                ]);
                if *label == MEASURED[1].1 {
                    bars.push(Bar {
                        chart: "F1 per phase (merged profiles vs B-Side's published average)".to_owned(),
                        label: format!("{} {phase}", app.name),
                        value: row.f1,
                        spread: None,
                    });
                }
            }
        }
        for (label, seconds) in [("analyze", measured.analyze_seconds), ("analyze --bitcode", measured.bitcode_seconds)]
        {
            times.row(vec![app.name.to_owned(), label.to_owned(), format!("{seconds:.2}")]);
        }
        verified.row(vec![
            app.name.to_owned(),
            measured.verdict.clone(),
            measured.denied.clone(),
            measured.workload.clone(),
        ]);
        for (phase, index) in [("init", 0), ("serving", 1)] {
            bars.push(Bar {
                chart: format!("allowed syscalls, {} (merged profiles vs published)", app.name),
                label: format!("seccomp-refine {phase}"),
                value: measured.merged[index] as f64,
                spread: None,
            });
        }
        for (peer, init, serving) in app.published {
            bars.push(Bar {
                chart: format!("allowed syscalls, {} (merged profiles vs published)", app.name),
                label: format!("{peer} init / serving"),
                value: f64::from(init),
                spread: Some((f64::from(serving), f64::from(init))),
            });
        }
    }
    for (tool, f1) in PUBLISHED_F1 {
        precision.row(vec![
            String::new(),
            format!("{tool} (published average)"),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            format!("{f1:.2}"),
            String::new(),
        ]);
    }
    bars.push(Bar {
        chart: "F1 per phase (merged profiles vs B-Side's published average)".to_owned(),
        label: "B-Side (published average)".to_owned(),
        value: PUBLISHED_F1[0].1,
        spread: None,
    });
    std::fs::remove_dir_all(&work).ok();
    let recall = if short_of_recall.is_empty() {
        "Recall is 1.0 for every profile and phase: no profile denies a syscall either trace observed.".to_owned()
    } else {
        format!("RECALL BELOW 1 — profiles deny observed syscalls: {}.", short_of_recall.join("; "))
    };
    Ok(Section {
        name: "profiles".to_owned(),
        measured_at: String::new(),
        description: format!(
            "Allowed syscalls per phase for the stand-ins, x86_64 names. Dynamic: `trace --no-static` with a \
             workload (nginx: wrk and a 404; redis: redis-benchmark and a SET). Static: what `analyze` finds \
             reachable. Merged: observed ∪ reachable, plus the always-allowed calls, as `trace` writes them; with \
             the application's own code from its bitcode (`cargo xtask bitcode`) instead of its binary. \
             Of the merged names, those allowed only with certain argument values (`docs/arguments.md`). \
             The container profile also holds what runc does under the filter. Published numbers and their \
             sources: `docs/precision.md`. Verify runs the image's built-in workload (nginx: pages, a 404, \
             wrk, reload, USR1 log reopen; redis: redis-benchmark, BGSAVE, CONFIG REWRITE) under the merged \
             container profile; goal: nothing denied. Precision: `seccomp-refine precision` of each profile \
             against the union of what the first trace and a second trace running verify's workload steps \
             observed per phase; static-only grants are allowed on reachability alone. {recall} Wall times \
             are one cold run of `analyze --no-cache` (every file analysed again, the image's files read \
             through Docker)."
        ),
        tables: vec![counts, precision, times, verified],
        samples: Vec::new(),
        bars,
    })
}

/// One phase of `seccomp-refine precision --json`.
#[derive(serde::Deserialize)]
struct PhasePrecision {
    allowed: usize,
    observed: usize,
    precision: f64,
    recall: f64,
    f1: f64,
    denied: Vec<String>,
    static_only: Option<usize>,
}

/// Profile sizes as [init, serving, container], the precision per profile and phase, the
/// analysis times, and the verify outcome.
struct Measured {
    dynamic: [usize; 3],
    reachable: [usize; 3],
    merged: [usize; 3],
    /// Of `merged`, the names allowed only with certain arguments (docs/arguments.md).
    narrowed: [usize; 3],
    merged_bitcode: [usize; 3],
    precision: Vec<(&'static str, BTreeMap<String, PhasePrecision>)>,
    analyze_seconds: f64,
    bitcode_seconds: f64,
    verdict: String,
    denied: String,
    workload: String,
}

fn measure(context: &Context, app: &App, dir: &Path) -> Result<Measured> {
    let seccomp_refine = || std::process::Command::new(&context.seccomp_refine);
    let dynamic = dir.join("dynamic");
    let merged = dir.join("merged");
    let wide = dir.join("wide");
    println!("  {}: trace with a workload", app.name);
    output(
        seccomp_refine()
            .args(["trace", "--force", app.image, "--no-static", "--duration", "60s", "--workload", app.workload, "-o"])
            .arg(&dynamic),
    )?;
    println!("  {}: trace with verify's workload steps", app.name);
    output(
        seccomp_refine()
            .args(["trace", "--force", app.image, "--no-static", "--duration", "120s", "--workload", app.wide, "-o"])
            .arg(&wide),
    )?;
    // Timed cold: no summary cache, every file analysed again.
    println!("  {}: analyze", app.name);
    let analyze = |out: &Path, bitcode: Option<&Path>| -> Result<f64> {
        let mut command = seccomp_refine();
        command.args(["analyze", "--force", "--no-cache"]).arg(dynamic.join("trace.json"));
        if let Some(bitcode) = bitcode {
            command.arg("--bitcode").arg(bitcode);
        }
        let started = Instant::now();
        output(command.arg("-o").arg(out))?;
        Ok(started.elapsed().as_secs_f64())
    };
    let analyze_seconds = analyze(&merged, None)?;
    println!("  {}: analyze with the application's bitcode", app.name);
    crate::bitcode::build(&[app.name.to_owned()])?;
    let merged_bitcode = dir.join("merged-bitcode");
    let bitcode = crate::project_root().join(format!("target/bitcode/{}.bc", app.name));
    let bitcode_seconds = analyze(&merged_bitcode, Some(&bitcode))?;
    println!("  {}: precision against both traces", app.name);
    let mut precision = Vec::new();
    for (name, label) in MEASURED {
        // `precision` exits 1 when a profile denies an observed syscall: the JSON says which.
        let out = seccomp_refine()
            .arg("precision")
            .arg(dir.join(name))
            .arg(dynamic.join("trace.json"))
            .arg(wide.join("trace.json"))
            .arg("--json")
            .output()
            .context("cannot run seccomp-refine precision")?;
        let phases = serde_json::from_slice(&out.stdout).with_context(|| {
            format!("seccomp-refine precision of {name} printed no JSON: {}", String::from_utf8_lossy(&out.stderr))
        })?;
        precision.push((label, phases));
    }
    println!("  {}: verify the merged profile", app.name);
    let verify_json = dir.join("verify.json");
    // verify exits 1 when something was denied: the report says what, so the status is not an error.
    let _ = std::process::Command::new(&context.seccomp_refine)
        .args(["verify", "--force", app.image, "--profile"])
        .arg(merged.join("seccomp.json"))
        .arg("--json")
        .arg(&verify_json)
        .output()
        .context("cannot run seccomp-refine verify")?;
    let report = read_json(&verify_json)?;
    let describe = |denial: &Value| {
        format!("{} ({})", denial["syscall"].as_str().unwrap_or("?"), denial["phase"].as_str().unwrap_or("?"))
    };
    let all = report["denials"].as_array().context("verify.json has no denials list")?;
    // A call glibc retries with an older one the profile allows is a fallback, not a denial.
    let denials: Vec<String> = all.iter().filter(|denial| denial["fallback"].is_null()).map(describe).collect();
    let fallbacks: Vec<String> = all.iter().filter(|denial| !denial["fallback"].is_null()).map(describe).collect();
    let steps = report["workload"]["steps"].as_array().map_or(0, Vec::len);
    let failed_steps = report["workload"]["steps"]
        .as_array()
        .map_or(0, |steps| steps.iter().filter(|step| step["ok"] == false).count());
    let started = report["started"].as_bool().unwrap_or(false);
    Ok(Measured {
        dynamic: profile_sizes(&dynamic)?.0,
        reachable: reachable_sizes(&merged.join("analysis.json"))?,
        merged: profile_sizes(&merged)?.0,
        narrowed: profile_sizes(&merged)?.1,
        merged_bitcode: profile_sizes(&merged_bitcode)?.0,
        precision,
        analyze_seconds,
        bitcode_seconds,
        verdict: if started && denials.is_empty() && failed_steps == 0 { "passed" } else { "FAILED" }.to_owned(),
        denied: match (denials.is_empty(), fallbacks.is_empty()) {
            (true, true) => "0".to_owned(),
            (true, false) => format!("0 (libc fallbacks: {})", fallbacks.join(", ")),
            _ => denials.join(", "),
        },
        workload: format!("{} of {steps} steps succeeded", steps - failed_steps),
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Allowed names in `seccomp-init.json`, `seccomp-serving.json` and `seccomp.json` of `dir`
/// (whatever rule allows them), and how many of them only with certain arguments.
fn profile_sizes(dir: &Path) -> Result<([usize; 3], [usize; 3])> {
    let count = |file: &str| -> Result<(usize, usize)> {
        let profile = read_json(&dir.join(file))?;
        let rules = profile["syscalls"].as_array().with_context(|| format!("{file} has no rules"))?;
        let allowing = rules.iter().filter(|rule| rule["action"] == "SCMP_ACT_ALLOW");
        let names = |rule: &Value| -> Vec<String> {
            rule["names"]
                .as_array()
                .map_or(Vec::new(), |names| names.iter().filter_map(|name| name.as_str().map(str::to_owned)).collect())
        };
        let allowed: std::collections::BTreeSet<String> = allowing.clone().flat_map(names).collect();
        let unconditional: std::collections::BTreeSet<String> =
            allowing.filter(|rule| rule.get("args").is_none()).flat_map(names).collect();
        if allowed.is_empty() {
            bail!("{file} has no allow rule");
        }
        Ok((allowed.len(), allowed.difference(&unconditional).count()))
    };
    let files = [count("seccomp-init.json")?, count("seccomp-serving.json")?, count("seccomp.json")?];
    Ok((files.map(|(allowed, _)| allowed), files.map(|(_, narrowed)| narrowed)))
}

/// Names with `reachable` evidence per phase in `analysis.json` (the container column: their union).
fn reachable_sizes(analysis: &Path) -> Result<[usize; 3]> {
    let analysis = read_json(analysis)?;
    let reachable = |phase: &str| -> std::collections::BTreeSet<String> {
        analysis["phases"][phase]
            .as_object()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|(_, evidence)| evidence["reachable"].is_object())
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (init, serving) = (reachable("init"), reachable("serving"));
    Ok([init.len(), serving.len(), init.union(&serving).count()])
}

/// The Docker default row of `report.md` (moby's default.json, counted by the report).
fn docker_default_count(report: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(report).with_context(|| format!("cannot read {}", report.display()))?;
    let row = text.lines().find(|line| line.starts_with("| Docker default |"));
    let Some(count) = row.and_then(|row| row.split('|').nth(2)).and_then(|cell| cell.trim().parse().ok()) else {
        bail!("no Docker default row in {}", report.display());
    };
    Ok(count)
}
