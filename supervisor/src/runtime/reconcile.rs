//! Start-up: load every record, re-attach to the live shims, and settle what a crash left
//! half-done. A pod or container still `Creating` was never acknowledged and is undone; a task
//! that exited while limpetd was away gets its exit code and time from its shim; a task whose
//! shim is gone is killed and cleaned through the shim's `delete` action; a netns, bundle,
//! rootfs, shm or shim that belongs to no record is removed. One record that cannot be
//! settled is logged and left for the next start: it must not keep limpetd down.

use std::collections::HashSet;
use std::time::Instant;

use limpet_protos::cri::v1::{ContainerConfig, PodSandboxConfig};
use prost::Message;

use super::error::{Result, RuntimeError};
use super::records::{
    Container, ContainerRecord, ContainerState, Sandbox, SandboxRecord, SandboxState,
};
use super::shim_pool::Probe;
use super::{remove_dir, sandbox_files, Runtime};
use crate::network::{netns, PodNetwork};
use crate::store::Row;

/// What start-up found and did.
#[derive(Debug, Default)]
pub struct Recovered {
    pub sandboxes: usize,
    pub containers: usize,
    pub exited_while_away: usize,
    pub undone: usize,
    pub orphans_removed: usize,
    /// Records that could not be settled (logged; tried again at the next start).
    pub failed: usize,
    pub elapsed_ms: u128,
}

impl Runtime {
    /// Loads the records into memory (before the events server starts, so that queued exits
    /// find their containers).
    pub fn load(&self) -> Result<()> {
        let sandboxes: Vec<Row<SandboxRecord>> = self.store.sandboxes()?;
        let containers: Vec<Row<ContainerRecord>> = self.store.containers()?;
        let mut t = self.tables();
        for row in sandboxes {
            let config = PodSandboxConfig::decode(row.config.as_slice()).map_err(|e| {
                RuntimeError::Store(crate::store::StoreError::Corrupt(e.to_string()))
            })?;
            t.sandboxes.insert(
                row.record.id.clone(),
                Sandbox {
                    config,
                    record: row.record,
                },
            );
        }
        for row in containers {
            let config = ContainerConfig::decode(row.config.as_slice()).map_err(|e| {
                RuntimeError::Store(crate::store::StoreError::Corrupt(e.to_string()))
            })?;
            t.containers.insert(
                row.record.id.clone(),
                Container {
                    config,
                    record: row.record,
                },
            );
        }
        Ok(())
    }

    /// Re-attaches and reconciles; see the module comment.
    pub async fn reconcile(&self) -> Result<Recovered> {
        let start = Instant::now();
        let mut out = Recovered::default();
        let sandboxes: Vec<Sandbox> = self.tables().sandboxes.values().cloned().collect();
        for sb in sandboxes {
            out.sandboxes += 1;
            let id = sb.record.id.clone();
            let settled = if sb.record.state == SandboxState::Creating {
                tracing::info!(sandbox = %id, "undoing a pod sandbox a crash cut short");
                out.undone += 1;
                self.undo_sandbox(&sb).await
            } else {
                self.reattach_sandbox(sb).await
            };
            if let Err(e) = settled {
                tracing::error!(sandbox = %id, error = %e, "cannot settle a pod sandbox at start-up");
                out.failed += 1;
            }
        }
        let containers: Vec<Container> = self.tables().containers.values().cloned().collect();
        for c in containers {
            out.containers += 1;
            let settled = match c.record.state {
                ContainerState::Creating => {
                    tracing::info!(container = %c.record.id, "undoing a container a crash cut short");
                    out.undone += 1;
                    self.destroy_container(&c).await
                }
                ContainerState::Created | ContainerState::Running => {
                    self.reattach_container(&c).await.map(|exited| {
                        out.exited_while_away += usize::from(exited);
                    })
                }
                ContainerState::Exited | ContainerState::Unknown => Ok(()),
            };
            if let Err(e) = settled {
                tracing::error!(container = %c.record.id, error = %e, "cannot settle a container at start-up");
                out.failed += 1;
            }
        }
        out.orphans_removed = self.remove_orphans().await?;
        out.elapsed_ms = start.elapsed().as_millis();
        Ok(out)
    }

    async fn undo_sandbox(&self, sb: &Sandbox) -> Result<()> {
        for c in self.containers_of(&sb.record.id) {
            self.destroy_container(&c).await?;
        }
        self.destroy_sandbox(sb).await
    }

    async fn reattach_sandbox(&self, mut sb: Sandbox) -> Result<()> {
        if sb.record.state != SandboxState::Ready {
            return Ok(());
        }
        let id = sb.record.id.clone();
        match self.shims.probe(&sb.record.shim_address, &id).await {
            Probe::Running { .. } => return Ok(()),
            // A shim that does not answer in time may still run the pod: leave it be.
            Probe::Unreachable(why) => {
                tracing::warn!(sandbox = %id, why, "the pod's shim does not answer; state left as it was");
                return Ok(());
            }
            Probe::NoShim(why) => {
                // The pause process outlives its shim: kill it and delete it from runc, so
                // that nothing of a pod that is no longer ready runs on.
                tracing::warn!(sandbox = %id, why, "the pod's shim died while limpetd was away");
                let bundle = self.dirs.bundle(&id);
                if let Err(e) = self
                    .shims
                    .delete_action(&sb.record.runtime_handler, &id, &bundle)
                    .await
                {
                    tracing::warn!(sandbox = %id, error = %e, "cleaning up after the pod's shim");
                }
            }
            probe => {
                tracing::info!(sandbox = %id, ?probe, "pod sandbox process ended while limpetd was away");
            }
        }
        sb.record.state = SandboxState::NotReady;
        self.put_sandbox(&sb)?;
        self.events.sandbox_changed(self, &sb);
        Ok(())
    }

