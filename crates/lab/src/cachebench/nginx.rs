//! The reference: nginx `proxy_cache` in front of an nginx origin, TLS 1.3 with an ECDSA P-256
//! certificate and AES-128-GCM (as Flotilla), one worker on the server's core, loaded by wrk
//! on the load core. A Lua script in wrk checks every measured response is a cache HIT.
//! nginx runs in its own process group and [`Nginx`]'s Drop stops it, also on failure.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use wire::pki::{ClusterCa, Role};
use xshell::{cmd, Shell};

use super::Cell;

/// How long nginx gets to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nginx gets to stop after SIGTERM before its group is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a starting or stopping nginx is looked at.
const POLL: Duration = Duration::from_millis(20);
/// wrk's per-request timeout (its default, 2 s, is close to a 5 MB reply on a busy core).
const WRK_TIMEOUT: &str = "10s";
/// Marks the line of wrk's output that the Lua script writes.
const RESULT_MARK: &str = "FLOTILLA_WRK ";

/// Installs nginx-light and wrk from Debian's packages when they are missing.
pub fn ensure_tools(sh: &Shell) -> anyhow::Result<()> {
    chaos::tools::ensure(sh, "nginx", "nginx-light")?;
    chaos::tools::ensure(sh, "wrk", "wrk")
}

/// A running nginx (cache and origin in one process, one worker).
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    /// The TLS port of the cache.
    pub port: u16,
}

/// A free TCP port on 127.0.0.1 (free when asked; nginx binds it right after).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

