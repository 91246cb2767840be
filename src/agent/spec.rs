//! Pure functions from a Pod and one of its containers to the runtime's [`ContainerSpec`]:
//! command line, environment, user, resources, seccomp, DNS and hosts files.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::runtime::images::{Image, ImageRuntimeConfig, PullPolicy};
use crate::runtime::{cgroups, ContainerSpec, MountSpec, Resources, RootfsSpec, SeccompProfile};

/// The CFS period quotas are expressed in (the kernel's default, as kubelet uses).
const CPU_PERIOD_US: u64 = 100_000;
/// cpu.shares has a floor of 2 in the kernel.
const MIN_CPU_SHARES: u64 = 2;
const LOG_MAX_BYTES: u64 = 10 << 20;
const LOG_MAX_FILES: u32 = 5;

/// `imagePullPolicy`, defaulted as the API server does: `Always` for `:latest` or no tag.
pub fn pull_policy(container: &Container) -> PullPolicy {
    match container.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ => {
            let image = container.image.as_deref().unwrap_or("");
            if image_has_fixed_tag(image) {
                PullPolicy::IfNotPresent
            } else {
                PullPolicy::Always
            }
        }
    }
}

/// Whether `image` names a tag other than `latest` or a digest.
fn image_has_fixed_tag(image: &str) -> bool {
    if image.contains('@') {
        return true;
    }
    // The tag is after the last ':' that comes after the last '/' (a port is before it).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag != "latest",
        None => false,
    }
}

/// Expands `$(VAR)` references as Kubernetes does: known names are replaced, `$$` escapes a
/// `$`, and unknown references stay as written.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(close) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + close];
                        match vars.get(name) {
                            Some(value) => out.push_str(value),
                            None => out.push_str(&input[i..i + 3 + close]),
                        }
                        i += 3 + close;
                        continue;
                    }
                }
                _ => {}
            }
        }
        // Push the whole UTF-8 character starting here.
        let ch = input[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The process to run, as upstream merges it: `command` replaces the image's entrypoint (and
/// drops its cmd), `args` replace the image's cmd; both expanded against the container's env.
pub fn command_line(
    container: &Container,
    image: &ImageRuntimeConfig,
    vars: &HashMap<String, String>,
) -> Vec<String> {
    let expand_all =
        |list: &[String]| -> Vec<String> { list.iter().map(|s| expand(s, vars)).collect() };
    let command = container.command.as_deref().unwrap_or(&[]);
    let args = container.args.as_deref().unwrap_or(&[]);
    let mut line = if command.is_empty() {
        image.entrypoint.clone()
    } else {
        expand_all(command)
    };
    if !args.is_empty() {
        line.extend(expand_all(args));
    } else if command.is_empty() {
        line.extend(image.cmd.iter().cloned());
    }
    line
}

/// The final environment: the image's, then the container's (resolved) on top, in order.
pub fn merge_env(image_env: &[String], container_env: &[(String, String)]) -> Vec<String> {
    let mut merged: Vec<(String, String)> = image_env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect();
    for (k, v) in container_env {
        match merged.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.clone(),
            None => merged.push((k.clone(), v.clone())),
        }
    }
    if !merged.iter().any(|(k, _)| k == "PATH") {
        merged.insert(
            0,
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
        );
    }
    merged
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Parses a Kubernetes quantity (`500m`, `1.5`, `32Mi`, `1G`, `2e3`) into a number of units.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

fn quantity(
    list: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
    name: &str,
) -> Option<f64> {
    list.and_then(|l| l.get(name))
        .and_then(|q| parse_quantity(&q.0))
}

/// Cgroup limits from requests and limits: cpu shares from the cpu request (the limit when
/// there is no request), a CFS quota from the cpu limit, the memory limit as is.
pub fn resources(container: &Container) -> Resources {
    let req = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let lim = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let cpu_request = quantity(req, "cpu").or_else(|| quantity(lim, "cpu"));
    let cpu_limit = quantity(lim, "cpu");
    let memory_limit = quantity(lim, "memory");
    Resources {
        cpu_shares: Some(
            cpu_request
                .map(|cores| ((cores * 1024.0) as u64).max(MIN_CPU_SHARES))
                .unwrap_or(MIN_CPU_SHARES),
        ),
        cpu_quota: cpu_limit.map(|cores| ((cores * CPU_PERIOD_US as f64) as i64).max(1000)),
        cpu_period: cpu_limit.map(|_| CPU_PERIOD_US),
        memory_limit: memory_limit.map(|bytes| bytes as i64),
        pids_limit: None,
    }
}

/// The pod's QoS class, as the API server computes it into `status.qosClass`.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let all = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let lim = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        for name in ["cpu", "memory"] {
            let l = quantity(lim, name);
            let r = quantity(req, name).or(l);
            if l.is_some() || r.is_some() {
                any = true;
            }
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn oom_score_adj(qos: &str) -> i32 {
    match qos {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => 500,
    }
}

/// The user to run as: the container's securityContext, then the pod's, then the image's
/// `user` (`uid`, `uid:gid`, or names looked up in the image's passwd and group files).
pub fn user_of(pod: &PodSpec, container: &Container, image: &Image) -> (u32, u32) {
    let csc = container.security_context.as_ref();
    let psc = pod.security_context.as_ref();
    let run_as_user = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let run_as_group = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group));
    let (image_uid, image_gid) = image_user(&image.config.user, &image.layers);
    let uid = run_as_user.map(|u| u as u32).unwrap_or(image_uid);
    let gid = run_as_group.map(|g| g as u32).unwrap_or(image_gid);
    (uid, gid)
}