    /// Returns whether the container turned out to have exited.
    async fn reattach_container(&self, c: &Container) -> Result<bool> {
        let id = c.record.id.clone();
        let sb = self.tables().sandboxes.get(&c.record.sandbox_id).cloned();
        let Some(sb) = sb else {
            self.destroy_container(c).await?;
            return Ok(false);
        };
        let why = match self.shims.probe(&sb.record.shim_address, &id).await {
            Probe::Running { pid } => {
                self.update_container(&id, |r| {
                    if r.state == ContainerState::Created {
                        // Started, but the crash came before it was recorded.
                        r.state = ContainerState::Running;
                        r.started = crate::store::now();
                    }
                    r.pid = pid;
                })?;
                return Ok(false);
            }
            Probe::Created { .. } => return Ok(false),
            Probe::Unreachable(why) => {
                tracing::warn!(container = %id, why, "the container's shim does not answer; state left as it was");
                return Ok(false);
            }
            Probe::Stopped {
                exit_status,
                exited_at,
            } => {
                if c.record.state == ContainerState::Created && c.record.started == 0 {
                    self.update_container(&id, |r| r.started = exited_at)?;
                }
                self.record_exit(&id, exit_status, exited_at)?;
                return Ok(true);
            }
            Probe::NoShim(why) => format!("its shim died while limpetd was away ({why})"),
            Probe::NoTask => "its shim no longer knows its task".to_string(),
        };
        tracing::warn!(container = %id, why, "the container's task is gone; killing what is left of it");
        // The container's processes outlive a dead shim: the `delete` action kills them and
        // deletes the runc container. Its exit code is unknown; the action reports SIGKILL.
        let bundle = self.dirs.bundle(&id);
        let outcome = self
            .shims
            .delete_action(&sb.record.runtime_handler, &id, &bundle)
            .await;
        if let Err(e) = &outcome {
            tracing::warn!(container = %id, error = %e, "cleaning up after the container's shim");
        }
        let (code, at) = outcome.unwrap_or((255, crate::store::now()));
        let at = if at > 0 { at } else { crate::store::now() };
        let changed = self.update_container(&id, |r| {
            r.state = ContainerState::Exited;
            r.exit_code = code as i32;
            r.finished = at;
            r.reason = "Unknown".into();
            r.message = format!("the container's task was lost: {why}; it was killed");
        })?;
        if let Some(c) = changed {
            self.events.container_changed(self, &c);
        }
        Ok(true)
    }

    /// Removes what belongs to no record. Returns how many things were removed; one that
    /// cannot be removed is logged and tried again at the next start.
    async fn remove_orphans(&self) -> Result<usize> {
        let (pods, containers): (HashSet<String>, HashSet<String>) = {
            let t = self.tables();
            (
                t.sandboxes.keys().cloned().collect(),
                t.containers.keys().cloned().collect(),
            )
        };
        let known = |id: &str| pods.contains(id) || containers.contains(id);
        let mut removed = 0;

        for id in dir_names(&self.dirs.bundles) {
            if !known(&id) {
                tracing::info!(id, "removing an orphaned bundle");
                let bundle = self.dirs.bundle(&id);
                let handler = self.config.runtime.default_runtime.clone();
                let _ = self.shims.delete_action(&handler, &id, &bundle).await;
                let r = super::unmount_rootfs(&bundle).and_then(|()| remove_dir(&bundle));
                removed += counted(&id, "bundle", r);
            }
        }
        for rec in self.store.rootfs_all()? {
            if !known(&rec.key) {
                tracing::info!(id = rec.key, "removing an orphaned rootfs");
                let r = self.images.snapshots.remove_rootfs(&rec.key);
                removed += counted(&rec.key, "rootfs", r.map_err(Into::into));
            }
        }
        for id in dir_names(&self.dirs.netns) {
            if !pods.contains(&id) {
                tracing::info!(id, "removing an orphaned network namespace");
                let path = self.dirs.netns.join(&id);
                if let Ok(net) = crate::network::load_network(&self.config.cni.conf_dir) {
                    let pod = PodNetwork {
                        id: id.clone(),
                        netns: path.clone(),
                        ..Default::default()
                    };
                    let cni = self.cni.clone();
                    let _ = super::blocking(move || cni.del(&net, &pod, None)).await;
                }
                let _ = netns::remove(&path);
                removed += 1;
            }
        }
        for id in dir_names(&self.dirs.shm) {
            if !pods.contains(&id) {
                let _ = sandbox_files::unmount_shm(&self.dirs.shm.join(&id));
                removed += counted(&id, "shm", remove_dir(&self.dirs.shm.join(&id)));
            }
        }
        for id in dir_names(&self.dirs.sandboxes) {
            if !pods.contains(&id) {
                let r = remove_dir(&self.dirs.sandboxes.join(&id));
                removed += counted(&id, "pod files", r);
            }
        }
        removed += self.remove_stale_execs().await;
        removed += self.shims.kill_unknown_shims(&known);
        Ok(removed)
    }
}

/// 1 if an orphan is gone; otherwise 0, and the reason is logged.
fn counted(id: &str, what: &str, r: Result<()>) -> usize {
    match r {
        Ok(()) => 1,
        Err(e) => {
            tracing::warn!(id, what, error = %e, "cannot remove an orphan");
            0
        }
    }
}

pub(super) fn dir_names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}
