//! The `delete` action: containerd runs it when a shim died, to clean up what it left
//! behind: the runc container (killed and deleted) and the rootfs mount. It reports the
//! init as killed (exit 137), as the Go shim does.

use std::time::SystemTime;

use limpet_protos::api::DeleteResponse;
use limpet_protos::protobuf::Message;

use crate::args::Args;
use crate::error::{validate_id, Result};
use crate::events::timestamp;
use crate::options::RuncOptions;
use crate::runc::{read_pid_file, Runc};

pub fn delete(args: &Args) -> Result<Vec<u8>> {
    validate_id("container id", &args.id)?;
    let bundle = crate::bootstrap::bundle_dir(args)?;
    let opts = RuncOptions::load(&bundle)?;
    let runc = Runc::new(&opts, &args.namespace, &bundle);
    if let Err(e) = runc.delete(&args.id, true) {
        log::warn!("runc delete {}: {e}", args.id);
    }
    crate::mount::unmount_all(&bundle.join("rootfs"))?;
    let pid = read_pid_file(&bundle.join("init.pid")).unwrap_or(0);
    let resp = DeleteResponse {
        pid: pid as u32,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(timestamp(SystemTime::now())).into(),
        ..Default::default()
    };
    Ok(resp.write_to_bytes().unwrap_or_default())
}
