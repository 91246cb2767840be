//! Runtime benchmarks, side by side in one run (the machine is noisy: ratios matter).
//!
//! Run (root: everything runs in network namespaces the bench creates):
//!
//! ```sh
//! cargo bench --bench runtime
//! ```
//!
//! or, to drive an optimised berth built elsewhere from a quickly built harness,
//! `BERTH_TEST_BINARY=path/to/berth cargo test --bench runtime`.
//!
//! Prints one table:
//! - pod create → Running (image present, observed by a watch) p50/p99 over 50 pods, one at a
//!   time, against `podman kube play` of the same pod spec (`--runtime runc`);
//! - one container start, create → first line of output, through berth's pod shim against
//!   `runc run` of a bundle of the same image;
//! - PSS of the daemon plus all shims with 0, 10 and 50 running pods, and per pod;
//! - CPU used by the daemon and shims with 20 idle pods over 60 s;
//! - what the run left behind (must be nothing).
//!
//! `BERTH_BENCH_ONLY=container-start` measures only the container start (against runc), which
//! takes seconds instead of minutes.

#[path = "../common/mod.rs"]
mod common;
#[path = "runtime/podman.rs"]
mod podman;
#[path = "runtime/runc.rs"]
mod runc;
#[path = "runtime/shim.rs"]
mod shim;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::runtime::SeccompProfile;
use common::cluster::{test_image, Cluster};
use common::inside::{block_on_in_netns, kube_client};
use common::netns::Netns;
use common::procs;
use common::registry::Registry;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};

const PODS: usize = 50;
const FIRST_MEMORY_POINT: usize = 10;
const IDLE_PODS: usize = 20;
const IDLE_WINDOW: Duration = Duration::from_secs(60);
const CONTAINER_STARTS: usize = 20;
/// berth hands start-up-only pages back to the kernel 10 s after it is ready (runtime::memory):
/// memory is read after this long, and after each batch of pods has settled this long.
const SETTLE: Duration = Duration::from_secs(12);
const LABEL: &str = "bench=runtime";

type Row = (String, String, String);

fn main() {
    let started = Instant::now();
    let berth = berth_binary();
    let mut rows: Vec<Row> = Vec::new();
    let before = Leftovers::now();
    if std::env::var("BERTH_BENCH_ONLY").as_deref() == Ok("container-start") {
        rows.extend(container_start_rows(&berth));
        rows.push(leftovers_row(&before));
        print_table(&berth, started, rows);
        return;
    }

    let berth_latencies = {
        let ns = Netns::new();
        let cluster = Cluster::start(&ns);
        let (latencies, figures) = berth_pods(&ns, &cluster);
        rows.extend(figures);
        latencies
    };
    let (podman_latencies, podman_memory) = podman_pods();
    rows.insert(
        0,
        latency_row(
            &format!("pod create → Running, {PODS} pods one at a time (p50 / p99)"),
            &berth_latencies,
            &podman_latencies,
            "goal ratio ≤ 0.5, p99 ≤ 1 s",
        ),
    );
    for (at, row) in container_start_rows(&berth).into_iter().enumerate() {
        rows.insert(1 + at, row);
    }
    rows.push(podman_memory);
    rows.push(leftovers_row(&before));
    print_table(&berth, started, rows);
}

fn leftovers_row(before: &Leftovers) -> Row {
    (
        "left behind (processes, mounts, netns, cgroups, dirs)".into(),
        before.added().unwrap_or_else(|| "nothing".into()),
        "goal: nothing".into(),
    )
}

fn print_table(berth: &Path, started: Instant, rows: Vec<Row>) {
    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(10);
    println!(
        "\nberth under test: {} ({:.0} s)",
        berth.display(),
        started.elapsed().as_secs_f64()
    );
    println!("{:width$} | {:58} | goal", "what", "figure");
    println!("{}", "-".repeat(width + 80));
    for (what, figure, goal) in rows {
        println!("{what:width$} | {figure:58} | {goal}");
    }
}

/// The berth binary under test, as the test harness picks it.
fn berth_binary() -> PathBuf {
    std::env::var_os("BERTH_TEST_BINARY")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_berth").into())
}

