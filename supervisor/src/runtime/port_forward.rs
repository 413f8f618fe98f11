//! Where a pod's forwarded ports are reached: its network namespace.

use super::error::{Result, RuntimeError};
use super::records::SandboxState;
use super::Runtime;
use crate::streaming::dial::Dialer;

impl Runtime {
    /// The dialer for a ready pod's ports.
    pub fn pod_dialer(&self, sandbox_id: &str) -> Result<Dialer> {
        let s = self.sandbox(sandbox_id)?;
        if s.record.state != SandboxState::Ready {
            return Err(RuntimeError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                s.record.id
            )));
        }
        Ok(Dialer {
            netns: s.record.netns.clone(),
        })
    }
}