fn image_user(user: &str, layers: &[PathBuf]) -> (u32, u32) {
    if user.is_empty() {
        return (0, 0);
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_from_layers(layers, "etc/passwd");
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, lookup_id(&passwd, |f| f[2] == u).unwrap_or(0)),
        Err(_) => {
            let entry = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[0] == u);
            match entry {
                Some(f) => (f[2].parse().unwrap_or(0), f[3].parse().unwrap_or(0)),
                None => (0, 0),
            }
        }
    };
    let gid = match g {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_from_layers(layers, "etc/group");
                group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() > 2 && f[0] == g)
                    .and_then(|f| f[2].parse().ok())
                    .unwrap_or(0)
            }
        },
    };
    (uid, gid)
}

fn lookup_id(passwd: &str, matches: impl Fn(&[&str]) -> bool) -> Option<u32> {
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && matches(f))
        .and_then(|f| f[3].parse().ok())
}

/// A file as the top-most layer that has it sees it.
fn read_from_layers(layers: &[PathBuf], path: &str) -> String {
    layers
        .iter()
        .rev()
        .find_map(|l| std::fs::read_to_string(l.join(path)).ok())
        .unwrap_or_default()
}

/// Where Localhost seccomp profiles live on the node, as kubelet's `<root-dir>/seccomp`.
pub fn seccomp_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("seccomp")
}

/// RuntimeDefault unless the container (or else the pod) asks for something else. A Localhost
/// profile is a file below `seccomp_dir`; one that names no file, or a path that would leave
/// that directory, is refused (the API refuses both; this guards objects written before).
pub fn seccomp(
    pod: &PodSpec,
    container: &Container,
    seccomp_dir: &Path,
) -> Result<SeccompProfile, String> {
    let profile = container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| {
            pod.security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref())
        });
    match profile {
        Some(p) if p.type_ == "Unconfined" => Ok(SeccompProfile::Unconfined),
        Some(p) if p.type_ == "Localhost" => {
            let Some(file) = p.localhost_profile.as_deref() else {
                return Err(
                    "localhostProfile must be set if seccompProfile type is Localhost".into(),
                );
            };
            let relative = Path::new(file);
            let stays_below = relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if file.is_empty() || !stays_below {
                return Err(format!(
                    "localhostProfile {file:?} must be a relative path without '..'"
                ));
            }
            Ok(SeccompProfile::Localhost(seccomp_dir.join(relative)))
        }
        _ => Ok(SeccompProfile::RuntimeDefault),
    }
}

