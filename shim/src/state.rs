//! The lifecycle of a process (a container's init or an exec), with every transition
//! decided in one place: created → running ⇄ paused → stopped → deleted.

use crate::error::{Error, Result};
use limpet_protos::types::task::Status as WireStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Start,
    Pause,
    Resume,
    Exit,
    Delete,
}

impl Status {
    /// The state after `t`, or why `t` is not allowed now.
    pub fn apply(self, t: Transition) -> Result<Status> {
        use Status::*;
        use Transition as T;
        match (self, t) {
            (Created, T::Start) => Ok(Running),
            (Running, T::Pause) => Ok(Paused),
            (Paused, T::Resume) => Ok(Running),
            // A process can die at any moment before it is deleted, even before it started.
            (Created | Running | Paused, T::Exit) => Ok(Stopped),
            (Created | Stopped, T::Delete) => Ok(Deleted),
            (Running | Paused, T::Delete) => Err(Error::FailedPrecondition(
                "cannot delete a running process".into(),
            )),
            (Stopped | Deleted, T::Start) => {
                Err(Error::FailedPrecondition("process already finished".into()))
            }
            (Running | Paused, T::Start) => {
                Err(Error::FailedPrecondition("process already started".into()))
            }
            (s, t) => Err(Error::FailedPrecondition(
                format!("cannot {t:?} a process that is {s:?}").to_lowercase(),
            )),
        }
    }

    pub fn wire(self) -> WireStatus {
        match self {
            Status::Created => WireStatus::CREATED,
            Status::Running => WireStatus::RUNNING,
            Status::Paused => WireStatus::PAUSED,
            Status::Stopped | Status::Deleted => WireStatus::STOPPED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Status::*;
    use super::Transition::*;

    #[test]
    fn the_lifecycle_allows_what_runc_allows() {
        assert_eq!(Created.apply(Start).unwrap(), Running);
        assert_eq!(Running.apply(Pause).unwrap(), Paused);
        assert_eq!(Paused.apply(Resume).unwrap(), Running);
        assert_eq!(Paused.apply(Exit).unwrap(), Stopped);
        assert_eq!(Created.apply(Exit).unwrap(), Stopped);
        assert_eq!(Stopped.apply(Delete).unwrap(), Deleted);
        assert_eq!(Created.apply(Delete).unwrap(), Deleted);
    }

    #[test]
    fn illegal_transitions_are_refused_with_a_precondition_error() {
        for (s, t) in [
            (Running, Delete),
            (Paused, Delete),
            (Stopped, Start),
            (Running, Start),
            (Created, Pause),
            (Stopped, Resume),
            (Running, Resume),
            (Stopped, Exit),
            (Deleted, Delete),
        ] {
            let e = s.apply(t).unwrap_err();
            assert_eq!(
                e.code(),
                limpet_protos::ttrpc::Code::FAILED_PRECONDITION,
                "{s:?} {t:?}"
            );
        }
    }
}