impl Nginx {
    /// Writes the configuration and a fresh certificate into `dir` and starts nginx on
    /// `core`, serving `objects` through its cache; returns once it accepts connections.
    pub fn start(dir: &Path, objects: &Path, core: usize) -> anyhow::Result<Nginx> {
        stop_leftover(dir);
        // The cache of an earlier run would make the warm-up a hit already; start empty.
        let _ = fs::remove_dir_all(dir);
        for sub in ["cache", "temp", "logs"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        // A throwaway CA made as the cluster's is: ECDSA P-256, like every Flotilla cert.
        let issued = ClusterCa::generate()
            .and_then(|ca| ca.issue(Role::Canonical))
            .context("making nginx's certificate")?;
        fs::write(dir.join("cert.pem"), &issued.cert_pem)?;
        fs::write(dir.join("key.pem"), &issued.key_pem)?;
        let port = free_port()?;
        let origin_port = free_port()?;
        let config = config(dir, objects, port, origin_port);
        fs::write(dir.join("nginx.conf"), config)?;
        let error_log = dir.join("logs/error.log");
        let child = Command::new("taskset")
            .arg("-c")
            .arg(core.to_string())
            .arg("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(&error_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Nginx {
            child,
            dir: dir.to_path_buf(),
            port,
        };
        nginx.wait_until_ready()?;
        Ok(nginx)
    }

    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                anyhow::bail!(
                    "nginx stopped while starting ({status}): {}",
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(&address, POLL).is_ok() {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                anyhow::bail!(
                    "nginx did not accept connections on {address} within {} s: {}",
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The last lines of nginx's error log, on one line.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        match lines[lines.len().saturating_sub(3)..].join(" | ") {
            tail if tail.is_empty() => "its error log is empty".to_string(),
            tail => tail,
        }
    }

    /// The URL of object `id` through the cache.
    pub fn url(&self, id: u64) -> String {
        format!("https://127.0.0.1:{}/{id}.bin", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) with a negative pid signals the process group nginx leads (it was
        // started with process_group(0)); no memory is involved.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < STOP_GRACE {
            if let Ok(Some(_)) = self.child.try_wait() {
                // The workers leave with their master; a straggler gets the KILL below.
                break;
            }
            std::thread::sleep(POLL);
        }
        // SAFETY: as above; a group that is gone makes this a harmless ESRCH.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Stops the nginx an interrupted run left behind (Ctrl-C ends xtask before its guards run;
/// nginx, in a process group of its own, keeps running): the pid in its pid file, if that
/// process is still an nginx.
fn stop_leftover(dir: &Path) {
    let Some(pid) = fs::read_to_string(dir.join("nginx.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains("nginx") {
        eprintln!("bench cache: stopping the nginx (pid {pid}) an earlier run left running");
        // SAFETY: kill(2) on a pid that is an nginx master; SIGQUIT lets it stop its workers.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let started = Instant::now();
        while started.elapsed() < STOP_GRACE && Path::new(&format!("/proc/{pid}")).exists() {
            std::thread::sleep(POLL);
        }
    }
}

/// nginx's configuration: `sendfile on` with `tcp_nopush off` (with it on, loopback shows
/// 40 ms stalls), `proxy_cache_lock on`, a keep-alive upstream, TLS 1.3 only with
/// AES-128-GCM first (the suite Flotilla prefers), and an `X-Cache-Status` header for wrk.
fn config(dir: &Path, objects: &Path, port: u16, origin_port: u16) -> String {
    let dir = dir.display();
    let objects = objects.display();
    // As root, nginx's worker would otherwise run as `nobody` and could not write the cache.
    // SAFETY: getuid has no failure mode and touches no memory.
    let user = if unsafe { libc::getuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    format!(
        r#"# Written by `cargo xtask bench cache`; rewritten on every run.
{user}
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    error_log {dir}/logs/error.log warn;
    sendfile on;
    tcp_nopush off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/temp/body;
    proxy_temp_path {dir}/temp/proxy;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=flotilla_bench:10m max_size=1g inactive=1d use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{origin_port};
        root {objects};
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        ssl_protocols TLSv1.3;
        ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache flotilla_bench;
            proxy_cache_valid 200 1d;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"#
    )
}

/// wrk's Lua script: counts responses that are not a 200 HIT, and prints the summary and
/// latency percentiles as one JSON line.
const WRK_SCRIPT: &str = r#"-- Written by `cargo xtask bench cache`.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) hits = 0; others = 0 end
function response(status, headers, body)
  if status == 200 and headers["X-Cache-Status"] == "HIT" then hits = hits + 1 else others = others + 1 end
end
function done(summary, latency, requests)
  local h, o = 0, 0
  for _, t in ipairs(threads) do h = h + t:get("hits"); o = o + t:get("others") end
  local e = summary.errors
  io.write(string.format('FLOTILLA_WRK {"requests":%d,"micros":%d,"bytes":%d,"errors":%d,"p50_us":%d,"p99_us":%d,"hits":%d,"others":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), h, o))
end
"#;

#[derive(Deserialize)]
struct WrkResult {
    requests: u64,
    micros: u64,
    bytes: u64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
    hits: u64,
    others: u64,
}

/// Runs wrk on `core` (`-t1 -c{concurrency}`) for `seconds` against `url`.
pub fn load(
    sh: &Shell,
    dir: &Path,
    url: &str,
    concurrency: u32,
    seconds: u32,
    core: usize,
) -> anyhow::Result<Cell> {
    let script = dir.join("check-hits.lua");
    fs::write(&script, WRK_SCRIPT)?;
    let (core, concurrency, duration) = (
        core.to_string(),
        concurrency.to_string(),
        format!("{seconds}s"),
    );
    let output = cmd!(
        sh,
        "taskset -c {core} wrk -t1 -c{concurrency} -d{duration} --timeout {WRK_TIMEOUT} -s {script} {url}"
    )
    .quiet()
    .ignore_status()
    .output()
    .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix(RESULT_MARK))
        .with_context(|| {
            format!(
                "wrk printed no result ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })?;
    let result: WrkResult =
        serde_json::from_str(line).with_context(|| format!("reading wrk's result `{line}`"))?;
    let seconds = result.micros as f64 / 1e6;
    let good = result.requests.saturating_sub(result.errors);
    Ok(Cell {
        requests: result.requests,
        errors: result.errors,
        hits: result.hits,
        not_hits: result.others,
        requests_per_second: good as f64 / seconds,
        megabytes_per_second: result.bytes as f64 / seconds / 1e6,
        p50_ms: result.p50_us as f64 / 1000.0,
        p99_ms: result.p99_us as f64 / 1000.0,
        seconds,
    })
}
