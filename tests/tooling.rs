//! Tests of the test tooling itself: the tools `scripts/install-test-deps.sh` installs, and the
//! harness in `common/` (netns, registry, server) that every integration test builds on.
//!
//! Needs root (network namespaces); CI runs as root.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::netns::{netns_exists, Netns};
use common::registry::Registry;
use common::server::BerthServer;
use common::tools;

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kubectl_from_the_test_tools_is_client_v1_35() {
    let out = stdout_of(Command::new(tools::kubectl()).args(["version", "--client"]));
    assert!(
        out.contains("Client Version: v1.35."),
        "kubectl version --client said: {out}"
    );
}

#[test]
fn helm_from_the_test_tools_is_v4() {
    let out = stdout_of(Command::new(tools::helm()).args(["version", "--short"]));
    assert!(out.starts_with("v4."), "helm version --short said: {out}");
}

#[test]
fn a_netns_has_only_loopback_up_and_is_gone_from_ip_netns_list_after_drop() {
    let ns = Netns::new();
    let name = ns.name.clone();
    assert!(netns_exists(&name), "{name} missing from ip netns list");
    let lo = ns.exec_ok("ip", &["-o", "link", "show", "lo"]);
    assert!(lo.contains(",UP"), "loopback in {name} is not up: {lo}");
    // Only loopback: nothing in a test netns can reach past the machine.
    let links = ns.exec_ok("ip", &["-o", "link", "show"]);
    assert_eq!(
        links.lines().count(),
        1,
        "unexpected links in {name}: {links}"
    );

    drop(ns);
    assert!(!netns_exists(&name), "{name} still listed after drop");
}

#[test]
fn dropping_a_netns_kills_the_processes_a_test_left_inside() {
    let ns = Netns::new();
    let mut sleeper = ns
        .command("sleep")
        .arg("600")
        .spawn()
        .expect("spawn sleep in netns");
    let pid = sleeper.id();
    assert!(
        common::wait_until(Duration::from_secs(5), || ns.pids().contains(&pid)),
        "sleep {pid} never showed up in {}",
        ns.name
    );

    drop(ns);
    let status = sleeper.wait().expect("reap sleep");
    assert!(!status.success(), "sleep 600 ended on its own?");
}

#[test]
fn a_registry_in_a_netns_answers_v2_and_is_stopped_and_removed_on_drop() {
    let ns = Netns::new();
    let registry = Registry::start(&ns);
    let url = format!("http://{}/v2/", registry.addr());
    let body = ns.exec_ok("busybox", &["wget", "-q", "-O", "-", &url]);
    assert_eq!(body.trim(), "{}", "GET {url} answered {body:?}");
    let headers = ns.exec_ok("curl", &["--silent", "--fail", "--include", &url]);
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("docker-distribution-api-version: registry/2.0"),
        "GET {url} is not a v2 registry: {headers}"
    );

    let pid = registry.pid().expect("registry pid");
    let dir = registry.dir().to_owned();
    drop(registry);
    assert!(
        !process_exists(pid),
        "docker-registry {pid} still running after drop"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    let after = ns.exec("curl", &["--silent", "--fail", "--max-time", "2", &url]);
    assert!(
        !after.status.success(),
        "something still answers {url} after drop"
    );
}

#[test]
fn an_oci_layout_pushed_with_skopeo_is_listed_by_the_registry() {
    let ns = Netns::new();
    let registry = Registry::start(&ns);
    let layout_dir = tempfile::tempdir().expect("temp dir for the OCI layout");
    let layout = layout_dir.path().join("layout");
    let layout_arg = format!("{}:1.0", layout.display());
    stdout_of(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    stdout_of(Command::new("umoci").args(["new", "--image", &layout_arg]));

    let reference = registry.push_oci_layout(&layout, "1.0", "berth-test/empty");
    assert_eq!(
        reference,
        format!("{}/berth-test/empty:1.0", registry.addr())
    );
    let url = format!("http://{}/v2/berth-test/empty/tags/list", registry.addr());
    let tags = ns.exec_ok("curl", &["--silent", "--fail", &url]);
    assert!(
        tags.contains(r#""tags":["1.0"]"#),
        "GET {url} answered {tags}"
    );
}

/// A stand-in for `berth` keeping its command-line contract (`server --data-dir D` writes
/// `D/kubeconfig.yaml` once serving; `status --data-dir D` exits 0 when ready), so the server
/// harness is tested on its own; `kubeconfig` prints it. Its kubeconfig names the server's PID in
/// the URL path; with FAKE_BERTH_FAIL set it fails at start.
const FAKE_BERTH: &str = r#"#!/bin/sh
command="$1"; shift
data_dir="$BERTH_DATA_DIR"
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) data_dir="$2"; shift 2 ;;
        *) shift ;;
    esac
