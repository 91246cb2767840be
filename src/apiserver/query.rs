//! Query parameters of API requests, validated once.

use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::api::{ApiError, ApiResult};

#[derive(Debug, Default)]
pub struct Query {
    pub label_selector: Option<LabelSelector>,
    pub field_selector: Option<FieldSelector>,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub timeout_seconds: Option<u64>,
    pub dry_run: bool,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub field_manager: Option<String>,
    /// Set at all (even `false`) only on an apply patch, as upstream's `*bool` option.
    pub force: Option<bool>,
    pub field_validation: FieldValidation,
}

/// What to do with fields the kind does not have.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Fail with 400.
    Strict,
    /// Drop them and say so in `Warning` headers (upstream's default).
    #[default]
    Warn,
    /// Drop them silently.
    Ignore,
}

fn parse_bool(name: &str, value: &str) -> ApiResult<bool> {
    match value {
        "true" | "1" | "True" => Ok(true),
        "false" | "0" | "False" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid value for {name}: {value:?} (want true or false)"
        ))),
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> ApiResult<T> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid value for {name}: {value:?} (want a number)"
        ))
    })
}

impl Query {
    pub fn parse(raw: Option<&str>) -> ApiResult<Query> {
        let mut q = Query::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "labelSelector" if !value.is_empty() => {
                    let sel = LabelSelector::parse(&value).map_err(|e| {
                        ApiError::bad_request(format!("unable to parse requirement: {e}"))
                    })?;
                    q.label_selector = Some(sel);
                }
                "fieldSelector" if !value.is_empty() => {
                    let sel = FieldSelector::parse(&value).map_err(|e| {
                        ApiError::bad_request(format!("invalid field selector: {e}"))
                    })?;
                    q.field_selector = Some(sel);
                }
                "limit" => q.limit = parse_number::<i64>("limit", &value)?.max(0) as usize,
                "continue" if !value.is_empty() => q.continue_token = Some(value.into_owned()),
                "resourceVersion" if !value.is_empty() => {
                    q.resource_version = Some(value.into_owned())
                }
                "resourceVersionMatch" if !value.is_empty() => {
                    if !matches!(value.as_ref(), "NotOlderThan" | "Exact") {
                        return Err(ApiError::bad_request(format!("invalid resourceVersionMatch {value:?}: supported values are \"NotOlderThan\" and \"Exact\"")));
                    }
                    q.resource_version_match = Some(value.into_owned());
                }
                "watch" => q.watch = parse_bool("watch", &value)?,
                "allowWatchBookmarks" => {
                    q.allow_watch_bookmarks = parse_bool("allowWatchBookmarks", &value)?
                }
                "sendInitialEvents" => {
                    q.send_initial_events = Some(parse_bool("sendInitialEvents", &value)?)
                }
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(parse_number("timeoutSeconds", &value)?)
                }
                "dryRun" => match value.as_ref() {
                    "All" => q.dry_run = true,
                    "" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unsupported dryRun value {other:?}: only \"All\" is supported"
                        )))
                    }
                },
                "propagationPolicy" if !value.is_empty() => {
                    q.propagation_policy = Some(value.into_owned())
                }
                "gracePeriodSeconds" => {
                    q.grace_period_seconds = Some(parse_number("gracePeriodSeconds", &value)?)
                }
                "orphanDependents" if parse_bool("orphanDependents", &value)? => {
                    q.propagation_policy = Some("Orphan".into())
                }
                "fieldManager" if !value.is_empty() => q.field_manager = Some(value.into_owned()),
                "force" => q.force = Some(parse_bool("force", &value)?),
                "fieldValidation" => {
                    q.field_validation = match value.as_ref() {
                        "Strict" => FieldValidation::Strict,
                        "Warn" | "" => FieldValidation::Warn,
                        "Ignore" => FieldValidation::Ignore,
                        other => return Err(ApiError::bad_request(format!("fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"))),
                    }
                }
                _ => {}
            }
        }
        if let Some(rv) = &q.resource_version {
            if rv.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version {rv:?}"
                )));
            }
        }
        Ok(q)
    }

    /// The resourceVersion as a revision; "0" and "" both mean "any", returned as None.
    pub fn revision(&self) -> Option<u64> {
        self.resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_watch_query_parses() {
        let q = Query::parse(Some(
            "allowWatchBookmarks=true&resourceVersion=12&timeoutSeconds=300&watch=true",
        ))
        .unwrap();
        assert!(q.watch && q.allow_watch_bookmarks);
        assert_eq!(q.revision(), Some(12));
        assert_eq!(q.timeout_seconds, Some(300));
    }

    #[test]
    fn bad_values_are_400s() {
        for raw in [
            "limit=abc",
            "watch=maybe",
            "dryRun=Some",
            "resourceVersion=x",
            "resourceVersionMatch=Never",
        ] {
            assert_eq!(Query::parse(Some(raw)).unwrap_err().code, 400, "{raw}");
        }
    }

    #[test]
    fn resource_version_zero_means_any() {
        assert_eq!(
            Query::parse(Some("resourceVersion=0")).unwrap().revision(),
            None
        );
    }
}
