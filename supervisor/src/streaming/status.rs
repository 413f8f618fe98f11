//! The Kubernetes `Status` object written on the error stream when a command ends
//! (`v4.channel.k8s.io` and later), and the plain message earlier protocols carry.

use serde::Serialize;

use super::io::Outcome;

#[derive(Debug, Serialize, PartialEq)]
struct Status<'a> {
    metadata: Empty,
    status: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Debug, Serialize, PartialEq)]
struct Empty {}

#[derive(Debug, Serialize, PartialEq)]
struct Details {
    causes: Vec<Cause>,
}

#[derive(Debug, Serialize, PartialEq)]
struct Cause {
    reason: &'static str,
    message: String,
}

/// The `Status` JSON of `outcome`.
pub fn json(outcome: &Outcome) -> Vec<u8> {
    let status = match outcome {
        Outcome::Success => Status {
            metadata: Empty {},
            status: "Success",
            message: "",
            reason: "",
            details: None,
            code: None,
        },
        Outcome::ExitCode { code, message } => Status {
            metadata: Empty {},
            status: "Failure",
            message,
            reason: "NonZeroExitCode",
            details: Some(Details {
                causes: vec![Cause {
                    reason: "ExitCode",
                    message: code.to_string(),
                }],
            }),
            code: None,
        },
        Outcome::Failed(message) => Status {
            metadata: Empty {},
            status: "Failure",
            message,
            reason: "InternalError",
            details: None,
            code: Some(500),
        },
    };
    serde_json::to_vec(&status).unwrap_or_default()
}

/// What protocols before v4 write: nothing on success, else the message.
pub fn text(outcome: &Outcome) -> Option<Vec<u8>> {
    match outcome {
        Outcome::Success => None,
        Outcome::ExitCode { message, .. } | Outcome::Failed(message) => {
            Some(message.as_bytes().to_vec())
        }
    }
}

/// The message kubelet writes for an exec that exited non-zero.
pub fn exit_message(cmd: &[String], code: i32) -> String {
    format!(
        "command terminated with non-zero exit code: error executing command {cmd:?}, exit code {code}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_zero_exit_carries_the_code_as_its_cause() {
        let v: serde_json::Value = serde_json::from_slice(&json(&Outcome::ExitCode {
            code: 3,
            message: "m".into(),
        }))
        .unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn success_is_a_bare_status() {
        assert_eq!(
            json(&Outcome::Success),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(text(&Outcome::Success), None);
    }

    #[test]
    fn internal_errors_have_code_500() {
        let v: serde_json::Value =
            serde_json::from_slice(&json(&Outcome::Failed("boom".into()))).unwrap();
        assert_eq!(v["code"], 500);
        assert_eq!(v["message"], "boom");
    }
}
