//! CBOR answers (`Accept: application/cbor`), as kube-apiserver serves them to clients that
//! prefer CBOR: objects, lists, Tables, Status errors in one self-described CBOR data item, and
//! watches as a CBOR sequence (`application/cbor-seq`, one item per event).
//!
//! The handlers keep writing JSON: this layer asks them for JSON (the client's CBOR clauses with
//! the media type swapped, so `as=Table` and friends still apply) and transcodes what they answer.
//! Every verb and subresource thereby speaks CBOR without knowing it. Request bodies in CBOR are
//! read where every other body format is (`api::body`).

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::api::cbor;

const JSON: &str = "application/json";

/// A request whose answer goes back in CBOR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CborAnswer {
    watch: bool,
}

/// `Some` when the client's most preferred servable media type is CBOR; `request` then asks the
/// handlers for the same representation in JSON.
pub(super) fn negotiate(request: &mut Request) -> Option<CborAnswer> {
    let accept = request.headers().get(ACCEPT)?.to_str().ok()?;
    // Both CBOR media types name it: most requests ask for JSON and end here.
    if !accept
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"cbor"))
    {
        return None;
    }
    let watch = is_watch(request.uri().query());
    let json_accept = json_accept_for_cbor(accept, watch)?;
    let value = HeaderValue::from_str(&json_accept).ok()?;
    request.headers_mut().insert(ACCEPT, value);
    Some(CborAnswer { watch })
}

fn is_watch(query: Option<&str>) -> bool {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
}

struct Clause<'a> {
    media: String,
    params: Vec<&'a str>,
    quality: f32,
}

/// The `Accept` to hand the JSON handlers when CBOR wins the negotiation of `accept`, else
/// `None`. Clauses are tried by q-value (ties in the client's order); JSON and wildcards win
/// for JSON, as upstream picks JSON for `*/*`. A watch also takes `application/cbor-seq`.
fn json_accept_for_cbor(accept: &str, watch: bool) -> Option<String> {
    let mut clauses: Vec<Clause> = accept
        .split(',')
        .filter_map(|text| {
            let mut parts = text.split(';').map(str::trim);
            let media = parts.next().filter(|m| !m.is_empty())?.to_ascii_lowercase();
            let mut quality = 1.0;
            let mut params = Vec::new();
            for part in parts {
                match part.split_once('=') {
                    Some((key, value)) if key.trim() == "q" => {
                        quality = value.trim().parse().unwrap_or(0.0)
                    }
                    _ => params.push(part),
                }
            }
            Some(Clause {
                media,
                params,
                quality,
            })
        })
        .filter(|c| c.quality > 0.0)
        .collect();
    clauses.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    let is_cbor =
        |c: &Clause| c.media == cbor::MEDIA_TYPE || (watch && c.media == cbor::SEQUENCE_MEDIA_TYPE);
    let first = clauses
        .iter()
        .find(|c| is_cbor(c) || matches!(c.media.as_str(), JSON | "application/*" | "*/*"))?;
    if !is_cbor(first) {
        return None;
    }
    let rewritten: Vec<String> = clauses
        .iter()
        .filter(|c| is_cbor(c))
        .map(|c| {
            std::iter::once(JSON)
                .chain(c.params.iter().copied())
                .collect::<Vec<_>>()
                .join(";")
        })
        .collect();
    Some(rewritten.join(", "))
}

/// The handlers' answer, in CBOR when the client negotiated it.
pub(super) async fn answer(cbor: Option<CborAnswer>, response: Response) -> Response {
    match cbor {
        Some(cbor) => respond(cbor, response).await,
        None => response,
    }
}

/// The handlers' JSON answer in CBOR. Anything that is not JSON (logs, upgraded streams) passes
/// through untouched.
async fn respond(answer: CborAnswer, response: Response) -> Response {
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(params) = content_type.strip_prefix(JSON) else {
        return response;
    };
    if !(params.is_empty() || params.starts_with(';')) {
        return response;
    }
    let stream = answer.watch && response.status() == http::StatusCode::OK;
    let cbor_type = if stream {
        cbor::SEQUENCE_MEDIA_TYPE.to_string()
    } else {
        format!("{}{params}", cbor::MEDIA_TYPE)
    };
    let (mut parts, body) = response.into_parts();
    let Ok(cbor_type) = HeaderValue::from_str(&cbor_type) else {
        return Response::from_parts(parts, body);
    };
    parts.headers.insert(CONTENT_TYPE, cbor_type);
    parts.headers.remove(CONTENT_LENGTH);
    let body = if stream {
        Body::from_stream(sequence(body))
    } else {
        match body.collect().await {
            Ok(collected) => Body::from(transcode(&collected.to_bytes())),
            Err(e) => {
                tracing::warn!("reading an answer to transcode it to CBOR: {e}");
                Body::empty()
            }
        }
    };
    Response::from_parts(parts, body)
}

/// One JSON document in CBOR; what does not parse (never expected) goes as it came.
fn transcode(json: &[u8]) -> Bytes {
    match serde_json::from_slice::<Value>(json) {
        Ok(value) => Bytes::from(cbor::encode(&value)),
        Err(_) => Bytes::copy_from_slice(json),
    }
}

