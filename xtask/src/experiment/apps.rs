//! The applications of `cargo xtask experiment`, as data: how each image is made, what its trace
//! runs, and which test suite judges its profiles.
//!
//! Nothing else in the experiment knows an application by name. An application is a Debian
//! package served from a debootstrapped image (`fixups` shape it like the official image and add
//! what the suite exercises), a short `workload` for the trace (the evidence the profiles are made
//! from), and a `suite`: a shell script run on the host against the running container, printing
//! one `[ok]: NAME`, `[err]: NAME`, `[exception]: NAME`, `[skip]: NAME` or `[ignore]: NAME` line per
//! test (the markers of redis's own test suite, which the built-in HTTP suite prints too).

/// One application.
pub struct App {
    pub name: &'static str,
    /// The Debian package whose version the report gives.
    pub package: &'static str,
    /// What debootstrap includes, comma-separated.
    pub packages: &'static str,
    /// `docker import --change` instructions: the official image's command, ports, environment.
    pub changes: &'static [&'static str],
    /// Shell run in the rootfs after debootstrap, in order.
    pub fixups: &'static [&'static str],
    /// `trace --workload`, `verify --workload`: the evidence the profiles are made from.
    pub workload: &'static str,
    /// Host packages the workload and the suite run.
    pub host_packages: &'static [&'static str],
    pub suite: Suite,
}

/// A test suite: a script and what it needs.
pub struct Suite {
    /// For the report: what it is and what it leaves out.
    pub description: &'static str,
    /// A Debian source package whose upstream tarball holds the suite; unpacked for the
    /// release under test, its directory is `$SUITE_SRC`.
    pub source: Option<&'static str>,
    /// The script, run with `sh` and `SECCOMP_REFINE_HOST`, `SECCOMP_REFINE_PORT`,
    /// `SUITE_IMAGE`, `SUITE_SRC`, `SUITE_LOG` and `env` set, and `SECCOMP_REFINE_CONTAINER`
    /// where the runner knows it (`verify` does, `trace` does not).
    pub script: &'static str,
    /// Extra environment for the script.
    pub env: &'static [(&'static str, &'static str)],
}

const HTTP_WORKLOAD: &str = "wrk -t1 -c8 -d3s http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/ && \
                             curl -s http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT/missing >/dev/null";

/// The documents the HTTP suite fetches: a small text file (gzip), a large binary one (sendfile,
/// ranges), a directory to list, an error page.
const HTTP_CONTENT: &str = "mkdir -p /var/www/html/files && \
     echo '<h1>seccomp-refine experiment</h1>' > /var/www/html/index.html && \
     echo '<h1>seccomp-refine: not found</h1>' > /var/www/html/404.html && \
     seq 1 20000 > /var/www/html/files/small.txt && \
     head -c 8388608 /dev/urandom > /var/www/html/files/large.bin";

/// The address the HTTP suite publishes its upstream on: Docker's default bridge gateway.
const UPSTREAM: &str = "172.17.0.1:18080";

