//! Service account tokens for projected volumes: requested through TokenRequest, bound to the
//! pod (so they die with it), and requested again once 80% of their lifetime has passed, as
//! kubelet's token manager does. The tokens live in the worker's memory and in the pod's
//! volume only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};

/// What upstream defaults `expirationSeconds` of a projection to.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// The key of one projected token: the volume and the file it goes to.
pub fn token_key(volume: &str, path: &str) -> String {
    format!("{volume}/{path}")
}

/// When a token with lifetime `ttl`, issued at `issued`, is to be replaced.
pub fn refresh_at(issued: Instant, ttl: Duration) -> Instant {
    issued + ttl.mul_f64(0.8)
}

struct Issued {
    token: String,
    refresh_at: Instant,
}

/// The pod's current tokens.
#[derive(Default)]
pub struct TokenCache {
    tokens: HashMap<String, Issued>,
}

impl std::fmt::Debug for TokenCache {
    // Never print a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl TokenCache {
    /// Requests every token of the pod's projected volumes that is missing or due. Returns
    /// whether any changed (so the volumes are to be written again).
    pub async fn refresh(&mut self, client: &kube::Client, pod: &Pod) -> Result<bool, kube::Error> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let now = Instant::now();
        let mut changed = false;
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let sources = volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten());
            for projection in sources.filter_map(|s| s.service_account_token.as_ref()) {
                let key = token_key(&volume.name, &projection.path);
                if self.tokens.get(&key).is_some_and(|t| now < t.refresh_at) {
                    continue;
                }
                let seconds = projection
                    .expiration_seconds
                    .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
                let request = TokenRequest {
                    spec: TokenRequestSpec {
                        // Empty: the API server's own audience.
                        audiences: projection
                            .audience
                            .iter()
                            .filter(|a| !a.is_empty())
                            .cloned()
                            .collect(),
                        expiration_seconds: Some(seconds),
                        bound_object_ref: Some(BoundObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("Pod".into()),
                            name: pod.metadata.name.clone(),
                            uid: pod.metadata.uid.clone(),
                        }),
                    },
                    ..Default::default()
                };
                let issued = api
                    .create_token_request(&account, &PostParams::default(), &request)
                    .await?;
                let Some(status) = issued.status else {
                    continue;
                };
                // The server may shorten the lifetime: go by what it granted.
                let granted = jiff::Timestamp::now()
                    .until(status.expiration_timestamp.0)
                    .ok()
                    .and_then(|span| span.total(jiff::Unit::Second).ok())
                    .filter(|s| *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .unwrap_or(Duration::from_secs(seconds.max(0) as u64));
                self.tokens.insert(
                    key,
                    Issued {
                        token: status.token,
                        refresh_at: refresh_at(now, granted),
                    },
                );
                changed = true;
            }
        }
        Ok(changed)
    }

    /// The tokens by [`token_key`].
    pub fn tokens(&self) -> HashMap<String, String> {
        self.tokens
            .iter()
            .map(|(k, t)| (k.clone(), t.token.clone()))
            .collect()
    }

    /// The earliest moment a token is due, to wake the worker then.
    pub fn next_refresh(&self) -> Option<Instant> {
        self.tokens.values().map(|t| t.refresh_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_replaced_after_eighty_percent_of_its_lifetime() {
        let issued = Instant::now();
        let at = refresh_at(issued, Duration::from_secs(3600));
        assert_eq!(at - issued, Duration::from_secs(2880));
    }

    #[test]
    fn tokens_are_keyed_by_volume_and_path() {
        assert_eq!(
            token_key("kube-api-access-x", "token"),
            "kube-api-access-x/token"
        );
    }
}
