//! The kubelet's `/logs/` endpoint: the node's `/var/log`, a directory listing or a file, as
//! kubelet serves it (Go's file server). Nothing outside the log directory is reachable: `..`
//! is refused and a symlink that leads out of it is treated as absent.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::response::Response;

use crate::api::{ApiError, ApiResult};

/// The node's log directory.
pub const NODE_LOG_DIR: &str = "/var/log";

/// Bytes read per chunk of a streamed file.
const CHUNK: usize = 64 << 10;

/// What `/logs/<relative>` names below `root`, resolved and checked to stay inside it.
pub fn resolve(root: &Path, relative: &str) -> ApiResult<PathBuf> {
    let not_found = || ApiError::not_found("", "logs", relative);
    let mut path = root.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ApiError::bad_request(
                    "invalid log path: `..` is not allowed",
                ))
            }
        }
    }
    let root = root.canonicalize().map_err(|_| not_found())?;
    let resolved = path.canonicalize().map_err(|_| not_found())?;
    if !resolved.starts_with(&root) {
        return Err(not_found());
    }
    Ok(resolved)
}

/// Serves `/logs/<relative>` from `root`.
pub async fn serve(root: &Path, relative: &str) -> ApiResult<Response> {
    let path = resolve(root, relative)?;
    let metadata = tokio::fs::metadata(&path)
        .await
        .map_err(|_| ApiError::not_found("", "logs", relative))?;
    if metadata.is_dir() {
        let listing = listing(&path).await?;
        return response("text/html; charset=utf-8", Body::from(listing));
    }
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError::forbidden(format!("cannot open {relative}: {e}")))?;
    // Streamed: logs can be large, and a node may have little memory.
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    response("text/plain; charset=utf-8", Body::from_stream(stream))
}

fn response(content_type: &str, body: Body) -> ApiResult<Response> {
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(body)
        .map_err(|e| ApiError::internal(format!("log response: {e}")))
}

/// A directory's entries as Go's file server lists them: sorted, directories with a slash.
async fn listing(dir: &Path) -> ApiResult<String> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| ApiError::forbidden(format!("cannot list {}: {e}", dir.display())))?;
    let mut names = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let mut name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
            name.push('/');
        }
        names.push(name);
    }
    names.sort();
    let mut html = String::from(
        "<!doctype html>\n<meta name=\"viewport\" content=\"width=device-width\">\n<pre>\n",
    );
    for name in names {
        let href: String = form_urlencoded::byte_serialize(name.trim_end_matches('/').as_bytes())
            .collect::<String>()
            .replace('+', "%20");
        let slash = if name.ends_with('/') { "/" } else { "" };
        html.push_str(&format!(
            "<a href=\"{href}{slash}\">{}</a>\n",
            escape_html(&name)
        ));
    }
    html.push_str("</pre>\n");
    Ok(html)
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("apt")).unwrap();
        std::fs::write(root.path().join("syslog"), "line one\nline two\n").unwrap();
        std::fs::write(root.path().join("apt/history.log"), "installed\n").unwrap();
        root
    }

    #[test]
    fn paths_below_the_root_resolve_and_parent_steps_are_refused() {
        let root = log_root();
        let found = resolve(root.path(), "apt/history.log").unwrap();
        assert!(found.ends_with("apt/history.log"));
        assert_eq!(
            resolve(root.path(), "").unwrap(),
            root.path().canonicalize().unwrap()
        );
        let err = resolve(root.path(), "../etc/passwd").err().unwrap();
        assert_eq!(err.code, 400);
        let err = resolve(root.path(), "apt/../../x").err().unwrap();
        assert_eq!(err.code, 400);
        assert_eq!(resolve(root.path(), "absent").err().unwrap().code, 404);
    }

    #[test]
    fn a_symlink_out_of_the_root_is_not_followed() {
        let root = log_root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("leak"))
            .unwrap();
        assert_eq!(resolve(root.path(), "leak").err().unwrap().code, 404);
    }

    #[tokio::test]
    async fn a_directory_is_listed_and_a_file_is_served_whole() {
        let root = log_root();
        let listed = serve(root.path(), "").await.unwrap();
        let body = axum::body::to_bytes(listed.into_body(), 1 << 20)
            .await
            .unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            html.contains("<a href=\"apt/\">apt/</a>\n<a href=\"syslog\">syslog</a>"),
            "{html}"
        );
        let file = serve(root.path(), "syslog").await.unwrap();
        let body = axum::body::to_bytes(file.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&body[..], b"line one\nline two\n");
    }
}
