//! Raw HTTP requests with curl inside a test's netns, as the server's admin: for what kubectl
//! cannot send (other media types, query parameters it never sets, broken bodies).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::server::BerthServer;

/// The admin client credentials and server address from the server's kubeconfig, written out
/// as PEM files for curl.
struct Credentials {
    server: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn credentials(server: &BerthServer) -> Credentials {
    let text = std::fs::read_to_string(server.kubeconfig_path()).expect("read the kubeconfig");
    let config: Value = serde_yaml_ng::from_str(&text).expect("the kubeconfig is YAML");
    let cluster = &config["clusters"][0]["cluster"];
    let user = &config["users"][0]["user"];
    let write = |field: &Value, name: &str| {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(
                field
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} in the kubeconfig")),
            )
            .expect("kubeconfig data is base64");
        let path = server.data_dir().join(name);
        std::fs::write(&path, pem).expect("write a PEM file");
        path
    };
    Credentials {
        server: cluster["server"].as_str().expect("server URL").to_string(),
        ca: write(&cluster["certificate-authority-data"], "curl-ca.pem"),
        cert: write(&user["client-certificate-data"], "curl-admin.pem"),
        key: write(&user["client-key-data"], "curl-admin-key.pem"),
    }
}

pub struct Reply {
    pub code: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (a `metav1.Status` for an error); Null when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One request: `path` with its query, `headers` as curl's `-H` takes them.
pub fn request(
    server: &BerthServer,
    method: &str,
    path: &str,
    headers: &[&str],
    body: Option<&[u8]>,
) -> Reply {
    let creds = credentials(server);
    let out_file = server.data_dir().join("curl-reply");
    let mut curl = server.command(Path::new("curl"));
    curl.args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
        .arg(&creds.ca)
        .arg("--cert")
        .arg(&creds.cert)
        .arg("--key")
        .arg(&creds.key)
        .args(["-X", method, "-o"])
        .arg(&out_file)
        .args(["-w", "%{http_code} %{content_type}"]);
    for header in headers {
        curl.args(["-H", header]);
    }
    if let Some(body) = body {
        let body_file = server.data_dir().join("curl-body");
        std::fs::write(&body_file, body).expect("write the body");
        curl.arg("--data-binary")
            .arg(format!("@{}", body_file.display()));
    }
    let out = curl
        .arg(format!("{}{path}", creds.server))
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, content_type) = stdout
        .split_once(' ')
        .unwrap_or_else(|| panic!("curl printed no status: {stdout} {out:?}"));
    Reply {
        code: code.parse().expect("an HTTP status"),
        content_type: content_type.to_string(),
        body: std::fs::read(&out_file).unwrap_or_default(),
    }
}
