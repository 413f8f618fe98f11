//! `limpet.log.v1.Log`: limpet's own ttrpc service on the shim's socket, next to the task
//! service. `Reopen` closes and reopens the CRI log file of a container's init (CRI
//! ReopenContainerLog, after the kubelet rotated it). The request is the task API's
//! `ConnectRequest` (only its `id` is read), the response `google.protobuf.Empty`.
//!
//! Status codes: NOT_FOUND for an unknown container, FAILED_PRECONDITION when its output is
//! not a `cri-log://` destination.

use std::sync::Arc;
use std::time::Duration;

use protobuf::well_known_types::empty::Empty;
use protobuf::Message;
use ttrpc::proto::{Code, RequestInit, ResponseInit};

use crate::api::ConnectRequest;
use crate::Methods;

/// The service's full name.
pub const LOG_SERVICE: &str = "limpet.log.v1.Log";
/// Its one method.
pub const REOPEN_METHOD: &str = "Reopen";

/// What a server implements.
pub trait ReopenLog {
    /// Reopens the CRI log of container `container_id`'s init process.
    fn reopen_log(&self, container_id: &str) -> ttrpc::Result<()>;
}

/// The method table to register on a `ttrpc::Server`.
pub fn log_service(handler: Arc<dyn ReopenLog + Send + Sync>) -> Methods {
    let mut methods = Methods::new();
    methods.insert(
        format!("/{LOG_SERVICE}/{REOPEN_METHOD}"),
        Box::new(ReopenHandler(handler)) as Box<dyn ttrpc::MethodHandler + Send + Sync>,
    );
    methods
}

/// Asks the server on `client` to reopen container `container_id`'s CRI log. A zero
/// `timeout` waits without limit.
pub fn reopen_log(
    client: &ttrpc::Client,
    container_id: &str,
    timeout: Duration,
) -> ttrpc::Result<()> {
    let request = ConnectRequest {
        id: container_id.to_string(),
        ..Default::default()
    };
    let payload = request
        .write_to_bytes()
        .map_err(|e| ttrpc::Error::Others(format!("encode Reopen request: {e}")))?;
    let timeout_nano = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
    let mut req = ttrpc::Request::init_request(
        LOG_SERVICE.to_string(),
        REOPEN_METHOD.to_string(),
        timeout_nano,
        Vec::new(),
    );
    RequestInit::set_payload(&mut req, payload);
    let res = client.request(req)?;
    Empty::parse_from_bytes(&res.payload)
        .map_err(|e| ttrpc::Error::Others(format!("decode Reopen response: {e}")))?;
    Ok(())
}

struct ReopenHandler(Arc<dyn ReopenLog + Send + Sync>);

impl ttrpc::MethodHandler for ReopenHandler {
    fn handler(&self, ctx: ttrpc::TtrpcContext, req: ttrpc::Request) -> ttrpc::Result<()> {
        let status =
            |code, message: String| ttrpc::Response::init_status(ttrpc::get_status(code, message));
        let res = match ConnectRequest::parse_from_bytes(&req.payload) {
            Err(e) => status(
                Code::INVALID_ARGUMENT,
                format!("decode Reopen request: {e}"),
            ),
            Ok(r) => match self.0.reopen_log(&r.id) {
                Ok(()) => {
                    let mut res = status(Code::OK, String::new());
                    let payload = Empty::new()
                        .write_to_bytes()
                        .map_err(|e| ttrpc::Error::Others(format!("encode Empty: {e}")))?;
                    ResponseInit::set_payload(&mut res, payload);
                    res
                }
                Err(ttrpc::Error::RpcStatus(s)) => ttrpc::Response::init_status(s),
                Err(e) => status(Code::UNKNOWN, e.to_string()),
            },
        };
        ctx.respond(ctx.mh.stream_id, res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Knows container "c1" only, and "plain" whose output is no CRI log.
    struct Fake(Mutex<Vec<String>>);

    impl ReopenLog for Fake {
        fn reopen_log(&self, id: &str) -> ttrpc::Result<()> {
            match id {
                "c1" => {
                    self.0.lock().unwrap().push(id.to_string());
                    Ok(())
                }
                "plain" => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                    Code::FAILED_PRECONDITION,
                    "not a cri-log",
                ))),
                _ => Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                    Code::NOT_FOUND,
                    format!("container {id}: not found"),
                ))),
            }
        }
    }

    fn code(r: ttrpc::Result<()>) -> Code {
        match r {
            Err(ttrpc::Error::RpcStatus(s)) => s.code(),
            Err(e) => panic!("not a status: {e:?}"),
            Ok(()) => Code::OK,
        }
    }

    #[test]
    fn reopen_round_trips_over_a_socket() {
        let dir = std::env::temp_dir().join(format!("limpet-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        let address = format!("unix://{}", sock.display());
        let fake = Arc::new(Fake(Mutex::default()));
        let mut server = ttrpc::Server::new()
            .bind(&address)
            .unwrap()
            .register_service(log_service(fake.clone()));
        server.start().unwrap();

        let client = ttrpc::Client::connect(&address).unwrap();
        let timeout = Duration::from_secs(5);
        assert_eq!(code(reopen_log(&client, "c1", timeout)), Code::OK);
        assert_eq!(
            code(reopen_log(&client, "nosuch", timeout)),
            Code::NOT_FOUND
        );
        assert_eq!(
            code(reopen_log(&client, "plain", Duration::ZERO)),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(*fake.0.lock().unwrap(), vec!["c1".to_string()]);

        drop(client);
        server.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_method_is_registered_under_its_full_name() {
        let methods = log_service(Arc::new(Fake(Mutex::default())));
        assert!(methods.contains_key("/limpet.log.v1.Log/Reopen"));
        assert_eq!(methods.len(), 1);
    }
}
