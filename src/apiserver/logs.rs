//! `GET pods/<name>/log`: container logs read from the CRI log files the pod shims write
//! (`<logs>/<ns>_<pod>_<uid>/<container>/<restartCount>.log`, rotated to `.1`, `.2`, ...).
//! The files are on the node that runs the pod: the API server reads its own node's, an
//! agent's kubelet API reads the agent's (see `stream::node`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::stream::node::PodNode;
use crate::api::{ApiError, ApiResult, Cause};

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// The query of a log request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<jiff::Timestamp>,
    pub limit_bytes: Option<usize>,
}

impl LogOptions {
    /// The options of a log request for pod `pod`: a value that is no number (or time) is a
    /// 400, one out of range a 422 naming the field, as upstream's `ValidatePodLogOptions`.
    pub fn parse(raw: Option<&str>, pod: &str) -> ApiResult<LogOptions> {
        let mut o = LogOptions::default();
        let (mut tail_lines, mut limit_bytes) = (None, None);
        let bool_of = |v: &str| matches!(v, "true" | "1" | "True");
        let num = |k: &str, v: &str| {
            v.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid {k} {v:?}")))
        };
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "container" if !v.is_empty() => o.container = Some(v.into_owned()),
                "follow" => o.follow = bool_of(&v),
                "previous" => o.previous = bool_of(&v),
                "timestamps" => o.timestamps = bool_of(&v),
                "tailLines" => tail_lines = Some(num("tailLines", &v)?),
                "sinceSeconds" => o.since_seconds = Some(num("sinceSeconds", &v)?),
                "sinceTime" => {
                    let at = v.parse::<jiff::Timestamp>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "invalid sinceTime {v:?}: not an RFC 3339 time"
                        ))
                    })?;
                    o.since_time = Some(at);
                }
                "limitBytes" => limit_bytes = Some(num("limitBytes", &v)?),
                _ => {}
            }
        }
        let mut causes = Vec::new();
        let out_of_range = |field: &str, value: i64, detail: &str| Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {value}: {detail}"),
            field: field.into(),
        };
        match tail_lines {
            Some(n) if n < 0 => causes.push(out_of_range(
                "tailLines",
                n,
                "must be greater than or equal to 0",
            )),
            n => o.tail_lines = n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
        match limit_bytes {
            Some(n) if n < 1 => {
                causes.push(out_of_range("limitBytes", n, "must be greater than 0"))
            }
            n => o.limit_bytes = n.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
        match (o.since_seconds, o.since_time) {
            (Some(_), Some(_)) => causes.push(Cause::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(n), None) if n < 1 => {
                causes.push(out_of_range("sinceSeconds", n, "must be greater than 0"))
            }
            _ => {}
        }
        match causes.is_empty() {
            true => Ok(o),
            false => Err(ApiError::invalid("", "PodLogOptions", pod, causes)),
        }
    }

    /// The earliest time a line may have to be shown, if the client set one. `sinceSeconds` is
    /// the client's: one reaching before the earliest timestamp keeps every line instead of
    /// overflowing.
    fn cutoff(&self, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        self.since_time.or_else(|| {
            let since = self.since_seconds?;
            now.checked_sub(jiff::SignedDuration::from_secs(since)).ok()
        })
    }
}

/// One CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub time: String,
    pub content: String,
    pub partial: bool,
}

/// Parses CRI lines; malformed ones are skipped.
pub fn parse_cri(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(4, ' ');
            let time = parts.next()?;
            let _stream = parts.next()?;
            let tag = parts.next()?;
            let content = parts.next().unwrap_or("");
            Some(Record {
                time: time.to_string(),
                content: content.to_string(),
                partial: tag == "P",
            })
        })
        .collect()
}

/// Joins partial records into whole lines and renders them as `kubectl logs` shows them.
pub fn render(records: &[Record], options: &LogOptions, now: jiff::Timestamp) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut pending: Option<(String, String)> = None;
    for r in records {
        let (time, mut content) = pending.take().unwrap_or((r.time.clone(), String::new()));
        content.push_str(&r.content);
        if r.partial {
            pending = Some((time, content));
        } else {
            lines.push((time, content));
        }
    }
    lines.extend(pending);
    if let Some(cutoff) = options.cutoff(now) {
        lines.retain(|(t, _)| t.parse::<jiff::Timestamp>().map_or(true, |t| t >= cutoff));
    }
    if let Some(n) = options.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = String::new();
    for (time, content) in lines {
        if options.timestamps {
            out.push_str(&time);
            out.push(' ');
        }
        out.push_str(&content);
        out.push('\n');
    }
    out
}

