//! The Kubernetes websocket channel protocol (`v4.channel.k8s.io`, `v5.channel.k8s.io`):
//! every binary message starts with a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error
//! (a metav1.Status when the command ends), 4 resize; v5 adds 255, "close this channel", which
//! is how a client says its stdin ended.

use serde_json::{json, Value};

use crate::runtime::session::TerminalSize;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V4,
    V5,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V5 => "v5.channel.k8s.io",
        }
    }

    /// Picks the best protocol the client offers in `Sec-WebSocket-Protocol` (a comma
    /// separated list, possibly over several headers).
    pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<Protocol> {
        let offered: Vec<&str> = offered
            .into_iter()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .collect();
        [Protocol::V5, Protocol::V4]
            .into_iter()
            .find(|p| offered.contains(&p.name()))
    }
}

/// A message for the client on `channel`.
pub fn frame(channel: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(channel);
    out.extend_from_slice(data);
    out
}

/// What a client message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Stdin(Vec<u8>),
    Resize(TerminalSize),
    /// v5: the client will send nothing more on this channel.
    Close(u8),
    /// Empty messages, unknown channels and unreadable resizes: nothing to do.
    Ignored,
}

pub fn parse(protocol: Protocol, message: &[u8]) -> Incoming {
    let Some((&channel, data)) = message.split_first() else {
        return Incoming::Ignored;
    };
    match channel {
        STDIN => Incoming::Stdin(data.to_vec()),
        RESIZE => serde_json::from_slice(data)
            .map(Incoming::Resize)
            .unwrap_or(Incoming::Ignored),
        CLOSE if protocol == Protocol::V5 => match data.first() {
            Some(&c) => Incoming::Close(c),
            None => Incoming::Ignored,
        },
        _ => Incoming::Ignored,
    }
}

/// The metav1.Status sent on the error channel when the command has ended: Success, or
/// NonZeroExitCode with the code as an `ExitCode` cause (which kubectl turns into its own
/// exit code).
pub fn exit_status(exit_code: i32, command: &[String]) -> Value {
    if exit_code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {exit_code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]},
    })
}

/// A Failure for an error that is not the command's own exit code.
pub fn error_status(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5_is_preferred_over_v4_whatever_the_order_offered() {
        assert_eq!(
            Protocol::negotiate(["v4.channel.k8s.io, v5.channel.k8s.io"]),
            Some(Protocol::V5)
        );
        assert_eq!(
            Protocol::negotiate(["base64.channel.k8s.io", "v4.channel.k8s.io"]),
            Some(Protocol::V4)
        );
        assert_eq!(Protocol::negotiate(["channel.k8s.io"]), None);
    }

    #[test]
    fn frames_start_with_their_channel_byte() {
        assert_eq!(frame(STDOUT, b"hi\n"), b"\x01hi\n");
        assert_eq!(frame(ERROR, b""), vec![3]);
    }

    #[test]
    fn client_messages_decode_to_stdin_resize_and_close() {
        assert_eq!(
            parse(Protocol::V5, b"\x00data"),
            Incoming::Stdin(b"data".to_vec())
        );
        assert_eq!(
            parse(Protocol::V5, br#"\x04{"Width":80,"Height":24}"#.as_slice()),
            Incoming::Ignored,
            "a literal backslash is not the resize channel"
        );
        assert_eq!(
            parse(Protocol::V4, b"\x04{\"Width\":80,\"Height\":24}"),
            Incoming::Resize(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(parse(Protocol::V5, &[CLOSE, STDIN]), Incoming::Close(STDIN));
        assert_eq!(parse(Protocol::V4, &[CLOSE, STDIN]), Incoming::Ignored);
        assert_eq!(parse(Protocol::V5, b""), Incoming::Ignored);
        assert_eq!(parse(Protocol::V5, b"\x04not json"), Incoming::Ignored);
    }

    #[test]
    fn a_non_zero_exit_is_reported_with_an_exit_code_cause() {
        let status = exit_status(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(0, &[])["status"], "Success");
    }
}
