//! API core benchmarks, side by side in one run (the machine is noisy: ratios matter).
//!
//! Run: `cargo bench --bench api` (root: berth runs in a network namespace the bench creates).
//! The bench profile's build is slower than the shipped one (no whole-program LTO): for the
//! figures of what ships, measure a copy of a release build named in `BERTH_TEST_BINARY`.
//! Before/after: `BERTH_BENCH_BASELINE=<other berth> BERTH_TEST_BINARY=<this berth> cargo bench
//! --bench api` measures both, one after the other, and prints them side by side.
//! Prints one table: idle RSS, GET and create latency against /livez, bytes written and fsyncs
//! per 1,000 updates against etcd doing the same puts, and LIST of 10,000 ConfigMaps.
//! `BERTH_BENCH_ONLY=latency` measures only the GET and create latencies against /livez (a
//! quick loop while working on the request path). `BERTH_BENCH_LOG=<level>` (say
//! `info,berth::store::timing=debug,berth::apiserver::timing=debug`) runs the server at that log
//! level and keeps its log, to see where a create's time goes.

#[path = "../common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::inside::{block_on_in_netns, in_netns, kube_client};
use common::netns::Netns;
use common::procs::{cpu_ticks, ticks_per_second};
use common::server::BerthServer;

const CONCURRENT_CLIENTS: usize = 50;
const REQUESTS_PER_CLIENT: usize = 100;
const UPDATES: usize = 1000;
const UPDATE_WRITERS: usize = 10;
const VALUE_BYTES: usize = 2048;
const LIST_OBJECTS: usize = 10_000;
const LISTS: usize = 20;

type Row = (String, String, String);

/// With `BERTH_BENCH_BASELINE` naming another berth binary, the figures are measured for it
/// first and then for this build (or `BERTH_TEST_BINARY`), and printed side by side.
fn main() {
    let this: std::path::PathBuf = std::env::var_os("BERTH_TEST_BINARY")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_berth").into());
    let runs: Vec<(String, Vec<Row>)> = match std::env::var_os("BERTH_BENCH_BASELINE") {
        Some(baseline) => {
            let baseline = std::path::PathBuf::from(baseline);
            vec![
                ("baseline".to_string(), figures(&baseline)),
                ("this build".to_string(), figures(&this)),
            ]
        }
        None => vec![("figure".to_string(), figures(&this))],
    };
    let width = runs[0]
        .1
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(10);
    let mut header = format!("\n{:width$}", "what");
    for (label, _) in &runs {
        header.push_str(&format!(" | {label:40} | goal"));
    }
    println!("{header}");
    println!("{}", "-".repeat(width + 60 * runs.len()));
    for (i, (what, _, _)) in runs[0].1.iter().enumerate() {
        let mut line = format!("{what:width$}");
        for (_, rows) in &runs {
            let (_, figure, goal) = &rows[i];
            line.push_str(&format!(" | {figure:40} | {goal}"));
        }
        println!("{line}");
    }
}