/// The node facts resolv.conf is built from.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub cluster_dns: std::net::Ipv4Addr,
    pub cluster_domain: String,
    /// The host's own resolv.conf, for `dnsPolicy: Default`.
    pub host_resolv_conf: String,
}

/// The host's resolv.conf as `dnsPolicy: Default` pods inherit it, read from this host.
pub fn host_resolv_conf_for_pods() -> String {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    choose_host_resolv_conf(
        read(crate::dns::forward::HOST_RESOLV_CONF).as_deref(),
        read(crate::dns::forward::SYSTEMD_RESOLV_CONF).as_deref(),
    )
}

/// `/etc/resolv.conf`, unless every nameserver in it is a loopback stub (systemd-resolved's
/// 127.0.0.53): a pod in its own network namespace reaches nothing there, so it gets the
/// stub's own upstream list instead, the file kubelet's `--resolv-conf` is pointed at on such
/// hosts.
fn choose_host_resolv_conf(etc: Option<&str>, systemd: Option<&str>) -> String {
    let usable = |text: &str| {
        crate::dns::forward::nameservers(text)
            .iter()
            .any(|ip| !ip.is_loopback() && !ip.is_unspecified())
    };
    match (etc, systemd) {
        (Some(etc), _) if usable(etc) => etc.to_string(),
        (_, Some(systemd)) if usable(systemd) => systemd.to_string(),
        (etc, _) => etc.unwrap_or_default().to_string(),
    }
}

/// The pod's `/etc/resolv.conf`.
pub fn resolv_conf(pod: &Pod, dns: &DnsSettings) -> String {
    let spec = pod.spec.as_ref();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let domain = &dns.cluster_domain;
    let (mut servers, mut searches, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        match policy {
            "Default" => parse_resolv_conf(&dns.host_resolv_conf),
            "ClusterFirst" if host_network => parse_resolv_conf(&dns.host_resolv_conf),
            "None" => (vec![], vec![], vec![]),
            _ => (
                vec![dns.cluster_dns.to_string()],
                vec![
                    format!("{namespace}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.clone(),
                ],
                vec!["ndots:5".into()],
            ),
        };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        for s in config.nameservers.iter().flatten() {
            if !servers.contains(s) {
                servers.push(s.clone());
            }
        }
        for s in config.searches.iter().flatten() {
            if !searches.contains(s) {
                searches.push(s.clone());
            }
        }
        for o in config.options.iter().flatten() {
            let key = o.name.clone().unwrap_or_default();
            let text = match &o.value {
                Some(v) => format!("{key}:{v}"),
                None => key.clone(),
            };
            options.retain(|existing| existing.split(':').next() != Some(key.as_str()));
            options.push(text);
        }
    }
    let mut out = String::new();
    for s in servers.iter().take(3) {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

#[allow(clippy::type_complexity)]
fn parse_resolv_conf(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(String::from)),
            Some("search") | Some("domain") => searches.extend(words.map(String::from)),
            Some("options") => options.extend(words.map(String::from)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// The pod's hostname: `spec.hostname` or its name, cut to 63 characters.
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches(['-', '.'])
        .to_string()
}

/// The pod's `/etc/hosts`: loopback, the pod's own address and name, host aliases.
pub fn hosts_file(pod: &Pod, pod_ip: Option<&str>, cluster_domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    if let Some(ip) = pod_ip {
        let spec = pod.spec.as_ref();
        match spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty())
        {
            Some(sub) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                out.push_str(&format!(
                    "{ip}\t{host}.{sub}.{ns}.svc.{cluster_domain}\t{host}\n"
                ));
            }
            None => out.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref());
    if let Some(aliases) = aliases {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.clone().unwrap_or_default();
            out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
        }
    }
    out
}

/// Everything `container_spec` needs besides the Pod and the container.
pub struct SpecInputs<'a> {
    pub image: &'a Image,
    /// The container's own env, resolved (values, valueFrom, envFrom), in order.
    pub env: &'a [(String, String)],
    pub mounts: Vec<MountSpec>,
    pub cgroup_parent: &'a str,
    pub log_path: PathBuf,
    /// From [`seccomp`].
    pub seccomp: SeccompProfile,
}

