//! OOM notifications for every container of the shim, from one background thread.
//!
//! cgroup v1 (Legacy and Hybrid hosts): an eventfd registered through `cgroup.event_control`
//! for `memory.oom_control`; each readiness is an OOM. cgroup v2: an inotify watch on
//! `memory.events`; each increase of `oom_kill` is an OOM. All fds sit in one epoll set that
//! the thread waits on; callers add and remove watches directly (epoll_ctl and
//! inotify_add_watch are thread-safe) under the mutex that guards the table of watches.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::cgroups::{Cgroup, CgroupError};

/// epoll tokens of the two fixed fds; eventfds of v1 watches count up from `FIRST_TOKEN`.
const WAKE: u64 = 0;
const INOTIFY: u64 = 1;
const FIRST_TOKEN: u64 = 2;

/// The thread only waits and dispatches; `on_oom` should hand events on rather than block.
const STACK_SIZE: usize = 256 * 1024;

/// Errors of starting the watcher or adding a watch.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::Error,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("watch {} with inotify: {source}", path.display())]
    Inotify { path: PathBuf, source: nix::Error },
    #[error("cgroup of process {pid}: {source}")]
    Cgroup { pid: i32, source: CgroupError },
    #[error("the cgroup has no memory controller")]
    NoMemoryCgroup,
    #[error("start the OOM watcher thread: {0}")]
    Thread(io::Error),
}

/// Watches containers' cgroups for OOM kills and calls `on_oom(id)` for each, from a single
/// background thread shared by all containers. Dropping it stops the thread.
pub struct OomWatcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl OomWatcher {
    /// Starts the thread. `on_oom` runs on it, once per OOM event of a watched container.
    pub fn start(on_oom: Box<dyn Fn(&str) + Send>) -> Result<OomWatcher, OomError> {
        let sys = |what| move |source| OomError::Sys { what, source };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(sys("epoll_create1"))?;
        let wake = new_eventfd()?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(sys("inotify_init1"))?;
        epoll
            .add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))
            .map_err(sys("epoll_ctl"))?;
        epoll
            .add(&inotify, EpollEvent::new(EpollFlags::EPOLLIN, INOTIFY))
            .map_err(sys("epoll_ctl"))?;
        let shared = Arc::new(Shared {
            epoll,
            wake,
            inotify,
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                next_token: FIRST_TOKEN,
                ..State::default()
            }),
        });
        let thread = thread::Builder::new()
            .name("oom-watcher".into())
            .stack_size(STACK_SIZE)
            .spawn({
                let shared = shared.clone();
                move || shared.run(on_oom)
            })
            .map_err(OomError::Thread)?;
        Ok(OomWatcher {
            shared,
            thread: Some(thread),
        })
    }

    /// Watches the memory cgroup of `pid` (a container's init) under `id`, replacing any
    /// earlier watch of `id`.
    #[cfg(test)]
    pub fn watch(&self, id: &str, pid: i32) -> Result<(), OomError> {
        let cgroup = Cgroup::for_pid(pid).map_err(|source| OomError::Cgroup { pid, source })?;
        self.watch_cgroup(id, &cgroup)
    }

    /// Watches `cgroup` under `id`, replacing any earlier watch of `id`.
    pub fn watch_cgroup(&self, id: &str, cgroup: &Cgroup) -> Result<(), OomError> {
        let dir = cgroup.memory_dir().ok_or(OomError::NoMemoryCgroup)?;
        match cgroup {
            Cgroup::V1(_) => self.watch_oom_control(id, dir),
            Cgroup::V2(_) => self.watch_memory_events(id, dir),
        }
    }

    /// Stops watching `id`; false if it was not watched (or its cgroup is already gone).
    pub fn unwatch(&self, id: &str) -> bool {
        self.shared.lock().remove(id, &self.shared).is_some()
    }

    /// Whether `id` is watched: watches end by `unwatch`, and by themselves when the cgroup
    /// is removed (v1) or has no process left (v2).
    #[cfg(test)]
    pub(crate) fn is_watching(&self, id: &str) -> bool {
        self.shared.lock().watches.contains_key(id)
    }

    /// cgroup v1: registers an eventfd for `memory.oom_control` of the memory cgroup `dir`.
    pub(crate) fn watch_oom_control(&self, id: &str, dir: &Path) -> Result<(), OomError> {
        let io = |what, path: PathBuf| move |source| OomError::Io { what, path, source };
        let control = dir.join("memory.oom_control");
        let oom_control = File::open(&control).map_err(io("open", control))?;
        let eventfd = new_eventfd()?;
        let event_control = dir.join("cgroup.event_control");
        let request = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
        fs::write(&event_control, request).map_err(io("write", event_control))?;

        let mut state = self.shared.lock();
        state.remove(id, &self.shared);
        let token = state.next_token;
        state.next_token += 1;
        self.shared
            .epoll
            .add(&eventfd, EpollEvent::new(EpollFlags::EPOLLIN, token))
            .map_err(|source| OomError::Sys {
                what: "epoll_ctl",
                source,
            })?;
        state.by_token.insert(token, id.to_string());
        state.watches.insert(
            id.to_string(),
            Watch::EventFd {
                token,
                eventfd,
                oom_control,
            },
        );
        Ok(())
    }

    /// cgroup v2: watches `memory.events` of `dir`, and `cgroup.events` if there is one to
    /// notice when the cgroup has no process left.
    pub(crate) fn watch_memory_events(&self, id: &str, dir: &Path) -> Result<(), OomError> {
        let mut state = self.shared.lock();
        state.remove(id, &self.shared);
        let events = dir.join("memory.events");
        let events_wd = self
            .shared
            .inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .map_err(|source| OomError::Inotify {
                path: events,
                source,
            })?;
        state.add_wd(events_wd, id);
        let populated = dir.join("cgroup.events");
        let populated_wd = match self
            .shared
            .inotify
            .add_watch(&populated, AddWatchFlags::IN_MODIFY)
        {
            Ok(wd) => Some(wd),
            Err(Errno::ENOENT) => None,
            Err(source) => {
                state.remove_wd(events_wd, id, &self.shared);
                return Err(OomError::Inotify {
                    path: populated,
                    source,
                });
            }
        };
        if let Some(wd) = populated_wd {
            state.add_wd(wd, id);
        }
        state.watches.insert(
            id.to_string(),
            Watch::Inotify {
                dir: dir.to_path_buf(),
                events_wd,
                populated_wd,
                last_oom_kill: 0,
            },
        );
        Ok(())
    }
}

