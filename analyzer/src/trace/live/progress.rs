//! The live progress line on a terminal: elapsed of total, distinct syscalls per phase, lost events.
//!
//! Hidden when stderr is not a terminal, so logs and tests see only the final summary.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    total: Duration,
}

/// What the progress line shows besides the time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub runtime: usize,
    pub init: usize,
    pub serving: usize,
    pub lost_events: u64,
}

impl Progress {
    pub fn new(total: Duration) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} tracing {msg}").expect("a valid template"));
        Progress { bar, total }
    }

    pub fn update(&self, elapsed: Duration, counts: Counts) {
        let seconds = |duration: Duration| duration.as_secs();
        self.bar.set_message(format!(
            "{}s/{}s · syscalls: runtime {} · init {} · serving {} · lost events {}",
            seconds(elapsed),
            seconds(self.total),
            counts.runtime,
            counts.init,
            counts.serving,
            counts.lost_events
        ));
        self.bar.tick();
    }

    /// Prints a line above the progress line (or plainly, off a terminal).
    pub fn note(&self, line: &str) {
        self.bar.suspend(|| eprintln!("seccomp-refine: {line}"));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
