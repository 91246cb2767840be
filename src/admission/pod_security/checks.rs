//! The Pod Security Standards as upstream's `pod-security-admission` policy checks them: each
//! check looks at a pod spec and reports a reason and a detail in upstream's words, so the
//! message a user sees is the one kube-apiserver would give.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// One failed check: upstream's `ForbiddenReason` and `ForbiddenDetail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: &'static str,
    pub detail: String,
}

/// Upstream's rendering of the violations: `reason (detail), reason (detail)`.
pub fn render(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| match v.detail.is_empty() {
            true => v.reason.to_string(),
            false => format!("{} ({})", v.reason, v.detail),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every check of `level` (restricted includes baseline) that `spec` (a PodSpec) fails.
pub fn check(level: Level, metadata: &Value, spec: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    // Upstream's order: the baseline checks by ID, then the restricted ones by ID; a
    // restricted check replaces the baseline one it tightens (volumes, capabilities, seccomp).
    let restricted = level == Level::Restricted;
    let containers = all_containers(spec);
    app_armor(metadata, spec, &containers, &mut out);
    if !restricted {
        baseline_capabilities(&containers, &mut out);
    }
    host_namespaces(spec, &mut out);
    if !restricted {
        host_path_volumes(spec, &mut out);
    }
    host_ports(&containers, &mut out);
    privileged(&containers, &mut out);
    proc_mount(&containers, &mut out);
    se_linux(spec, &containers, &mut out);
    if !restricted {
        baseline_seccomp(spec, &containers, &mut out);
    }
    sysctls(spec, &mut out);
    if restricted {
        privilege_escalation(&containers, &mut out);
        restricted_capabilities(&containers, &mut out);
        restricted_volumes(spec, &mut out);
        run_as_non_root(spec, &containers, &mut out);
        run_as_user(spec, &containers, &mut out);
        restricted_seccomp(spec, &containers, &mut out);
    }
    out
}

/// (name, container) for init, regular and ephemeral containers.
fn all_containers(spec: &Value) -> Vec<(&str, &Value)> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| spec.get(*field).and_then(Value::as_array))
        .flatten()
        .map(|c| (c.get("name").and_then(Value::as_str).unwrap_or(""), c))
        .collect()
}

fn join_quote(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn containers_word(names: &[&str]) -> String {
    match names.len() {
        1 => format!("container {}", join_quote(names)),
        _ => format!("containers {}", join_quote(names)),
    }
}

fn security_context<'a>(container: &'a Value, field: &str) -> Option<&'a Value> {
    container
        .get("securityContext")
        .and_then(|sc| sc.get(field))
        .filter(|v| !v.is_null())
}

fn host_namespaces(spec: &Value, out: &mut Vec<Violation>) {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|f| spec.get(**f).and_then(Value::as_bool) == Some(true))
        .map(|f| format!("{f}=true"))
        .collect();
    if !set.is_empty() {
        out.push(Violation {
            reason: "host namespaces",
            detail: set.join(", "),
        });
    }
}