/// A log file with its rotated predecessors, oldest first.
fn with_rotations(path: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for n in (1..10).rev() {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        let p = PathBuf::from(name);
        if p.exists() {
            files.push(p);
        }
    }
    files.push(path.to_path_buf());
    files
}

/// Which container and which run a request is about: `(log file, container)`.
pub(super) fn locate(
    logs_dir: &Path,
    pod: &Value,
    options: &LogOptions,
) -> ApiResult<(PathBuf, String)> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("");
    let names = |key: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let containers = names("containers");
    let init = names("initContainers");
    let ephemeral = names("ephemeralContainers");
    let container = match &options.container {
        Some(c) if containers.contains(c) || init.contains(c) || ephemeral.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let restart_count = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|k| {
        pod.pointer(&format!("/status/{k}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    })
    .find(|s| s.get("name").and_then(Value::as_str) == Some(container.as_str()))
    .and_then(|s| s.get("restartCount").and_then(Value::as_i64))
    .unwrap_or(0);
    let run = if options.previous {
        if restart_count == 0 {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        restart_count - 1
    } else {
        restart_count
    };
    let path = logs_dir
        .join(format!("{namespace}_{name}_{uid}"))
        .join(&container)
        .join(format!("{run}.log"));
    Ok((path, container))
}

fn read_all(files: &[PathBuf]) -> String {
    files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

fn limit(mut text: String, limit: Option<usize>) -> String {
    if let Some(n) = limit {
        if text.len() > n {
            let mut cut = n;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
    }
    text
}

/// Serves `GET pods/<name>/log` from the node that runs the pod.
pub async fn serve(
    node: &PodNode,
    namespace: &str,
    name: &str,
    query: Option<&str>,
) -> ApiResult<Response> {
    let options = LogOptions::parse(query, name)?;
    let logs_dir = node.logs_dir.clone();
    let pod = node.pod(namespace, name).await?;
    let (path, container) = locate(&logs_dir, &pod, &options)?;
    let files = with_rotations(&path);
    let text = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || read_all(&files))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    let first = render(&parse_cri(&text), &options, jiff::Timestamp::now());
    let first = limit(first, options.limit_bytes);
    let plain = |body: Body| {
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(body)
            .map_err(|e| ApiError::internal(e.to_string()))
    };
    if !options.follow {
        return plain(Body::from(first));
    }
    // Follow: send what is there, then what is appended, until the container is no longer
    // running (or the pod is gone), or the client leaves.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let node = node.clone();
    let namespace = namespace.to_string();
    let name = name.to_string();
    let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut sent = first.len();
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        let render_opts = LogOptions {
            tail_lines: None,
            since_seconds: None,
            since_time: None,
            ..options.clone()
        };
        let mut carry = String::new();
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            let running = node.container_running(&namespace, &name, &container).await;
            let grown = match tokio::fs::read(&path).await {
                Ok(bytes) if (bytes.len() as u64) > offset => {
                    let new = String::from_utf8_lossy(&bytes[offset as usize..]).into_owned();
                    offset = bytes.len() as u64;
                    Some(new)
                }
                // Rotated: start over on the new file.
                Ok(bytes) if (bytes.len() as u64) < offset => {
                    offset = bytes.len() as u64;
                    Some(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => None,
            };
            if let Some(new) = grown {
                carry.push_str(&new);
                // Only whole lines: a half-written one waits for the next round.
                let cut = carry.rfind('\n').map(|i| i + 1).unwrap_or(0);
                let complete: String = carry.drain(..cut).collect();
                let mut chunk = render(&parse_cri(&complete), &render_opts, jiff::Timestamp::now());
                if let Some(max) = options.limit_bytes {
                    chunk = limit(chunk, Some(max.saturating_sub(sent)));
                }
                sent += chunk.len();
                if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    return;
                }
                if options.limit_bytes.is_some_and(|max| sent >= max) {
                    return;
                }
            } else if !running {
                return;
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    plain(Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:00.1Z stdout F one\n\
                       2026-01-01T00:00:01.1Z stderr P tw\n\
                       2026-01-01T00:00:01.2Z stderr F o\n\
                       2026-01-01T00:00:09.0Z stdout F three\n";

    #[test]
    fn cri_lines_lose_their_prefix_and_partials_are_joined() {
        let out = render(
            &parse_cri(LOG),
            &LogOptions::default(),
            jiff::Timestamp::now(),
        );
        assert_eq!(out, "one\ntwo\nthree\n");
    }

    #[test]
    fn timestamps_tail_and_since_shape_the_output() {
        let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        let tail = LogOptions {
            tail_lines: Some(1),
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            render(&parse_cri(LOG), &tail, now),
            "2026-01-01T00:00:09.0Z three\n"
        );
        let since = LogOptions {
            since_seconds: Some(5),
            ..LogOptions::default()
        };
        assert_eq!(render(&parse_cri(LOG), &since, now), "three\n");
        assert_eq!(limit("héllo".into(), Some(2)), "h");
    }

    #[test]
    fn a_since_beyond_the_timestamp_range_keeps_every_line() {
        let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        for since in [i64::MAX, 999_999_999_999] {
            let options = LogOptions::parse(Some(&format!("sinceSeconds={since}")), "p").unwrap();
            assert_eq!(render(&parse_cri(LOG), &options, now), "one\ntwo\nthree\n");
        }
    }

    #[test]
    fn options_parse_from_the_query() {
        let o = LogOptions::parse(
            Some("container=app&follow=true&tailLines=5&previous=1"),
            "p",
        )
        .unwrap();
        assert_eq!(o.container.as_deref(), Some("app"));
        assert!(o.follow && o.previous);
        assert_eq!(o.tail_lines, Some(5));
        let since = LogOptions::parse(Some("sinceTime=2026-01-01T00:00:08Z"), "p").unwrap();
        let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        assert_eq!(render(&parse_cri(LOG), &since, now), "three\n");
    }

    #[test]
    fn options_out_of_range_are_refused_as_upstream_refuses_them() {
        assert_eq!(
            LogOptions::parse(Some("tailLines=x"), "p")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            LogOptions::parse(Some("sinceTime=soon"), "p")
                .unwrap_err()
                .code,
            400
        );
        let err =
            LogOptions::parse(Some("tailLines=-1&limitBytes=0&sinceSeconds=0"), "web").unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            concat!(
                "PodLogOptions \"web\" is invalid: [tailLines: Invalid value: -1: must be greater ",
                "than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0, ",
                "sinceSeconds: Invalid value: 0: must be greater than 0]"
            )
        );
        let both = "sinceSeconds=5&sinceTime=2026-01-01T00:00:08Z";
        let err = LogOptions::parse(Some(both), "web").unwrap_err();
        assert_eq!(
            err.message,
            "PodLogOptions \"web\" is invalid: : Forbidden: at most one of `sinceTime` or \
             `sinceSeconds` may be specified"
        );
        assert!(LogOptions::parse(Some("tailLines=0&limitBytes=1&sinceSeconds=1"), "p").is_ok());
    }

    #[test]
    fn the_log_file_is_named_by_pod_container_and_restart_count() {
        let pod = serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"containerStatuses": [{"name": "b", "restartCount": 3}]}
        });
        let dir = Path::new("/logs");
        let b = LogOptions {
            container: Some("b".into()),
            ..LogOptions::default()
        };
        assert_eq!(
            locate(dir, &pod, &b).unwrap().0,
            PathBuf::from("/logs/ns_p_u/b/3.log")
        );
        let prev = LogOptions {
            previous: true,
            ..b
        };
        assert_eq!(
            locate(dir, &pod, &prev).unwrap().0,
            PathBuf::from("/logs/ns_p_u/b/2.log")
        );
        assert!(
            locate(dir, &pod, &LogOptions::default()).is_err(),
            "two containers: name one"
        );
    }
}
