//! Watch streams: newline-delimited JSON events, initial state, bookmarks, resume and 410.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;
use tokio::sync::mpsc;

use super::query::Query;
use super::request::ResourceRequest;
use super::table::{Render, WatchRender};
use super::ApiServer;
use crate::api::meta;
use crate::api::resources::Resource;
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::api::{ApiError, ApiResult};
use crate::registry::generic::decode;
use crate::registry::selection::stored_matches_selectors;
use crate::registry::ListOptions;
use crate::store::{Event, EventKind, StoreError};

/// How often a watch that allows bookmarks gets one, so clients can resume close to now.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

struct Filter {
    resource: &'static Resource,
    /// Only this key (a watch on one named object).
    key: Option<String>,
    labels: Option<LabelSelector>,
    fields: Option<FieldSelector>,
}

impl Filter {
    fn is_selecting(&self) -> bool {
        self.labels.as_ref().is_some_and(|s| !s.is_empty())
            || self.fields.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Whether an event on `key` can concern this watch, judged from the key alone: a watch
    /// selecting one name (`metadata.name=x`, how controllers follow one object across
    /// namespaces) then skips decoding every other object's events. Names never change, so an
    /// object with another name matched neither before nor after the event.
    fn may_concern(&self, key: &str) -> bool {
        if self.key.as_ref().is_some_and(|k| k != key) {
            return false;
        }
        match self
            .fields
            .as_ref()
            .and_then(|f| f.exact_match("metadata.name"))
        {
            Some(name) => key.rsplit('/').next() == Some(name),
            None => true,
        }
    }

    /// Whether the object in `raw` (stored bytes) passes the selectors, decoding only what they
    /// read.
    fn matches_stored(&self, raw: &[u8]) -> bool {
        stored_matches_selectors(
            self.resource,
            raw,
            self.labels.as_ref(),
            self.fields.as_ref(),
        )
        .unwrap_or(false)
    }
}

pub fn serve(
    server: &Arc<ApiServer>,
    target: &ResourceRequest,
    query: &Query,
    render: Render,
) -> ApiResult<Response> {
    let r = target.resource;
    let namespace = target.namespace.as_deref();
    let filter = Filter {
        resource: r,
        key: target
            .name
            .as_ref()
            .map(|n| r.key(namespace.unwrap_or(""), n)),
        labels: query.label_selector.clone(),
        fields: query.field_selector.clone(),
    };
    let registry = &server.registry;
    // No resourceVersion (or "0") means: the current state as ADDED events, then changes.
    let send_initial = query
        .send_initial_events
        .unwrap_or(query.revision().is_none());
    let (initial, start) = if send_initial {
        let opts = ListOptions {
            label_selector: filter.labels.clone(),
            field_selector: filter.fields.clone(),
            ..Default::default()
        };
        let page = registry.list(r, namespace, &opts)?;
        let items: Vec<Bytes> = match &filter.key {
            Some(key) => page
                .items
                .into_iter()
                .filter(|raw| {
                    decode(raw).is_ok_and(|o| r.key(meta::namespace(&o), meta::name(&o)) == *key)
                })
                .collect(),
            None => page.items,
        };
        (items, page.revision)
    } else {
        (Vec::new(), query.revision().unwrap_or(0))
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let store_watch = match registry.store().watch(&r.list_prefix(namespace), start) {
        Ok(w) => w,
        Err(StoreError::Compacted { compacted }) => {
            let err = ApiError::gone(format!("too old resource version: {start} ({compacted})"));
            let line = event_line("ERROR", &err.to_status().to_string().into_bytes());
            return Ok(stream_response(Body::from(line)));
        }
        Err(e) => return Err(crate::registry::generic::store_error(e)),
    };
    let timeout = match query.timeout_seconds {
        Some(s) => Duration::from_secs(s),
        // Upstream spreads default timeouts over 30–60 minutes so clients don't re-list together.
        None => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    let bookmarks = query.allow_watch_bookmarks;
    let initial_end = query.send_initial_events == Some(true);
    let render = render.watch(r);
    tokio::spawn(async move {
        let _ = pump(
            tx,
            store_watch,
            filter,
            render,
            initial,
            start,
            initial_end,
            bookmarks,
            timeout,
        )
        .await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(stream_response(Body::from_stream(stream)))
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Sends events to the client until the store stream ends (we fell behind: the client re-lists),
/// the timeout passes, or the client goes away.
#[allow(clippy::too_many_arguments)]
async fn pump(
    tx: mpsc::Sender<Bytes>,
    mut store_watch: crate::store::Watch,
    filter: Filter,
    mut render: WatchRender,
    initial: Vec<Bytes>,
    start: u64,
    initial_end: bool,
    bookmarks: bool,
    timeout: Duration,
) -> Result<(), mpsc::error::SendError<Bytes>> {
    for raw in initial {
        tx.send(render.line(event_line("ADDED", &raw))).await?;
    }
    if initial_end {
        tx.send(render.line(bookmark(filter.resource, start, true)))
            .await?;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + BOOKMARK_INTERVAL,
        BOOKMARK_INTERVAL,
    );
    let mut last = start;
    loop {
        tokio::select! {
            event = store_watch.next() => {
                let Some(event) = event else { return Ok(()) };
                last = event.revision;
                if let Some(line) = encode(&filter, &event) {
                    tx.send(render.line(line)).await?;
                }
            }
            _ = ticker.tick(), if bookmarks => tx.send(render.line(bookmark(filter.resource, last, false))).await?,
            _ = &mut deadline => return Ok(()),
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// The watch event for a store event, or None when the client's filter hides it.
fn encode(filter: &Filter, event: &Event) -> Option<Bytes> {
    if !filter.may_concern(&event.kv.key) {
        return None;
    }
    let value = crate::crd::hooks::convert_raw(filter.resource, event.kv.value.clone());
    match event.kind {
        EventKind::Delete => {
            if filter.is_selecting() && !filter.matches_stored(&value) {
                return None;
            }
            let mut obj = decode(&value).ok()?;
            // A deleted object is reported at the revision of its deletion, as upstream does.
            meta::set_resource_version(&mut obj, event.revision);
            Some(event_line("DELETED", obj.to_string().as_bytes()))
        }
        EventKind::Put if !filter.is_selecting() => {
            let kind = if event.prev.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            Some(event_line(kind, &value))
        }
        EventKind::Put => {
            let matches_now = filter.matches_stored(&value);
            let matched_before = event
                .prev
                .as_ref()
                .is_some_and(|p| filter.matches_stored(&p.value));
            match (matched_before, matches_now) {
                (true, true) => Some(event_line("MODIFIED", &value)),
                (false, true) => Some(event_line("ADDED", &value)),
                (true, false) => Some(event_line("DELETED", &value)),
                (false, false) => None,
            }
        }
    }
}

fn event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(object.len() + 32);
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\",\"object\":");
    out.put_slice(object);
    out.put_slice(b"}\n");
    out.freeze()
}

fn bookmark(r: &Resource, revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": metadata});
    event_line("BOOKMARK", obj.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;
    use crate::store::KeyValue;
    use serde_json::Value;

    fn kv(key: &str, value: Value, rev: u64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    fn parse(line: &Bytes) -> Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn puts_become_added_or_modified_and_deletes_carry_the_delete_revision() {
        let r = find("", "v1", "configmaps").unwrap();
        let filter = Filter {
            resource: r,
            key: None,
            labels: None,
            fields: None,
        };
        let obj = json!({"metadata": {"name": "a", "resourceVersion": "5"}});
        let added = Event {
            kind: EventKind::Put,
            revision: 5,
            kv: kv("/core/configmaps/d/a", obj.clone(), 5),
            prev: None,
        };
        assert_eq!(parse(&encode(&filter, &added).unwrap())["type"], "ADDED");
        let modified = Event {
            prev: Some(kv("k", obj.clone(), 4)),
            ..added.clone()
        };
        assert_eq!(
            parse(&encode(&filter, &modified).unwrap())["type"],
            "MODIFIED"
        );
        let deleted = Event {
            kind: EventKind::Delete,
            revision: 9,
            kv: kv("/core/configmaps/d/a", obj, 5),
            prev: None,
        };
        let line = parse(&encode(&filter, &deleted).unwrap());
        assert_eq!(line["type"], "DELETED");
        assert_eq!(line["object"]["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn initial_events_end_bookmark_is_annotated() {
        let r = find("apps", "v1", "deployments").unwrap();
        let line = parse(&bookmark(r, 42, true));
        assert_eq!(line["type"], "BOOKMARK");
        assert_eq!(line["object"]["metadata"]["resourceVersion"], "42");
        assert_eq!(
            line["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        assert_eq!(line["object"]["kind"], "Deployment");
    }

    #[test]
    fn a_watch_on_one_name_ignores_other_keys() {
        let r = find("", "v1", "configmaps").unwrap();
        let filter = Filter {
            resource: r,
            key: Some("/core/configmaps/d/a".into()),
            labels: None,
            fields: None,
        };
        let other = Event {
            kind: EventKind::Put,
            revision: 2,
            kv: kv("/core/configmaps/d/b", json!({}), 2),
            prev: None,
        };
        assert!(encode(&filter, &other).is_none());
    }

    #[test]
    fn a_watch_selecting_one_name_across_namespaces_gets_only_that_names_events() {
        let r = find("", "v1", "configmaps").unwrap();
        let filter = Filter {
            resource: r,
            key: None,
            labels: None,
            fields: Some(FieldSelector::parse("metadata.name=root").unwrap()),
        };
        let event = |key: &str, name: &str, kind: EventKind| Event {
            kind,
            revision: 3,
            kv: kv(
                key,
                json!({"metadata": {"name": name, "namespace": "d"}}),
                3,
            ),
            prev: None,
        };
        let wanted = event("/core/configmaps/d/root", "root", EventKind::Put);
        assert_eq!(parse(&encode(&filter, &wanted).unwrap())["type"], "ADDED");
        let gone = event("/core/configmaps/e/root", "root", EventKind::Delete);
        assert_eq!(parse(&encode(&filter, &gone).unwrap())["type"], "DELETED");
        for kind in [EventKind::Put, EventKind::Delete] {
            let other = event("/core/configmaps/d/rooted", "rooted", kind);
            assert!(encode(&filter, &other).is_none());
        }
    }
}
