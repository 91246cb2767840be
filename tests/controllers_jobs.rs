//! Jobs, CronJobs, TTL-after-finished and cascading deletion, driven with the real kubectl
//! against a real `berth server` running real busybox containers in a test-made network
//! namespace. Needs root (network namespaces, cgroups); CI runs as root.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::netns::Netns;
use common::server::BerthServer;
use common::wait_until;
use serde_json::{json, Value};

fn apply(server: &BerthServer, manifest: &Value) {
    let out = server.kubectl_stdin(
        &["apply", "--validate=false", "-f", "-"],
        &manifest.to_string(),
    );
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(server: &BerthServer, what: &str) -> Option<Value> {
    let out = server.kubectl(&["get", what, "-o", "json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn items(server: &BerthServer, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = server.kubectl_ok(&all);
    let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn job(name: &str, spec: Value, command: &str) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", command]}],
    }});
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
}

fn wait_for_condition(server: &BerthServer, job: &str, condition: &str, timeout: &str) {
    let out = server.kubectl(&[
        "wait",
        &format!("--for=condition={condition}"),
        &format!("job/{job}"),
        &format!("--timeout={timeout}"),
    ]);
    assert!(
        out.status.success(),
        "job {job} never became {condition}: {}\n{:#}\n{}",
        String::from_utf8_lossy(&out.stderr),
        get(server, &format!("job/{job}")).unwrap_or(Value::Null),
        server.log()
    );
}

fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Deletes what could start pods again, so the cluster's teardown finds only pods to stop.
fn stop_batch_work(server: &BerthServer) {
    server.kubectl_ok(&["delete", "cronjobs,jobs", "--all", "--cascade=background"]);
}

