//! Authentication: who is making this request.
//!
//! Two ways in, as in kube-apiserver: a client certificate signed by the cluster CA (verified by
//! the TLS layer before we ever see it; CN is the user, each O a group), or a bearer token from
//! a static token file. Anything else is the anonymous user; authorization decides what that
//! user may do.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const ANONYMOUS_USER: &str = "system:anonymous";
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    TokenFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The authenticated identity of a request, put into the request's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// A user's extra attributes (upstream's `user.Info.GetExtra()`), kept beside [`UserInfo`] in
/// the request's extensions by an authenticator that knows any; the aggregator passes them on
/// as `X-Remote-Extra-<key>` headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserExtra(pub std::collections::BTreeMap<String, Vec<String>>);

impl UserInfo {
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: ANONYMOUS_USER.to_string(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.to_string()],
        }
    }

    /// A user with exactly these groups, for tests of authorization.
    #[cfg(test)]
    pub fn with_groups(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS_USER
    }

    fn authenticated(name: String, uid: String, mut groups: Vec<String>) -> UserInfo {
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.to_string());
        }
        UserInfo { name, uid, groups }
    }
}

/// Authenticates requests from their client certificate or bearer token.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    /// Verifies service account tokens (JWTs), when the server issues them.
    service_accounts: Option<std::sync::Arc<super::sa_token::TokenSigner>>,
    /// Join tokens of nodes that have no certificate yet.
    bootstrap_tokens: Option<crate::join::token::BootstrapTokens>,
}

impl Authenticator {
    /// Loads the static tokens, if any, from a kube-apiserver token file: one
    /// `token,user,uid[,"group1,group2"]` per line. Blank lines and `#` comments are skipped.
    pub fn new(token_file: Option<&Path>) -> Result<Authenticator, AuthnError> {
        let Some(path) = token_file else {
            return Ok(Authenticator::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| AuthnError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_token_csv(path, &text)
    }

    fn from_token_csv(path: &Path, text: &str) -> Result<Authenticator, AuthnError> {
        let mut tokens = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_error = |reason: String| AuthnError::TokenFile {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            };
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields = split_csv_line(trimmed).map_err(|e| line_error(e.to_string()))?;
            if fields.len() < 3 {
                return Err(line_error(format!(
                    "needs at least 3 columns (token, user name, user uid), found {}",
                    fields.len()
                )));
            }
            let (token, name, uid) = (&fields[0], &fields[1], &fields[2]);
            if token.is_empty() || name.is_empty() {
                return Err(line_error("token and user name must not be empty".into()));
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            let user = UserInfo::authenticated(name.clone(), uid.clone(), groups);
            if tokens.insert(token.clone(), user).is_some() {
                return Err(line_error("duplicate token".into()));
            }
        }
        Ok(Authenticator {
            tokens,
            ..Authenticator::default()
        })
    }

    /// The user named by a client certificate the TLS layer has already verified against the
    /// cluster CA. `None` when the certificate does not parse or has no common name.
    pub fn from_client_cert(der: &[u8]) -> Option<UserInfo> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        if name.is_empty() {
            return None;
        }
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(String::from)
            .collect();
        Some(UserInfo::authenticated(name, String::new(), groups))
    }

    /// The user owning the token in an `Authorization: Bearer <token>` header value. `None` for
    /// another scheme or an unknown token.
    pub fn from_bearer(&self, header_value: &str) -> Option<UserInfo> {
        let token = bearer_token(header_value)?;
        if let Some(user) = self.tokens.get(token) {
            return Some(user.clone());
        }
        if let Some(bootstrap) = &self.bootstrap_tokens {
            if let Some(user) = bootstrap.authenticate(token, jiff::Timestamp::now().as_second()) {
                return Some(user);
            }
        }
        let signer = self.service_accounts.as_ref()?;
        if !super::sa_token::looks_like_jwt(token) {
            return None;
        }
        let now = jiff::Timestamp::now().as_second();
        match signer.authenticate(token, now) {
            Ok(user) => Some(user),
            Err(e) => {
                tracing::debug!("service account token refused: {e}");
                None
            }
        }
    }

    /// Accepts the valid bootstrap (join) tokens stored as Secrets.
    pub fn with_bootstrap_tokens(
        mut self,
        tokens: crate::join::token::BootstrapTokens,
    ) -> Authenticator {
        self.bootstrap_tokens = Some(tokens);
        self
    }

    /// Accepts the service account tokens `signer` issued from now on.
    pub fn with_service_account_tokens(
        mut self,
        signer: std::sync::Arc<super::sa_token::TokenSigner>,
    ) -> Authenticator {
        self.service_accounts = Some(signer);
        self
    }
}

/// The token of a `Bearer` authorization header value; the scheme is case-insensitive.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Splits one CSV record (RFC 4180: fields may be double-quoted, `""` is a quote inside one).
fn split_csv_line(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '"' if field.is_empty() && !was_quoted => {
                in_quotes = true;
                was_quoted = true;
            }
            '"' => return Err("stray quote inside a field"),
            _ if was_quoted => return Err("text after a closing quote"),
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quoted field");
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Pki, ServingNames};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    use std::time::Duration;

