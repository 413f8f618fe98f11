//! What the error stream says about how a remote command ended: a Kubernetes Status object
//! from protocol v4 on, plain error text before.

use serde::Deserialize;

use super::{ClientError, Exit};

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    causes: Vec<Cause>,
}

#[derive(Deserialize)]
struct Cause {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

/// Everything read from the error stream, decoded; nothing at all means success.
pub(crate) fn decode(message: &[u8], status_json: bool) -> Result<Exit, ClientError> {
    if message.is_empty() {
        return Ok(Exit::Code(0));
    }
    if !status_json {
        return Ok(Exit::Error(
            String::from_utf8_lossy(message).trim_end().to_string(),
        ));
    }
    let status: Status = serde_json::from_slice(message).map_err(|e| {
        ClientError::Protocol(format!(
            "error stream: {e} in {:?}",
            String::from_utf8_lossy(message)
        ))
    })?;
    match status.status.as_str() {
        "Success" => Ok(Exit::Code(0)),
        "Failure" if status.reason == "NonZeroExitCode" => {
            let details = status.details.ok_or_else(|| {
                ClientError::Protocol("error stream: NonZeroExitCode without details".into())
            })?;
            let cause = details
                .causes
                .iter()
                .find(|c| c.reason == "ExitCode")
                .ok_or_else(|| {
                    ClientError::Protocol(
                        "error stream: NonZeroExitCode without an ExitCode cause".into(),
                    )
                })?;
            cause
                .message
                .trim()
                .parse::<i32>()
                .map(Exit::Code)
                .map_err(|_| {
                    ClientError::Protocol(format!(
                        "error stream: exit code {:?} is not a number",
                        cause.message
                    ))
                })
        }
        "Failure" if status.message.is_empty() => Ok(Exit::Error(if status.reason.is_empty() {
            "remote command failed".to_string()
        } else {
            status.reason
        })),
        "Failure" => Ok(Exit::Error(status.message)),
        other => Err(ClientError::Protocol(format!(
            "error stream: unknown status {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_status_objects() {
        assert_eq!(
            decode(br#"{"metadata":{},"status":"Success"}"#, true).unwrap(),
            Exit::Code(0)
        );
        let exit3 = br#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
        assert_eq!(decode(exit3, true).unwrap(), Exit::Code(3));
        let internal = br#"{"status":"Failure","message":"Internal error occurred: no such container","reason":"InternalError","code":500}"#;
        assert_eq!(
            decode(internal, true).unwrap(),
            Exit::Error("Internal error occurred: no such container".into())
        );
        assert_eq!(
            decode(br#"{"status":"Failure","reason":"Timeout"}"#, true).unwrap(),
            Exit::Error("Timeout".into())
        );
        assert_eq!(decode(b"", true).unwrap(), Exit::Code(0));
    }

    #[test]
    fn malformed_status_objects_are_protocol_errors() {
        for bad in [
            &br#"not json"#[..],
            br#"{"status":"Weird"}"#,
            br#"{"status":"Failure","reason":"NonZeroExitCode"}"#,
            br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"Other","message":"1"}]}}"#,
            br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"x"}]}}"#,
        ] {
            assert!(
                matches!(decode(bad, true), Err(ClientError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn pre_v4_error_text() {
        assert_eq!(decode(b"", false).unwrap(), Exit::Code(0));
        assert_eq!(
            decode(b"command terminated with non-zero exit code: 2\n", false).unwrap(),
            Exit::Error("command terminated with non-zero exit code: 2".into())
        );
    }
}