#[test]
fn jobs_complete_fail_at_the_backoff_limit_run_indexed_and_expire() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    apply(
        server,
        &job(
            "five",
            json!({"completions": 5, "parallelism": 2}),
            "sleep 1",
        ),
    );
    apply(server, &job("doomed", json!({"backoffLimit": 2}), "exit 1"));
    apply(
        server,
        &job(
            "indexed",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            "echo index=$JOB_COMPLETION_INDEX host=$(hostname)",
        ),
    );
    apply(
        server,
        &job("shortlived", json!({"ttlSecondsAfterFinished": 2}), "true"),
    );

    // Completions 5 / parallelism 2: never more than two at once, five successes in all.
    let mut most_active = 0;
    let done = wait_until(Duration::from_secs(180), || {
        let Some(j) = get(server, "job/five") else {
            return false;
        };
        most_active = most_active.max(j["status"]["active"].as_i64().unwrap_or(0));
        condition(&j, "Complete").is_some_and(|c| c["status"] == "True")
    });
    assert!(done, "job five did not complete\n{}", server.log());
    wait_for_condition(server, "five", "complete", "10s");
    let five = get(server, "job/five").expect("job five");
    assert_eq!(five["status"]["succeeded"], 5, "{five:#}");
    assert!(
        most_active <= 2,
        "at most parallelism pods run at once, saw {most_active}"
    );
    assert!(five["status"]["completionTime"].is_string(), "{five:#}");
    assert_eq!(
        condition(&five, "SuccessCriteriaMet").map(|c| &c["status"]),
        Some(&json!("True"))
    );
    let five_pods = items(server, &["pods", "-l", "job-name=five"]);
    assert_eq!(five_pods.len(), 5, "one pod per completion");
    assert!(
        five_pods.iter().all(|p| p["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty())),
        "counted pods lose the tracking finalizer"
    );

    // Indexed: each pod knows its index and is named after it.
    wait_for_condition(server, "indexed", "complete", "120s");
    let indexed = get(server, "job/indexed").expect("job indexed");
    assert_eq!(indexed["status"]["completedIndexes"], "0-2", "{indexed:#}");
    let mut seen = Vec::new();
    for pod in items(server, &["pods", "-l", "job-name=indexed"]) {
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let index = pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let logs = server.kubectl_ok(&["logs", &name]);
        assert_eq!(
            logs.trim(),
            format!("index={index} host=indexed-{index}"),
            "pod {name}"
        );
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);

    // Failing: three failures (backoffLimit 2) end it as BackoffLimitExceeded.
    wait_for_condition(server, "doomed", "failed", "150s");
    let doomed = get(server, "job/doomed").expect("job doomed");
    let failed = condition(&doomed, "Failed").expect("a Failed condition");
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{doomed:#}");
    assert_eq!(
        condition(&doomed, "FailureTarget").map(|c| &c["reason"]),
        Some(&json!("BackoffLimitExceeded"))
    );
    assert_eq!(doomed["status"]["failed"], 3, "{doomed:#}");
    assert_eq!(doomed["status"]["active"], 0, "{doomed:#}");

    // TTL after finished: the job goes by itself, and its pod with it.
    let gone = wait_until(Duration::from_secs(60), || {
        get(server, "job/shortlived").is_none()
    });
    assert!(
        gone,
        "a finished job with ttlSecondsAfterFinished 2 was not deleted"
    );
    let pods_gone = wait_until(Duration::from_secs(60), || {
        items(server, &["pods", "-l", "job-name=shortlived"]).is_empty()
    });
    assert!(pods_gone, "the expired job's pods were not deleted");

    stop_batch_work(server);
}

#[test]
fn a_cronjob_runs_on_schedule_keeps_its_history_limit_and_starts_jobs_by_hand() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    let mut template = job("unused", json!({}), "true");
    let job_spec = template["spec"].take();
    apply(
        server,
        &json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "tick"},
            "spec": {
                "schedule": "*/1 * * * *",
                "successfulJobsHistoryLimit": 1,
                "jobTemplate": {"spec": job_spec},
            },
        }),
    );

    // By hand: `kubectl create job --from` makes a Job owned by the CronJob.
    server.kubectl_ok(&["create", "job", "manual", "--from=cronjob/tick"]);
    let manual = get(server, "job/manual").expect("job manual");
    assert_eq!(
        manual["metadata"]["ownerReferences"][0]["kind"], "CronJob",
        "{manual:#}"
    );
    // Finishing with a scheduled run, it may be the older of two successful Jobs and go at
    // once: the history limit only ever removes Jobs that completed.
    let mut last = None;
    let completed = wait_until(Duration::from_secs(90), || {
        last = get(server, "job/manual");
        last.as_ref()
            .is_none_or(|j| condition(j, "Complete").is_some_and(|c| c["status"] == "True"))
    });
    assert!(completed, "job manual never completed: {last:#?}");

    // On schedule: a Job named after the scheduled minute within about a minute.
    let started = Instant::now();
    let mut scheduled = Vec::new();
    let ran = wait_until(Duration::from_secs(75), || {
        scheduled = items(server, &["jobs"])
            .into_iter()
            .filter(|j| j["metadata"]["name"] != "manual")
            .collect();
        !scheduled.is_empty()
    });
    assert!(ran, "no scheduled job within 75 s\n{}", server.log());
    let name = scheduled[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let minutes: i64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("job name {name} is not tick-<minutes>"));
    let scheduled_at = scheduled[0]["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        scheduled_at.ends_with(":00Z"),
        "scheduled on a whole minute: {scheduled_at}"
    );
    assert!(minutes > 29_000_000, "minutes since the epoch: {minutes}");
    eprintln!("first scheduled job after {:?}", started.elapsed());
    wait_for_condition(server, &name, "complete", "90s");

    // History: only one successful Job is kept, the newest; the status says when.
    let completed = |server: &BerthServer| -> Vec<Value> {
        items(server, &["jobs"])
            .into_iter()
            .filter(|j| condition(j, "Complete").is_some_and(|c| c["status"] == "True"))
            .map(|j| j["metadata"]["name"].clone())
            .collect()
    };
    let trimmed = wait_until(Duration::from_secs(30), || {
        get(server, "job/manual").is_none() && completed(server).len() == 1
    });
    assert!(
        trimmed,
        "history not trimmed to one: {:?}",
        completed(server)
    );
    let tick = get(server, "cronjob/tick").expect("cronjob");
    assert!(tick["status"]["lastScheduleTime"].is_string(), "{tick:#}");
    assert!(tick["status"]["lastSuccessfulTime"].is_string(), "{tick:#}");

    stop_batch_work(server);
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}],
                },
            },
        },
    })
}

fn wait_for_pods(server: &BerthServer, app: &str, count: usize) {
    let ok = wait_until(Duration::from_secs(90), || {
        items(server, &["pods", "-l", &format!("app={app}")]).len() == count
    });
    assert!(ok, "{app} never had {count} pods\n{}", server.log());
}