impl Drop for OomWatcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.shared.wake.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Shared {
    epoll: Epoll,
    /// Written on drop so that the thread sees `stop`.
    wake: EventFd,
    inotify: Inotify,
    stop: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    watches: HashMap<String, Watch>,
    /// v1 watches by epoll token.
    by_token: HashMap<u64, String>,
    /// v2 watches by inotify watch; one inotify watch serves every id on the same file.
    by_wd: HashMap<WatchDescriptor, Vec<String>>,
    next_token: u64,
}

enum Watch {
    /// cgroup v1: each readiness of `eventfd` is an OOM, or the removal of the cgroup, after
    /// which `oom_control` (kept open for this) reads ENODEV.
    EventFd {
        token: u64,
        eventfd: EventFd,
        oom_control: File,
    },
    /// cgroup v2: `memory.events` changes; an `oom_kill` above `last_oom_kill` is an OOM.
    Inotify {
        dir: PathBuf,
        events_wd: WatchDescriptor,
        populated_wd: Option<WatchDescriptor>,
        last_oom_kill: u64,
    },
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The table stays consistent even if a holder panicked: every update is one insert
        // or remove.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self, on_oom: Box<dyn Fn(&str) + Send>) {
        let mut events = [EpollEvent::empty(); 8];
        let mut fired = Vec::new();
        loop {
            let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("OOM watcher stopped: epoll_wait: {e}");
                    return;
                }
            };
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            {
                let mut state = self.lock();
                for event in &events[..n] {
                    match event.data() {
                        WAKE => drop(self.wake.read()),
                        INOTIFY => self.inotify_ready(&mut state, &mut fired),
                        token => self.eventfd_ready(&mut state, token, &mut fired),
                    }
                }
            }
            // Outside the lock: `on_oom` may call back into the watcher.
            for id in fired.drain(..) {
                on_oom(&id);
            }
        }
    }

    fn eventfd_ready(&self, state: &mut State, token: u64, fired: &mut Vec<String>) {
        let Some(id) = state.by_token.get(&token).cloned() else {
            return;
        };
        let Some(Watch::EventFd {
            eventfd,
            oom_control,
            ..
        }) = state.watches.get(&id)
        else {
            return;
        };
        let signals = match eventfd.read() {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return,
            Err(e) => {
                log::warn!("OOM watcher: read eventfd of {id}: {e}");
                return;
            }
        };
        // Removing the cgroup signals the eventfd once more; an OOM is any other signal.
        let alive = oom_control.read_at(&mut [0; 64], 0).is_ok();
        if alive || signals > 1 {
            fired.push(id.clone());
        }
        if !alive {
            log::debug!("OOM watcher: memory cgroup of {id} removed");
            state.remove(&id, self);
        }
    }

    fn inotify_ready(&self, state: &mut State, fired: &mut Vec<String>) {
        let mut changed: Vec<(String, bool)> = Vec::new();
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) if !events.is_empty() => events,
                Ok(_) | Err(Errno::EAGAIN) => break,
                Err(e) => {
                    log::warn!("OOM watcher: read inotify events: {e}");
                    break;
                }
            };
            for event in events {
                let ignored = event.mask.contains(AddWatchFlags::IN_IGNORED);
                // Events were lost: look at every v2 watch.
                let overflow = event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW);
                let ids = state
                    .by_wd
                    .iter()
                    .filter(|(wd, _)| overflow || **wd == event.wd)
                    .flat_map(|(_, ids)| ids);
                for id in ids {
                    match changed.iter_mut().find(|(seen, _)| seen == id) {
                        Some((_, gone)) => *gone |= ignored,
                        None => changed.push((id.clone(), ignored)),
                    }
                }
            }
        }
        for (id, ignored) in changed {
            self.check_memory_events(state, &id, ignored, fired);
        }
    }

    /// Reads `oom_kill` of a v2 watch, and ends the watch once the cgroup is gone or empty.
    fn check_memory_events(
        &self,
        state: &mut State,
        id: &str,
        ignored: bool,
        fired: &mut Vec<String>,
    ) {
        let Some(Watch::Inotify {
            dir,
            populated_wd,
            last_oom_kill,
            ..
        }) = state.watches.get_mut(id)
        else {
            return;
        };
        let mut done = ignored;
        match read_field(&dir.join("memory.events"), "oom_kill") {
            Ok(Some(count)) if count > *last_oom_kill => {
                *last_oom_kill = count;
                fired.push(id.to_string());
            }
            Ok(_) => {}
            Err(e) if is_gone(&e) => done = true,
            Err(e) => log::warn!("OOM watcher: read memory.events of {id}: {e}"),
        }
        if populated_wd.is_some() {
            match read_field(&dir.join("cgroup.events"), "populated") {
                Ok(Some(0)) => done = true,
                Ok(_) => {}
                Err(e) if is_gone(&e) => done = true,
                Err(e) => log::warn!("OOM watcher: read cgroup.events of {id}: {e}"),
            }
        }
        if done {
            log::debug!("OOM watcher: cgroup of {id} is gone or empty");
            state.remove(id, self);
        }
    }
}

