//! The host directories behind a pod's PersistentVolumeClaims: each bound claim's volume,
//! when it is a `hostPath` or `local` volume (what this node can mount).

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::Api;

/// Claim name → directory, for the pod's claims that are bound; unbound ones are left out,
/// so the volume setup reports them and the pod waits.
pub async fn bound_claim_dirs(
    client: &kube::Client,
    pod: &Pod,
) -> Result<HashMap<String, PathBuf>, kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut dirs = HashMap::new();
    let names = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone());
    for name in names {
        let Some(claim) = claims.get_opt(&name).await? else {
            continue;
        };
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let Some(volume) = claim.spec.and_then(|s| s.volume_name).filter(|_| bound) else {
            continue;
        };
        let Some(pv) = volumes.get_opt(&volume).await? else {
            continue;
        };
        if let Some(dir) = volume_dir(&pv) {
            dirs.insert(name, dir);
        }
    }
    Ok(dirs)
}

/// Where a volume's data is on this node, for the kinds the agent can mount.
pub fn volume_dir(pv: &PersistentVolume) -> Option<PathBuf> {
    let spec = pv.spec.as_ref()?;
    spec.host_path
        .as_ref()
        .map(|h| PathBuf::from(&h.path))
        .or_else(|| spec.local.as_ref().map(|l| PathBuf::from(&l.path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_path_and_local_volumes_name_their_directory() {
        let host: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a"}, "spec": {"hostPath": {"path": "/srv/a"}}
        }))
        .unwrap();
        let local: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"}, "spec": {"local": {"path": "/srv/b"}}
        }))
        .unwrap();
        let nfs: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"}, "spec": {"nfs": {"server": "x", "path": "/c"}}
        }))
        .unwrap();
        assert_eq!(volume_dir(&host), Some(PathBuf::from("/srv/a")));
        assert_eq!(volume_dir(&local), Some(PathBuf::from("/srv/b")));
        assert_eq!(volume_dir(&nfs), None);
    }
}
