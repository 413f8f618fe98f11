//! The shim's command line, parsed the way Go's `flag` package does for the Go shim:
//! `-name value`, `-name=value` or `--name value`, flags first, then the action.

use crate::error::{Error, Result};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC address; part of the socket hash.
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    pub info: bool,
    pub action: Action,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No action: serve the task API (the daemonized shim).
    #[default]
    Serve,
    Start,
    Delete,
    /// The sandbox process of a pod (`pause.rs`).
    Pause,
}

pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Args> {
    let mut args = Args::default();
    let mut it = argv.into_iter().peekable();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            args.action = match arg.as_str() {
                "start" => Action::Start,
                "delete" => Action::Delete,
                "pause" => Action::Pause,
                other => return Err(Error::InvalidArgument(format!("unknown action {other:?}"))),
            };
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let bool_value = |inline: Option<String>| -> Result<bool> {
            match inline.as_deref() {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(v) => Err(Error::InvalidArgument(format!(
                    "flag -{name}: bad bool {v:?}"
                ))),
            }
        };
        match name {
            "debug" => args.debug = bool_value(inline)?,
            "v" => args.version = bool_value(inline)?,
            "info" => args.info = bool_value(inline)?,
            "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().ok_or_else(|| {
                        Error::InvalidArgument(format!("flag -{name} needs a value"))
                    })?,
                };
                let slot = match name {
                    "namespace" => &mut args.namespace,
                    "id" => &mut args.id,
                    "address" => &mut args.address,
                    "publish-binary" => &mut args.publish_binary,
                    "bundle" => &mut args.bundle,
                    _ => &mut args.socket,
                };
                *slot = value;
            }
            other => return Err(Error::InvalidArgument(format!("unknown flag -{other}"))),
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn containerd_16_start_command_line() {
        let a = p("-namespace default -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id c1 -debug start").unwrap();
        assert_eq!(a.namespace, "default");
        assert_eq!(a.id, "c1");
        assert_eq!(a.address, "/run/containerd/containerd.sock");
        assert_eq!(a.publish_binary, "/usr/bin/containerd");
        assert!(a.debug);
        assert_eq!(a.action, Action::Start);
    }

    #[test]
    fn equals_form_double_dash_and_delete() {
        let a = p("--namespace=k8s.io -id=x -bundle /b delete").unwrap();
        assert_eq!(
            (a.namespace.as_str(), a.id.as_str(), a.bundle.as_str()),
            ("k8s.io", "x", "/b")
        );
        assert_eq!(a.action, Action::Delete);
    }

    #[test]
    fn serve_is_the_default_and_info_is_a_bool() {
        assert_eq!(p("-namespace n -id i").unwrap().action, Action::Serve);
        assert!(p("-info").unwrap().info);
    }

    #[test]
    fn pause_needs_nothing_else() {
        assert_eq!(p("pause").unwrap().action, Action::Pause);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(p("-nosuch 1").is_err());
        assert!(p("-id").is_err());
        assert!(p("-namespace n frobnicate").is_err());
        assert!(p("-debug=maybe").is_err());
    }
}
