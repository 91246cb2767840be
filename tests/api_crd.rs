//! CustomResourceDefinitions driven by the real kubectl and helm against a real `berth server` in
//! a test-made network namespace. Needs root (network namespaces); CI runs as root.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::netns::Netns;
use common::server::BerthServer;
use common::tools;
use serde_json::Value;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Size
      type: integer
      jsonPath: .spec.size
    - name: Color
      type: string
      jsonPath: .spec.color
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        description: A Widget is a thing made for tests.
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [size]
            properties:
              size:
                type: integer
                minimum: 1
                maximum: 100
                description: How big the widget is.
              color:
                type: string
                enum: [red, green, blue]
                default: blue
              replicas:
                type: integer
                default: 1
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              replicas:
                type: integer
              phase:
                type: string
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const WIDGET: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
spec:
  size: 3
  extra: {anything: {goes: here}}
"#;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn apply(server: &BerthServer, manifest: &str) -> String {
    let out = server.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(out.status.success(), "apply failed: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn install_crd(server: &BerthServer) {
    apply(server, CRD);
    server.kubectl_ok(&[
        "wait",
        "--for=condition=established",
        "crd/widgets.example.com",
        "--timeout=30s",
    ]);
}

#[test]
fn a_crd_is_established_and_listed_by_api_resources() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    install_crd(&server);
    let crd = json(&server.kubectl_ok(&["get", "crd", "widgets.example.com", "-o", "json"]));
    let conditions = crd["status"]["conditions"].as_array().unwrap();
    for kind in ["NamesAccepted", "Established"] {
        assert!(
            conditions
                .iter()
                .any(|c| c["type"] == kind && c["status"] == "True"),
            "{kind} missing: {conditions:?}"
        );
    }
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]));
    let resources = server.kubectl_ok(&["api-resources", "--api-group=example.com"]);
    let line = resources
        .lines()
        .find(|l| l.starts_with("widgets"))
        .unwrap_or_else(|| panic!("no widgets in {resources}"));
    for word in ["wd", "example.com/v1", "true", "Widget"] {
        assert!(line.contains(word), "{word} missing from {line}");
    }
    let legacy = json(&server.kubectl_ok(&["get", "--raw", "/apis/example.com/v1"]));
    let names: Vec<&str> = legacy["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["widgets", "widgets/status", "widgets/scale"]);
    let group = json(&server.kubectl_ok(&["get", "--raw", "/apis/example.com"]));
    assert_eq!(group["preferredVersion"]["version"], "v1");
}

#[test]
fn a_crd_without_a_structural_schema_is_refused_with_its_causes() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let bad = CRD
        .replace("name: widgets.example.com", "name: gadgets.example.com")
        .replace("storage: false", "storage: true")
        .replace(
            "                type: integer\n                minimum: 1",
            "                minimum: 1",
        );
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &bad);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is invalid"), "{err}");
    for field in [
        "metadata.name",
        "spec.versions",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type",
    ] {
        assert!(err.contains(field), "{field} missing from {err}");
    }
}

