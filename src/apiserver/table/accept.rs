//! The `Accept` header: which representation of an object the client wants back.
//!
//! kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io, ..., application/json`; metadata
//! clients (garbage collectors, kube-rs) ask for `as=PartialObjectMetadata[List]`. Clauses are tried
//! in order of their q-values; the first we can serve wins.

/// The group every server-side transformation belongs to.
const META_GROUP: &str = "meta.k8s.io";

/// What a GET answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The object (or list) itself.
    Object,
    /// A `meta.k8s.io` Table of printed columns.
    Table(MetaVersion),
    /// Only the metadata: `PartialObjectMetadata`, or `PartialObjectMetadataList` for a list.
    Metadata(MetaVersion),
}

/// The `meta.k8s.io` version the transformed answer is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaVersion {
    V1,
    V1Beta1,
}

impl MetaVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            MetaVersion::V1 => "meta.k8s.io/v1",
            MetaVersion::V1Beta1 => "meta.k8s.io/v1beta1",
        }
    }

    fn name(self) -> &'static str {
        match self {
            MetaVersion::V1 => "v1",
            MetaVersion::V1Beta1 => "v1beta1",
        }
    }
}

/// Which GET this is: the metadata kinds differ between one object and a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
}

struct Clause<'a> {
    media: &'a str,
    quality: f32,
    params: Vec<(&'a str, &'a str)>,
}

fn parse_clause(text: &str) -> Option<Clause<'_>> {
    let mut parts = text.split(';').map(str::trim);
    let media = parts.next().filter(|m| !m.is_empty())?;
    let mut quality = 1.0;
    let mut params = Vec::new();
    for part in parts {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        if key == "q" {
            quality = value.parse().unwrap_or(0.0);
        } else {
            params.push((key, value));
        }
    }
    Some(Clause {
        media,
        quality,
        params,
    })
}

/// What one clause asks for, or None when we cannot serve it.
fn acceptable(clause: &Clause, verb: Verb) -> Option<Output> {
    if !matches!(clause.media, "application/json" | "application/*" | "*/*") {
        return None;
    }
    let (mut kind, mut group, mut version) = ("", "", "");
    for (key, value) in &clause.params {
        match *key {
            "as" => kind = value,
            "g" => group = value,
            "v" => version = value,
            _ => {}
        }
    }
    if kind.is_empty() {
        return Some(Output::Object);
    }
    if group != META_GROUP {
        return None;
    }
    let version = match version {
        "v1" => MetaVersion::V1,
        "v1beta1" => MetaVersion::V1Beta1,
        _ => return None,
    };
    match (kind, verb) {
        ("Table", _) => Some(Output::Table(version)),
        ("PartialObjectMetadata", Verb::Get | Verb::Watch) => Some(Output::Metadata(version)),
        // A watch streams single objects whichever of the two the client named.
        ("PartialObjectMetadataList", Verb::List | Verb::Watch) => Some(Output::Metadata(version)),
        _ => None,
    }
}

/// The representation to answer a GET with; None when no clause of `accept` can be served (406).
/// A missing or empty header means plain JSON.
pub fn negotiate(accept: &str, verb: Verb) -> Option<Output> {
    // What most clients send, answered without parsing.
    if matches!(accept.trim(), "" | "*/*" | "application/json") {
        return Some(Output::Object);
    }
    let mut clauses: Vec<Clause> = accept.split(',').filter_map(parse_clause).collect();
    // Stable: equal q-values keep the client's order.
    clauses.sort_by(|a, b| b.quality.total_cmp(&a.quality));
    clauses
        .iter()
        .filter(|c| c.quality > 0.0)
        .find_map(|c| acceptable(c, verb))
}

/// The Content-Type of an answer in `output`, parameters included as upstream sends them.
pub fn content_type(output: Output, verb: Verb) -> String {
    match output {
        Output::Object => "application/json".into(),
        Output::Table(v) => format!("application/json;as=Table;v={};g={META_GROUP}", v.name()),
        Output::Metadata(v) => {
            let kind = match verb {
                Verb::List => "PartialObjectMetadataList",
                Verb::Get | Verb::Watch => "PartialObjectMetadata",
            };
            format!("application/json;as={kind};v={};g={META_GROUP}", v.name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL_GET: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn kubectl_get_asks_for_a_v1_table() {
        assert_eq!(
            negotiate(KUBECTL_GET, Verb::List),
            Some(Output::Table(MetaVersion::V1))
        );
    }

    #[test]
    fn only_v1beta1_tables_are_answered_in_v1beta1() {
        let accept = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";
        assert_eq!(
            negotiate(accept, Verb::Get),
            Some(Output::Table(MetaVersion::V1Beta1))
        );
    }

    #[test]
    fn q_values_reorder_the_clauses_and_zero_means_never() {
        let accept = "application/json;q=0.5, application/json;as=Table;v=v1;g=meta.k8s.io;q=0.9";
        assert_eq!(
            negotiate(accept, Verb::Get),
            Some(Output::Table(MetaVersion::V1))
        );
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io;q=0, application/json;q=0.1";
        assert_eq!(negotiate(accept, Verb::Get), Some(Output::Object));
    }

    #[test]
    fn plain_json_wildcards_and_no_header_mean_the_object() {
        for accept in [
            "",
            "application/json",
            "*/*",
            "application/*",
            "text/html, */*",
        ] {
            assert_eq!(
                negotiate(accept, Verb::Get),
                Some(Output::Object),
                "{accept}"
            );
        }
    }

    #[test]
    fn metadata_kinds_must_fit_the_verb() {
        let one = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        let list = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
        let v1 = Some(Output::Metadata(MetaVersion::V1));
        assert_eq!(negotiate(one, Verb::Get), v1);
        assert_eq!(negotiate(list, Verb::List), v1);
        assert_eq!(negotiate(one, Verb::Watch), v1);
        assert_eq!(negotiate(list, Verb::Get), None);
        assert_eq!(negotiate(one, Verb::List), None);
    }

    #[test]
    fn unservable_requests_are_refused() {
        for accept in [
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
            "application/json;as=Table;v=v2;g=meta.k8s.io",
            "application/json;as=Table;v=v1;g=apps",
            "application/json;as=Deployment;v=v1;g=meta.k8s.io",
            "application/json;q=0",
        ] {
            assert_eq!(negotiate(accept, Verb::Get), None, "{accept}");
        }
    }

    #[test]
    fn content_types_name_the_transformation() {
        assert_eq!(
            content_type(Output::Table(MetaVersion::V1), Verb::List),
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        );
        assert_eq!(
            content_type(Output::Metadata(MetaVersion::V1), Verb::List),
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
        );
    }
}