/// Builds the runtime spec of `container` in `pod`.
pub fn container_spec(pod: &Pod, container: &Container, inputs: SpecInputs<'_>) -> ContainerSpec {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let image = inputs.image;
    let vars: HashMap<String, String> = inputs.env.iter().cloned().collect();
    let (uid, gid) = user_of(spec, container, image);
    let cwd = container
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(image.config.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let csc = container.security_context.as_ref();
    let additional_gids = spec
        .security_context
        .as_ref()
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .chain(spec.security_context.as_ref().and_then(|s| s.fs_group))
        .map(|g| g as u32)
        .collect();
    ContainerSpec {
        name: container.name.clone(),
        rootfs: RootfsSpec::Overlay {
            lower: image.layers.clone(),
        },
        args: command_line(container, &image.config, &vars),
        env: merge_env(&image.config.env, inputs.env),
        cwd: PathBuf::from(cwd),
        uid,
        gid,
        additional_gids,
        hostname: hostname(pod),
        mounts: inputs.mounts,
        netns_path: None,
        cgroup_path: cgroups::container_cgroup_path(inputs.cgroup_parent, &container.name),
        resources: resources(container),
        capabilities: None,
        oom_score_adj: Some(oom_score_adj(qos_class(spec))),
        // Loading a seccomp filter without CAP_SYS_ADMIN needs no_new_privs, so only an
        // unconfined container that explicitly allows escalation goes without it.
        no_new_privileges: !(csc.and_then(|s| s.allow_privilege_escalation) == Some(true)
            && inputs.seccomp == SeccompProfile::Unconfined),
        readonly_rootfs: csc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        seccomp: inputs.seccomp,
        log_path: inputs.log_path,
        log_max_bytes: LOG_MAX_BYTES,
        log_max_files: LOG_MAX_FILES,
        stdin: container.stdin == Some(true),
        stdin_once: container.stdin_once == Some(true),
        tty: container.tty == Some(true),
        pid_namespace: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).unwrap()
    }

    fn image(entrypoint: &[&str], cmd: &[&str]) -> Image {
        Image {
            reference: "docker.io/library/busybox:latest".into(),
            id: "sha256:1".into(),
            digest: "docker.io/library/busybox@sha256:1".into(),
            layers: vec![PathBuf::from("/nonexistent/layer")],
            config: ImageRuntimeConfig {
                entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                env: vec!["PATH=/bin".into(), "FROM_IMAGE=1".into()],
                working_dir: "/work".into(),
                user: "".into(),
                exposed_ports: vec![],
            },
            size: 0,
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pull_policy_defaults_to_always_for_latest_or_no_tag() {
        let p = |img: &str| pull_policy(&container(json!({"name": "c", "image": img})));
        assert_eq!(p("busybox"), PullPolicy::Always);
        assert_eq!(p("busybox:latest"), PullPolicy::Always);
        assert_eq!(p("localhost:5000/busybox"), PullPolicy::Always);
        assert_eq!(p("busybox:1.36"), PullPolicy::IfNotPresent);
        assert_eq!(p("busybox@sha256:abc"), PullPolicy::IfNotPresent);
        let explicit = container(json!({"name": "c", "image": "b", "imagePullPolicy": "Never"}));
        assert_eq!(pull_policy(&explicit), PullPolicy::Never);
    }

    #[test]
    fn expand_replaces_known_vars_keeps_unknown_and_unescapes_dollars() {
        let v = vars(&[("A", "x"), ("B", "y")]);
        assert_eq!(expand("$(A)-$(B)", &v), "x-y");
        assert_eq!(expand("$(C) stays", &v), "$(C) stays");
        assert_eq!(expand("$$(A) is escaped", &v), "$(A) is escaped");
        assert_eq!(expand("unclosed $(A", &v), "unclosed $(A");
        assert_eq!(expand("ünï $(A)", &v), "ünï x");
    }

    #[test]
    fn command_replaces_entrypoint_and_drops_image_cmd() {
        let img = image(&["/entry"], &["default"]);
        let c = container(json!({"name": "c", "command": ["echo", "$(A)"]}));
        assert_eq!(
            command_line(&c, &img.config, &vars(&[("A", "hi")])),
            vec!["echo", "hi"]
        );
    }

    #[test]
    fn args_alone_replace_only_the_image_cmd() {
        let img = image(&["/entry"], &["default"]);
        let c = container(json!({"name": "c", "args": ["one", "$(A)"]}));
        assert_eq!(
            command_line(&c, &img.config, &vars(&[("A", "two")])),
            vec!["/entry", "one", "two"]
        );
        let bare = container(json!({"name": "c"}));
        assert_eq!(
            command_line(&bare, &img.config, &HashMap::new()),
            vec!["/entry", "default"]
        );
    }

    #[test]
    fn container_env_overrides_image_env_in_place() {
        let env = merge_env(
            &["PATH=/bin".into(), "X=image".into()],
            &[("X".into(), "pod".into()), ("Y".into(), "new".into())],
        );
        assert_eq!(env, vec!["PATH=/bin", "X=pod", "Y=new"]);
    }

    #[test]
    fn quantities_parse_with_binary_and_decimal_suffixes() {
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("32Mi"), Some(32.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("lots"), None);
    }

    #[test]
    fn resources_come_from_requests_and_limits() {
        let c = container(json!({"name": "c", "resources": {
            "requests": {"cpu": "250m"},
            "limits": {"cpu": "500m", "memory": "32Mi"}}}));
        let r = resources(&c);
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_limit, Some(32 << 20));
        let none = resources(&container(json!({"name": "c"})));
        assert_eq!(none.cpu_shares, Some(2));
        assert_eq!(none.memory_limit, None);
    }

    #[test]
    fn qos_class_follows_requests_and_limits() {
        let p = |c: serde_json::Value| {
            let p = pod(json!({"spec": {"containers": [c]}}));
            qos_class(p.spec.as_ref().unwrap())
        };
        assert_eq!(p(json!({"name": "a"})), "BestEffort");
        assert_eq!(
            p(json!({"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}})),
            "Guaranteed"
        );
        assert_eq!(
            p(json!({"name": "a", "resources": {"requests": {"cpu": "1"}}})),
            "Burstable"
        );
    }

    #[test]
    fn cluster_first_resolv_conf_searches_the_namespace_then_the_cluster() {
        let dns = DnsSettings {
            cluster_dns: "10.43.0.10".parse().unwrap(),
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: "nameserver 1.1.1.1\nsearch lan\n".into(),
        };
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "team"}, "spec": {"containers": []}}),
        );
        assert_eq!(
            resolv_conf(&p, &dns),
            "nameserver 10.43.0.10\nsearch team.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        let default = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "dnsPolicy": "Default"}}),
        );
        assert_eq!(
            resolv_conf(&default, &dns),
            "nameserver 1.1.1.1\nsearch lan\n"
        );
        let none = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["9.9.9.9"], "searches": ["x.y"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}),
        );
        assert_eq!(
            resolv_conf(&none, &dns),
            "nameserver 9.9.9.9\nsearch x.y\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn default_policy_pods_get_the_stub_resolvers_upstreams_when_the_host_only_has_the_stub() {
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let upstreams = "nameserver 192.168.1.1\nsearch lan\n";
        assert_eq!(
            choose_host_resolv_conf(Some(stub), Some(upstreams)),
            upstreams
        );
        let plain = "nameserver 192.168.1.1\nnameserver 127.0.0.1\n";
        assert_eq!(choose_host_resolv_conf(Some(plain), Some(upstreams)), plain);
        // Nothing better to offer: the host's file as it is.
        assert_eq!(choose_host_resolv_conf(Some(stub), None), stub);
        assert_eq!(choose_host_resolv_conf(None, Some(upstreams)), upstreams);
        assert_eq!(choose_host_resolv_conf(None, None), "");
    }

    #[test]
    fn hosts_file_names_the_pod_with_its_subdomain() {
        let p = pod(json!({"metadata": {"name": "web-0", "namespace": "ns"},
            "spec": {"containers": [], "subdomain": "web",
                     "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}]}}));
        let hosts = hosts_file(&p, Some("10.42.0.5"), "cluster.local");
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("10.42.0.5\tweb-0.web.ns.svc.cluster.local\tweb-0\n"));
        assert!(hosts.contains("1.2.3.4\ta\tb\n"));
    }

    #[test]
    fn container_spec_combines_image_pod_and_container() {
        let p = pod(
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"hostname": "custom", "securityContext": {"runAsUser": 1000, "runAsGroup": 2000,
                     "seccompProfile": {"type": "Unconfined"}},
                     "containers": [{"name": "app", "image": "busybox", "args": ["$(GREETING)"],
                                     "env": [{"name": "GREETING", "value": "hello"}]}]}}),
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let img = image(&["echo"], &["nothing"]);
        let env = vec![("GREETING".to_string(), "hello".to_string())];
        let spec = container_spec(
            &p,
            c,
            SpecInputs {
                image: &img,
                env: &env,
                mounts: vec![],
                cgroup_parent: "berth/podu1",
                log_path: PathBuf::from("/logs/app/0.log"),
                seccomp: seccomp(p.spec.as_ref().unwrap(), c, Path::new("/data/seccomp")).unwrap(),
            },
        );
        assert_eq!(spec.args, vec!["echo", "hello"]);
        assert_eq!(
            spec.env,
            vec!["PATH=/bin", "FROM_IMAGE=1", "GREETING=hello"]
        );
        assert_eq!((spec.uid, spec.gid), (1000, 2000));
        assert_eq!(spec.cwd, PathBuf::from("/work"));
        assert_eq!(spec.hostname, "custom");
        assert_eq!(spec.seccomp, SeccompProfile::Unconfined);
        assert_eq!(spec.oom_score_adj, Some(1000));
        assert_eq!(
            spec.rootfs,
            RootfsSpec::Overlay {
                lower: vec![PathBuf::from("/nonexistent/layer")]
            }
        );
        assert!(spec.cgroup_path.starts_with("berth/podu1"));
    }

    #[test]
    fn localhost_seccomp_profiles_are_files_below_the_nodes_seccomp_dir() {
        let with_profile = |profile: Value| {
            let p = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "app", "image": "busybox",
                 "securityContext": {"seccompProfile": profile}}]}}));
            let spec = p.spec.unwrap();
            seccomp(&spec, &spec.containers[0], Path::new("/data/seccomp"))
        };
        assert_eq!(
            with_profile(json!({"type": "Localhost", "localhostProfile": "deny/mkdir.json"})),
            Ok(SeccompProfile::Localhost(PathBuf::from(
                "/data/seccomp/deny/mkdir.json"
            )))
        );
        for escaping in ["/etc/profile.json", "../profile.json", "a/../../b.json", ""] {
            let refused = with_profile(json!({"type": "Localhost", "localhostProfile": escaping}));
            assert!(refused.is_err(), "{escaping:?} accepted: {refused:?}");
        }
        let unnamed = with_profile(json!({"type": "Localhost"}));
        assert!(
            unnamed.is_err_and(|e| e.contains("localhostProfile must be set")),
            "a Localhost profile without a file must not fall back to another profile"
        );
        assert_eq!(
            with_profile(json!({"type": "RuntimeDefault"})),
            Ok(SeccompProfile::RuntimeDefault)
        );
    }

    #[test]
    fn image_user_names_are_looked_up_in_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65533:nobody:/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nwheel:x:10:\n").unwrap();
        let layers = vec![dir.path().to_path_buf()];
        assert_eq!(image_user("nobody", &layers), (65534, 65533));
        assert_eq!(image_user("nobody:wheel", &layers), (65534, 10));
        assert_eq!(image_user("42:43", &layers), (42, 43));
        assert_eq!(image_user("", &layers), (0, 0));
    }
}