/// Every figure of the table for one berth binary, in a network namespace of its own.
fn figures(binary: &Path) -> Vec<Row> {
    let ns = Netns::new();
    let server = match std::env::var("BERTH_BENCH_LOG") {
        Ok(level) => BerthServer::start_binary_with_config(
            &ns,
            binary,
            &format!("[log]\nlevel = {level:?}\n"),
        ),
        Err(_) => BerthServer::start_binary(&ns, binary),
    };
    let pid = server.pid().expect("server runs");
    let mut rows: Vec<Row> = Vec::new();
    if std::env::var("BERTH_BENCH_ONLY").as_deref() == Ok("latency") {
        let kubeconfig = server.kubeconfig_path();
        rows.extend(block_on_in_netns(&ns.name, move || async move {
            api_figures(&kubeconfig, pid).await
        }));
        keep_log(&server);
        return rows;
    }

    // Once just after start, and once settled: berth hands start-up-only code pages back to the
    // kernel 10 s after it is ready (see runtime::memory).
    std::thread::sleep(Duration::from_secs(5));
    rows.push((
        "RSS of berth server 5 s after start".into(),
        rss_breakdown(pid),
        String::new(),
    ));
    std::thread::sleep(Duration::from_secs(15));
    rows.push((
        "idle RSS of berth server (settled, 20 s)".into(),
        rss_breakdown(pid),
        "goal ≤ 25 MiB".into(),
    ));

    let kubeconfig = server.kubeconfig_path();
    rows.extend(block_on_in_netns(&ns.name, move || async move {
        api_figures(&kubeconfig, pid).await
    }));

    let (berth_bytes, berth_fsyncs) = {
        let kubeconfig = server.kubeconfig_path();
        let netns = ns.name.clone();
        measure_io(pid, move || {
            in_netns(&netns, move || updates_through_berth(&kubeconfig))
        })
    };
    let etcd = Etcd::start(&ns);
    let (etcd_bytes, etcd_fsyncs) = measure_io(etcd.pid(), || in_netns(&ns.name, puts_to_etcd));
    drop(etcd);
    rows.push((
        format!("bytes written per update ({UPDATES} × {VALUE_BYTES} B, {UPDATE_WRITERS} writers)"),
        format!(
            "berth {:.0} B, etcd {:.0} B",
            berth_bytes as f64 / UPDATES as f64,
            etcd_bytes as f64 / UPDATES as f64
        ),
        format!(
            "ratio {:.2} (goal ≤ 0.2)",
            berth_bytes as f64 / etcd_bytes.max(1) as f64
        ),
    ));
    rows.push((
        format!("fsyncs per {UPDATES} updates"),
        format!("berth {berth_fsyncs}, etcd {etcd_fsyncs}"),
        String::new(),
    ));

    let kubeconfig = server.kubeconfig_path();
    rows.extend(block_on_in_netns(&ns.name, move || async move {
        list_figures(&kubeconfig).await
    }));
    rows.push((
        "RSS after the run".into(),
        rss_breakdown(pid),
        String::new(),
    ));
    keep_log(&server);
    drop(server);
    rows
}