#[test]
fn custom_objects_are_validated_pruned_defaulted_and_printed_with_their_columns() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    install_crd(&server);
    apply(&server, WIDGET);
    let w = json(&server.kubectl_ok(&["get", "widget", "w1", "-o", "json"]));
    assert_eq!(w["spec"]["color"], "blue", "default applied: {w}");
    assert_eq!(w["spec"]["replicas"], 1);
    assert_eq!(w["spec"]["extra"]["anything"]["goes"], "here");
    assert_eq!(w["metadata"]["generation"], 1);

    // Strict field validation (kubectl's default) names unknown fields; without it they are pruned.
    let unknown = WIDGET.replace("  size: 3", "  size: 3\n  bogus: 1");
    let strict = server.kubectl_stdin(&["apply", "-f", "-"], &unknown);
    assert!(!strict.status.success());
    assert!(
        stderr(&strict).contains("unknown field \"spec.bogus\""),
        "{}",
        stderr(&strict)
    );
    let pruned = unknown.replace("name: w1", "name: w2");
    let out = server.kubectl_stdin(&["create", "--validate=false", "-f", "-"], &pruned);
    assert!(out.status.success(), "{}", stderr(&out));
    let w2 = json(&server.kubectl_ok(&["get", "wd", "w2", "-o", "json"]));
    assert!(w2["spec"].get("bogus").is_none(), "not pruned: {w2}");

    // Schema violations are 422 with the field path.
    let invalid = WIDGET
        .replace("name: w1", "name: w3")
        .replace("size: 3", "size: 1000\n  color: purple");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &invalid);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("The Widget \"w3\" is invalid"), "{err}");
    assert!(err.contains("spec.size"), "{err}");
    assert!(
        err.contains("spec.color: Unsupported value: \"purple\""),
        "{err}"
    );
    let raw = server.kubectl_stdin(
        &["create", "--raw", "/apis/example.com/v1/namespaces/default/widgets", "-f", "-"],
        r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"w4"},"spec":{"size":"big"}}"#,
    );
    assert!(!raw.status.success());
    assert!(stderr(&raw).contains("Invalid"), "{}", stderr(&raw));

    // The printer columns, through the short name.
    let table = server.kubectl_ok(&["get", "wd"]);
    let header = table.lines().next().unwrap();
    for column in ["NAME", "SIZE", "COLOR", "AGE"] {
        assert!(header.contains(column), "{column} missing from {table}");
    }
    let row = table.lines().find(|l| l.starts_with("w1")).unwrap();
    assert!(row.contains(" 3 ") && row.contains("blue"), "{table}");
    let yaml = server.kubectl_ok(&["get", "widget", "w1", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Widget") && yaml.contains("size: 3"),
        "{yaml}"
    );
    let all = server.kubectl_ok(&["get", "all"]);
    assert!(all.contains("widget.example.com/w1"), "{all}");
}

#[test]
fn custom_objects_are_patched_scaled_watched_and_deleted() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    install_crd(&server);
    apply(&server, WIDGET);
    let mut watcher = server
        .command(&tools::kubectl())
        .args([
            "get",
            "widgets",
            "w1",
            "-w",
            "-o",
            "jsonpath={.spec.size}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":5}}"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/color","value":"red"}]"#,
    ]);
    let strategic = server.kubectl(&["patch", "widget", "w1", "-p", r#"{"spec":{"size":6}}"#]);
    assert!(!strategic.status.success());
    assert!(
        stderr(&strategic).contains("UnsupportedMediaType")
            || stderr(&strategic).contains("415")
            || stderr(&strategic).contains("unknown format"),
        "{}",
        stderr(&strategic)
    );
    let w = json(&server.kubectl_ok(&["get", "widget", "w1", "-o", "json"]));
    assert_eq!(
        (w["spec"]["size"].as_i64(), w["spec"]["color"].as_str()),
        (Some(5), Some("red"))
    );
    assert_eq!(w["metadata"]["generation"], 3);

    // Re-applying the manifest merges with what others changed (client-side apply, merge patch).
    apply(&server, &WIDGET.replace("size: 3", "size: 7"));
    let w = json(&server.kubectl_ok(&["get", "widget", "w1", "-o", "json"]));
    assert_eq!(w["spec"]["size"], 7);

    // status is its own subresource: main writes keep it, status writes touch nothing else.
    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Ready","replicas":1},"spec":{"size":99}}"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Lost"}}"#,
    ]);
    let w = json(&server.kubectl_ok(&["get", "widget", "w1", "-o", "json"]));
    assert_eq!(w["status"]["phase"], "Ready");
    assert_eq!(w["spec"]["size"], 7);

    // scale.
    server.kubectl_ok(&["scale", "widget", "w1", "--replicas=4"]);
    let scale = json(&server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/default/widgets/w1/scale",
    ]));
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["replicas"], 1);

    // The other served version sees the same object under its own apiVersion.
    let beta =
        json(&server.kubectl_ok(&["get", "widgets.v1beta1.example.com", "w1", "-o", "json"]));
    assert_eq!(beta["apiVersion"], "example.com/v1beta1");
    assert_eq!(beta["spec"]["size"], 7);

    std::thread::sleep(Duration::from_secs(1));
    let _ = watcher.kill();
    let _ = watcher.wait();
    let mut seen = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    for size in ["3", "5", "7"] {
        assert!(
            seen.lines().any(|l| l == size),
            "the watch never saw size {size}: {seen:?}"
        );
    }

    let deleted = server.kubectl_ok(&["delete", "widget", "w1"]);
    assert!(deleted.contains("deleted"), "{deleted}");
    let gone = server.kubectl(&["get", "widget", "w1"]);
    assert!(stderr(&gone).contains("NotFound"), "{}", stderr(&gone));
}

