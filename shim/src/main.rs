//! containerd-shim-limpet-v2: a containerd shim v2 for runc-compatible runtimes.

#![deny(unsafe_code)]

mod args;
mod attach;
mod bootstrap;
mod cgroups;
mod cleanup;
mod console;
mod copy;
mod crilog;
mod error;
mod events;
mod info;
mod logger;
mod mount;
mod oom;
mod options;
mod pause;
mod reaper;
mod runc;
mod serve;
mod service;
mod state;
mod stdio;
mod task;

use std::io::Write;

use args::Action;

fn main() {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => fail(&e),
    };
    if args.version {
        println!(
            "{}:\n  Version:  {}\n",
            std::env::args().next().unwrap_or_default(),
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    let result = if args.info {
        with_reaper(info::info)
    } else {
        // The pause process runs inside a pod, outside any containerd namespace.
        if args.namespace.is_empty() && args.action != Action::Pause {
            fail(&error::Error::InvalidArgument(
                "shim namespace cannot be empty".into(),
            ));
        }
        match args.action {
            Action::Start => bootstrap::start(&args),
            Action::Delete => with_reaper(|| cleanup::delete(&args)),
            Action::Serve => serve::serve(&args).map(|()| Vec::new()),
            Action::Pause => pause::run(),
        }
    };
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout();
            if stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                std::process::exit(1);
            }
        }
        Err(e) => fail(&e),
    }
}

/// One-shot actions that run runc need the reaper to collect its exit.
fn with_reaper<T>(f: impl FnOnce() -> error::Result<T>) -> error::Result<T> {
    reaper::block_signals()?;
    std::thread::Builder::new()
        .name("reaper".into())
        .stack_size(128 * 1024)
        .spawn(|| reaper::reaper().reap_loop(|_| {}))
        .map_err(|e| error::Error::Io {
            context: "start reaper".into(),
            source: e,
        })?;
    f()
}

fn fail(e: &error::Error) -> ! {
    eprintln!("containerd-shim-limpet-v2: {e}");
    std::process::exit(1);
}