    fn authenticator(csv: &str) -> Result<Authenticator, AuthnError> {
        Authenticator::from_token_csv(Path::new("tokens.csv"), csv)
    }

    #[test]
    fn token_file_lines_become_users_with_groups() {
        let authn = authenticator(
            "# comment\n\
             s3cret,jane,42,\"dev,ops\"\n\
             \n\
             other,bot,7\n",
        )
        .unwrap();
        assert_eq!(
            authn.from_bearer("Bearer s3cret"),
            Some(UserInfo {
                name: "jane".into(),
                uid: "42".into(),
                groups: vec!["dev".into(), "ops".into(), AUTHENTICATED_GROUP.into()],
            })
        );
        let bot = authn.from_bearer("bearer   other ").unwrap();
        assert_eq!(bot.name, "bot");
        assert_eq!(bot.groups, [AUTHENTICATED_GROUP]);
    }

    #[test]
    fn unknown_tokens_and_other_schemes_authenticate_nobody() {
        let authn = authenticator("s3cret,jane,42\n").unwrap();
        assert_eq!(authn.from_bearer("Bearer wrong"), None);
        assert_eq!(authn.from_bearer("Basic s3cret"), None);
        assert_eq!(authn.from_bearer("Bearer "), None);
        assert_eq!(authn.from_bearer("s3cret"), None);
    }

    #[test]
    fn malformed_token_file_lines_are_reported_with_their_line_number() {
        let err = authenticator("ok,jane,1\nonly,two\n").unwrap_err();
        assert!(
            matches!(err, AuthnError::TokenFile { line: 2, .. }),
            "{err}"
        );
        let err = authenticator("t,\"unterminated,1\n").unwrap_err();
        assert!(
            matches!(err, AuthnError::TokenFile { line: 1, .. }),
            "{err}"
        );
        let err = authenticator("t,a,1\nt,b,2\n").unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{err}");
    }

    #[test]
    fn a_missing_token_file_is_an_error_naming_the_path() {
        let err = Authenticator::new(Some(Path::new("/nonexistent/berth-tokens.csv"))).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/berth-tokens.csv"),
            "{err}"
        );
    }

    #[test]
    fn csv_quotes_may_contain_commas_and_escaped_quotes() {
        assert_eq!(
            split_csv_line(r#"a,"b,c","say ""hi""",,"#).unwrap(),
            ["a", "b,c", "say \"hi\"", "", ""]
        );
        assert!(split_csv_line(r#"a"b"#).is_err());
        assert!(split_csv_line(r#""a"b"#).is_err());
    }

    #[test]
    fn client_cert_common_name_is_the_user_and_organizations_the_groups() {
        let dir = tempfile::tempdir().unwrap();
        let names = ServingNames {
            hostname: "node".into(),
            ips: vec![],
            cluster_domain: "cluster.local".into(),
            service_cidr: "10.43.0.0/16".into(),
        };
        let pki = Pki::ensure(dir.path(), &names).unwrap();
        let der = CertificateDer::from_pem_slice(pki.admin_cert_pem.as_bytes()).unwrap();
        let user = Authenticator::from_client_cert(&der).unwrap();
        assert_eq!(user.name, "admin");
        assert_eq!(user.groups, ["system:masters", AUTHENTICATED_GROUP]);
        assert!(!user.is_anonymous());

        let (cert, _) = pki
            .issue_client_cert("system:node:pi", &[], Duration::from_secs(60))
            .unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let node = Authenticator::from_client_cert(&der).unwrap();
        assert_eq!(node.name, "system:node:pi");
        assert_eq!(node.groups, [AUTHENTICATED_GROUP]);

        assert_eq!(Authenticator::from_client_cert(b"not a certificate"), None);
    }

    #[test]
    fn anonymous_is_unauthenticated() {
        let anonymous = UserInfo::anonymous();
        assert!(anonymous.is_anonymous());
        assert_eq!(anonymous.groups, [UNAUTHENTICATED_GROUP]);
    }
}
