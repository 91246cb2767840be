//! `helm test` of the chart `helm create` makes, as issue 6 asks: its test pod runs
//! `wget <release>-<chart>:<port>` in image `busybox`, resolving the Service by its short name
//! through the cluster DNS and reaching it through the service proxy.
//!
//! The generated chart runs nginx; the test image has none, so the chart's Deployment is given
//! busybox and a command running busybox httpd on the same port (the chart has no `command`
//! value, hence a one-line patch of its deployment template). Everything else, probes included,
//! is the chart as `helm create` wrote it.
//!
//! Needs root (network namespaces, nftables, containers).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::Netns;
use common::wait_until;

/// Gives the chart's container busybox httpd serving the image's /www on the chart's port.
fn serve_with_busybox_httpd(chart: &Path) {
    let path = chart.join("templates/deployment.yaml");
    let template = std::fs::read_to_string(&path).unwrap();
    let image_line = template
        .lines()
        .find(|line| {
            line.trim_start()
                .starts_with("image: \"{{ .Values.image.repository")
        })
        .expect("the generated deployment names its image from values");
    let indent = &image_line[..image_line.len() - image_line.trim_start().len()];
    let command = format!(
        "{image_line}\n{indent}command: [\"httpd\", \"-f\", \"-p\", \"{{{{ .Values.service.port }}}}\", \"-h\", \"/www\"]"
    );
    std::fs::write(&path, template.replacen(image_line, &command, 1)).unwrap();
}

#[test]
fn helm_test_of_a_helm_create_chart_passes() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let work = tempfile::tempdir().unwrap();
    let chart = work.path().join("mychart");
    cluster.server.helm_ok(&["create", chart.to_str().unwrap()]);
    serve_with_busybox_httpd(&chart);

    cluster.server.helm_ok(&[
        "install",
        "demo",
        chart.to_str().unwrap(),
        "--set",
        "image.repository=busybox,image.tag=latest",
        "--wait",
        "--timeout",
        "120s",
    ]);

    let out = cluster
        .server
        .helm(&["test", "demo", "--logs", "--timeout", "120s"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm test failed: {said}");
    assert!(
        said.contains("demo-mychart-test-connection") && said.contains("Succeeded"),
        "helm test reports the test pod succeeded: {said}"
    );
    // The test pod really fetched the page (wget names what it saved), not just exited 0.
    assert!(
        said.contains("index.html"),
        "the wget log shows the download: {said}"
    );

    cluster.server.helm_ok(&["uninstall", "demo", "--wait"]);
    let gone = wait_until(Duration::from_secs(60), || {
        cluster
            .server
            .kubectl_ok(&["get", "deployments,services", "-o", "name"])
            .lines()
            .all(|name| name == "service/kubernetes")
    });
    assert!(gone, "uninstall removed the chart's Deployment and Service");
}

/// The test image's `wget -T` (which Debian's busybox crashes on), run as a command the way
/// `kubectl exec` and a container's `command` run it, fetches a page, and gives up on a server
/// that never answers after the timeout rather than after busybox's default 15 minutes.
#[test]
fn wget_with_a_timeout_works_in_the_test_image() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    // httpd serves the image's page; nc accepts and, its input never ending, never answers.
    let script = "httpd -p 8080 -h /www && (sleep 600 | nc -l -p 9090 &) && exec sleep 600";
    cluster.create(cluster.pod(
        "fetcher",
        serde_json::json!({
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
        }),
    ));
    cluster.wait_for("fetcher", "to run", |pod| {
        pod["status"]["phase"] == "Running"
    });

    let fetch = [
        "exec",
        "fetcher",
        "--",
        "wget",
        "-T",
        "5",
        "-qO-",
        "http://127.0.0.1:8080/",
    ];
    let mut last = String::new();
    let fetched = wait_until(Duration::from_secs(20), || {
        let out = cluster.server.kubectl(&fetch);
        last = format!(
            "status {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.status.success() && last.contains("hello from berth")
    });
    assert!(fetched, "wget -T fetched the page: {last}");

    let started = Instant::now();
    let silent = cluster.server.kubectl(&[
        "exec",
        "fetcher",
        "--",
        "wget",
        "-T",
        "2",
        "-qO-",
        "http://127.0.0.1:9090/",
    ]);
    let took = started.elapsed();
    assert!(!silent.status.success(), "a timed-out wget fails");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "wget -T 2 gave up after {took:?}"
    );
}
