//! The agent ↔ shim protocol: one JSON request per line, one JSON response per line.

use serde::{Deserialize, Serialize};

use super::types::{ContainerSpec, PodState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    CreateContainer {
        spec: Box<ContainerSpec>,
    },
    StartContainer {
        name: String,
    },
    Kill {
        name: String,
        signal: i32,
    },
    RemoveContainer {
        name: String,
    },
    State,
    /// Runs `args` in the running container `name`; killed after `timeout_ms`. The answer
    /// comes when the command has exited; send nothing else on the connection meanwhile.
    ExecSync {
        name: String,
        args: Vec<String>,
        timeout_ms: u64,
    },
    /// Starts an interactive `args` in the running container `name`. The answer
    /// (`ExecStarted`) carries the process's stdio as file descriptors (SCM_RIGHTS): with `tty`
    /// one pty master, else stdin (only with `stdin`), stdout and stderr pipes. A second answer,
    /// `ExecExited`, follows when it exits; closing the connection before that kills it.
    Exec {
        name: String,
        args: Vec<String>,
        tty: bool,
        stdin: bool,
        /// The terminal's size, set as soon as the pty exists.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<crate::runtime::session::TerminalSize>,
    },
    /// Asks for a writer of the running container's stdin (`stdin: true` containers). The
    /// answer (`Attached`) carries it as a file descriptor, or none when the container has no
    /// stdin to give (any more: a `stdin_once` stdin goes to the first attach only).
    Attach {
        name: String,
    },
    /// Kills every container, removes them and their mounts, then the shim exits.
    Shutdown,
    /// Subscribes this connection to state changes: the shim answers `Ok`, then sends one
    /// `Changed` line whenever a container exits, so the agent need not poll for exits. Send
    /// nothing else on the connection afterwards.
    Watch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Created {
        id: String,
    },
    State {
        state: PodState,
    },
    Exec {
        exec: ExecResult,
    },
    /// An interactive exec runs; `fds` file descriptors came with this line.
    ExecStarted {
        fds: usize,
    },
    ExecExited {
        exit_code: i32,
    },
    /// Answer to `Attach`: `fds` (0 or 1) file descriptors came with this line.
    Attached {
        fds: usize,
        /// The descriptor is the terminal of a `tty` + `stdinOnce` container, given to this
        /// attach alone: when the attach's input ends, it must write the terminal's
        /// end-of-file character, since a terminal cannot be closed like a pipe.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        once: bool,
    },
    Error {
        message: String,
    },
    /// On a `Watch` connection: some container's state changed; read the pod state again.
    Changed,
}

/// Outcome of an ExecSync. Output is capped per stream and decoded lossily as UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The command ran past its timeout and was killed.
    pub timed_out: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_single_json_lines() {
        let requests = [
            Request::StartContainer { name: "app".into() },
            Request::Kill {
                name: "app".into(),
                signal: 15,
            },
            Request::State,
            Request::Shutdown,
            Request::Watch,
        ];
        for request in requests {
            let line = serde_json::to_string(&request).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
        }
        assert_eq!(
            serde_json::to_string(&Request::Kill {
                name: "a".into(),
                signal: 9
            })
            .unwrap(),
            r#"{"op":"kill","name":"a","signal":9}"#
        );
    }

    #[test]
    fn error_responses_carry_their_message() {
        let line = r#"{"result":"error","message":"no such container"}"#;
        assert_eq!(
            serde_json::from_str::<Response>(line).unwrap(),
            Response::Error {
                message: "no such container".into()
            }
        );
    }
}
