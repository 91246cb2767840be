//! The default policy every cluster starts with, reconciled at each start as upstream's
//! `bootstrappolicy`: the user-facing roles (cluster-admin, admin, edit, view), the roles every
//! authenticated user has (discovery, basic-user, public-info-viewer), and one least-privilege
//! role per berth component, bound to the user that component acts as.
//!
//! A role missing is created; a role whose rules no longer cover the defaults gets the missing
//! ones added, unless its `rbac.authorization.kubernetes.io/autoupdate` annotation is "false"
//! (upstream's opt-out). Rules an administrator added are kept.

use serde_json::{json, Value};

use super::rules::{covers, PolicyRule};
use crate::api::resources;
use crate::api::ApiResult;
use crate::registry::{Part, Registry};

const GROUP: &str = "rbac.authorization.k8s.io";
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
pub const AGGREGATE_TO: &str = "rbac.authorization.k8s.io/aggregate-to-";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn r(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule::resources(verbs, groups, resources)
}

/// Rules letting a component record Events (core and events.k8s.io).
fn events() -> PolicyRule {
    r(
        &["create", "update", "patch"],
        &["", "events.k8s.io"],
        &["events"],
    )
}

/// A bootstrap ClusterRole: name, labels, rules, aggregation selectors.
struct Role {
    name: &'static str,
    labels: Vec<(String, &'static str)>,
    rules: Vec<PolicyRule>,
    aggregate_from: Vec<&'static str>,
}

fn role(name: &'static str, rules: Vec<PolicyRule>) -> Role {
    Role {
        name,
        labels: Vec::new(),
        rules,
        aggregate_from: Vec::new(),
    }
}

fn aggregate_label(to: &str) -> String {
    format!("{AGGREGATE_TO}{to}")
}

/// The users berth's components act as (`system:<component>`), and the ClusterRole each has.
pub const COMPONENTS: &[(&str, &str)] = &[
    ("controllers", "system:controller:namespace-controller"),
    (
        "replicaset-controller",
        "system:controller:replicaset-controller",
    ),
    (
        "replication-controller",
        "system:controller:replication-controller",
    ),
    (
        "deployment-controller",
        "system:controller:deployment-controller",
    ),
    ("job-controller", "system:controller:job-controller"),
    (
        "horizontal-pod-autoscaler",
        "system:controller:horizontal-pod-autoscaler",
    ),
    ("cronjob-controller", "system:controller:cronjob-controller"),
    (
        "ttl-after-finished-controller",
        "system:controller:ttl-after-finished-controller",
    ),
    (
        "generic-garbage-collector",
        "system:controller:generic-garbage-collector",
    ),
    (
        "endpointslice-controller",
        "system:controller:endpointslice-controller",
    ),
    (
        "endpointslicemirroring-controller",
        "system:controller:endpointslicemirroring-controller",
    ),
    (
        "apiextensions-controller",
        "system:controller:apiextensions-controller",
    ),
    (
        "statefulset-controller",
        "system:controller:statefulset-controller",
    ),
    (
        "daemonset-controller",
        "system:controller:daemonset-controller",
    ),
    (
        "local-path-provisioner",
        "system:controller:local-path-provisioner",
    ),
    (
        "serviceaccount-controller",
        "system:controller:serviceaccount-controller",
    ),
    (
        "clusterrole-aggregation-controller",
        "system:controller:clusterrole-aggregation-controller",
    ),
    ("node-controller", "system:controller:node-controller"),
    (
        "disruption-controller",
        "system:controller:disruption-controller",
    ),
    (
        "resourcequota-controller",
        "system:controller:resourcequota-controller",
    ),
    (
        "pod-garbage-collector",
        "system:controller:pod-garbage-collector",
    ),
    ("ingress-controller", "system:berth:ingress-controller"),
    ("event-ttl-controller", "system:berth:event-ttl-controller"),
    ("berth-certs", "system:berth:certs"),
    ("kube-scheduler", "system:kube-scheduler"),
    ("node", "system:node"),
    (
        "certificate-controller",
        "system:controller:certificate-controller",
    ),
    (
        "node-ipam-controller",
        "system:controller:node-ipam-controller",
    ),
    ("bootstrap-signer", "system:controller:bootstrap-signer"),
    ("dns", "system:berth:dns"),
    ("kube-proxy", "system:node-proxier"),
    ("network-policy", "system:berth:network-policy"),
    ("leader-elector", "system:berth:leader-elector"),
];

/// Verbs for the objects a controller owns the state of: it reads them, and writes only what
/// it computes (its own status, or annotations and owner references on the object itself).
const OWN: &[&str] = &["get", "list", "watch", "update", "patch"];
/// Verbs for the objects a controller makes and removes (a ReplicaSet's pods, ...).
const MADE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const STATUS_WRITE: &[&str] = &["update", "patch"];

/// `plural/status` (and `plural/finalizers`, which an owner reference with
/// `blockOwnerDeletion` needs upstream) for a controller's own kind.
fn status_of(group: &str, plural: &str) -> Vec<PolicyRule> {
    let status = format!("{plural}/status");
    let finalizers = format!("{plural}/finalizers");
    vec![
        r(STATUS_WRITE, &[group], &[status.as_str()]),
        r(&["update"], &[group], &[finalizers.as_str()]),
    ]
}

/// Each component's rules: what its code does through the API and no more (the table test
/// below lists those calls). Wildcards only where upstream has them too, because the component
/// works on every kind: namespace deletion, garbage collection, quota counting, `*/scale` for
/// the HPA, and removing a deleted CRD's objects.
fn component_rules(role: &str) -> Vec<PolicyRule> {
    let core_read = |plurals: &[&str]| r(READ, &[""], plurals);
    let rules = |parts: Vec<Vec<PolicyRule>>| parts.concat();
    match role {
        "system:controller:namespace-controller" => vec![
            r(
                &["get", "list", "watch", "delete", "update", "patch"],
                &[""],
                &["namespaces"],
            ),
            r(
                STATUS_WRITE,
                &[""],
                &["namespaces/finalize", "namespaces/status"],
            ),
            r(
                &["get", "list", "watch", "delete", "deletecollection"],
                &["*"],
                &["*"],
            ),
        ],
        "system:controller:replicaset-controller" => rules(vec![
            vec![r(OWN, &["apps"], &["replicasets"])],
            status_of("apps", "replicasets"),
            vec![r(MADE, &[""], &["pods"]), events()],
        ]),
        "system:controller:replication-controller" => rules(vec![
            vec![r(OWN, &[""], &["replicationcontrollers"])],
            status_of("", "replicationcontrollers"),
            vec![r(MADE, &[""], &["pods"]), events()],
        ]),
        "system:controller:deployment-controller" => rules(vec![
            vec![r(OWN, &["apps"], &["deployments"])],
            status_of("apps", "deployments"),
            vec![
                r(MADE, &["apps"], &["replicasets"]),
                core_read(&["pods"]),
                events(),
            ],
        ]),
        // As upstream: scale any scalable resource, read pods and their resource metrics.
        "system:controller:horizontal-pod-autoscaler" => vec![
            r(READ, &["autoscaling"], &["horizontalpodautoscalers"]),
            r(
                STATUS_WRITE,
                &["autoscaling"],
                &["horizontalpodautoscalers/status"],
            ),
            r(&["get", "update", "patch"], &["*"], &["*/scale"]),
            core_read(&["pods"]),
            r(&["get", "list"], &["metrics.k8s.io"], &["pods"]),
            events(),
        ],
        "system:controller:job-controller" => rules(vec![
            vec![r(OWN, &["batch"], &["jobs"])],
            status_of("batch", "jobs"),
            vec![r(MADE, &[""], &["pods"]), events()],
        ]),
        "system:controller:cronjob-controller" => rules(vec![
            vec![r(OWN, &["batch"], &["cronjobs"])],
            status_of("batch", "cronjobs"),
            vec![r(MADE, &["batch"], &["jobs"]), events()],
        ]),
        "system:controller:ttl-after-finished-controller" => {
            vec![
                r(&["get", "list", "watch", "delete"], &["batch"], &["jobs"]),
                events(),
            ]
        }
        "system:controller:generic-garbage-collector" => vec![r(
            &["get", "list", "watch", "patch", "update", "delete"],
            &["*"],
            &["*"],
        )],
        "system:controller:endpointslice-controller" => vec![
            core_read(&["services", "pods", "nodes", "namespaces"]),
            r(MADE, &["discovery.k8s.io"], &["endpointslices"]),
            r(MADE, &[""], &["endpoints"]),
            r(&["update", "patch"], &[""], &["services/finalizers"]),
            events(),
        ],
        "system:controller:endpointslicemirroring-controller" => vec![
            core_read(&["services", "endpoints"]),
            r(MADE, &["discovery.k8s.io"], &["endpointslices"]),
            r(&["update"], &[""], &["endpoints/finalizers"]),
            events(),
        ],
        // The CRD's own status, and a deleted CRD's objects, which can be of any group.
        "system:controller:apiextensions-controller" => vec![
            r(
                OWN,
                &["apiextensions.k8s.io"],
                &["customresourcedefinitions"],
            ),
            r(
                STATUS_WRITE,
                &["apiextensions.k8s.io"],
                &["customresourcedefinitions/status"],
            ),
            r(&["list", "delete"], &["*"], &["*"]),
            events(),
        ],
        "system:controller:statefulset-controller" => rules(vec![
            vec![r(OWN, &["apps"], &["statefulsets"])],
            status_of("apps", "statefulsets"),
            vec![
                r(MADE, &["apps"], &["controllerrevisions"]),
                r(MADE, &[""], &["pods", "persistentvolumeclaims"]),
                events(),
            ],
        ]),
        "system:controller:daemonset-controller" => rules(vec![
            vec![r(READ, &["apps"], &["daemonsets"])],
            status_of("apps", "daemonsets"),
            vec![
                r(MADE, &["apps"], &["controllerrevisions"]),
                r(MADE, &[""], &["pods"]),
                r(&["create"], &[""], &["pods/binding"]),
                core_read(&["nodes"]),
                events(),
            ],
        ]),
        "system:controller:local-path-provisioner" => vec![
            r(MADE, &[""], &["persistentvolumes"]),
            r(OWN, &[""], &["persistentvolumeclaims"]),
            r(
                STATUS_WRITE,
                &[""],
                &["persistentvolumes/status", "persistentvolumeclaims/status"],
            ),
            core_read(&["pods", "nodes"]),
            // It creates the default StorageClass at start.
            r(
                &["get", "list", "watch", "create"],
                &["storage.k8s.io"],
                &["storageclasses"],
            ),
            events(),
        ],
        // Every namespace gets a default ServiceAccount and the kube-root-ca.crt ConfigMap.
        "system:controller:serviceaccount-controller" => vec![
            r(
                &["get", "list", "watch", "create"],
                &[""],
                &["serviceaccounts"],
            ),
            r(
                &["get", "list", "watch", "create", "update", "patch"],
                &[""],
                &["configmaps"],
            ),
            core_read(&["namespaces"]),
            events(),
        ],
        "system:controller:clusterrole-aggregation-controller" => vec![r(
            &["escalate", "get", "list", "watch", "patch", "update"],
            &[GROUP],
            &["clusterroles"],
        )],
        "system:controller:certificate-controller" => vec![
            r(
                READ,
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            ),
            r(
                &["update", "patch"],
                &["certificates.k8s.io"],
                &[
                    "certificatesigningrequests/approval",
                    "certificatesigningrequests/status",
                ],
            ),
            // As upstream: approve kubelet client certificates, sign for the built-in signers;
            // and approve a node's serving certificate for the addresses its Node reports.
            r(&["approve"], &["certificates.k8s.io"], &["signers"]).with_names(&[
                "kubernetes.io/kube-apiserver-client-kubelet",
                "kubernetes.io/kubelet-serving",
            ]),
            core_read(&["nodes"]),
            r(&["sign"], &["certificates.k8s.io"], &["signers"]).with_names(&[
                "kubernetes.io/legacy-unknown",
                "kubernetes.io/kube-apiserver-client",
                "kubernetes.io/kube-apiserver-client-kubelet",
                "kubernetes.io/kubelet-serving",
            ]),
            events(),
        ],
        // Upstream grants these in kube-system (Secrets) and kube-public (ConfigMaps) alone;
        // the authorizer here binds components cluster-wide.
        "system:controller:bootstrap-signer" => vec![
            r(READ, &[""], &["secrets"]),
            r(&["get", "list", "watch", "update"], &[""], &["configmaps"]),
            events(),
        ],
        "system:controller:node-ipam-controller" => vec![
            r(
                &["get", "list", "watch", "patch", "update"],
                &[""],
                &["nodes"],
            ),
            events(),
        ],
        "system:controller:node-controller" => vec![
            r(
                &["get", "list", "watch", "update", "patch", "delete"],
                &[""],
                &["nodes"],
            ),
            r(STATUS_WRITE, &[""], &["nodes/status"]),
            r(READ, &["coordination.k8s.io"], &["leases"]),
            r(&["get", "list", "watch", "delete"], &[""], &["pods"]),
            r(&["create"], &[""], &["pods/eviction"]),
            r(STATUS_WRITE, &[""], &["pods/status"]),
            events(),
        ],
        "system:controller:disruption-controller" => vec![
            core_read(&["pods", "replicationcontrollers"]),
            r(
                READ,
                &["apps"],
                &["deployments", "replicasets", "statefulsets"],
            ),
            r(READ, &["policy"], &["poddisruptionbudgets"]),
            r(STATUS_WRITE, &["policy"], &["poddisruptionbudgets/status"]),
            events(),
        ],
        // As upstream: quota counts every kind, so it may list and watch them all.
        "system:controller:resourcequota-controller" => vec![
            r(&["list", "watch"], &["*"], &["*"]),
            r(STATUS_WRITE, &[""], &["resourcequotas/status"]),
            events(),
        ],
        "system:controller:pod-garbage-collector" => vec![
            r(&["get", "list", "watch", "delete"], &[""], &["pods"]),
            r(STATUS_WRITE, &[""], &["pods/status"]),
            core_read(&["nodes"]),
        ],
        // Upstream's API server expires events by itself (a TTL on each stored event).
        "system:berth:event-ttl-controller" => vec![r(&["list", "delete"], &[""], &["events"])],
        "system:berth:ingress-controller" => vec![
            r(READ, &["networking.k8s.io"], &["ingresses"]),
            r(
                &["update", "patch"],
                &["networking.k8s.io"],
                &["ingresses/status"],
            ),
            // It creates its IngressClass at start.
            r(
                &["get", "list", "watch", "create"],
                &["networking.k8s.io"],
                &["ingressclasses"],
            ),
            core_read(&["services", "secrets", "nodes"]),
            r(READ, &["discovery.k8s.io"], &["endpointslices"]),
            events(),
        ],
        "system:berth:certs" => vec![core_read(&["nodes"]), events()],
        "system:kube-scheduler" => vec![
            core_read(&[
                "pods",
                "nodes",
                "namespaces",
                "services",
                "persistentvolumes",
                "persistentvolumeclaims",
                "replicationcontrollers",
            ]),
            r(READ, &["apps"], &["replicasets", "statefulsets"]),
            r(
                READ,
                &["storage.k8s.io"],
                &["storageclasses", "csinodes", "csidrivers"],
            ),
            r(READ, &["policy"], &["poddisruptionbudgets"]),
            r(&["create"], &[""], &["pods/binding", "bindings"]),
            r(&["update", "patch"], &[""], &["pods/status"]),
            // Preemption deletes the victims.
            r(&["delete"], &[""], &["pods"]),
            events(),
        ],
        // The agent registers its Node, keeps its status and Lease, runs and reports its pods.
        "system:node" => vec![
            r(
                &["get", "list", "watch", "create", "update", "patch"],
                &[""],
                &["nodes"],
            ),
            r(STATUS_WRITE, &[""], &["nodes/status"]),
            r(&["get", "list", "watch", "delete"], &[""], &["pods"]),
            r(STATUS_WRITE, &[""], &["pods/status"]),
            core_read(&[
                "configmaps",
                "secrets",
                "services",
                "endpoints",
                "namespaces",
                "serviceaccounts",
                "persistentvolumes",
                "persistentvolumeclaims",
            ]),
            r(&["create"], &[""], &["serviceaccounts/token"]),
            r(
                &["get", "list", "watch", "create", "update", "patch"],
                &["coordination.k8s.io"],
                &["leases"],
            ),
            // The kubelet API authorizes its callers by asking the API server, as upstream's
            // role allows (delegated authorization).
            r(
                &["create"],
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
            ),
            // Renewing its own client certificate, as upstream's role allows.
            r(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            ),
            r(READ, &["storage.k8s.io"], &["storageclasses", "csidrivers"]),
            r(READ, &["node.k8s.io"], &["runtimeclasses"]),
            events(),
        ],
        "system:berth:dns" => vec![
            core_read(&["services", "endpoints", "pods", "namespaces"]),
            r(READ, &["discovery.k8s.io"], &["endpointslices"]),
            // It publishes the kube-dns Endpoints and EndpointSlice; a create has no name to
            // restrict, an update does.
            r(&["create"], &[""], &["endpoints"]),
            r(&["create"], &["discovery.k8s.io"], &["endpointslices"]),
            r(&["update", "patch"], &[""], &["endpoints"]).with_names(&["kube-dns"]),
            r(
                &["update", "patch"],
                &["discovery.k8s.io"],
                &["endpointslices"],
            )
            .with_names(&["kube-dns"]),
        ],
        "system:node-proxier" => vec![
            core_read(&["services", "endpoints", "nodes", "pods", "namespaces"]),
            r(READ, &["discovery.k8s.io"], &["endpointslices"]),
            r(&["update", "patch"], &[""], &["services/status"]),
            events(),
        ],
        // Holds the Lease that picks which server runs the controllers (HA on etcd).
        "system:berth:leader-elector" => vec![r(
            &["get", "create", "update"],
            &["coordination.k8s.io"],
            &["leases"],
        )],
        "system:berth:network-policy" => vec![
            core_read(&["pods", "namespaces", "nodes"]),
            r(READ, &["networking.k8s.io"], &["networkpolicies"]),
            events(),
        ],
        _ => Vec::new(),
    }
}

fn cluster_roles() -> Vec<Role> {
    let read_write = [READ, WRITE].concat();
    let mut roles = vec![
        role(
            "cluster-admin",
            vec![r(&["*"], &["*"], &["*"]), PolicyRule::urls(&["*"], &["*"])],
        ),
        Role {
            name: "admin",
            labels: Vec::new(),
            rules: Vec::new(),
            aggregate_from: vec!["admin"],
        },
        Role {
            name: "edit",
            labels: vec![(aggregate_label("admin"), "true")],
            rules: Vec::new(),
            aggregate_from: vec!["edit"],
        },
        Role {
            name: "view",
            labels: vec![(aggregate_label("edit"), "true")],
            rules: Vec::new(),
            aggregate_from: vec!["view"],
        },
        Role {
            name: "system:aggregate-to-admin",
            labels: vec![(aggregate_label("admin"), "true")],
            rules: vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                r(&read_write, &[GROUP], &["rolebindings", "roles"]),
            ],
            aggregate_from: Vec::new(),
        },
        Role {
            name: "system:aggregate-to-edit",
            labels: vec![(aggregate_label("edit"), "true")],
            rules: vec![
                r(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                r(&["impersonate"], &[""], &["serviceaccounts"]),
                r(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                r(
                    &["create"],
                    &[""],
                    &["pods/eviction", "serviceaccounts/token"],
                ),
                r(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                r(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                r(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                r(WRITE, &["batch"], &["cronjobs", "jobs"]),
                r(WRITE, &["policy"], &["poddisruptionbudgets"]),
                r(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                r(&read_write, &["coordination.k8s.io"], &["leases"]),
            ],
            aggregate_from: Vec::new(),
        },
        Role {
            name: "system:aggregate-to-view",
            labels: vec![(aggregate_label("view"), "true")],
            rules: vec![
                r(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                r(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                r(READ, &[""], &["namespaces"]),
                r(READ, &["discovery.k8s.io"], &["endpointslices"]),
                r(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                r(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                r(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                r(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                r(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
            ],
            aggregate_from: Vec::new(),
        },
        role(
            "system:basic-user",
            vec![
                r(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                r(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        role(
            "system:discovery",
            vec![PolicyRule::urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        role(
            "system:public-info-viewer",
            vec![PolicyRule::urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
    ];
    // What upstream's metrics-server installs: `kubectl top` for whoever may view pods.
    roles.push(Role {
        name: "system:aggregated-metrics-reader",
        labels: ["view", "edit", "admin"]
            .iter()
            .map(|to| (aggregate_label(to), "true"))
            .collect(),
        rules: vec![r(READ, &["metrics.k8s.io"], &["pods", "nodes"])],
        aggregate_from: Vec::new(),
    });
    for (_, name) in COMPONENTS {
        roles.push(role(name, component_rules(name)));
    }
    roles
}

/// `(binding name, role, subjects)` of the default ClusterRoleBindings.
fn cluster_role_bindings() -> Vec<(String, String, Vec<Value>)> {
    let group = |name: &str| json!({"apiGroup": GROUP, "kind": "Group", "name": name});
    let user = |name: &str| json!({"apiGroup": GROUP, "kind": "User", "name": name});
    let mut bindings = vec![
        (
            "cluster-admin".to_string(),
            "cluster-admin".to_string(),
            vec![group("system:masters")],
        ),
        (
            "system:basic-user".into(),
            "system:basic-user".into(),
            vec![group("system:authenticated")],
        ),
        (
            "system:discovery".into(),
            "system:discovery".into(),
            vec![group("system:authenticated")],
        ),
        (
            "system:public-info-viewer".into(),
            "system:public-info-viewer".into(),
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
    ];
    for (component, role) in COMPONENTS {
        bindings.push((
            role.to_string(),
            role.to_string(),
            vec![user(&format!("system:{component}"))],
        ));
    }
    bindings
}

fn bootstrap_metadata(name: &str, labels: &[(String, &str)]) -> Value {
    let mut all_labels = serde_json::Map::new();
    all_labels.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for (key, value) in labels {
        all_labels.insert(key.clone(), json!(value));
    }
    json!({
        "name": name,
        "labels": all_labels,
        "annotations": {AUTOUPDATE: "true"},
    })
}

/// Creates the default roles and bindings that are missing and adds missing default rules to
/// existing ones.
pub async fn reconcile(registry: &Registry) -> ApiResult<()> {
    let roles =
        resources::find(GROUP, "v1", "clusterroles").expect("clusterroles are always served");
    for role in cluster_roles() {
        let mut body = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": bootstrap_metadata(role.name, &role.labels),
            "rules": role.rules,
        });
        if !role.aggregate_from.is_empty() {
            let selectors: Vec<Value> = role
                .aggregate_from
                .iter()
                .map(|to| json!({"matchLabels": {aggregate_label(to): "true"}}))
                .collect();
            body["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
        }
        match registry.get_value(roles, "", role.name) {
            Err(e) if e.code == 404 => {
                registry.create(roles, "", body, false).await?;
            }
            Err(e) => return Err(e),
            Ok(existing) => {
                if existing.pointer(&format!(
                    "/metadata/annotations/{}",
                    AUTOUPDATE.replace('/', "~1")
                )) == Some(&json!("false"))
                    || !role.aggregate_from.is_empty()
                {
                    continue;
                }
                let have: Vec<PolicyRule> = existing
                    .get("rules")
                    .cloned()
                    .and_then(|r| serde_json::from_value(r).ok())
                    .unwrap_or_default();
                if covers(&have, &role.rules).is_ok() {
                    continue;
                }
                let mut updated = existing.clone();
                let missing: Vec<PolicyRule> = role
                    .rules
                    .iter()
                    .filter(|want| covers(&have, std::slice::from_ref(*want)).is_err())
                    .cloned()
                    .collect();
                let mut rules = have;
                rules.extend(missing);
                updated["rules"] = json!(rules);
                registry
                    .update(roles, "", role.name, updated, Part::Main, false)
                    .await?;
                tracing::info!(role = role.name, "added missing default rules");
            }
        }
    }
    let bindings = resources::find(GROUP, "v1", "clusterrolebindings")
        .expect("clusterrolebindings are always served");
    for (name, role, subjects) in cluster_role_bindings() {
        let body = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": bootstrap_metadata(&name, &[]),
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": subjects,
        });
        match registry.create(bindings, "", body, false).await {
            Ok(_) | Err(crate::api::ApiError { code: 409, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::attributes::{Attributes, ResourceAttributes};
    use super::*;

    #[test]
    fn every_component_has_a_role_with_rules_and_a_binding() {
        let roles = cluster_roles();
        let bindings = cluster_role_bindings();
        for (component, role) in COMPONENTS {
            let found = roles.iter().find(|r| r.name == *role).unwrap();
            assert!(!found.rules.is_empty(), "{role} has no rules");
            assert!(
                !found.rules.iter().any(|r| r.verbs.iter().any(|v| v == "*")),
                "{role} must list its verbs"
            );
            let binding = bindings.iter().find(|(_, r, _)| r == role).unwrap();
            assert_eq!(binding.2[0]["name"], format!("system:{component}"));
        }
    }

    /// `verb group resource[/subresource]` as a request's attributes.
    fn request(call: &str) -> Attributes {
        let mut words = call.split(' ');
        let verb = words.next().unwrap_or_default();
        let group = words.next().unwrap_or_default().trim_matches('-');
        let target = words.next().unwrap_or_default();
        let (resource, subresource) = target.split_once('/').unwrap_or((target, ""));
        Attributes {
            verb: verb.into(),
            path: String::new(),
            resource: Some(ResourceAttributes {
                api_group: group.into(),
                api_version: "v1".into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: "default".into(),
                name: "x".into(),
            }),
        }
    }

    fn allowed(role: &str, call: &str) -> bool {
        let request = request(call);
        component_rules(role)
            .iter()
            .any(|rule| rule.allows(&request))
    }

    /// What each component's code does through the API (`-` is the core group), read from its
    /// source: the role must allow each call.
    const CALLS: &[(&str, &[&str])] = &[
        (
            "system:controller:replicaset-controller",
            &[
                "list apps replicasets",
                "watch apps replicasets",
                "patch apps replicasets/status",
                "list - pods",
                "watch - pods",
                "create - pods",
                "delete - pods",
                "patch - pods",
                "create - events",
            ],
        ),
        (
            "system:controller:replication-controller",
            &[
                "watch - replicationcontrollers",
                "patch - replicationcontrollers/status",
                "create - pods",
                "delete - pods",
                "patch - pods",
            ],
        ),
        (
            "system:controller:deployment-controller",
            &[
                "watch apps deployments",
                "patch apps deployments",
                "patch apps deployments/status",
                "watch apps replicasets",
                "create apps replicasets",
                "patch apps replicasets",
                "delete apps replicasets",
                "list - pods",
            ],
        ),
        (
            "system:controller:job-controller",
            &[
                "watch batch jobs",
                "patch batch jobs",
                "patch batch jobs/status",
                "watch - pods",
                "create - pods",
                "delete - pods",
                "patch - pods",
            ],
        ),
        (
            "system:controller:cronjob-controller",
            &[
                "watch batch cronjobs",
                "patch batch cronjobs/status",
                "watch batch jobs",
                "create batch jobs",
                "delete batch jobs",
            ],
        ),
        (
            "system:controller:statefulset-controller",
            &[
                "watch apps statefulsets",
                "patch apps statefulsets/status",
                "watch - pods",
                "create - pods",
                "delete - pods",
                "patch - pods",
                "get - persistentvolumeclaims",
                "create - persistentvolumeclaims",
                "patch - persistentvolumeclaims",
                "list apps controllerrevisions",
                "create apps controllerrevisions",
                "patch apps controllerrevisions",
                "delete apps controllerrevisions",
            ],
        ),
        (
            "system:controller:daemonset-controller",
            &[
                "watch apps daemonsets",
                "patch apps daemonsets/status",
                "list - nodes",
                "watch - pods",
                "create - pods",
                "delete - pods",
                "create apps controllerrevisions",
            ],
        ),
        (
            "system:controller:local-path-provisioner",
            &[
                "create storage.k8s.io storageclasses",
                "watch storage.k8s.io storageclasses",
                "watch - persistentvolumeclaims",
                "get - persistentvolumeclaims",
                "patch - persistentvolumeclaims",
                "patch - persistentvolumeclaims/status",
                "create - persistentvolumes",
                "delete - persistentvolumes",
                "patch - persistentvolumes/status",
                "watch - pods",
                "list - pods",
            ],
        ),
        (
            "system:controller:serviceaccount-controller",
            &[
                "watch - namespaces",
                "watch - serviceaccounts",
                "create - serviceaccounts",
                "get - configmaps",
                "create - configmaps",
                "patch - configmaps",
            ],
        ),
        (
            "system:controller:endpointslice-controller",
            &[
                "watch - services",
                "watch - pods",
                "list - pods",
                "watch discovery.k8s.io endpointslices",
                "create discovery.k8s.io endpointslices",
                "update discovery.k8s.io endpointslices",
                "delete discovery.k8s.io endpointslices",
                "get - endpoints",
                "create - endpoints",
                "update - endpoints",
            ],
        ),
        (
            "system:controller:endpointslicemirroring-controller",
            &[
                "watch - endpoints",
                "get - endpoints",
                "watch - services",
                "get - services",
                "watch discovery.k8s.io endpointslices",
                "list discovery.k8s.io endpointslices",
                "create discovery.k8s.io endpointslices",
                "update discovery.k8s.io endpointslices",
                "delete discovery.k8s.io endpointslices",
            ],
        ),
        (
            "system:controller:apiextensions-controller",
            &[
                "watch apiextensions.k8s.io customresourcedefinitions",
                "patch apiextensions.k8s.io customresourcedefinitions",
                "patch apiextensions.k8s.io customresourcedefinitions/status",
                "list example.com widgets",
                "delete example.com widgets",
            ],
        ),
        (
            "system:controller:node-controller",
            &[
                "watch - nodes",
                "patch - nodes",
                "patch - nodes/status",
                "watch coordination.k8s.io leases",
                "list - pods",
                "delete - pods",
            ],
        ),
        (
            "system:controller:horizontal-pod-autoscaler",
            &[
                "watch autoscaling horizontalpodautoscalers",
                "patch autoscaling horizontalpodautoscalers/status",
                "get apps deployments/scale",
                "patch apps deployments/scale",
                "list - pods",
                "list metrics.k8s.io pods",
            ],
        ),
        (
            "system:berth:ingress-controller",
            &[
                "get networking.k8s.io ingressclasses",
                "create networking.k8s.io ingressclasses",
                "watch networking.k8s.io ingresses",
                "patch networking.k8s.io ingresses/status",
                "watch - services",
                "watch - secrets",
                "watch discovery.k8s.io endpointslices",
            ],
        ),
        (
            "system:kube-scheduler",
            &[
                "watch - pods",
                "watch - nodes",
                "create - pods/binding",
                "patch - pods/status",
                "delete - pods",
                "watch policy poddisruptionbudgets",
            ],
        ),
        (
            "system:node",
            &[
                "get - nodes",
                "create - nodes",
                "patch - nodes",
                "patch - nodes/status",
                "get coordination.k8s.io leases",
                "create coordination.k8s.io leases",
                "patch coordination.k8s.io leases",
                "watch - pods",
                "delete - pods",
                "patch - pods/status",
                "get - secrets",
                "get - configmaps",
                "get - persistentvolumeclaims",
                "get - persistentvolumes",
                "create - serviceaccounts/token",
            ],
        ),
    ];

    #[test]
    fn every_component_may_make_the_calls_its_code_makes() {
        for (role, calls) in CALLS {
            for call in *calls {
                assert!(allowed(role, call), "{role} may not {call}");
            }
        }
    }

    #[test]
    fn components_get_no_more_than_their_work_needs() {
        // Kinds a component only reads are not writable, and what it never touches is denied.
        let denied: &[(&str, &[&str])] = &[
            (
                "system:controller:replicaset-controller",
                &[
                    "create apps replicasets",
                    "delete apps replicasets",
                    "get - secrets",
                    "deletecollection - pods",
                    "patch apps replicasets/scale",
                ],
            ),
            (
                "system:controller:deployment-controller",
                &[
                    "create - pods",
                    "delete - pods",
                    "create apps deployments",
                    "deletecollection apps replicasets",
                ],
            ),
            (
                "system:controller:cronjob-controller",
                &["create - pods", "create batch cronjobs"],
            ),
            (
                "system:controller:daemonset-controller",
                &["update apps daemonsets", "create - nodes"],
            ),
            (
                "system:controller:serviceaccount-controller",
                &[
                    "delete - serviceaccounts",
                    "delete - configmaps",
                    "get - secrets",
                ],
            ),
            (
                "system:controller:local-path-provisioner",
                &[
                    "delete storage.k8s.io storageclasses",
                    "create - persistentvolumeclaims",
                    "delete - persistentvolumeclaims",
                ],
            ),
            (
                "system:controller:apiextensions-controller",
                &[
                    "get - secrets",
                    "watch - secrets",
                    "deletecollection - pods",
                    "create apiextensions.k8s.io customresourcedefinitions",
                ],
            ),
            (
                "system:controller:node-controller",
                &["create - nodes", "create - pods"],
            ),
            (
                "system:kube-scheduler",
                &[
                    "create coordination.k8s.io leases",
                    "get - secrets",
                    "create - pods",
                ],
            ),
            (
                "system:node",
                &[
                    "delete - nodes",
                    "create - pods",
                    "create - pods/eviction",
                    "create - persistentvolumeclaims",
                    "delete coordination.k8s.io leases",
                    "deletecollection - pods",
                ],
            ),
            (
                "system:berth:ingress-controller",
                &[
                    "delete networking.k8s.io ingressclasses",
                    "create - secrets",
                ],
            ),
        ];
        for (role, calls) in denied {
            for call in *calls {
                assert!(!allowed(role, call), "{role} may {call}");
            }
        }
        // Wildcard groups or resources only where upstream's role has them.
        let wildcard_roles = [
            "system:controller:namespace-controller",
            "system:controller:generic-garbage-collector",
            "system:controller:resourcequota-controller",
            "system:controller:horizontal-pod-autoscaler",
            "system:controller:apiextensions-controller",
        ];
        for (_, role) in COMPONENTS {
            let wild = component_rules(role).iter().any(|rule| {
                rule.api_groups.iter().any(|g| g == "*")
                    || rule.resources.iter().any(|r| r.starts_with('*'))
            });
            assert_eq!(wild, wildcard_roles.contains(role), "{role}");
            let collection = allowed(role, "deletecollection - configmaps");
            assert_eq!(
                collection,
                *role == "system:controller:namespace-controller",
                "{role}"
            );
        }
    }

    #[test]
    fn edit_aggregates_into_admin_and_view_into_edit() {
        let roles = cluster_roles();
        let label = |name: &str| {
            roles
                .iter()
                .find(|r| r.name == name)
                .unwrap()
                .labels
                .clone()
        };
        assert_eq!(label("edit"), vec![(aggregate_label("admin"), "true")]);
        assert_eq!(label("view"), vec![(aggregate_label("edit"), "true")]);
        assert!(label("system:aggregate-to-view").contains(&(aggregate_label("view"), "true")));
        let metrics = label("system:aggregated-metrics-reader");
        for to in ["view", "edit", "admin"] {
            assert!(metrics.contains(&(aggregate_label(to), "true")));
        }
    }
}