/// The same pod for berth and podman: busybox sleeping, the image already present.
fn bench_pod(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "runtime"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app",
                "image": "busybox",
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    })
}

/// Creates `PODS` pods one at a time, each observed Running by a watch before the next; reads
/// memory at 0, 10 and 50 pods and CPU over a minute with 20. Returns the latencies and rows.
fn berth_pods(ns: &Netns, cluster: &Cluster) -> (Vec<Duration>, Vec<Row>) {
    let kubeconfig = cluster.server.kubeconfig_path();
    let daemon = cluster.server.pid().expect("berth server runs");
    let pods_dir = cluster.pods_dir();
    block_on_in_netns(&ns.name, move || async move {
        let client = kube_client(&kubeconfig).await;
        let api: Api<Pod> = Api::namespaced(client, "default");
        let mut running = RunningWatch::start(api.clone());
        let mut rows = Vec::new();

        // The first pod pulls the image; then none runs while berth settles.
        running.create(&api, "warm").await;
        api.delete("warm", &DeleteParams::default())
            .await
            .expect("delete warm pod");
        let gone = wait_async(Duration::from_secs(60), || {
            procs::shims(&pods_dir).is_empty()
        })
        .await;
        assert!(gone, "the warm pod's shim did not stop");
        tokio::time::sleep(SETTLE).await;
        let idle = procs::Memory::read(daemon, &pods_dir);
        rows.push(memory_row(0, &idle, None));

        let mut latencies = Vec::new();
        for i in 0..PODS {
            latencies.push(running.create(&api, &format!("bench-{i}")).await);
            let pods = i + 1;
            if pods == FIRST_MEMORY_POINT || pods == PODS {
                tokio::time::sleep(SETTLE).await;
                let memory = procs::Memory::read(daemon, &pods_dir);
                rows.push(memory_row(pods, &memory, Some(&idle)));
            }
            if pods == IDLE_PODS {
                tokio::time::sleep(SETTLE).await;
                let (daemon_cpu, shims_cpu) =
                    procs::cpu_share(daemon, &pods_dir, IDLE_WINDOW).await;
                rows.push((
                    format!(
                        "idle CPU of daemon + shims, {IDLE_PODS} pods, {} s",
                        IDLE_WINDOW.as_secs()
                    ),
                    format!(
                        "{:.2} % of one core (daemon {:.2} + shims {:.2})",
                        (daemon_cpu + shims_cpu) * 100.0,
                        daemon_cpu * 100.0,
                        shims_cpu * 100.0
                    ),
                    "goal < 1 %".into(),
                ));
            }
        }
        (latencies, rows)
    })
}

/// A watch on the bench's pods that reports when each is first seen Running.
struct RunningWatch {
    seen: tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWatch {
    fn start(api: Api<Pod>) -> RunningWatch {
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let config = watcher::Config::default().labels(LABEL);
            let mut pods = std::pin::pin!(watcher(api, config).applied_objects());
            let mut reported = std::collections::HashSet::new();
            while let Some(event) = pods.next().await {
                let Ok(pod) = event else { continue };
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                let name = pod.metadata.name.clone().unwrap_or_default();
                if phase == Some("Running") && reported.insert(name.clone()) {
                    let _ = tx.send((name, Instant::now()));
                }
            }
        });
        RunningWatch { seen, task }
    }

    /// Creates pod `name` and waits until the watch sees it Running; returns how long that took.
    async fn create(&mut self, api: &Api<Pod>, name: &str) -> Duration {
        let pod: Pod = serde_json::from_value(bench_pod(name)).expect("bench pod is a Pod");
        let started = Instant::now();
        api.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"));
        let wait = async {
            while let Some((seen, at)) = self.seen.recv().await {
                if seen == name {
                    return at - started;
                }
            }
            panic!("the watch ended");
        };
        tokio::time::timeout(Duration::from_secs(120), wait)
            .await
            .unwrap_or_else(|_| panic!("pod {name} not Running after 120 s"))
    }
}