#[test]
fn kubectl_delete_cascade_foreground_orphan_and_background_do_what_they_say() {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    for name in ["fg", "orphaned", "bg"] {
        apply(server, &deployment(name));
    }
    for name in ["fg", "orphaned", "bg"] {
        wait_for_pods(server, name, 2);
    }

    // Foreground: the Deployment waits, marked, until its ReplicaSet and pods are gone.
    server.kubectl_ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let marked = get(server, "deployment/fg");
    if let Some(d) = &marked {
        assert!(d["metadata"]["deletionTimestamp"].is_string(), "{d:#}");
        assert!(
            d["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.contains(&json!("foregroundDeletion"))),
            "{d:#}"
        );
    }
    let gone = wait_until(Duration::from_secs(90), || {
        get(server, "deployment/fg").is_none()
    });
    assert!(
        gone,
        "the foreground-deleted deployment stayed\n{}",
        server.log()
    );
    assert!(
        items(server, &["replicasets", "-l", "app=fg"]).is_empty(),
        "its ReplicaSet went first"
    );
    assert!(
        items(server, &["pods", "-l", "app=fg"]).is_empty(),
        "its pods went first"
    );

    // Orphan: the Deployment goes; its ReplicaSet and pods stay, no longer owned.
    server.kubectl_ok(&["delete", "deployment", "orphaned", "--cascade=orphan"]);
    assert!(get(server, "deployment/orphaned").is_none());
    let sets = items(server, &["replicasets", "-l", "app=orphaned"]);
    assert_eq!(sets.len(), 1);
    assert!(
        sets[0]["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "{:#}",
        sets[0]
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        items(server, &["pods", "-l", "app=orphaned"]).len(),
        2,
        "pods stay"
    );

    // Background: the Deployment goes at once, the rest follows.
    server.kubectl_ok(&[
        "delete",
        "deployment",
        "bg",
        "--cascade=background",
        "--wait=false",
    ]);
    let followed = wait_until(Duration::from_secs(90), || {
        get(server, "deployment/bg").is_none()
            && items(server, &["replicasets", "-l", "app=bg"]).is_empty()
            && items(server, &["pods", "-l", "app=bg"]).is_empty()
    });
    assert!(
        followed,
        "background deletion left something behind\n{}",
        server.log()
    );

    server.kubectl_ok(&["delete", "replicasets", "-l", "app=orphaned"]);
}

#[test]
fn a_cronjob_runs_in_its_time_zone_and_a_schedule_naming_a_zone_is_refused() {
    let ns = Netns::new();
    let server = BerthServer::start(&ns);
    // Suspended Jobs: the test is about when a run starts, not about its pods.
    let cronjob = |name: &str, schedule: &str, zone: Option<&str>| {
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": schedule, "timeZone": zone, "jobTemplate": {"spec": {
                "suspend": true,
                "template": {"spec": {"restartPolicy": "Never", "containers": [
                    {"name": "main", "image": "busybox", "command": ["true"]}]}}}}}
        })
    };

    for zone in [None, Some("UTC")] {
        let refused = server.kubectl_stdin(
            &["create", "-f", "-"],
            &cronjob("zoned", "CRON_TZ=UTC 0 * * * *", zone).to_string(),
        );
        assert!(
            !refused.status.success(),
            "a zone in the schedule was accepted"
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(r#"spec.schedule: Invalid value: "CRON_TZ=UTC 0 * * * *": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"#),
            "{stderr}"
        );
    }

    // The next whole minute at least 15 s away, as a wall-clock time in Kolkata (UTC+05:30):
    // a controller reading the schedule in UTC would run it five and a half hours off.
    let now = jiff::Timestamp::now();
    let target_second = (now.as_second() + 15).div_euclid(60) * 60 + 60;
    let target = jiff::Timestamp::from_second(target_second).expect("a valid time");
    let kolkata = jiff::tz::TimeZone::get("Asia/Kolkata").expect("the time zone database");
    let local = target.to_zoned(kolkata);
    let schedule = format!("{} {} * * *", local.minute(), local.hour());
    let created = server.kubectl_stdin(
        &["create", "-f", "-"],
        &cronjob("kolkata", &schedule, Some("Asia/Kolkata")).to_string(),
    );
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let mut last = None;
    let ran = wait_until(Duration::from_secs(120), || {
        last = get(&server, "cronjob/kolkata");
        last.as_ref()
            .is_some_and(|c| c["status"]["lastScheduleTime"].is_string())
    });
    assert!(
        ran,
        "no run at {schedule} Asia/Kolkata: {last:#?}\n{}",
        server.log()
    );
    let expected = target.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let cron = last.unwrap_or(Value::Null);
    assert_eq!(
        cron["status"]["lastScheduleTime"],
        expected.as_str(),
        "{cron:#}"
    );
    let jobs = items(&server, &["jobs"]);
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(
        jobs[0]["metadata"]["name"],
        format!("kolkata-{}", target_second / 60).as_str()
    );
    server.kubectl_ok(&["delete", "cronjobs,jobs", "--all"]);
}

