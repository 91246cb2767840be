//! Warnings an admission plugin gives the client (`Warning: 299 - "..."` response headers), and
//! annotations it adds to the request's audit event. Both are collected per request through
//! task-locals, so plugins need no extra arguments; outside a request they are dropped.

use std::sync::{Arc, Mutex};

tokio::task_local! {
    static WARNINGS: Arc<Mutex<Vec<String>>>;
}

/// Runs a request's handling and returns what it produced with the warnings given meanwhile,
/// each once (a retried write would give the same warning again).
pub async fn collect<F: std::future::Future>(work: F) -> (F::Output, Vec<String>) {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let output = WARNINGS.scope(warnings.clone(), work).await;
    let warnings = warnings.lock().map(|w| w.clone()).unwrap_or_default();
    (output, warnings)
}

/// Adds a warning for the client of the request being handled.
pub fn warn(message: String) {
    let _ = WARNINGS.try_with(|warnings| {
        if let Ok(mut warnings) = warnings.lock() {
            if !warnings.contains(&message) {
                warnings.push(message);
            }
        }
    });
}

/// Appends the warnings as `Warning` headers, as upstream does.
pub fn add_headers(
    mut response: axum::response::Response,
    warnings: &[String],
) -> axum::response::Response {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            response.headers_mut().append(http::header::WARNING, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn warnings_given_inside_a_request_come_back_once_each() {
        let ((), warnings) = collect(async {
            warn("a".into());
            warn("b".into());
            warn("a".into());
        })
        .await;
        assert_eq!(warnings, vec!["a", "b"]);
        warn("outside".into()); // no request: dropped, no panic
    }
}
