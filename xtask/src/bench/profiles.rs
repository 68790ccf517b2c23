//! profiles: how tight the profiles are and whether the application still works under them.
//!
//! For each stand-in (nginx, redis): a trace with a workload (`--no-static`: the dynamic
//! profiles), `analyze` over that trace (the static reach and the merged profiles), and `verify`
//! of the merged container profile under the image's default workload — the paths a short trace
//! misses (nginx reload, log reopen; redis BGSAVE, CONFIG REWRITE): it must deny nothing. The
//! counts stand next to Docker's default profile and the published numbers of the peers
//! (`../shared/notes/peers.md` § 4). This benchmark compares sizes, not times: it runs once.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::report::{Bar, Section, Table};
use super::{Context, output};

/// One application: the stand-in, and the workload its trace runs.
struct App {
    name: &'static str,
    image: &'static str,
    workload: &'static str,
    /// Published init / serving counts: seed, Temporal Specialization, SysPart.
    published: [(&'static str, u32, u32); 3],
}

const APPS: [App; 2] = [
    App {
        name: "nginx",
        image: "nginx:latest",
        workload: "wrk -t1 -c8 -d5s http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/ && \
                   curl -s http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/missing >/dev/null",
        published: [("seed", 156, 147), ("Temporal Specialization", 104, 97), ("SysPart", 108, 104)],
    },
    App {
        name: "redis",
        image: "redis:latest",
        workload: "redis-benchmark -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT -n 5000 -q >/dev/null && \
                   redis-cli -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT SET bench 1 >/dev/null",
        published: [("seed", 137, 129), ("Temporal Specialization", 90, 82), ("SysPart", 92, 85)],
    },
];

pub fn run(context: &Context) -> Result<Section> {
    let mut counts = Table::new(&["application", "profile", "init", "serving", "container (seccomp.json)"]);
    let mut verified = Table::new(&["application", "verify of the merged seccomp.json", "denied syscalls", "workload"]);
    let mut bars = Vec::new();
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
    std::fs::remove_dir_all(&work).ok();
    Ok(Section {
        name: "profiles".to_owned(),
        measured_at: String::new(),
        description: "Allowed syscalls per phase for the stand-ins, x86_64 names. Dynamic: `trace --no-static` with a \
                      workload (nginx: wrk and a 404; redis: redis-benchmark and a SET). Static: what `analyze` finds \
                      reachable. Merged: observed ∪ reachable, plus the always-allowed calls, as `trace` writes them; with \
                      the application's own code from its bitcode (`cargo xtask bitcode`) instead of its binary. \
                      Of the merged names, those allowed only with \
                      certain argument values (`docs/arguments.md`). The container profile also holds what runc does \
                      under the filter. Published numbers: \
                      `../shared/notes/peers.md` § 4. Verify runs the image's built-in workload (nginx: pages, a 404, \
                      wrk, reload, USR1 log reopen; redis: redis-benchmark, BGSAVE, CONFIG REWRITE) under the merged \
                      container profile; goal: nothing denied."
            .to_owned(),
        tables: vec![counts, verified],
        samples: Vec::new(),
        bars,
    })
}

/// Profile sizes as [init, serving, container], and the verify outcome.
struct Measured {
    dynamic: [usize; 3],
    reachable: [usize; 3],
    merged: [usize; 3],
    /// Of `merged`, the names allowed only with certain arguments (docs/arguments.md).
    narrowed: [usize; 3],
    merged_bitcode: [usize; 3],
    verdict: String,
    denied: String,
    workload: String,
}

fn measure(context: &Context, app: &App, dir: &Path) -> Result<Measured> {
    let seccomp_refine = || std::process::Command::new(&context.seccomp_refine);
    let dynamic = dir.join("dynamic");
    let merged = dir.join("merged");
    println!("  {}: trace with a workload", app.name);
    output(
        seccomp_refine()
            .args(["trace", "--force", app.image, "--no-static", "--duration", "60s", "--workload", app.workload, "-o"])
            .arg(&dynamic),
    )?;
    println!("  {}: analyze", app.name);
    output(seccomp_refine().args(["analyze", "--force"]).arg(dynamic.join("trace.json")).arg("-o").arg(&merged))?;
    println!("  {}: analyze with the application's bitcode", app.name);
    crate::bitcode::build(&[app.name.to_owned()])?;
    let merged_bitcode = dir.join("merged-bitcode");
    let bitcode = crate::project_root().join(format!("target/bitcode/{}.bc", app.name));
    output(
        seccomp_refine()
            .args(["analyze", "--force"])
            .arg(dynamic.join("trace.json"))
            .arg("--bitcode")
            .arg(&bitcode)
            .arg("-o")
            .arg(&merged_bitcode),
    )?;
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