/// Events about the object `name` (controllers record them through events.k8s.io/v1).
fn events_about(server: &BerthServer, name: &str) -> Vec<Value> {
    items(server, &["events.v1.events.k8s.io"])
        .into_iter()
        .filter(|e| e["regarding"]["name"] == name)
        .collect()
}

/// Pods of a Job, by its name label.
fn job_pods(server: &BerthServer, job: &str) -> Vec<Value> {
    items(
        server,
        &["pods", "-l", &format!("batch.kubernetes.io/job-name={job}")],
    )
}

#[test]
fn a_job_past_its_active_deadline_fails_as_deadline_exceeded_and_its_stopped_pods_count_as_failed()
{
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    apply(
        server,
        &job(
            "overdue",
            json!({"activeDeadlineSeconds": 15, "parallelism": 2, "completions": 2}),
            "sleep 3600",
        ),
    );
    let mut pods = Vec::new();
    let running = wait_until(Duration::from_secs(90), || {
        pods = job_pods(server, "overdue");
        pods.len() == 2 && pods.iter().all(|p| p["status"]["phase"] == "Running")
    });
    assert!(running, "both pods run before the deadline: {pods:#?}");

    wait_for_condition(server, "overdue", "failed", "90s");
    let overdue = get(server, "job/overdue").expect("job overdue");
    for type_ in ["FailureTarget", "Failed"] {
        let c = condition(&overdue, type_).unwrap_or_else(|| panic!("{type_}: {overdue:#}"));
        assert_eq!(c["status"], "True", "{overdue:#}");
        assert_eq!(c["reason"], "DeadlineExceeded", "{overdue:#}");
        assert_eq!(
            c["message"], "Job was active longer than specified deadline",
            "{overdue:#}"
        );
    }
    assert_eq!(overdue["status"]["active"], 0, "{overdue:#}");
    // Both pods it stopped count as failed, as upstream counts them.
    assert_eq!(overdue["status"]["failed"], 2, "{overdue:#}");
    assert!(condition(&overdue, "Complete").is_none(), "{overdue:#}");
    let warned = events_about(server, "overdue")
        .iter()
        .any(|e| e["reason"] == "DeadlineExceeded" && e["type"] == "Warning");
    assert!(warned, "a DeadlineExceeded warning event");

    // Its pods are stopped and go; none replaces them.
    let stopped = wait_until(Duration::from_secs(60), || {
        job_pods(server, "overdue").is_empty()
    });
    assert!(
        stopped,
        "the overdue job's pods stayed: {:#?}",
        job_pods(server, "overdue")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        job_pods(server, "overdue").is_empty(),
        "no pod started again"
    );
    stop_batch_work(server);
}

/// A CronJob running every minute; `extra` adds to its spec.
fn every_minute(name: &str, command: &str, extra: Value) -> Value {
    let mut template = job("unused", json!({}), command);
    let mut spec =
        json!({"schedule": "*/1 * * * *", "jobTemplate": {"spec": template["spec"].take()}});
    for (key, value) in extra.as_object().into_iter().flatten() {
        spec[key] = value.clone();
    }
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name}, "spec": spec})
}

