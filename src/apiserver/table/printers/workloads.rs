//! apps, batch, autoscaling and policy: deployments, replica sets, stateful sets, daemon sets,
//! controller revisions, jobs, cron jobs, autoscalers and disruption budgets.

use jiff::Timestamp;
use serde_json::Value;

use super::{
    age, col, containers_and_images, format_labels, format_selector, has, int, list, name, since,
    text, wide, yes_no, Column, Printer, AGE, CONTAINERS, IMAGES, NAME,
};

const SELECTOR: Column = wide(
    "Selector",
    "string",
    "Label query over pods that should match the replica count.",
);

pub fn printer(kind: &str) -> Option<&'static Printer> {
    Some(match kind {
        "Deployment" => &DEPLOYMENT,
        "ReplicaSet" => &REPLICA_SET,
        "StatefulSet" => &STATEFUL_SET,
        "DaemonSet" => &DAEMON_SET,
        "ControllerRevision" => &CONTROLLER_REVISION,
        "Job" => &JOB,
        "CronJob" => &CRON_JOB,
        "HorizontalPodAutoscaler" => &HPA,
        "PodDisruptionBudget" => &PDB,
        _ => return None,
    })
}

fn pod_spec(obj: &Value) -> Option<&Value> {
    obj.pointer("/spec/template/spec")
}

/// `spec.replicas`, which defaults to 1.
fn desired(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

static DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Number of the pod with ready state"),
        col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |obj, now| {
        let (containers, images) = containers_and_images(pod_spec(obj));
        vec![
            name(obj),
            Value::from(format!("{}/{}", int(obj, "/status/readyReplicas"), desired(obj))),
            Value::from(int(obj, "/status/updatedReplicas")),
            Value::from(int(obj, "/status/availableReplicas")),
            age(obj, now),
            containers,
            images,
            Value::from(format_selector(obj.pointer("/spec/selector"), "")),
        ]
    },
};

static REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            "Replicas is the number of desired pods.",
        ),
        col(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        col(
            "Ready",
            "integer",
            "The number of ready replicas for this replica set.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ],
    row: |obj, now| {
        let (containers, images) = containers_and_images(pod_spec(obj));
        vec![
            name(obj),
            Value::from(desired(obj)),
            Value::from(int(obj, "/status/replicas")),
            Value::from(int(obj, "/status/readyReplicas")),
            age(obj, now),
            containers,
            images,
            Value::from(format_selector(obj.pointer("/spec/selector"), "")),
        ]
    },
};

static STATEFUL_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Number of the pod with ready state"),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    row: |obj, now| {
        let (containers, images) = containers_and_images(pod_spec(obj));
        vec![
            name(obj),
            Value::from(format!(
                "{}/{}",
                int(obj, "/status/readyReplicas"),
                desired(obj)
            )),
            age(obj, now),
            containers,
            images,
        ]
    },
};

static DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
        col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
        col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
        col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
        col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
        col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
    ],
    row: |obj, now| {
        let (containers, images) = containers_and_images(pod_spec(obj));
        vec![
            name(obj),
            Value::from(int(obj, "/status/desiredNumberScheduled")),
            Value::from(int(obj, "/status/currentNumberScheduled")),
            Value::from(int(obj, "/status/numberReady")),
            Value::from(int(obj, "/status/updatedNumberScheduled")),
            Value::from(int(obj, "/status/numberAvailable")),
            Value::from(format_labels(obj.pointer("/spec/template/spec/nodeSelector"))),
            age(obj, now),
            containers,
            images,
            Value::from(format_selector(obj.pointer("/spec/selector"), "")),
        ]
    },
};

static CONTROLLER_REVISION: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", "Controller of the object"),
        col(
            "Revision",
            "string",
            "Revision indicates the revision of the state represented by Data.",
        ),
        AGE,
    ],
    row: |obj, now| {
        let owner = list(obj, "/metadata/ownerReferences")
            .iter()
            .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true));
        let controller = match owner {
            None => "<none>".to_string(),
            Some(o) => {
                let group = text(o, "/apiVersion").rsplit_once('/').map(|(g, _)| g);
                match group {
                    Some(g) => format!("{}.{g}/{}", text(o, "/kind"), text(o, "/name")),
                    None => format!("{}/{}", text(o, "/kind"), text(o, "/name")),
                }
            }
        };
        vec![
            name(obj),
            Value::from(controller),
            Value::from(int(obj, "/revision")),
            age(obj, now),
        ]
    },
};

const JOB_SELECTOR: Column = wide(
    "Selector",
    "string",
    "A label query over pods that should match the pod count.",
);

static JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Status of the job."),
        col(
            "Completions",
            "string",
            "The number of pods which reached phase Succeeded.",
        ),
        col("Duration", "string", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        JOB_SELECTOR,
    ],
    row: job_row,
};

fn job_has_condition(job: &Value, kind: &str) -> bool {
    list(job, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == kind && text(c, "/status") == "True")
}