#[test]
fn kubectl_explain_reads_the_crd_schema() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    install_crd(&server);
    let explained = server.kubectl_ok(&["explain", "widgets.spec"]);
    assert!(
        explained.contains("What the widget should be."),
        "{explained}"
    );
    assert!(
        explained.contains("size") && explained.contains("How big the widget is."),
        "{explained}"
    );
    let index = json(&server.kubectl_ok(&["get", "--raw", "/openapi/v3"]));
    assert!(index["paths"]["apis/example.com/v1"].is_object(), "{index}");

    // v2-only clients: the swagger 2.0 document (kubectl reads its protobuf form) has it too.
    let v2 = server.kubectl_ok(&["explain", "widgets.spec", "--output", "plaintext-openapiv2"]);
    assert!(
        v2.contains("What the widget should be.") && v2.contains("How big the widget is."),
        "{v2}"
    );
    let swagger = json(&server.kubectl_ok(&["get", "--raw", "/openapi/v2"]));
    let widget = &swagger["definitions"]["com.example.v1.Widget"];
    assert_eq!(
        widget["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "{widget}"
    );
    assert!(
        swagger["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets"].is_object(),
        "the v2 document has no widget paths"
    );
}

#[test]
fn custom_objects_survive_a_restart_and_go_with_their_crd() {
    let ns = Netns::new();
    let mut server = BerthServer::start(&ns);
    install_crd(&server);
    apply(&server, WIDGET);
    server.kubectl_ok(&["create", "namespace", "other"]);
    apply(
        &server,
        &WIDGET.replace("name: w1", "name: w9\n  namespace: other"),
    );

    server.restart();
    let names = server.kubectl_ok(&["get", "widgets", "-A", "-o", "name"]);
    assert!(names.contains("widget.example.com/w1"), "{names}");
    assert!(names.contains("widget.example.com/w9"), "{names}");

    server.kubectl_ok(&["delete", "crd", "widgets.example.com", "--timeout=60s"]);
    let gone = server.kubectl(&["get", "crd", "widgets.example.com"]);
    assert!(stderr(&gone).contains("NotFound"), "{}", stderr(&gone));
    let raw = server.kubectl(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/default/widgets",
    ]);
    assert!(!raw.status.success());
    assert!(
        stderr(&raw).contains("NotFound") || stderr(&raw).contains("not found"),
        "{}",
        stderr(&raw)
    );

    // Made again, the CRD starts empty: the objects went with it.
    install_crd(&server);
    let list = json(&server.kubectl_ok(&["get", "widgets", "-A", "-o", "json"]));
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
}

#[test]
fn helm_installs_a_chart_with_a_crd_and_an_object_of_it() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    let chart = server.data_dir().join("widget-chart");
    std::fs::create_dir_all(chart.join("crds")).unwrap();
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: widget-chart\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(chart.join("crds/widgets.yaml"), CRD).unwrap();
    std::fs::write(
        chart.join("templates/widget.yaml"),
        WIDGET.replace("name: w1", "name: {{ .Release.Name }}-widget"),
    )
    .unwrap();
    let chart = chart.to_string_lossy().into_owned();
    // helm v4 installs with server-side apply by default: custom objects go through it too.
    server.helm_ok(&["install", "demo", &chart]);
    let w = json(&server.kubectl_ok(&["get", "widget", "demo-widget", "-o", "json"]));
    assert_eq!(w["spec"]["size"], 3);
    assert_eq!(
        w["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "demo"
    );
    server.helm_ok(&["uninstall", "demo"]);
    let gone = server.kubectl(&["get", "widget", "demo-widget"]);
    assert!(stderr(&gone).contains("NotFound"), "{}", stderr(&gone));
}
