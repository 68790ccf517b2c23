//! The phase marker: what ends `init` and starts `serving`, as written in `--phase-marker`.
//!
//! Parsing only; each source applies the marker its own way (the tracer in the kernel or from
//! userspace, `.scap` import on the event stream).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::syscalls::Arch;

/// A parsed `--phase-marker`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarkerSpec {
    /// `symbol:FUNC[@BINARY]`: the first call of a function (a uprobe), in BINARY or the entrypoint.
    Symbol { function: String, binary: Option<String> },
    /// `syscall:NAME`: the first NAME after start.
    Syscall(String),
    /// `ready:tcp:PORT`: once the container's PORT accepts connections.
    ReadyTcp(u16),
    /// `after:DURATION`: a fixed time after start (`30s`, `500ms`, `2m`).
    After(Duration),
    /// `auto`: live, per process, the first accept-family or epoll wait after a `listen`, then the
    /// serving entry derived from the stack of such a wait that blocks (`crate::stack`); on a
    /// capture, the first such wait moves the whole container.
    Auto,
}

/// What a marker moves to serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MarkerScope {
    /// Only the process that hits it, and the processes it forks afterwards (`symbol:`): how the
    /// serving filter is enforced, per process at the serving entry.
    Process,
    /// The whole container at once.
    Container,
}

/// What `--help` says about the marker.
pub const HELP: &str = "\
What ends the init phase and starts serving:
  symbol:FUNC[@BINARY]  first call of FUNC (uprobe), e.g.
                        symbol:ngx_process_events_and_timers; per process: a process serves
                        from its own first call, processes it forks afterwards serve too,
                        the others stay in init
  syscall:NAME          first NAME syscall after start, e.g. syscall:accept4
  ready:tcp:PORT        once the container's PORT accepts TCP connections
  after:DURATION        a fixed time after start, e.g. after:5s
  auto                  live: per process, the first accept/accept4/epoll_wait/epoll_pwait
                        after a listen, and the first call of the serving entry found in the
                        stack of such a wait that blocks (a uprobe, as symbol:); on a capture:
                        the first such wait, for the whole container
All but symbol: and a live auto move the whole container at once, when they first fire.";

impl FromStr for MarkerSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<MarkerSpec, String> {
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        match (kind, rest) {
            ("auto", "") => Ok(MarkerSpec::Auto),
            ("symbol", spec) if !spec.is_empty() => {
                let (function, binary) = match spec.split_once('@') {
                    Some((function, binary)) if !binary.is_empty() => (function, Some(binary.to_owned())),
                    Some(_) => return Err(format!("`{text}`: nothing after `@`; give a binary path or drop the `@`")),
                    None => (spec, None),
                };
                if function.is_empty() {
                    return Err(format!("`{text}`: no function name"));
                }
                Ok(MarkerSpec::Symbol { function: function.to_owned(), binary })
            }
            ("syscall", name) => match Arch::host().number(name) {
                Some(_) => Ok(MarkerSpec::Syscall(name.to_owned())),
                None => Err(format!("`{name}` is not a {} syscall", Arch::host())),
            },
            ("ready", spec) => match spec.strip_prefix("tcp:").map(str::parse::<u16>) {
                Some(Ok(port)) if port != 0 => Ok(MarkerSpec::ReadyTcp(port)),
                _ => Err(format!("`{text}`: expected ready:tcp:PORT with a port from 1 to 65535")),
            },
            ("after", duration) => parse_duration(duration).map(MarkerSpec::After),
            _ => Err(format!("unknown phase marker `{text}`; expected symbol:, syscall:, ready:tcp:, after: or auto")),
        }
    }
}

impl fmt::Display for MarkerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkerSpec::Symbol { function, binary: Some(binary) } => write!(f, "symbol:{function}@{binary}"),
            MarkerSpec::Symbol { function, binary: None } => write!(f, "symbol:{function}"),
            MarkerSpec::Syscall(name) => write!(f, "syscall:{name}"),
            MarkerSpec::ReadyTcp(port) => write!(f, "ready:tcp:{port}"),
            MarkerSpec::After(duration) => write!(f, "after:{}", humantime::format_duration(*duration)),
            MarkerSpec::Auto => f.write_str("auto"),
        }
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h30m` (for `--duration` as well as `after:`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("`{text}` is not a duration like 30s, 500ms or 2m: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back() {
        for text in [
            "auto",
            "symbol:aeMain",
            "symbol:ngx_worker@/usr/sbin/nginx",
            "syscall:accept4",
            "ready:tcp:80",
            "after:5s",
        ] {
            let spec: MarkerSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!("after:1m30s".parse::<MarkerSpec>(), Ok(MarkerSpec::After(Duration::from_secs(90))));
    }

    #[test]
    fn mistakes_are_explained() {
        for (text, expected) in [
            ("syscall:accept5", "not a x86_64 syscall"),
            ("ready:tcp:0", "expected ready:tcp:PORT"),
            ("ready:udp:53", "expected ready:tcp:PORT"),
            ("after:soon", "not a duration"),
            ("symbol:", "unknown phase marker"),
            ("symbol:f@", "nothing after `@`"),
            ("when-ready", "unknown phase marker"),
        ] {
            let err = text.parse::<MarkerSpec>().unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