done
case "$command" in
    server)
        echo "fake berth server starting in $data_dir"
        if [ -n "$FAKE_BERTH_FAIL" ]; then echo "fake berth: cannot start" >&2; exit 3; fi
        sleep 0.3
        printf '%s\n' \
            'apiVersion: v1' \
            'kind: Config' \
            'clusters:' \
            '- name: berth' \
            '  cluster:' \
            "    server: https://127.0.0.1:6443/pid-$$" \
            'contexts:' \
            '- name: berth' \
            '  context: {cluster: berth, user: admin}' \
            'current-context: berth' \
            'users:' \
            '- name: admin' \
            '  user: {token: fake}' > "$data_dir/kubeconfig.tmp"
        mv "$data_dir/kubeconfig.tmp" "$data_dir/kubeconfig.yaml"
        exec sleep 600
        ;;
    status) test -f "$data_dir/kubeconfig.yaml" ;;
    kubeconfig) cat "$data_dir/kubeconfig.yaml" ;;
    *) exit 2 ;;
esac
"#;

/// Writes the stand-in berth (failing at start when `fail`) into a temp dir.
fn fake_berth(fail: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir for fake berth");
    let path = dir.path().join("berth");
    let script = if fail {
        FAKE_BERTH.replacen("command=\"$1\"", "FAKE_BERTH_FAIL=1; command=\"$1\"", 1)
    } else {
        FAKE_BERTH.to_owned()
    };
    std::fs::write(&path, script).expect("write fake berth");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (dir, path)
}

fn server_url(server: &BerthServer) -> String {
    server.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])
}

#[test]
fn server_harness_waits_for_readiness_and_kubectl_uses_the_servers_kubeconfig() {
    let (_fake_dir, fake) = fake_berth(false);
    let ns = Netns::new();
    let server = BerthServer::start_binary(&ns, &fake);
    assert!(server.kubeconfig_path().is_file());
    let pid = server.pid().expect("server pid");
    assert_eq!(
        server_url(&server),
        format!("https://127.0.0.1:6443/pid-{pid}")
    );
    assert!(
        server.log().contains("fake berth server starting"),
        "log: {}",
        server.log()
    );
    assert!(
        ns.pids().contains(&pid),
        "server {pid} is not inside {}",
        ns.name
    );
    let printed = server.berth(&["kubeconfig"]);
    assert!(printed.status.success(), "berth kubeconfig failed");
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.contains(&format!("/pid-{pid}")),
        "berth kubeconfig printed {printed}"
    );
}

#[test]
fn server_harness_restart_runs_a_new_server_on_the_same_data_dir() {
    let (_fake_dir, fake) = fake_berth(false);
    let ns = Netns::new();
    let mut server = BerthServer::start_binary(&ns, &fake);
    let first = server.pid().expect("server pid");
    std::fs::write(server.data_dir().join("kept"), "state").expect("write state");

    server.kill9();
    assert!(server.pid().is_none());
    assert!(!process_exists(first), "server {first} survived kill9");

    server.restart();
    let second = server.pid().expect("server pid after restart");
    assert_ne!(first, second);
    assert!(
        server.data_dir().join("kept").is_file(),
        "restart lost the data dir"
    );
    assert_eq!(
        server_url(&server),
        format!("https://127.0.0.1:6443/pid-{second}")
    );
    assert_eq!(
        server.log().matches("fake berth server starting").count(),
        2
    );
}

#[test]
fn server_harness_drop_kills_the_server_and_removes_its_data_dir() {
    let (_fake_dir, fake) = fake_berth(false);
    let ns = Netns::new();
    let server = BerthServer::start_binary(&ns, &fake);
    let pid = server.pid().expect("server pid");
    let data_dir = server.data_dir().to_owned();

    drop(server);
    assert!(
        !process_exists(pid),
        "server {pid} still running after drop"
    );
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
}

/// A stand-in for a pod shim: a process whose command line says `shim --dir <dir>`, as berth's
/// shims do. A shell blocked reading its stdin (a pipe the test holds) starts no child that a
/// SIGKILL would leave behind.
fn fake_shim(dir: &Path) -> std::process::Child {
    Command::new("sh")
        .args(["-c", "read line", "berth", "shim", "--dir"])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a stand-in shim")
}