fn job_status(job: &Value) -> &'static str {
    if job_has_condition(job, "Complete") {
        "Complete"
    } else if job_has_condition(job, "Failed") {
        "Failed"
    } else if super::is_deleting(job) {
        "Terminating"
    } else if job_has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else if job_has_condition(job, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if job_has_condition(job, "Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn job_row(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int(job, "/status/succeeded");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(job, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = text(job, "/status/startTime");
    let end = text(job, "/status/completionTime");
    let duration = match (start.is_empty(), end.is_empty()) {
        (true, _) => String::new(),
        (false, true) => since(job, "/status/startTime", now),
        (false, false) => super::duration::between(start, end)
            .map(super::duration::human)
            .unwrap_or_default(),
    };
    let (containers, images) = containers_and_images(pod_spec(job));
    vec![
        name(job),
        Value::from(job_status(job)),
        Value::from(completions),
        Value::from(duration),
        age(job, now),
        containers,
        images,
        Value::from(format_selector(job.pointer("/spec/selector"), "")),
    ]
}

static CRON_JOB: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Schedule",
            "string",
            "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
        ),
        col(
            "Timezone",
            "string",
            "The time zone name for the given schedule.",
        ),
        col(
            "Suspend",
            "boolean",
            "This flag tells the controller to suspend subsequent executions.",
        ),
        col(
            "Active",
            "integer",
            "A list of pointers to currently running jobs.",
        ),
        col(
            "Last Schedule",
            "string",
            "Information when was the last time the job was successfully scheduled.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        JOB_SELECTOR,
    ],
    row: |obj, now| {
        let suspend = match obj.pointer("/spec/suspend").and_then(Value::as_bool) {
            Some(s) => yes_no(s),
            None => "<unset>",
        };
        let last = if has(obj, "/status/lastScheduleTime") {
            since(obj, "/status/lastScheduleTime", now)
        } else {
            "<none>".into()
        };
        let job_spec = obj.pointer("/spec/jobTemplate/spec");
        let (containers, images) =
            containers_and_images(job_spec.and_then(|s| s.pointer("/template/spec")));
        vec![
            name(obj),
            Value::from(text(obj, "/spec/schedule")),
            Value::from(super::or_none(text(obj, "/spec/timeZone"))),
            Value::from(suspend),
            Value::from(list(obj, "/status/active").len()),
            Value::from(last),
            age(obj, now),
            containers,
            images,
            Value::from(format_selector(
                job_spec.and_then(|s| s.get("selector")),
                "",
            )),
        ]
    },
};

static HPA: Printer = Printer {
    columns: &[
        NAME,
        col("Reference", "string", "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource."),
        col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count."),
        col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
        col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
        col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
        AGE,
    ],
    row: |obj, now| {
        let reference = format!(
            "{}/{}",
            text(obj, "/spec/scaleTargetRef/kind"),
            text(obj, "/spec/scaleTargetRef/name")
        );
        let min = match obj.pointer("/spec/minReplicas").and_then(Value::as_i64) {
            Some(m) => Value::from(m),
            None => Value::from("<unset>"),
        };
        vec![
            name(obj),
            Value::from(reference),
            Value::from(hpa_targets(obj)),
            min,
            Value::from(int(obj, "/spec/maxReplicas")),
            Value::from(int(obj, "/status/currentReplicas")),
            age(obj, now),
        ]
    },
};

/// `cpu: 40%/80%`-style summaries of resource metrics; other metric kinds show their target only.
fn hpa_targets(hpa: &Value) -> String {
    if let Some(target) = hpa.pointer("/spec/targetCPUUtilizationPercentage") {
        // The autoscaling/v1 view: one CPU utilisation target.
        let have = hpa
            .pointer("/status/currentCPUUtilizationPercentage")
            .map_or("<unknown>".to_string(), |c| format!("{c}%"));
        return format!("cpu: {have}/{target}%");
    }
    let metrics = list(hpa, "/spec/metrics");
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current = list(hpa, "/status/currentMetrics");
    let shown: Vec<String> = metrics
        .iter()
        .map(|m| {
            let kind = text(m, "/type");
            let source = match kind {
                "Resource" => "resource",
                "ContainerResource" => "containerResource",
                "Pods" => "pods",
                "Object" => "object",
                "External" => "external",
                _ => "",
            };
            let target = m.pointer(&format!("/{source}/target"));
            let resource = text(m, &format!("/{source}/name"));
            let now = current
                .iter()
                .find(|c| {
                    text(c, "/type") == kind && text(c, &format!("/{source}/name")) == resource
                })
                .and_then(|c| c.pointer(&format!("/{source}/current")));
            let (want, have) = match target.and_then(|t| t.get("averageUtilization")) {
                Some(u) => (
                    format!("{}%", u),
                    now.and_then(|n| n.get("averageUtilization"))
                        .map(|u| format!("{u}%")),
                ),
                None => {
                    let field = |v: Option<&Value>| {
                        v.and_then(|t| t.get("averageValue").or_else(|| t.get("value")))
                            .map(|q| q.as_str().map(str::to_string).unwrap_or(q.to_string()))
                    };
                    (field(target).unwrap_or_default(), field(now))
                }
            };
            let have = have.unwrap_or_else(|| "<unknown>".into());
            if kind == "Resource" || kind == "ContainerResource" {
                format!("{resource}: {have}/{want}")
            } else {
                format!("{have}/{want}")
            }
        })
        .collect();
    super::list_with_more(&shown, "<none>").replace(",", ", ")
}

