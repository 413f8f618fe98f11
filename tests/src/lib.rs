//! Harness for limpet's integration suites.
//!
//! Every suite case gets a private stock containerd (own root, state, sockets under a temp
//! dir), a namespace of its own with a busybox image built locally from the host's static
//! busybox, and the shim under test (`LIMPET_SHIM`) installed as a runtime. Cases drive it
//! with `ctr` exactly as a user would. Dropping the harness removes everything the case
//! left behind: tasks, shims, runc state, mounts and cgroups.
//!
//! Missing prerequisites (not root, no containerd, no umoci, ...) make a case print
//! `SKIP: reason` and return: loud, never silent.
//!
//! Environment:
//! - `LIMPET_SHIM`: the shim binary under test (absolute path); default: this workspace's
//!   `target/{release,debug}/containerd-shim-limpet-v2`. Its file name picks the runtime
//!   (`containerd-shim-runc-v2` → `io.containerd.runc.v2`, anything else →
//!   `io.containerd.limpet.v2`); `LIMPET_RUNTIME` overrides that.
//! - `LIMPET_CONTAINERD`: a containerd 2.x bin dir (`containerd`, `ctr`) for the
//!   `containerd_2::*` flavor of every case; unset, those cases skip.
//! - `LIMPET_TEST_DEBUG=1`: containerd and shims log at debug level (the log tail is printed
//!   when a case fails).
//! - `LIMPET_SKIP_LOG`: a file that collects skip reasons (scripts/test.sh lists them).
//!
//! Example: `LIMPET_SHIM=/usr/bin/containerd-shim-runc-v2 cargo nextest run -p limpet-tests
//! -E 'binary(/^shim_/)'` runs the shim suites against the Go shim.
#![deny(unsafe_code)]

mod cleanup;
mod config;
mod containerd;
mod ctr;
mod env;
mod error;
mod events;
mod harness;
mod image;
mod proc;
pub mod pty;

pub use cleanup::{mounts_under, shim_pids};
pub use containerd::Containerd;
pub use ctr::CtrOutput;
pub use env::{shim_under_test, ContainerdBins, Flavor, ShimUnderTest};
pub use error::{HarnessError, Result};
pub use events::{Event, EventStream};
pub use harness::{run_case, skip, Harness, TaskRow};
pub use image::{busybox_image_tar, IMAGE_REF};
pub use proc::{pid_alive, read_cmdline};

/// Declares the given case functions (`fn(&Harness)`) as tests twice: once against the stock
/// containerd 1.x on PATH and once against the containerd 2.x in `LIMPET_CONTAINERD`.
#[macro_export]
macro_rules! shim_cases {
    ($($case:ident),+ $(,)?) => {
        mod containerd_1 {
            $(
                #[test]
                fn $case() {
                    $crate::run_case($crate::Flavor::Containerd1, stringify!($case), super::$case);
                }
            )+
        }
        mod containerd_2 {
            $(
                #[test]
                fn $case() {
                    $crate::run_case($crate::Flavor::Containerd2, stringify!($case), super::$case);
                }
            )+
        }
    };
}

// limpetd suites: a local registry with images made here, and a private limpetd.
pub mod cri_pod;
pub mod limpetd;
pub mod pods;
pub mod registry;