/// Whether `child` ends (reaped) within a few seconds.
fn ends_soon(child: &mut std::process::Child) -> bool {
    common::wait_until(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    })
}

#[test]
fn server_harness_drop_kills_shims_of_its_pods_even_when_their_state_dir_is_gone() {
    let (_fake_dir, fake) = fake_berth(false);
    let ns = Netns::new();
    let server = BerthServer::start_binary(&ns, &fake);
    // Never created: the pod's state dir was already removed, so only the command line tells.
    let mut shim = fake_shim(&server.data_dir().join("pods").join("gone-pod"));
    // Another server's shim, whose data dir exists: a server starting in a test running beside
    // this one stops only shims whose data dir is gone.
    let other_data = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(other_data.path().join("pods/other")).expect("pods dir");
    let mut other = fake_shim(&other_data.path().join("pods").join("other"));

    drop(server);
    assert!(
        ends_soon(&mut shim),
        "the shim of a dropped server lived on"
    );
    assert!(
        matches!(other.try_wait(), Ok(None)),
        "a shim of another server was killed"
    );
    let _ = other.kill();
    let _ = other.wait();
}

#[test]
fn a_server_starting_stops_shims_whose_data_dir_is_gone() {
    let (_fake_dir, fake) = fake_berth(false);
    // A test that died before its drop ran leaves a shim and removes nothing else; its data dir
    // went with the next cleanup of /tmp.
    let gone = tempfile::tempdir().expect("temp dir");
    let mut orphan = fake_shim(&gone.path().join("pods").join("orphan"));
    let live = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(live.path().join("pods/live")).expect("pods dir");
    let mut alive = fake_shim(&live.path().join("pods").join("live"));
    drop(gone);

    let ns = Netns::new();
    let _server = BerthServer::start_binary(&ns, &fake);
    assert!(ends_soon(&mut orphan), "the orphaned shim lived on");
    assert!(
        matches!(alive.try_wait(), Ok(None)),
        "a shim whose data dir exists was killed"
    );
    let _ = alive.kill();
    let _ = alive.wait();
}

#[test]
fn the_harness_leaves_no_share_of_the_run_dir_behind() {
    use berth::runtime::layout::prepare_pods_run_dir;
    use common::server::pods_run_dir;
    let (_fake_dir, fake) = fake_berth(false);
    // The share of a test that died before its drop ran: its data dir is gone since.
    let gone = tempfile::tempdir().expect("temp dir");
    let gone_share = pods_run_dir(&gone.path().join("pods"));
    prepare_pods_run_dir(&gone_share, gone.path()).expect("a share");
    std::fs::create_dir_all(gone_share.join("orphan")).expect("a pod run dir");
    // A live server's share, beside it.
    let live = tempfile::tempdir().expect("temp dir");
    let live_share = pods_run_dir(&live.path().join("pods"));
    prepare_pods_run_dir(&live_share, live.path()).expect("a share");
    drop(gone);

    let ns = Netns::new();
    let server = BerthServer::start_binary(&ns, &fake);
    assert!(
        !gone_share.exists(),
        "a share whose data dir is gone stayed"
    );
    assert!(live_share.exists(), "a live server's share was removed");
    // The stand-in makes no share: as berth would, for its own data dir.
    let share = pods_run_dir(&server.data_dir().join("pods"));
    prepare_pods_run_dir(&share, server.data_dir()).expect("a share");
    drop(server);
    assert!(!share.exists(), "a dropped server's share stayed");
    std::fs::remove_dir_all(&live_share).expect("remove the live share");
    // The run dir itself, as the harness does once no share is left in it.
    let _ = std::fs::remove_dir(common::server::run_dir());
}

#[test]
#[should_panic(expected = "berth server exited during start")]
fn server_harness_fails_the_test_when_the_server_exits_at_start() {
    let (_fake_dir, fake) = fake_berth(true);
    let ns = Netns::new();
    let _server = BerthServer::start_binary(&ns, &fake);
}

#[test]
fn berth_server_starts_in_a_netns_and_kubectl_lists_its_namespaces() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let out = server.kubectl_ok(&["get", "namespaces", "-o", "name"]);
    assert!(
        out.lines().any(|line| line == "namespace/default"),
        "kubectl get namespaces: {out}"
    );
}