/// The wide built-in suite for HTTP servers: none of the three ships an upstream suite that
/// targets a running server. The server's signals come from `RELOAD_SIGNAL`, `REOPEN_SIGNAL`
/// and `STOP_SIGNAL`; the graceful stop is the last test.
const HTTP_SUITE: &str = r#"
B="http://$SECCOMP_REFINE_HOST:$SECCOMP_REFINE_PORT"
# `trace --workload` names no container: it is the one at the address.
C="${SECCOMP_REFINE_CONTAINER:-$(docker ps -q | xargs docker inspect -f '{{.Id}} {{.NetworkSettings.IPAddress}}' | awk -v ip="$SECCOMP_REFINE_HOST" '$2 == ip { print $1 }')}"
step() { name=$1; shift; echo "== $name" >>"$SUITE_LOG"; if "$@" >>"$SUITE_LOG" 2>&1; then echo "[ok]: $name"; else echo "[err]: $name"; fi; }
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
serving() { for i in $(seq 600); do [ "$(code "$B/")" = 200 ] && return 0; sleep 0.1; done; return 1; }
up=$(docker run -d --rm --log-opt max-size=1m --label io.seccomp-refine.experiment=1 -p "$SUITE_UPSTREAM:$SECCOMP_REFINE_PORT" "$SUITE_IMAGE") || exit 1
trap 'docker rm -f "$up" >/dev/null 2>&1' EXIT
for i in $(seq 600); do [ "$(code "http://$SUITE_UPSTREAM/")" = 200 ] && break; sleep 0.1; done
index() { curl -fsS --max-time 10 "$B/" | grep -q 'seccomp-refine experiment'; }
head_only() { curl -fsSI --max-time 10 "$B/" | grep -qi '^content-length'; }
small() { [ "$(curl -fsS --max-time 10 "$B/files/small.txt" | wc -l)" = 20000 ]; }
large() { [ "$(curl -fsS --max-time 30 "$B/files/large.bin" | wc -c)" = 8388608 ]; }
range() { [ "$(code -r 1000-1999 "$B/files/large.bin")" = 206 ] && [ "$(curl -fsS -r 1000-1999 "$B/files/large.bin" | wc -c)" = 1000 ]; }
ranges() { case "$(code -r 0-9,100-109 "$B/files/large.bin")" in 200|206) true;; *) false;; esac; }
gzipped() { curl -fsS -H 'Accept-Encoding: gzip' -D - -o /dev/null "$B/files/small.txt" | grep -qi '^content-encoding: *gzip'; }
not_modified() { since=$(curl -fsSI "$B/files/small.txt" | tr -d '\r' | sed -n 's/^[Ll]ast-[Mm]odified: //p') && [ "$(code -H "If-Modified-Since: $since" "$B/files/small.txt")" = 304 ]; }
listing() { curl -fsS --max-time 10 "$B/files/" | grep -q 'large.bin'; }
missing() { [ "$(code "$B/seccomp-refine-missing")" = 404 ] && curl -s "$B/seccomp-refine-missing" | grep -q 'seccomp-refine: not found'; }
post() { [ "$(code -X POST -d x=1 "$B/files/small.txt")" != 000 ]; }
proxied() { curl -fsS --max-time 10 "$B/proxy/files/small.txt" | tail -1 | grep -qx 20000; }
# A read error is a keep-alive connection the server closed as wrk wrote to it: a race, not a failure.
burst() { out=$(wrk -t2 -c32 -d3s "$B/files/small.txt") && echo "$out" && echo "$out" | grep -q 'requests in' && ! echo "$out" | grep -q 'Non-2xx\|Socket errors: connect [1-9]'; }
signal() { docker kill -s "$1" "$C" >/dev/null && sleep 1 && serving && index; }
stop() { docker kill -s "$STOP_SIGNAL" "$C" >/dev/null && [ "$(timeout 30 docker wait "$C")" = 0 ]; }
step "GET / (small file)" index
step "HEAD /" head_only
step "GET a 20000-line text file" small
step "GET an 8 MiB file (sendfile)" large
step "GET a byte range (206)" range
step "GET two byte ranges" ranges
step "gzip-encoded response" gzipped
step "If-Modified-Since (304)" not_modified
step "directory listing" listing
step "custom 404 page" missing
step "POST to a static file" post
step "proxied to an upstream container" proxied
step "wrk burst, 32 connections" burst
step "reload (SIG$RELOAD_SIGNAL)" signal "$RELOAD_SIGNAL"
step "log reopen (SIG$REOPEN_SIGNAL)" signal "$REOPEN_SIGNAL"
step "after reload: proxied" proxied
step "after reload: an 8 MiB file" large
step "graceful stop (SIG$STOP_SIGNAL), exit 0" stop
"#;

