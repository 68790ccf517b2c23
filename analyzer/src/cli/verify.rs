//! `seccomp-refine verify`: run an image under a profile and report what the profile broke.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Outcome;
use crate::trace::parse_duration;
use crate::verify::{self, Workload};

/// Run IMAGE under a seccomp profile, drive a workload, and report every denied syscall.
///
/// Reports whether the container started, whether the workload succeeded, and exactly which
/// syscalls the profile denied, by which process, in which phase (runtime: the container runtime
/// before exec; init: until the first exposed port accepts connections; serving: from the
/// workload's start). Without --workload, known images get a built-in workload: nginx (curl, a
/// wrk burst, nginx -s reload, log reopen with SIGUSR1) and redis (redis-benchmark, BGSAVE,
/// CONFIG REWRITE). Needs root and Docker. Exits 1 when anything was denied or failed.
#[derive(clap::Args)]
pub struct Args {
    /// The image to run (e.g. nginx:latest).
    image: String,
    /// The profile to apply: Docker JSON, or an OCI config.json (fragment) with linux.seccomp.
    #[arg(long, value_name = "FILE", required_unless_present = "enforce", conflicts_with = "enforce")]
    profile: Option<PathBuf>,
    /// Verify enforcement instead: run under DIR/seccomp.json and switch each process to
    /// DIR/seccomp-serving.json when it reaches the `auto` phase marker (as `enforce` does); the
    /// denials of either profile are reported by phase.
    #[arg(long, value_name = "DIR")]
    enforce: Option<PathBuf>,
    /// A shell command run on the host once the container is ready, with SECCOMP_REFINE_HOST,
    /// SECCOMP_REFINE_PORT and SECCOMP_REFINE_CONTAINER set [default: built-in for nginx and redis].
    #[arg(long, value_name = "CMD")]
    workload: Option<String>,
    /// How long the workload may take; without a workload, how long the container runs.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Environment for the container (KEY=VALUE), repeatable.
    #[arg(short, long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Also write the full result as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The command to run instead of the image's default.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: Args) -> Result<Outcome> {
    if let Some(path) = &args.json {
        crate::output::check(path)?;
    }
    let config = verify::Config {
        image: args.image,
        command: args.command,
        profile: match (&args.profile, &args.enforce) {
            (Some(profile), _) => profile.clone(),
            (None, Some(dir)) => dir.join(crate::enforce::CONTAINER_PROFILE),
            (None, None) => unreachable!("clap requires --profile without --enforce"),
        },
        enforce: args.enforce,
        workload: args.workload.map_or(Workload::Auto, Workload::Shell),
        duration: args.duration,
        env: args.env,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(verify::run(&config))?;
    println!("{report}");
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("a report always serializes");
        crate::output::write(path, json.as_bytes())?;
    }
    Ok(if report.passed() { Outcome::Clean } else { Outcome::Found })
}
