//! Server-side printing: `meta.k8s.io` Tables (what `kubectl get` shows) and metadata-only
//! answers (`PartialObjectMetadata[List]`) for get, list and watch.
//!
//! `rest` asks [`Render::negotiate`] how to answer a GET, then hands it the stored JSON; plain
//! JSON requests pass straight through without being decoded.

mod accept;
mod duration;
mod printers;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderMap;
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::api::resources::Resource;
use crate::api::{ApiError, ApiResult};
use crate::registry::generic::decode;
pub use accept::{MetaVersion, Output, Verb};

/// What GETs answer in: JSON, and CBOR by transcoding (`apiserver::cbor`).
const SERVED: [&str; 2] = ["application/json", crate::api::cbor::MEDIA_TYPE];

/// What each Table row carries besides its cells (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    /// The default: rows carry `PartialObjectMetadata`, enough for kubectl's NAMESPACE column,
    /// `--show-labels` and `-L`.
    Metadata,
    Object,
}

fn include_object(query: Option<&str>) -> ApiResult<IncludeObject> {
    let value = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "includeObject")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    match value.as_str() {
        "" | "Metadata" => Ok(IncludeObject::Metadata),
        "Object" => Ok(IncludeObject::Object),
        "None" => Ok(IncludeObject::None),
        other => Err(ApiError::bad_request(format!(
            "includeObject must be one of \"None\", \"Metadata\" or \"Object\", got {other:?}"
        ))),
    }
}

/// How one GET is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Render {
    pub output: Output,
    include: IncludeObject,
    verb: Verb,
}

impl Render {
    /// Reads `Accept` and `includeObject`; 406 when no acceptable representation can be served.
    pub fn negotiate(headers: &HeaderMap, query: Option<&str>, verb: Verb) -> ApiResult<Render> {
        let accept = headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let output =
            accept::negotiate(accept, verb).ok_or_else(|| ApiError::not_acceptable(&SERVED))?;
        Ok(Render {
            output,
            include: include_object(query)?,
            verb,
        })
    }

    /// The answer to a GET of one stored object.
    pub fn object(&self, resource: &Resource, raw: Bytes) -> ApiResult<Response> {
        let body = match self.output {
            Output::Object => return Ok(self.respond(Body::from(raw))),
            Output::Table(version) => {
                let obj = decode(&raw)?;
                let rv = crate::api::meta::resource_version(&obj).to_string();
                let rows = vec![self.row(resource, &obj, version, Timestamp::now())];
                table(
                    resource,
                    version,
                    true,
                    json!({"resourceVersion": rv}),
                    rows,
                )
            }
            Output::Metadata(version) => partial_metadata(&decode(&raw)?, version),
        };
        Ok(self.respond(Body::from(body.to_string())))
    }

    /// The answer to a list; `items` are the stored objects.
    pub fn list(
        &self,
        resource: &Resource,
        revision: u64,
        continue_token: Option<&str>,
        items: &[Bytes],
    ) -> ApiResult<Response> {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if let Some(token) = continue_token {
            metadata["continue"] = Value::from(token);
        }
        let body = match self.output {
            Output::Object => {
                let body = super::response::list_body(
                    &resource.api_version(),
                    &resource.list_kind(),
                    revision,
                    continue_token,
                    items,
                );
                return Ok(self.respond(Body::from(body)));
            }
            Output::Table(version) => {
                let now = Timestamp::now();
                let rows = items
                    .iter()
                    .map(|raw| Ok(self.row(resource, &decode(raw)?, version, now)))
                    .collect::<ApiResult<Vec<Value>>>()?;
                table(resource, version, true, metadata, rows)
            }
            Output::Metadata(version) => {
                let items = items
                    .iter()
                    .map(|raw| Ok(partial_metadata(&decode(raw)?, version)))
                    .collect::<ApiResult<Vec<Value>>>()?;
                json!({"kind": "PartialObjectMetadataList", "apiVersion": version.api_version(),
                       "metadata": metadata, "items": items})
            }
        };
        Ok(self.respond(Body::from(body.to_string())))
    }

    /// Rewrites the events of one watch stream.
    pub fn watch(&self, resource: &'static Resource) -> WatchRender {
        WatchRender {
            render: *self,
            resource,
            columns_sent: false,
        }
    }