impl State {
    /// Removes the watch of `id` and releases its fds and inotify watches.
    fn remove(&mut self, id: &str, shared: &Shared) -> Option<()> {
        match self.watches.remove(id)? {
            Watch::EventFd { token, eventfd, .. } => {
                self.by_token.remove(&token);
                let _ = shared.epoll.delete(&eventfd);
            }
            Watch::Inotify {
                events_wd,
                populated_wd,
                ..
            } => {
                for wd in [Some(events_wd), populated_wd].into_iter().flatten() {
                    self.remove_wd(wd, id, shared);
                }
            }
        }
        Some(())
    }

    fn add_wd(&mut self, wd: WatchDescriptor, id: &str) {
        self.by_wd.entry(wd).or_default().push(id.to_string());
    }

    /// Drops `id` from the users of `wd`, and the inotify watch once nobody uses it.
    fn remove_wd(&mut self, wd: WatchDescriptor, id: &str, shared: &Shared) {
        let Some(ids) = self.by_wd.get_mut(&wd) else {
            return;
        };
        if let Some(i) = ids.iter().position(|x| x == id) {
            ids.swap_remove(i);
        }
        if ids.is_empty() {
            self.by_wd.remove(&wd);
            // Fails harmlessly when the kernel already dropped the watch (IN_IGNORED).
            let _ = shared.inotify.rm_watch(wd);
        }
    }
}

/// A non-blocking eventfd: reading it returns and resets its counter, or EAGAIN.
fn new_eventfd() -> Result<EventFd, OomError> {
    EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(
        |source| OomError::Sys {
            what: "eventfd",
            source,
        },
    )
}

/// The value of `key` in a `key value` file such as memory.events.
fn read_field(path: &Path, key: &str) -> io::Result<Option<u64>> {
    let text = fs::read_to_string(path)?;
    Ok(text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    }))
}

/// A file of a removed cgroup: gone from the tree, or ENODEV through a dentry kept alive.
fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

#[cfg(test)]
mod tests;
