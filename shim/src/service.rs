//! The task API (and limpet's log service) over ttrpc: only conversions between the wire
//! and [`Shim`]'s operations.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use limpet_protos::api::*;
use limpet_protos::log::ReopenLog;
use limpet_protos::ttrpc::{self, TtrpcContext};
use limpet_protos::Task;

use crate::events::timestamp;
use crate::task::{Exited, Shim};

pub struct Service {
    pub shim: Arc<Shim>,
    /// Told when the shim should exit (Shutdown with no task left).
    pub shutdown: Mutex<Sender<()>>,
}

type R<T> = ttrpc::Result<T>;

fn wait_response(e: Exited) -> WaitResponse {
    WaitResponse {
        exit_status: e.status,
        exited_at: e.at.map(timestamp).into(),
        ..Default::default()
    }
}

impl ReopenLog for Service {
    fn reopen_log(&self, container_id: &str) -> R<()> {
        self.shim
            .reopen_log(container_id)
            .inspect_err(|e| log::warn!("reopen log of {container_id}: {e}"))?;
        Ok(())
    }
}

impl Task for Service {
    fn state(&self, _: &TtrpcContext, r: StateRequest) -> R<StateResponse> {
        Ok(self.shim.state(&r.id, &r.exec_id)?)
    }

    fn create(&self, _: &TtrpcContext, r: CreateTaskRequest) -> R<CreateTaskResponse> {
        let pid = self
            .shim
            .create(&r)
            .inspect_err(|e| log::warn!("create {}: {e}", r.id))?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, r: StartRequest) -> R<StartResponse> {
        let pid = self.shim.start(&r.id, &r.exec_id)?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(&self, _: &TtrpcContext, r: DeleteRequest) -> R<DeleteResponse> {
        let e = self.shim.delete(&r.id, &r.exec_id)?;
        Ok(DeleteResponse {
            pid: e.pid,
            exit_status: e.status,
            exited_at: e.at.map(timestamp).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, r: PidsRequest) -> R<PidsResponse> {
        Ok(PidsResponse {
            processes: self.shim.pids(&r.id)?,
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, r: PauseRequest) -> R<Empty> {
        self.shim.pause(&r.id)?;
        Ok(Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, r: ResumeRequest) -> R<Empty> {
        self.shim.resume(&r.id)?;
        Ok(Empty::new())
    }

    fn checkpoint(&self, _: &TtrpcContext, r: CheckpointTaskRequest) -> R<Empty> {
        self.shim.checkpoint(&r.id, &r.path, r.options.as_ref())?;
        Ok(Empty::new())
    }

    fn kill(&self, _: &TtrpcContext, r: KillRequest) -> R<Empty> {
        self.shim.kill(&r.id, &r.exec_id, r.signal, r.all)?;
        Ok(Empty::new())
    }

    fn exec(&self, _: &TtrpcContext, r: ExecProcessRequest) -> R<Empty> {
        self.shim.exec(&r)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, r: ResizePtyRequest) -> R<Empty> {
        self.shim.resize_pty(&r.id, &r.exec_id, r.width, r.height)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, r: CloseIORequest) -> R<Empty> {
        self.shim.close_io(&r.id, &r.exec_id, r.stdin)?;
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, r: UpdateTaskRequest) -> R<Empty> {
        self.shim.update(&r.id, r.resources.as_ref())?;
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, r: WaitRequest) -> R<WaitResponse> {
        Ok(wait_response(self.shim.wait(&r.id, &r.exec_id)?))
    }

    fn stats(&self, _: &TtrpcContext, r: StatsRequest) -> R<StatsResponse> {
        Ok(StatsResponse {
            stats: Some(self.shim.stats(&r.id)?).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, r: ConnectRequest) -> R<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.shim.task_pid(&r.id),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, r: ShutdownRequest) -> R<Empty> {
        // A shim serving a group stays up while any of its tasks remain.
        if !r.now && !self.shim.is_empty() {
            return Ok(Empty::new());
        }
        let _ = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(());
        Ok(Empty::new())
    }
}