fn privileged(containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let bad: Vec<&str> = containers
        .iter()
        .filter(|(_, c)| security_context(c, "privileged").and_then(Value::as_bool) == Some(true))
        .map(|(n, _)| *n)
        .collect();
    if !bad.is_empty() {
        out.push(Violation {
            reason: "privileged",
            detail: format!(
                "{} must not set securityContext.privileged=true",
                containers_word(&bad)
            ),
        });
    }
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(container: &Value) -> Vec<&str> {
    security_context(container, "capabilities")
        .and_then(|c| c.get("add"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn capability_violation(
    reason: &'static str,
    containers: &[(&str, &Value)],
    allowed: &[&str],
    out: &mut Vec<Violation>,
) {
    let mut bad_containers = Vec::new();
    let mut bad_caps: Vec<&str> = Vec::new();
    for (name, container) in containers {
        let bad: Vec<&str> = added_capabilities(container)
            .into_iter()
            .filter(|cap| !allowed.contains(cap))
            .collect();
        if !bad.is_empty() {
            bad_containers.push(*name);
            for cap in bad {
                if !bad_caps.contains(&cap) {
                    bad_caps.push(cap);
                }
            }
        }
    }
    if !bad_containers.is_empty() {
        out.push(Violation {
            reason,
            detail: format!(
                "{} must not include {} in securityContext.capabilities.add",
                containers_word(&bad_containers),
                join_quote(&bad_caps)
            ),
        });
    }
}

fn baseline_capabilities(containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    capability_violation(
        "non-default capabilities",
        containers,
        BASELINE_CAPABILITIES,
        out,
    );
}

fn volumes(spec: &Value) -> Vec<&Value> {
    spec.get("volumes")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default()
}

fn volume_name(volume: &Value) -> &str {
    volume.get("name").and_then(Value::as_str).unwrap_or("")
}

fn host_path_volumes(spec: &Value, out: &mut Vec<Violation>) {
    let bad: Vec<&str> = volumes(spec)
        .into_iter()
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(volume_name)
        .collect();
    if !bad.is_empty() {
        let word = if bad.len() == 1 { "volume" } else { "volumes" };
        out.push(Violation {
            reason: "hostPath volumes",
            detail: format!("{word} {}", join_quote(&bad)),
        });
    }
}

fn host_ports(containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let mut bad_containers = Vec::new();
    let mut ports = Vec::new();
    for (name, container) in containers {
        let used: Vec<i64> = container
            .get("ports")
            .and_then(Value::as_array)
            .map(|p| {
                p.iter()
                    .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
                    .filter(|p| *p != 0)
                    .collect()
            })
            .unwrap_or_default();
        if !used.is_empty() {
            bad_containers.push(*name);
            ports.extend(used.iter().map(i64::to_string));
        }
    }
    if !bad_containers.is_empty() {
        let word = if ports.len() == 1 {
            "hostPort"
        } else {
            "hostPorts"
        };
        out.push(Violation {
            reason: "hostPort",
            detail: format!(
                "{} uses {word} {}",
                containers_word(&bad_containers),
                ports.join(", ")
            ),
        });
    }
}

fn app_armor(
    metadata: &Value,
    spec: &Value,
    containers: &[(&str, &Value)],
    out: &mut Vec<Violation>,
) {
    let bad_type = |profile: Option<&Value>| {
        profile
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "Unconfined")
    };
    let mut bad: Vec<String> = Vec::new();
    if bad_type(
        spec.get("securityContext")
            .and_then(|sc| sc.get("appArmorProfile")),
    ) {
        bad.push("pod must not set securityContext.appArmorProfile.type to \"Unconfined\"".into());
    }
    for (name, container) in containers {
        if bad_type(security_context(container, "appArmorProfile")) {
            bad.push(format!(
                "container {name:?} must not set securityContext.appArmorProfile.type to \"Unconfined\""
            ));
        }
    }
    if let Some(annotations) = metadata.get("annotations").and_then(Value::as_object) {
        for (key, value) in annotations {
            let value = value.as_str().unwrap_or("");
            if key.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !(value == "runtime/default" || value.starts_with("localhost/"))
            {
                bad.push(format!("{key}={value:?}"));
            }
        }
    }
    if !bad.is_empty() {
        out.push(Violation {
            reason: "forbidden AppArmor profile",
            detail: bad.join(", "),
        });
    }
}

fn se_linux(spec: &Value, containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    const TYPES: &[&str] = &[
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    let mut problems: Vec<String> = Vec::new();
    let mut inspect = |options: Option<&Value>| {
        let Some(options) = options else { return };
        let ty = options.get("type").and_then(Value::as_str).unwrap_or("");
        if !TYPES.contains(&ty) {
            let p = format!("type {ty:?}");
            if !problems.contains(&p) {
                problems.push(p);
            }
        }
        for field in ["user", "role"] {
            if let Some(value) = options
                .get(field)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
            {
                let p = format!("{field} {value:?}");
                if !problems.contains(&p) {
                    problems.push(p);
                }
            }
        }
    };
    inspect(
        spec.get("securityContext")
            .and_then(|sc| sc.get("seLinuxOptions")),
    );
    for (_, container) in containers {
        inspect(security_context(container, "seLinuxOptions"));
    }
    if !problems.is_empty() {
        out.push(Violation {
            reason: "seLinuxOptions",
            detail: format!(
                "forbidden securityContext.seLinuxOptions: {}",
                problems.join(", ")
            ),
        });
    }
}

fn proc_mount(containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let bad: Vec<&str> = containers
        .iter()
        .filter(|(_, c)| {
            security_context(c, "procMount")
                .and_then(Value::as_str)
                .is_some_and(|m| m != "Default")
        })
        .map(|(n, _)| *n)
        .collect();
    if !bad.is_empty() {
        out.push(Violation {
            reason: "procMount",
            detail: format!(
                "{} must not set securityContext.procMount to \"Unmasked\"",
                containers_word(&bad)
            ),
        });
    }
}

fn seccomp_type(context: Option<&Value>) -> Option<&str> {
    context
        .and_then(|sc| sc.get("seccompProfile"))
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str)
}

fn baseline_seccomp(spec: &Value, containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let mut bad = Vec::new();
    if seccomp_type(spec.get("securityContext")) == Some("Unconfined") {
        bad.push("pod".to_string());
    }
    let names: Vec<&str> = containers
        .iter()
        .filter(|(_, c)| seccomp_type(c.get("securityContext")) == Some("Unconfined"))
        .map(|(n, _)| *n)
        .collect();
    if !names.is_empty() {
        bad.push(containers_word(&names));
    }
    if !bad.is_empty() {
        out.push(Violation {
            reason: "seccompProfile",
            detail: format!(
                "{} must not set securityContext.seccompProfile.type to \"Unconfined\"",
                bad.join(" and ")
            ),
        });
    }
}

const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

fn sysctls(spec: &Value, out: &mut Vec<Violation>) {
    let bad: Vec<&str> = spec
        .get("securityContext")
        .and_then(|sc| sc.get("sysctls"))
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|s| s.get("name").and_then(Value::as_str))
                .filter(|n| !SAFE_SYSCTLS.contains(n))
                .collect()
        })
        .unwrap_or_default();
    if !bad.is_empty() {
        out.push(Violation {
            reason: "forbidden sysctls",
            detail: bad.join(", "),
        });
    }
}