static PDB: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Min Available",
            "string",
            "The minimum number of pods that must be available.",
        ),
        col(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable.",
        ),
        col(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        AGE,
    ],
    row: |obj, now| {
        let int_or_string = |pointer: &str| match obj.pointer(pointer) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "N/A".into(),
        };
        vec![
            name(obj),
            Value::from(int_or_string("/spec/minAvailable")),
            Value::from(int_or_string("/spec/maxUnavailable")),
            Value::from(int(obj, "/status/disruptionsAllowed")),
            age(obj, now),
        ]
    },
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::table::printers::test_now;
    use serde_json::json;

    #[test]
    fn a_deployment_shows_ready_of_desired_and_its_template() {
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2026-01-01T09:00:00Z"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [
                        {"name": "web", "image": "busybox"}, {"name": "log", "image": "alpine"}]}}},
            "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1}});
        let row = (DEPLOYMENT.row)(&d, test_now());
        assert_eq!(
            row,
            vec![
                json!("web"),
                json!("1/2"),
                json!(2),
                json!(1),
                json!("3h"),
                json!("web,log"),
                json!("busybox,alpine"),
                json!("app=web")
            ]
        );
        assert_eq!(
            DEPLOYMENT
                .columns
                .iter()
                .filter(|c| c.priority == 1)
                .count(),
            3
        );
    }

    #[test]
    fn replica_and_stateful_and_daemon_sets_count_their_pods() {
        let rs = json!({"metadata": {"name": "web-1"}, "spec": {"replicas": 3},
                        "status": {"replicas": 3, "readyReplicas": 2}});
        let row = (REPLICA_SET.row)(&rs, test_now());
        assert_eq!(&row[1..4], &[json!(3), json!(3), json!(2)]);
        let sts = json!({"metadata": {"name": "db"}, "status": {"readyReplicas": 1}});
        assert_eq!((STATEFUL_SET.row)(&sts, test_now())[1], "1/1");
        let ds = json!({"metadata": {"name": "agent"},
            "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 2, "numberReady": 1}});
        let row = (DAEMON_SET.row)(&ds, test_now());
        assert_eq!(row[1], 2);
        assert_eq!(row[6], "kubernetes.io/os=linux");
    }

    #[test]
    fn jobs_show_status_completions_and_duration() {
        let job = json!({"metadata": {"name": "pi"}, "spec": {"completions": 3},
            "status": {"succeeded": 3, "startTime": "2026-01-01T11:00:00Z",
                       "completionTime": "2026-01-01T11:01:05Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        let row = job_row(&job, test_now());
        assert_eq!(&row[1..4], &[json!("Complete"), json!("3/3"), json!("65s")]);
        let running = json!({"metadata": {"name": "pi"}, "spec": {"parallelism": 2},
            "status": {"startTime": "2026-01-01T11:57:00Z"}});
        let row = job_row(&running, test_now());
        assert_eq!(
            &row[1..4],
            &[json!("Running"), json!("0/1 of 2"), json!("3m")]
        );
    }

    #[test]
    fn cron_jobs_show_schedule_and_last_run() {
        let cj = json!({"metadata": {"name": "tick"},
            "spec": {"schedule": "*/5 * * * *", "suspend": false},
            "status": {"active": [{"name": "tick-1"}], "lastScheduleTime": "2026-01-01T11:55:00Z"}});
        let row = (CRON_JOB.row)(&cj, test_now());
        assert_eq!(
            &row[1..6],
            &[
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m")
            ]
        );
    }

    #[test]
    fn autoscalers_and_budgets_summarize_their_targets() {
        let hpa = json!({"metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 2}});
        let row = (HPA.row)(&hpa, test_now());
        assert_eq!(
            &row[1..6],
            &[
                json!("Deployment/web"),
                json!("cpu: <unknown>/80%"),
                json!("<unset>"),
                json!(5),
                json!(2)
            ]
        );
        let pdb = json!({"metadata": {"name": "web"}, "spec": {"minAvailable": "50%"},
                         "status": {"disruptionsAllowed": 1}});
        let row = (PDB.row)(&pdb, test_now());
        assert_eq!(&row[1..4], &[json!("50%"), json!("N/A"), json!(1)]);
    }

    #[test]
    fn controller_revisions_name_their_owner_with_its_group() {
        let cr = json!({"metadata": {"name": "web-abc", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]},
            "revision": 2});
        let row = (CONTROLLER_REVISION.row)(&cr, test_now());
        assert_eq!(&row[1..3], &[json!("StatefulSet.apps/web"), json!(2)]);
    }
}
