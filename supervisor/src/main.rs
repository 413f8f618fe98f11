//! limpetd: the daemon's command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use limpetd::config::Config;

const ABOUT: &str = "limpetd: a CRI v1 container runtime (images, pod sandboxes, containers)";

const LONG_ABOUT: &str = "\
limpetd serves the Kubernetes CRI v1 API over gRPC on a unix socket: it pulls images from \
registries into a content store, unpacks them into snapshots shared between images, runs pod \
sandboxes (network namespaces attached by CNI) and their containers through one \
containerd-shim-limpet-v2 per pod, and answers kubelet, crictl and limpetctl. On start-up it \
re-attaches to every live shim.

Configuration is one TOML file shaped like containerd's. Every key has a default, so limpetd \
runs without one; `limpetd config default` prints them all:

  version = 1
  root = \"/var/lib/limpet\"        # metadata DB, content store, snapshots (locked: one limpetd per root)
  state = \"/run/limpet\"           # volatile state
  [grpc]    address = \"/run/limpet/limpetd.sock\", uid = 0, gid = 0   (socket mode 0660)
  [debug]   level = \"info\"         # trace, debug, info, warn, error
  [metrics] address = \"\"           # host:port for Prometheus /metrics; empty = off
  [registry]
    config_path = \"/etc/limpet/certs.d\"   # <host>/hosts.toml, as containerd's config_path
    max_concurrent_downloads = 3
    read_timeout = 30                      # seconds a registry may stay silent mid-pull
    max_manifest_size = 4194304
  [runtime]
    default_runtime = \"runc\"; cgroup_driver = \"cgroupfs\" (or \"systemd\")
    sandbox_image = \"\"                  # empty: the shim's built-in pause
    max_exec_output = 16777216             # ExecSync output kept per stream
    [runtime.runtimes.<handler>] shim, binary_name (runc, crun, ...), root, no_pivot_root
  [cni]     conf_dir = \"/etc/cni/net.d\", bin_dirs = [\"/opt/cni/bin\", \"/usr/lib/cni\"], timeout = 60

An unknown key or a bad value stops start-up with an error naming the key.";

/// `--version`; a build with named crash points says so, for the tests that arm them.
const VERSION: &str = if cfg!(feature = "failpoints") {
    concat!(env!("CARGO_PKG_VERSION"), " (failpoints)")
} else {
    env!("CARGO_PKG_VERSION")
};

#[derive(Parser)]
#[command(name = "limpetd", version = VERSION, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// The TOML config file (default: built-in defaults).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides [debug] level.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Prints the full default configuration file.
    Default,
    /// Checks a configuration file (with --config) and prints it as limpetd reads it.
    Check,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("limpetd: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(level) = &cli.log_level {
        let text = format!("[debug]\nlevel = {level:?}\n");
        config.debug.level = Config::parse(&text).context("--log-level")?.debug.level;
    }
    match cli.command {
        Some(Command::Config {
            what: ConfigCommand::Default,
        }) => {
            print!("{}", Config::default_text());
            return Ok(());
        }
        Some(Command::Config {
            what: ConfigCommand::Check,
        }) => {
            print!("{}", toml::to_string(&config)?);
            return Ok(());
        }
        None => {}
    }
    init_logging(&config.debug.level);
    limit_malloc_arenas();
    // Tests arm named crash points with FAILPOINTS=name=return (see runtime::crash_point).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Shim Wait calls hold a blocking thread until their process exits; idle threads
        // go away after a few seconds, so the ceiling only has to be out of reach.
        .max_blocking_threads(1024)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        let daemon = limpetd::daemon::Daemon::open(config).await?;
        daemon.serve().await?;
        Ok(())
    })
}

/// glibc gives each thread that allocates its own arena, and raises its mmap threshold as
/// big buffers are freed, so parallel layer workers would leave arenas full of freed body
/// buffers. Two arenas, and buffers over 128 KiB mapped and unmapped on their own, keep the
/// daemon's RSS near what it actually holds.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tunables; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
}

fn init_logging(level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LIMPETD_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,limpetd={level}")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}