const RESTRICTED_VOLUME_SOURCES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
    "image",
];

fn restricted_volumes(spec: &Value, out: &mut Vec<Violation>) {
    let mut bad_names = Vec::new();
    let mut bad_types: Vec<String> = Vec::new();
    for volume in volumes(spec) {
        let Some(object) = volume.as_object() else {
            continue;
        };
        for (field, value) in object {
            if field == "name"
                || value.is_null()
                || RESTRICTED_VOLUME_SOURCES.contains(&field.as_str())
            {
                continue;
            }
            bad_names.push(volume_name(volume));
            if !bad_types.contains(field) {
                bad_types.push(field.clone());
            }
        }
    }
    if !bad_names.is_empty() {
        let (word, type_word) = match (bad_names.len(), bad_types.len()) {
            (1, _) => ("volume", "type"),
            (_, 1) => ("volumes", "type"),
            _ => ("volumes", "types"),
        };
        let types: Vec<&str> = bad_types.iter().map(String::as_str).collect();
        out.push(Violation {
            reason: "restricted volume types",
            detail: format!(
                "{word} {} uses restricted volume {type_word} {}",
                join_quote(&bad_names),
                join_quote(&types)
            ),
        });
    }
}

fn privilege_escalation(containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let bad: Vec<&str> = containers
        .iter()
        .filter(|(_, c)| {
            security_context(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false)
        })
        .map(|(n, _)| *n)
        .collect();
    if !bad.is_empty() {
        out.push(Violation {
            reason: "allowPrivilegeEscalation != false",
            detail: format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_word(&bad)
            ),
        });
    }
}

fn run_as_non_root(spec: &Value, containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let pod = spec
        .get("securityContext")
        .and_then(|sc| sc.get("runAsNonRoot"))
        .and_then(Value::as_bool);
    let mut setters = Vec::new();
    if pod == Some(false) {
        setters.push("pod".to_string());
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for (name, container) in containers {
        match security_context(container, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(*name),
            Some(true) => {}
            None if pod != Some(true) => implicit.push(*name),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_word(&explicit));
    }
    if !setters.is_empty() {
        out.push(Violation {
            reason: "runAsNonRoot != true",
            detail: format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        });
    } else if !implicit.is_empty() {
        out.push(Violation {
            reason: "runAsNonRoot != true",
            detail: format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_word(&implicit)
            ),
        });
    }
}