/// With `BERTH_BENCH_LOG`, a copy of the server's log outlives its data dir.
fn keep_log(server: &BerthServer) {
    if std::env::var_os("BERTH_BENCH_LOG").is_none() {
        return;
    }
    let kept = std::env::temp_dir().join(format!(
        "berth-bench-server-{}-{}.log",
        std::process::id(),
        server.pid().unwrap_or(0)
    ));
    match std::fs::copy(server.log_path(), &kept) {
        Ok(_) => eprintln!("server log kept in {}", kept.display()),
        Err(error) => eprintln!("cannot keep the server log: {error}"),
    }
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// VmRSS, with its anonymous (heap, stacks) and file-backed (code) parts.
fn rss_breakdown(pid: u32) -> String {
    let mib = |field| status_kib(pid, field) as f64 / 1024.0;
    format!(
        "{:.1} MiB ({:.1} anon + {:.1} file)",
        mib("VmRSS:"),
        mib("RssAnon:"),
        mib("RssFile:")
    )
}

fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find(|l| l.starts_with("write_bytes:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes the process wrote to disk and the fsync-family calls it made while `work` ran.
fn measure_io(pid: u32, work: impl FnOnce()) -> (u64, u64) {
    let summary =
        std::env::temp_dir().join(format!("berth-bench-strace-{}-{pid}", std::process::id()));
    let mut strace = Command::new("strace")
        .args([
            "-f",
            "-c",
            "-e",
            "trace=fsync,fdatasync,sync_file_range",
            "-o",
        ])
        .arg(&summary)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (apt-get install strace)");
    std::thread::sleep(Duration::from_millis(500));
    let before = write_bytes(pid);
    work();
    // Let the last commit reach the disk before reading the counters.
    std::thread::sleep(Duration::from_millis(500));
    let bytes = write_bytes(pid) - before;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = strace.wait();
    let text = std::fs::read_to_string(&summary).unwrap_or_default();
    let _ = std::fs::remove_file(&summary);
    let fsyncs = text
        .lines()
        .filter(|l| l.contains("sync"))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(3)
                .and_then(|c| c.parse::<u64>().ok())
        })
        .sum();
    (bytes, fsyncs)
}

async fn client(kubeconfig: &Path) -> kube::Client {
    kube_client(kubeconfig).await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The latencies of one request loop and the server's CPU time (user + system, all threads) per
/// request over it: the CPU figure is the steadier one on a noisy machine.
struct Loop {
    latencies: Vec<Duration>,
    cpu_per_request: Duration,
}

/// `CONCURRENT_CLIENTS` tasks each sending `REQUESTS_PER_CLIENT` requests made by `make`, to
/// the server `pid`.
async fn latencies(
    client: &kube::Client,
    pid: u32,
    make: Arc<dyn Fn(usize, usize) -> http::Request<Vec<u8>> + Send + Sync>,
) -> Loop {
    let cpu_before = cpu_ticks(pid);
    let mut tasks = Vec::new();
    for c in 0..CONCURRENT_CLIENTS {
        let client = client.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(REQUESTS_PER_CLIENT);
            for i in 0..REQUESTS_PER_CLIENT {
                let start = Instant::now();
                client.request_text(make(c, i)).await.expect("request");
                out.push(start.elapsed());
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let cpu = cpu_ticks(pid).saturating_sub(cpu_before) as f64 / ticks_per_second();
    all.sort();
    Loop {
        cpu_per_request: Duration::from_secs_f64(cpu / all.len().max(1) as f64),
        latencies: all,
    }
}

async fn api_figures(kubeconfig: &Path, pid: u32) -> Vec<(String, String, String)> {
    let client = client(kubeconfig).await;
    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench-get"}, "data": {"k": "v"}});
    let create = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    client.request_text(create).await.unwrap();
    let livez = latencies(
        &client,
        pid,
        Arc::new(|_, _| http::Request::get("/livez").body(Vec::new()).unwrap()),
    )
    .await;
    let get = latencies(
        &client,
        pid,
        Arc::new(|_, _| {
            http::Request::get("/api/v1/namespaces/default/configmaps/bench-get")
                .body(Vec::new())
                .unwrap()
        }),
    )
    .await;
    let creates = latencies(
        &client,
        pid,
        Arc::new(|c, i| {
            let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("bench-{c}-{i}")}});
            http::Request::post("/api/v1/namespaces/default/configmaps")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .unwrap()
        }),
    )
    .await;
    let (l50, l99) = (
        percentile(&livez.latencies, 0.5),
        percentile(&livez.latencies, 0.99),
    );
    let (g50, g99) = (
        percentile(&get.latencies, 0.5),
        percentile(&get.latencies, 0.99),
    );
    let (c50, c99) = (
        percentile(&creates.latencies, 0.5),
        percentile(&creates.latencies, 0.99),
    );
    let micros = |l: &Loop| format!("{} µs", l.cpu_per_request.as_micros());
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    vec![
        (
            format!("/livez p50/p99 ({CONCURRENT_CLIENTS} clients, TLS)"),
            format!("{} / {}", ms(l50), ms(l99)),
            String::new(),
        ),
        (
            "GET one ConfigMap p50/p99".into(),
            format!("{} / {}", ms(g50), ms(g99)),
            format!(
                "ratio {:.2} / {:.2} (goal ≤ 1.5)",
                ratio(g50, l50),
                ratio(g99, l99)
            ),
        ),
        (
            "create p50/p99".into(),
            format!("{} / {}", ms(c50), ms(c99)),
            format!(
                "ratio {:.2} / {:.2} (goal ≤ 3)",
                ratio(c50, l50),
                ratio(c99, l99)
            ),
        ),
        (
            "server CPU per request: /livez, GET, create".into(),
            format!("{}, {}, {}", micros(&livez), micros(&get), micros(&creates)),
            format!(
                "create/livez {:.2}",
                ratio(creates.cpu_per_request, livez.cpu_per_request)
            ),
        ),
    ]
}

fn payload(writer: usize, round: usize) -> String {
    let mut s = format!("{writer}-{round}-");
    while s.len() < VALUE_BYTES {
        s.push_str("abcdefghijklmnopqrstuvwxyz0123456789");
    }
    s.truncate(VALUE_BYTES);
    s
}

fn updates_through_berth(kubeconfig: &Path) {
    let kubeconfig = kubeconfig.to_owned();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = client(&kubeconfig).await;
        let mut tasks = Vec::new();
        for w in 0..UPDATE_WRITERS {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("bench-update-{w}");
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
                let create = http::Request::post("/api/v1/namespaces/default/configmaps")
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .unwrap();
                client.request_text(create).await.unwrap();
                for round in 0..UPDATES / UPDATE_WRITERS {
                    let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": payload(w, round)}});
                    let put = http::Request::put(format!("/api/v1/namespaces/default/configmaps/{name}"))
                        .header("content-type", "application/json")
                        .body(serde_json::to_vec(&body).unwrap())
                        .unwrap();
                    client.request_text(put).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// etcd 3.4 (Debian's etcd-server) on loopback inside the bench's netns, with its own data dir.
struct Etcd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Etcd {
    fn start(ns: &Netns) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let child = ns
            .command("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=default=http://127.0.0.1:2380",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (apt-get install etcd-server)");
        let etcd = Etcd { child, dir };
        let ready = common::wait_until(Duration::from_secs(30), || {
            ns.exec(
                "busybox",
                &["wget", "-q", "-O-", "http://127.0.0.1:2379/health"],
            )
            .status
            .success()
        });
        assert!(ready, "etcd did not become healthy");
        etcd
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// The same 1,000 puts as the berth run, through etcd's JSON gateway.
fn puts_to_etcd() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut tasks = Vec::new();
        for w in 0..UPDATE_WRITERS {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..UPDATES / UPDATE_WRITERS {
                    let body = serde_json::json!({"key": b64(&format!("/registry/configmaps/default/bench-update-{w}")), "value": b64(&payload(w, round))});
                    let request = http::Request::post("http://127.0.0.1:2379/v3/kv/put")
                        .body(http_body_util::Full::new(bytes::Bytes::from(serde_json::to_vec(&body).unwrap())))
                        .unwrap();
                    let response = client.request(request).await.expect("etcd put");
                    assert!(response.status().is_success(), "etcd put failed: {}", response.status());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

async fn list_figures(kubeconfig: &Path) -> Vec<(String, String, String)> {
    let client = client(kubeconfig).await;
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench-list"}});
    let create_ns = http::Request::post("/api/v1/namespaces")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&ns).unwrap())
        .unwrap();
    client.request_text(create_ns).await.unwrap();
    let mut tasks = Vec::new();
    let per_task = LIST_OBJECTS / CONCURRENT_CLIENTS;
    for t in 0..CONCURRENT_CLIENTS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{t}-{i}"), "labels": {"app": "bench"}}, "data": {"key": "value"}});
                let request = http::Request::post("/api/v1/namespaces/bench-list/configmaps")
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap())
                    .unwrap();
                client.request_text(request).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..LISTS {
        let start = Instant::now();
        let body = client
            .request_text(
                http::Request::get("/api/v1/namespaces/bench-list/configmaps")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        times.push(start.elapsed());
        assert!(body.len() > LIST_OBJECTS * 50);
    }
    times.sort();
    vec![(
        format!("LIST {LIST_OBJECTS} ConfigMaps p50/p99"),
        format!(
            "{} / {}",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.99))
        ),
        "goal p99 ≤ 300 ms".into(),
    )]
}