    fn row(&self, resource: &Resource, obj: &Value, version: MetaVersion, now: Timestamp) -> Value {
        let printer = printers::for_resource(resource);
        let mut row = Map::new();
        let cells =
            crate::crd::columns::cells(resource, obj).unwrap_or_else(|| (printer.row)(obj, now));
        row.insert("cells".into(), Value::Array(cells));
        if resource.group.is_empty() && resource.kind == "Pod" {
            if let Some(conditions) = printers::pod_row_conditions(obj) {
                row.insert("conditions".into(), conditions);
            }
        }
        match self.include {
            IncludeObject::None => {}
            IncludeObject::Metadata => {
                row.insert("object".into(), partial_metadata(obj, version));
            }
            IncludeObject::Object => {
                row.insert("object".into(), obj.clone());
            }
        }
        Value::Object(row)
    }

    fn respond(&self, body: Body) -> Response {
        Response::builder()
            .status(200)
            .header(
                http::header::CONTENT_TYPE,
                accept::content_type(self.output, self.verb),
            )
            .body(body)
            .unwrap_or_else(|_| Response::new(Body::from("response build failed")))
    }
}

fn table(
    resource: &Resource,
    version: MetaVersion,
    with_columns: bool,
    metadata: Value,
    rows: Vec<Value>,
) -> Value {
    let columns: Vec<Value> = if with_columns {
        if let Some(custom) = crate::crd::columns::definitions(resource) {
            return json!({"kind": "Table", "apiVersion": version.api_version(), "metadata": metadata,
                   "columnDefinitions": custom, "rows": rows});
        }
        printers::for_resource(resource)
            .columns
            .iter()
            .map(printers::Column::definition)
            .collect()
    } else {
        Vec::new()
    };
    json!({"kind": "Table", "apiVersion": version.api_version(), "metadata": metadata,
           "columnDefinitions": columns, "rows": rows})
}

/// An object reduced to its metadata, as garbage collectors and metadata informers read it.
fn partial_metadata(obj: &Value, version: MetaVersion) -> Value {
    let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({"kind": "PartialObjectMetadata", "apiVersion": version.api_version(),
           "metadata": metadata})
}

/// Rewrites watch event lines into the negotiated representation. Column definitions travel
/// only in the first Table event, as upstream sends them.
pub struct WatchRender {
    render: Render,
    resource: &'static Resource,
    columns_sent: bool,
}

impl WatchRender {
    /// The event `line` (`{"type":..,"object":..}\n`) in the client's representation. Errors
    /// pass through untouched; so does everything when plain JSON was asked for.
    pub fn line(&mut self, line: Bytes) -> Bytes {
        if self.render.output == Output::Object {
            return line;
        }
        let Ok(mut event) = serde_json::from_slice::<Value>(&line) else {
            return line;
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "ERROR" {
            return line;
        }
        let object = event.get("object").cloned().unwrap_or(Value::Null);
        let transformed = match self.render.output {
            Output::Object => return line,
            Output::Metadata(version) => partial_metadata(&object, version),
            Output::Table(version) => {
                let rv = crate::api::meta::resource_version(&object).to_string();
                let rows = if kind == "BOOKMARK" {
                    Vec::new()
                } else {
                    vec![self
                        .render
                        .row(self.resource, &object, version, Timestamp::now())]
                };
                let with_columns = !self.columns_sent && kind != "BOOKMARK";
                self.columns_sent |= with_columns;
                table(
                    self.resource,
                    version,
                    with_columns,
                    json!({"resourceVersion": rv}),
                    rows,
                )
            }
        };
        event["object"] = transformed;
        let mut out = event.to_string().into_bytes();
        out.push(b'\n');
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;
    use http_body_util::BodyExt;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, accept.parse().unwrap());
        h
    }