/// A watch's newline-delimited JSON events as a CBOR sequence, one data item per event,
/// whatever the chunking of the stream it reads.
fn sequence(body: Body) -> impl futures::Stream<Item = Result<Bytes, axum::Error>> {
    let mut pending = BytesMut::new();
    body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        pending.extend_from_slice(&chunk);
        let mut out = Vec::new();
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line = pending.split_to(end + 1);
            let json = &line[..end];
            if !json.iter().all(u8::is_ascii_whitespace) {
                out.extend_from_slice(&transcode(json));
            }
        }
        Ok(Bytes::from(out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cbor_first_wins_and_json_first_keeps_json() {
        assert_eq!(
            json_accept_for_cbor("application/cbor", false).as_deref(),
            Some("application/json")
        );
        assert_eq!(
            json_accept_for_cbor("application/cbor, application/json", false).as_deref(),
            Some("application/json")
        );
        for accept in [
            "application/json, application/cbor",
            "*/*",
            "application/*, application/cbor",
            "application/vnd.kubernetes.protobuf, application/json",
            "",
        ] {
            assert_eq!(json_accept_for_cbor(accept, false), None, "{accept}");
        }
    }

    #[test]
    fn q_values_decide_and_zero_means_never() {
        assert_eq!(
            json_accept_for_cbor("application/json;q=0.9, application/cbor", false).as_deref(),
            Some("application/json")
        );
        assert_eq!(
            json_accept_for_cbor("application/cbor;q=0, application/json", false),
            None
        );
    }

    #[test]
    fn unservable_types_before_cbor_are_skipped() {
        assert_eq!(
            json_accept_for_cbor("text/html, application/cbor", false).as_deref(),
            Some("application/json")
        );
    }

    #[test]
    fn table_parameters_carry_over_to_the_json_handlers() {
        assert_eq!(
            json_accept_for_cbor("application/cbor;as=Table;v=v1;g=meta.k8s.io", false).as_deref(),
            Some("application/json;as=Table;v=v1;g=meta.k8s.io")
        );
    }

    #[test]
    fn cbor_sequences_are_asked_for_only_by_watches() {
        assert_eq!(json_accept_for_cbor("application/cbor-seq", false), None);
        assert_eq!(
            json_accept_for_cbor("application/cbor-seq", true).as_deref(),
            Some("application/json")
        );
    }

    fn json_response(code: u16, content_type: &str, body: &str) -> Response {
        Response::builder()
            .status(code)
            .header(CONTENT_TYPE, content_type)
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    async fn parts(response: Response) -> (u16, String, Bytes) {
        let code = response.status().as_u16();
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (code, content_type, body)
    }

    #[tokio::test]
    async fn objects_and_errors_are_transcoded_with_their_status() {
        let answer = CborAnswer { watch: false };
        let (code, content_type, body) = parts(
            respond(
                answer,
                json_response(201, JSON, r#"{"kind":"ConfigMap","n":1}"#),
            )
            .await,
        )
        .await;
        assert_eq!((code, content_type.as_str()), (201, "application/cbor"));
        assert_eq!(&body[..3], &cbor::SELF_DESCRIBED);
        assert_eq!(
            cbor::decode(&body).unwrap(),
            json!({"kind": "ConfigMap", "n": 1})
        );

        let status = r#"{"kind":"Status","code":404,"reason":"NotFound"}"#;
        let (code, _, body) = parts(respond(answer, json_response(404, JSON, status)).await).await;
        assert_eq!(code, 404);
        assert_eq!(cbor::decode(&body).unwrap()["reason"], "NotFound");
    }

    #[tokio::test]
    async fn tables_keep_their_media_type_parameters() {
        let answer = CborAnswer { watch: false };
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
        let (_, content_type, _) =
            parts(respond(answer, json_response(200, table, r#"{"kind":"Table"}"#)).await).await;
        assert_eq!(content_type, "application/cbor;as=Table;v=v1;g=meta.k8s.io");
    }

    #[tokio::test]
    async fn text_answers_pass_through() {
        let answer = CborAnswer { watch: false };
        let (_, content_type, body) =
            parts(respond(answer, json_response(200, "text/plain", "log line\n")).await).await;
        assert_eq!(
            (content_type.as_str(), &body[..]),
            ("text/plain", &b"log line\n"[..])
        );
    }

    #[tokio::test]
    async fn watch_events_become_one_item_each_whatever_the_chunking() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(
                b"{\"type\":\"ADDED\",\"object\":{\"a\":1}}\n{\"type\":",
            )),
            Ok(Bytes::from_static(b"\"DELETED\",\"object\":{\"a\":2}}\n")),
        ];
        let response = Response::builder()
            .status(200)
            .header(CONTENT_TYPE, JSON)
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        let (_, content_type, body) =
            parts(respond(CborAnswer { watch: true }, response).await).await;
        assert_eq!(content_type, "application/cbor-seq");
        let (first, used) = cbor::decode_next(&body).unwrap().unwrap();
        assert_eq!(first, json!({"type": "ADDED", "object": {"a": 1}}));
        assert_eq!(
            cbor::decode(&body[used..]).unwrap(),
            json!({"type": "DELETED", "object": {"a": 2}})
        );
    }
}