fn run_as_user(spec: &Value, containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let mut bad = Vec::new();
    if spec
        .get("securityContext")
        .and_then(|sc| sc.get("runAsUser"))
        .and_then(Value::as_i64)
        == Some(0)
    {
        bad.push("pod".to_string());
    }
    let names: Vec<&str> = containers
        .iter()
        .filter(|(_, c)| security_context(c, "runAsUser").and_then(Value::as_i64) == Some(0))
        .map(|(n, _)| *n)
        .collect();
    if !names.is_empty() {
        bad.push(containers_word(&names));
    }
    if !bad.is_empty() {
        out.push(Violation {
            reason: "runAsUser=0",
            detail: format!("{} must not set runAsUser=0", bad.join(" and ")),
        });
    }
}

fn restricted_seccomp(spec: &Value, containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let good = |t: Option<&str>| matches!(t, Some("RuntimeDefault") | Some("Localhost"));
    let pod = seccomp_type(spec.get("securityContext"));
    let mut setters = Vec::new();
    if pod.is_some() && !good(pod) {
        setters.push("pod".to_string());
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for (name, container) in containers {
        match seccomp_type(container.get("securityContext")) {
            Some(t) if !good(Some(t)) => explicit.push(*name),
            Some(_) => {}
            None if !good(pod) => implicit.push(*name),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_word(&explicit));
    }
    if !setters.is_empty() {
        out.push(Violation {
            reason: "seccompProfile",
            detail: format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                "\"Unconfined\""
            ),
        });
    } else if !implicit.is_empty() {
        out.push(Violation {
            reason: "seccompProfile",
            detail: format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_word(&implicit)
            ),
        });
    }
}

fn restricted_capabilities(containers: &[(&str, &Value)], out: &mut Vec<Violation>) {
    let mut missing_drop = Vec::new();
    for (name, container) in containers {
        let drops_all = security_context(container, "capabilities")
            .and_then(|c| c.get("drop"))
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|c| c == "ALL"));
        if !drops_all {
            missing_drop.push(*name);
        }
    }
    let before = out.len();
    capability_violation(
        "unrestricted capabilities",
        containers,
        &["NET_BIND_SERVICE"],
        out,
    );
    let add_detail = (out.len() > before).then(|| out.remove(before).detail);
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_word(&missing_drop)
        ));
    }
    details.extend(add_detail);
    if !details.is_empty() {
        out.push(Violation {
            reason: "unrestricted capabilities",
            detail: details.join("; "),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn privileged_spec() -> Value {
        json!({"containers": [{"name": "c", "image": "busybox",
            "securityContext": {"privileged": true}}]})
    }

    #[test]
    fn a_privileged_container_fails_baseline_with_upstreams_words() {
        let violations = check(Level::Baseline, &json!({}), &privileged_spec());
        assert_eq!(
            render(&violations),
            "privileged (container \"c\" must not set securityContext.privileged=true)"
        );
        assert!(check(Level::Privileged, &json!({}), &privileged_spec()).is_empty());
    }

    #[test]
    fn restricted_lists_every_missing_setting_in_upstreams_order() {
        let violations = check(Level::Restricted, &json!({}), &privileged_spec());
        assert_eq!(
            render(&violations),
            "privileged (container \"c\" must not set securityContext.privileged=true), \
             allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn a_hardened_pod_passes_restricted() {
        let spec = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "v", "emptyDir": {}}],
        });
        assert_eq!(check(Level::Restricted, &json!({}), &spec), vec![]);
    }

    #[test]
    fn host_namespaces_ports_paths_and_capabilities_fail_baseline() {
        let spec = json!({
            "hostNetwork": true, "hostPID": true,
            "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
        });
        assert_eq!(
            render(&check(Level::Baseline, &json!({}), &spec)),
            "non-default capabilities (container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add), \
             host namespaces (hostNetwork=true, hostPID=true), \
             hostPath volumes (volume \"root\"), \
             hostPort (container \"a\" uses hostPort 8080), \
             forbidden sysctls (kernel.msgmax)"
        );
    }

    #[test]
    fn restricted_volume_types_are_named() {
        let spec =
            json!({"containers": [], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]});
        let violations = check(Level::Restricted, &json!({}), &spec);
        assert!(violations.contains(&Violation {
            reason: "restricted volume types",
            detail: "volume \"root\" uses restricted volume type \"hostPath\"".into(),
        }));
    }
}