    fn configmap(name: &str) -> Bytes {
        Bytes::from(
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                   "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
                                "creationTimestamp": "2026-01-01T00:00:00Z",
                                "labels": {"app": "web"}},
                   "data": {"a": "1"}})
            .to_string(),
        )
    }

    async fn body(response: Response) -> (String, Value) {
        let content_type = response.headers()[http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (content_type, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_kubectl_list_gets_a_table_with_metadata_rows() {
        let r = find("", "v1", "configmaps").unwrap();
        let render = Render::negotiate(&headers(KUBECTL_GET), None, Verb::List).unwrap();
        let response = render
            .list(r, 9, Some("next"), &[configmap("a"), configmap("b")])
            .unwrap();
        let (content_type, table) = body(response).await;
        assert_eq!(content_type, "application/json;as=Table;v=v1;g=meta.k8s.io");
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"]["resourceVersion"], "9");
        assert_eq!(table["metadata"]["continue"], "next");
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        assert_eq!(table["rows"][1]["cells"][0], "b");
        assert_eq!(table["rows"][1]["cells"][1], 1);
        let object = &table["rows"][0]["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["metadata"]["namespace"], "default");
        assert!(object.get("data").is_none());
    }

    #[tokio::test]
    async fn include_object_chooses_what_rows_carry() {
        let r = find("", "v1", "configmaps").unwrap();
        let full = Render::negotiate(
            &headers(KUBECTL_GET),
            Some("includeObject=Object"),
            Verb::Get,
        )
        .unwrap();
        let (_, table) = body(full.object(r, configmap("a")).unwrap()).await;
        assert_eq!(table["rows"][0]["object"]["data"]["a"], "1");
        assert_eq!(table["metadata"]["resourceVersion"], "7");
        let none = Render::negotiate(&headers(KUBECTL_GET), Some("includeObject=None"), Verb::Get)
            .unwrap();
        let (_, table) = body(none.object(r, configmap("a")).unwrap()).await;
        assert!(table["rows"][0].get("object").is_none());
        let bad = Render::negotiate(&headers(KUBECTL_GET), Some("includeObject=All"), Verb::Get);
        assert_eq!(bad.unwrap_err().code, 400);
    }

    #[tokio::test]
    async fn metadata_clients_get_partial_object_metadata() {
        let r = find("", "v1", "configmaps").unwrap();
        let accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        let render = Render::negotiate(&headers(accept), None, Verb::List).unwrap();
        let (content_type, list) = body(render.list(r, 3, None, &[configmap("a")]).unwrap()).await;
        assert!(content_type.contains("as=PartialObjectMetadataList"));
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(list["items"][0]["metadata"]["labels"]["app"], "web");
        assert!(list["items"][0].get("data").is_none());
        let accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        let render = Render::negotiate(&headers(accept), None, Verb::Get).unwrap();
        let (_, one) = body(render.object(r, configmap("a")).unwrap()).await;
        assert_eq!(one["kind"], "PartialObjectMetadata");
        assert_eq!(one["metadata"]["name"], "a");
    }

    #[test]
    fn an_unservable_accept_header_is_406() {
        let err = Render::negotiate(&headers("application/yaml"), None, Verb::Get).unwrap_err();
        assert_eq!(err.code, 406);
    }

    #[test]
    fn watch_tables_carry_columns_only_in_the_first_event() {
        let r = find("", "v1", "configmaps").unwrap();
        let render = Render::negotiate(&headers(KUBECTL_GET), None, Verb::Watch).unwrap();
        let mut watch = render.watch(r);
        let event = |kind: &str, raw: Bytes| {
            let mut line = format!("{{\"type\":\"{kind}\",\"object\":").into_bytes();
            line.extend_from_slice(&raw);
            line.extend_from_slice(b"}\n");
            Bytes::from(line)
        };
        let parse = |b: Bytes| -> Value { serde_json::from_slice(&b).unwrap() };
        let first = parse(watch.line(event("ADDED", configmap("a"))));
        assert_eq!(first["type"], "ADDED");
        assert_eq!(first["object"]["kind"], "Table");
        assert_eq!(
            first["object"]["columnDefinitions"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(first["object"]["rows"][0]["cells"][0], "a");
        let second = parse(watch.line(event("MODIFIED", configmap("a"))));
        assert_eq!(second["object"]["columnDefinitions"], json!([]));
        assert_eq!(second["object"]["rows"][0]["cells"][0], "a");
        let error = event(
            "ERROR",
            Bytes::from_static(br#"{"kind":"Status","code":410}"#),
        );
        assert_eq!(watch.line(error.clone()), error);
    }

    #[test]
    fn plain_watches_pass_lines_through_untouched() {
        let r = find("", "v1", "configmaps").unwrap();
        let render = Render::negotiate(&HeaderMap::new(), None, Verb::Watch).unwrap();
        let line = Bytes::from_static(b"{\"type\":\"ADDED\",\"object\":{}}\n");
        assert_eq!(render.watch(r).line(line.clone()), line);
    }
}