impl Drop for RunningWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_async(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

fn memory_row(pods: usize, memory: &procs::Memory, idle: Option<&procs::Memory>) -> Row {
    let mib = |kib: u64| kib as f64 / 1024.0;
    assert_eq!(
        memory.shims, pods,
        "one shim per pod, none per container ({pods} pods)"
    );
    let mut figure = format!(
        "{:.1} MiB (daemon {:.1} + {} shims {:.1})",
        mib(memory.total_kib()),
        mib(memory.daemon_kib),
        memory.shims,
        mib(memory.shims_kib)
    );
    let goal = match idle {
        Some(idle) => {
            let per_pod = (memory.total_kib() as f64 - idle.total_kib() as f64) / pods as f64;
            figure.push_str(&format!(", +{:.0} KiB per pod", per_pod));
            "goal ≤ 1024 KiB per pod".into()
        }
        None => String::new(),
    };
    (format!("PSS of daemon + shims, {pods} pods"), figure, goal)
}

/// `podman kube play` of the bench pod, `PODS` times, in a netns of its own with a registry
/// holding the same image. Returns the latencies and, for scale, the PSS of podman's conmons
/// (podman has no daemon: a conmon per container is what stays with running pods).
fn podman_pods() -> (Vec<Duration>, Row) {
    let ns = Netns::new();
    let work = tempfile::Builder::new()
        .prefix(&format!("berth-bench-image-{}-", std::process::id()))
        .tempdir()
        .expect("create image dir");
    let registry = Registry::start(&ns);
    registry.push_oci_layout(&test_image(work.path()), "latest", "library/busybox");
    let podman = podman::Podman::new(&ns, registry.addr());
    podman.run_ok(&["pull", "--quiet", "busybox"]);
    // The first pod builds podman's pause image: not part of what is measured.
    podman.kube_play(&bench_pod("warm"));
    podman.remove_pods();
    let latencies = (0..PODS)
        .map(|i| podman.kube_play(&bench_pod(&format!("bench-{i}"))))
        .collect();
    let running = podman.run_ok(&["ps", "--filter", "status=running", "--quiet"]);
    // One infra and one app container per pod.
    assert_eq!(running.lines().count(), 2 * PODS, "podman runs every pod");
    let conmons = podman.conmon_pids();
    let pss: u64 = conmons.iter().map(|pid| procs::pss_kib(*pid)).sum();
    podman.remove_pods();
    let memory = (
        format!("podman for scale: PSS of its conmons, {PODS} pods"),
        format!(
            "{:.1} MiB ({} conmons, {:.0} KiB per pod)",
            pss as f64 / 1024.0,
            conmons.len(),
            pss as f64 / PODS as f64
        ),
        String::new(),
    );
    (latencies, memory)
}

/// Container create → first line of output: in a running shim (with berth's default seccomp
/// profile, and unconfined as the runc bundle is), with a shim start, and `runc run`,
/// interleaved so drift in the machine's load hits all alike.
fn container_start_rows(berth: &Path) -> Vec<Row> {
    let ns = Netns::new();
    let work = tempfile::Builder::new()
        .prefix(&format!("berth-bench-image-{}-", std::process::id()))
        .tempdir()
        .expect("create image dir");
    let mut runc = runc::Runc::new(&test_image(work.path()));
    let mut shim = shim::ShimBench::new(berth, runc.rootfs(), &ns.name);
    let args = ["echo", "hello"];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (mut in_shim, mut unconfined, mut with_shim, mut runc_run) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    runtime.block_on(async {
        let pod = shim.start_pod().await;
        // Warm-up: page cache, cgroup parents.
        shim.first_line(&pod, &args, SeccompProfile::RuntimeDefault)
            .await;
        runc.first_line(&args);
        for _ in 0..CONTAINER_STARTS {
            in_shim.push(
                shim.first_line(&pod, &args, SeccompProfile::RuntimeDefault)
                    .await,
            );
            unconfined.push(
                shim.first_line(&pod, &args, SeccompProfile::Unconfined)
                    .await,
            );
            let started = Instant::now();
            let fresh = shim.start_pod().await;
            shim.first_line(&fresh, &args, SeccompProfile::RuntimeDefault)
                .await;
            with_shim.push(started.elapsed());
            shim.stop_pod(&fresh).await;
            runc_run.push(runc.first_line(&args));
        }
        shim.stop_all().await;
    });
    let phase = |samples: &[shim::Phases], pick: fn(&shim::Phases) -> Duration| {
        median(&mut samples.iter().map(pick).collect::<Vec<_>>())
    };
    let total = phase(&in_shim, |p| p.first_line);
    let runc = median(&mut runc_run);
    vec![
        (
            format!("container create → first output line, median of {CONTAINER_STARTS}"),
            format!(
                "shim {} (+ shim start {}), runc run {}",
                ms(total),
                ms(median(&mut with_shim)),
                ms(runc)
            ),
            format!(
                "ratio {:.2}, goal ≤ 0.5",
                total.as_secs_f64() / runc.as_secs_f64()
            ),
        ),
        (
            "  through the shim: create answered / start answered".into(),
            format!(
                "{} / {}; unconfined {}",
                ms(phase(&in_shim, |p| p.created)),
                ms(phase(&in_shim, |p| p.started)),
                ms(phase(&unconfined, |p| p.first_line))
            ),
            String::new(),
        ),
    ]
}

fn latency_row(what: &str, berth: &[Duration], podman: &[Duration], goal: &str) -> Row {
    let (mut berth, mut podman) = (berth.to_vec(), podman.to_vec());
    berth.sort();
    podman.sort();
    let (b50, b99) = (percentile(&berth, 0.50), percentile(&berth, 0.99));
    let (p50, p99) = (percentile(&podman, 0.50), percentile(&podman, 0.99));
    (
        what.into(),
        format!(
            "berth {} / {}, podman {} / {}",
            ms(b50),
            ms(b99),
            ms(p50),
            ms(p99)
        ),
        format!(
            "ratio {:.2} / {:.2} ({goal})",
            b50.as_secs_f64() / p50.as_secs_f64(),
            b99.as_secs_f64() / p99.as_secs_f64()
        ),
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    percentile(samples, 0.5)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// What the machine holds that a bench run could leave behind (its network namespaces, mounts,
/// processes, cgroups and temp dirs, all named with this process's pid; podman's shared
/// state): compared before and after.
struct Leftovers {
    podman: podman::SharedState,
    found: std::collections::BTreeSet<String>,
}

impl Leftovers {
    fn now() -> Leftovers {
        let pid = std::process::id();
        let mine = |s: &str| {
            [
                format!("berth-bench-{pid}-"),
                format!("berth-bench-runc-{pid}-"),
                format!("berth-bench-podman-{pid}-"),
                format!("berth-bench-image-{pid}-"),
                format!("berthbench-bench{pid}-"),
                format!("berth-t{pid}-"),
                format!("berth-test-{pid}-"),
                format!("berth-test-registry-{pid}-"),
                format!("berth-agent-test-{pid}-"),
                format!("bb{pid}-"),
            ]
            .iter()
            .any(|m| s.contains(m.as_str()))
        };
        let names = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path().display().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut found = std::collections::BTreeSet::new();
        found.extend(names(Path::new("/run/netns")));
        found.extend(names(&std::env::temp_dir()));
        for hierarchy in names(Path::new("/sys/fs/cgroup")) {
            found.extend(names(Path::new(&hierarchy)));
        }
        found.extend(
            std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(|m| format!("mount {m}")),
        );
        found.extend(
            procs::processes_whose_cmdline_contains(&format!("{pid}-"))
                .into_iter()
                .filter(|p| *p != pid)
                .map(|p| format!("process {p}")),
        );
        let found = found
            .into_iter()
            .filter(|f| f.starts_with("process ") || mine(f))
            .collect();
        Leftovers {
            podman: podman::SharedState::now(),
            found,
        }
    }

    /// What is there now that was not there at `self`, or `None`.
    fn added(&self) -> Option<String> {
        let now = Leftovers::now();
        let mut added = now.podman.added_since(&self.podman);
        added.extend(now.found.difference(&self.found).cloned());
        (!added.is_empty()).then(|| added.join(", "))
    }
}
