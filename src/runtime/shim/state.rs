//! The shim's record of its containers, persisted in the pod's state dir after every change so
//! exit codes and timestamps outlive a shim crash.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{io_err, ShimError};
use crate::runtime::types::{ContainerState, ContainerStatus};

pub const STATE_NAME: &str = "state.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub state: ContainerState,
    pub cgroup_path: String,
    /// The overlay mount point, when the shim mounted the rootfs itself.
    pub overlay_root: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    pub containers: Vec<ContainerRecord>,
}

impl StateFile {
    /// Loads the state dir's record; none yet is an empty pod. Containers recorded as created or
    /// running belonged to a previous shim whose children are gone: they are reported exited.
    pub fn load(dir: &Path) -> Result<Self, ShimError> {
        let path = dir.join(STATE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut state: Self =
            serde_json::from_slice(&bytes).map_err(|source| ShimError::State {
                path: path.clone(),
                source,
            })?;
        for record in &mut state.containers {
            if record.state.status != ContainerStatus::Exited {
                record.state.status = ContainerStatus::Exited;
                record.state.exit_code.get_or_insert(255);
                record.state.pid = None;
            }
        }
        Ok(state)
    }

    /// Writes atomically (temp file + rename) so a crash never leaves half a file.
    pub fn save(&self, dir: &Path) -> Result<(), ShimError> {
        let path = dir.join(STATE_NAME);
        let tmp = dir.join(".state.json.tmp");
        let bytes = serde_json::to_vec(self).map_err(|source| ShimError::State {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(io_err("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: ContainerStatus) -> ContainerRecord {
        ContainerRecord {
            state: ContainerState {
                name: "app".into(),
                id: "0123456789abcdef".into(),
                pid: Some(42),
                status,
                exit_code: None,
                created_at: "2026-01-01T00:00:00Z".into(),
                started_at: None,
                finished_at: None,
                oom_killed: false,
            },
            cgroup_path: "berth/podx/app".into(),
            overlay_root: None,
        }
    }

    #[test]
    fn state_round_trips_and_orphaned_containers_load_as_exited() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile {
            containers: vec![record(ContainerStatus::Running)],
        };
        state.save(dir.path()).unwrap();
        let loaded = StateFile::load(dir.path()).unwrap();
        assert_eq!(loaded.containers[0].state.status, ContainerStatus::Exited);
        assert_eq!(loaded.containers[0].state.exit_code, Some(255));
        assert_eq!(loaded.containers[0].state.pid, None);
    }

    #[test]
    fn a_missing_state_file_is_an_empty_pod() {
        let dir = tempfile::tempdir().unwrap();
        assert!(StateFile::load(dir.path()).unwrap().containers.is_empty());
    }
}
