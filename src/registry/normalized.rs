//! A request body in the shape the registry stores, produced once per write.
//!
//! Putting a body through its kind's typed decoder (which drops unknown fields and rejects wrong
//! shapes) is the most expensive step of a write. The apiserver needs the decoded object three
//! times: to report unknown fields, to compute managedFields, and to store it. Decoding once
//! and passing this value along keeps a create to one typed round trip instead of three.

use serde_json::Value;

use super::kinds;
use crate::api::resources::Resource;
use crate::api::ApiResult;

/// An object checked against the URL's apiVersion and kind, decoded and re-encoded as its typed
/// kind, with the kind's write fix-ups applied: what the registry would make of the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    value: Value,
    /// The resource the client wrote the body to: the stored one, or a view of it served by
    /// conversion. Upstream validates some kinds by the request's version (Events) and records
    /// managedFields in it.
    written_as: &'static Resource,
}

impl Normalized {
    pub fn new(r: &'static Resource, mut body: Value) -> ApiResult<Normalized> {
        kinds::check_type_meta(r, &mut body)?;
        Ok(Normalized::from_decoded(r, kinds::normalize(r, body)?))
    }

    /// Like `new`, and also the paths of the fields the decoder dropped (for fieldValidation),
    /// from the same decode.
    pub fn with_unknown_fields(
        r: &'static Resource,
        mut body: Value,
    ) -> ApiResult<(Normalized, Vec<String>)> {
        kinds::check_type_meta(r, &mut body)?;
        let decoded = kinds::normalize(r, body.clone())?;
        let unknown = kinds::unknown_paths(&body, &decoded);
        Ok((Normalized::from_decoded(r, decoded), unknown))
    }

    fn from_decoded(r: &'static Resource, mut decoded: Value) -> Normalized {
        kinds::prepare_write(r, &mut decoded);
        Normalized {
            value: decoded,
            written_as: r,
        }
    }

    /// The same body, written by the client to `view` of the stored resource, if it was.
    pub fn written_as(self, view: Option<&'static Resource>) -> Normalized {
        Normalized {
            written_as: view.unwrap_or(self.written_as),
            ..self
        }
    }

    pub fn served(&self) -> &'static Resource {
        self.written_as
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// For changes that keep the object normalized: metadata the decoder keeps as it is
    /// (managedFields written by the apiserver).
    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.value
    }

    pub fn into_value(self) -> Value {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::find;
    use serde_json::json;

    #[test]
    fn a_normalized_object_is_a_fixed_point_of_normalizing() {
        let deployments = find("apps", "v1", "deployments").unwrap();
        let body = json!({"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "bogus": 1,
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox"}]}}}});
        let once = Normalized::new(deployments, body).unwrap();
        let twice = Normalized::new(deployments, once.value().clone()).unwrap();
        assert_eq!(once, twice);
        assert!(once.value().pointer("/spec/bogus").is_none());
    }

    #[test]
    fn unknown_fields_come_from_the_same_decode_as_the_object() {
        let configmaps = find("", "v1", "configmaps").unwrap();
        let body = json!({"metadata": {"name": "c", "extra": true}, "data": {"k": "v"}, "nope": 1});
        let (normalized, unknown) =
            Normalized::with_unknown_fields(configmaps, body.clone()).unwrap();
        assert_eq!(
            unknown,
            vec!["metadata.extra".to_string(), "nope".to_string()]
        );
        assert_eq!(normalized, Normalized::new(configmaps, body).unwrap());
        assert_eq!(normalized.value()["apiVersion"], "v1");
        assert_eq!(normalized.value()["kind"], "ConfigMap");
    }

    /// What decoding once saves per write, in this build: the body decoded three times (field
    /// validation, managedFields, the registry), as before, against once.
    /// `cargo test --lib registry::normalized -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure_decoding_once_against_three_times() {
        let configmap =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench-1-2"}});
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox", "ports": [{"containerPort": 80}]}]}}}});
        let cases = [
            (find("", "v1", "configmaps").unwrap(), configmap),
            (find("apps", "v1", "deployments").unwrap(), deployment),
        ];
        const ROUNDS: u32 = 2000;
        for (r, body) in cases {
            let started = std::time::Instant::now();
            for _ in 0..ROUNDS {
                for _ in 0..3 {
                    let mut copy = body.clone();
                    kinds::check_type_meta(r, &mut copy).unwrap();
                    let decoded = kinds::normalize(r, copy).unwrap();
                    std::hint::black_box(decoded);
                }
            }
            let three = started.elapsed() / ROUNDS;
            let started = std::time::Instant::now();
            for _ in 0..ROUNDS {
                std::hint::black_box(Normalized::with_unknown_fields(r, body.clone()).unwrap());
            }
            let once = started.elapsed() / ROUNDS;
            println!(
                "{}: decoded three times {three:?}, once {once:?} per write",
                r.kind
            );
            assert!(once < three);
        }
    }

    #[test]
    fn secret_string_data_is_reported_known_and_then_folded_into_data() {
        let secrets = find("", "v1", "secrets").unwrap();
        let body = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}});
        let (normalized, unknown) = Normalized::with_unknown_fields(secrets, body).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(normalized.value()["data"]["k"], "dg==");
        assert!(normalized.value().get("stringData").is_none());
    }
}