/// Names of the Jobs a CronJob started (named `<cronjob>-<minutes since the epoch>`).
fn runs_of(server: &BerthServer, cronjob: &str) -> Vec<String> {
    let prefix = format!("{cronjob}-");
    let mut names: Vec<String> = items(server, &["jobs"])
        .iter()
        .filter(|j| j["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|j| j["metadata"]["name"].as_str())
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|m| m.parse::<i64>().is_ok())
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn sleep_until(at: jiff::Timestamp) {
    let left = at.duration_since(jiff::Timestamp::now());
    if left.is_positive() {
        std::thread::sleep(left.unsigned_abs());
    }
}

#[test]
fn cronjobs_forbid_or_replace_a_run_still_active_skip_a_run_missed_too_long_ago_and_wait_while_suspended(
) {
    let ns = Netns::new();
    let cluster = Cluster::start(&ns);
    let server = &cluster.server;
    // The next whole minute, at least 10 s away: every CronJob exists before it comes.
    let mut now = jiff::Timestamp::now().as_second();
    if 60 - now.rem_euclid(60) < 10 {
        std::thread::sleep(Duration::from_secs(11));
        now = jiff::Timestamp::now().as_second();
    }
    let first = now.div_euclid(60) * 60 + 60;
    let second = first + 60;
    let at = |second: i64| jiff::Timestamp::from_second(second).expect("a valid time");
    let run = |cronjob: &str, second: i64| format!("{cronjob}-{}", second / 60);
    apply(
        server,
        &every_minute(
            "forbid",
            "sleep 3600",
            json!({"concurrencyPolicy": "Forbid"}),
        ),
    );
    apply(
        server,
        &every_minute(
            "replace",
            "sleep 3600",
            json!({"concurrencyPolicy": "Replace"}),
        ),
    );
    apply(
        server,
        &every_minute("paused", "true", json!({"suspend": true})),
    );
    apply(
        server,
        &every_minute(
            "late",
            "true",
            json!({"suspend": true, "startingDeadlineSeconds": 15}),
        ),
    );

    // The first minute: the two active CronJobs run; the suspended ones do not.
    let started = wait_until(Duration::from_secs(100), || {
        runs_of(server, "forbid") == [run("forbid", first)]
            && runs_of(server, "replace") == [run("replace", first)]
    });
    assert!(
        started,
        "runs at the first minute: {:?} {:?}\n{}",
        runs_of(server, "forbid"),
        runs_of(server, "replace"),
        server.log()
    );
    // 25 s after the missed run: past the late one's 15 s starting deadline.
    sleep_until(at(first + 25));
    assert!(runs_of(server, "paused").is_empty(), "suspended, it ran");
    assert!(runs_of(server, "late").is_empty(), "suspended, it ran");

    // Resumed, the missed run starts at once; too late for its deadline, it is skipped.
    for name in ["paused", "late"] {
        server.kubectl_ok(&[
            "patch",
            "cronjob",
            name,
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ]);
    }
    let caught_up = wait_until(Duration::from_secs(20), || {
        runs_of(server, "paused") == [run("paused", first)]
    });
    assert!(
        caught_up,
        "the resumed CronJob ran its missed run: {:?}",
        runs_of(server, "paused")
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        runs_of(server, "late").is_empty(),
        "a run missed by more than the starting deadline was started: {:?}",
        runs_of(server, "late")
    );
    let late = get(server, "cronjob/late").expect("cronjob late");
    assert!(late["status"]["lastScheduleTime"].is_null(), "{late:#}");

    // The second minute: the late one runs on time; Replace swaps its run; Forbid keeps its own.
    let swapped = wait_until(Duration::from_secs(100), || {
        runs_of(server, "late") == [run("late", second)]
            && runs_of(server, "replace") == [run("replace", second)]
    });
    assert!(
        swapped,
        "runs at the second minute: late {:?}, replace {:?}\n{}",
        runs_of(server, "late"),
        runs_of(server, "replace"),
        server.log()
    );
    let forbidden = wait_until(Duration::from_secs(30), || {
        events_about(server, "forbid")
            .iter()
            .any(|e| e["reason"] == "JobAlreadyActive")
    });
    assert!(forbidden, "Forbid says why it did not start a run");
    assert_eq!(runs_of(server, "forbid"), [run("forbid", first)]);
    let replaced_gone = wait_until(Duration::from_secs(30), || {
        get(server, &format!("job/{}", run("replace", first))).is_none()
    });
    assert!(replaced_gone, "the replaced run was deleted");
    let replace = get(server, "cronjob/replace").expect("cronjob replace");
    assert_eq!(
        replace["status"]["active"][0]["name"],
        run("replace", second).as_str(),
        "{replace:#}"
    );
    assert_eq!(
        replace["status"]["lastScheduleTime"],
        at(second)
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
            .as_str(),
        "{replace:#}"
    );
    stop_batch_work(server);
}