const HTTP_SUITE_DESCRIPTION: &str = "built-in HTTP suite (18 tests): small and 8 MiB files (sendfile), \
     HEAD, byte ranges, gzip, 304, directory listing, custom 404, POST, a proxied upstream in a second \
     container, a wrk burst, reload, log reopen, graceful stop";

/// redis's own suite in external-server mode, one unit at a time (an exception in one unit, e.g.
/// a test that reads the server's pid, ends only that unit). Skipped by tag: replication (it needs
/// a second server the suite starts) and tests that need the server's local process; tests tagged
/// `external:skip` skip themselves.
const REDIS_SUITE: &str = r#"
cd "$SUITE_SRC" || exit 1
for unit in tests/unit/*.tcl tests/unit/type/*.tcl tests/integration/*.tcl; do
  unit=${unit#tests/}; unit=${unit%.tcl}
  echo "== $unit" >>"$SUITE_LOG"
  # A unit an exception cut short leaves its delays set (a save delay of 2^31 µs per key makes every
  # later fork wait for ever); a restarted server, as the suite normally gets, would not have them.
  for delay in rdb-key-save-delay key-load-delay; do
    redis-cli -h "$SECCOMP_REFINE_HOST" -p "$SECCOMP_REFINE_PORT" CONFIG SET "$delay" 0 >>"$SUITE_LOG" 2>&1
  done
  timeout 600 ./runtest --host "$SECCOMP_REFINE_HOST" --port "$SECCOMP_REFINE_PORT" --single "$unit" \
    --tags -needs:repl --tags -needs:local-process --clients 1 >>"$SUITE_LOG" 2>&1
  [ $? = 124 ] && echo "[err]: $unit timed out after 600 s"
done
sed 's/\x1b\[[0-9;]*m//g' "$SUITE_LOG" | grep -E '^\[(ok|err|exception|skip|ignore)\]:'
"#;

pub const APPS: &[App] = &[
    App {
        name: "nginx",
        package: "nginx",
        packages: "nginx",
        changes: &[r#"CMD ["nginx", "-g", "daemon off;"]"#, "EXPOSE 80/tcp"],
        fixups: &[
            HTTP_CONTENT,
            r#"cat > /etc/nginx/sites-enabled/default <<'EOF'
server {
    listen 80 default_server;
    root /var/www/html;
    index index.html;
    gzip on;
    gzip_types text/plain;
    gzip_min_length 1;
    error_page 404 /404.html;
    location /files/ { autoindex on; }
    location /proxy/ { proxy_pass http://172.17.0.1:18080/; }
}
EOF"#,
        ],
        workload: HTTP_WORKLOAD,
        host_packages: &["curl", "wrk"],
        suite: Suite {
            description: HTTP_SUITE_DESCRIPTION,
            source: None,
            script: HTTP_SUITE,
            env: &[
                ("RELOAD_SIGNAL", "HUP"),
                ("REOPEN_SIGNAL", "USR1"),
                ("STOP_SIGNAL", "QUIT"),
                ("SUITE_UPSTREAM", UPSTREAM),
            ],
        },
    },
    App {
        name: "apache2",
        package: "apache2",
        packages: "apache2",
        changes: &[
            r#"CMD ["apache2", "-D", "FOREGROUND"]"#,
            "EXPOSE 80/tcp",
            "ENV APACHE_RUN_USER=www-data APACHE_RUN_GROUP=www-data APACHE_RUN_DIR=/run/apache2 \
             APACHE_PID_FILE=/run/apache2/apache2.pid APACHE_LOCK_DIR=/run/lock/apache2 APACHE_LOG_DIR=/var/log/apache2",
        ],
        fixups: &[
            HTTP_CONTENT,
            "a2enmod -q proxy_http >/dev/null && mkdir -p /run/apache2 /run/lock/apache2",
            r#"cat > /etc/apache2/sites-enabled/000-default.conf <<'EOF'
ServerName localhost
<VirtualHost *:80>
    DocumentRoot /var/www/html
    ErrorDocument 404 /404.html
    ProxyPass /proxy/ http://172.17.0.1:18080/
    <Directory /var/www/html/files>
        Options +Indexes
    </Directory>
</VirtualHost>
EOF"#,
        ],
        workload: HTTP_WORKLOAD,
        host_packages: &["curl", "wrk"],
        suite: Suite {
            description: HTTP_SUITE_DESCRIPTION,
            source: None,
            script: HTTP_SUITE,
            // USR1 is apache's graceful restart, HUP its restart (both reopen the logs), WINCH its graceful stop.
            env: &[
                ("RELOAD_SIGNAL", "USR1"),
                ("REOPEN_SIGNAL", "HUP"),
                ("STOP_SIGNAL", "WINCH"),
                ("SUITE_UPSTREAM", UPSTREAM),
            ],
        },
    },
    App {
        name: "lighttpd",
        package: "lighttpd",
        // mod_deflate is a package of its own since bookworm.
        packages: "lighttpd,lighttpd-mod-deflate",
        changes: &[r#"CMD ["lighttpd", "-D", "-f", "/etc/lighttpd/lighttpd.conf"]"#, "EXPOSE 80/tcp"],
        fixups: &[
            HTTP_CONTENT,
            r#"cat > /etc/lighttpd/conf-enabled/90-experiment.conf <<'EOF'
server.modules += ( "mod_proxy", "mod_deflate" )
deflate.mimetypes = ( "text/" )
deflate.allowed-encodings = ( "gzip" )
server.errorfile-prefix = "/var/www/html/"
$HTTP["url"] =~ "^/files/" { dir-listing.activate = "enable" }
$HTTP["url"] =~ "^/proxy/" {
    proxy.server = ( "" => ( ( "host" => "172.17.0.1", "port" => 18080 ) ) )
    proxy.header = ( "map-urlpath" => ( "/proxy/" => "/" ) )
}
EOF"#,
        ],
        workload: HTTP_WORKLOAD,
        host_packages: &["curl", "wrk"],
        suite: Suite {
            description: HTTP_SUITE_DESCRIPTION,
            source: None,
            script: HTTP_SUITE,
            // USR1 is lighttpd's graceful restart, HUP reopens its logs, INT is its graceful stop.
            env: &[
                ("RELOAD_SIGNAL", "USR1"),
                ("REOPEN_SIGNAL", "HUP"),
                ("STOP_SIGNAL", "INT"),
                ("SUITE_UPSTREAM", UPSTREAM),
            ],
        },
    },
    App {
        name: "redis",
        package: "redis-server",
        packages: "redis-server",
        changes: &[r#"CMD ["redis-server", "/etc/redis/experiment.conf"]"#, "EXPOSE 6379/tcp", "WORKDIR /data"],
        // The suite's DEBUG and CONFIG SET dir tests need these switched on where the version has them.
        fixups: &[r#"mkdir -p /data && {
    echo 'protected-mode no'; echo 'dir /data'
    for option in enable-debug-command enable-protected-configs; do
        grep -q "^# *$option" /etc/redis/redis.conf && echo "$option yes"
    done; true
} > /etc/redis/experiment.conf"#],
        workload: "redis-benchmark -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT -n 5000 -q >/dev/null && \
                   redis-cli -h $SECCOMP_REFINE_HOST -p $SECCOMP_REFINE_PORT SET experiment 1 >/dev/null",
        host_packages: &["redis-tools", "tcl"],
        suite: Suite {
            description: "redis's own test suite from Debian's source package, external-server mode, unit by \
                          unit; skipped: tests tagged needs:repl (a replica the suite starts) and \
                          needs:local-process, and those redis tags external:skip",
            source: Some("redis"),
            script: REDIS_SUITE,
            env: &[],
        },
    },
];
