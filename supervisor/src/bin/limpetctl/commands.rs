//! The pod and container commands (crictl's names and flags) and their dispatch.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;

use crate::client;
use crate::containers::{self, Pull, PullOptions, RemoveOptions, Update};
use crate::cri_log::Stream;
use crate::output::Format;
use crate::{exec, images, logs, pods, port_forward, ps, stats, stream};

/// Where and how to reach the runtime.
pub struct Ctx {
    pub runtime_endpoint: String,
    pub image_endpoint: String,
    pub timeout: Duration,
}

impl Ctx {
    async fn runtime(&self) -> anyhow::Result<RuntimeServiceClient<Channel>> {
        client::runtime(&self.runtime_endpoint, self.timeout).await
    }

    async fn images(&self) -> anyhow::Result<ImageServiceClient<Channel>> {
        client::images(&self.image_endpoint, self.timeout).await
    }
}

/// How `create` and `run` get the image.
#[derive(clap::Args, Debug)]
pub struct PullFlags {
    /// Do not pull the image (the runtime reports one it does not have).
    #[arg(long, conflicts_with = "with_pull")]
    no_pull: bool,
    /// Pull the image even if the runtime has it.
    #[arg(long)]
    with_pull: bool,
    /// Registry credentials for the pull, USERNAME:PASSWORD.
    #[arg(long)]
    creds: Option<String>,
    /// Registry auth string for the pull (base64 of USERNAME:PASSWORD).
    #[arg(long)]
    auth: Option<String>,
}

impl PullFlags {
    fn options(self) -> anyhow::Result<PullOptions> {
        let policy = if self.no_pull {
            Pull::Never
        } else if self.with_pull {
            Pull::Always
        } else {
            Pull::IfMissing
        };
        Ok(PullOptions {
            policy,
            auth: images::auth_config(self.creds, self.auth, None, None)?,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum Workload {
    /// Run a new pod from a pod config file (JSON or YAML); prints its id.
    Runp {
        /// Runtime handler to use (as the runtime names them).
        #[arg(long, short = 'r', default_value = "")]
        runtime: String,
        config: PathBuf,
    },
    /// List pods.
    Pods {
        /// Only the pod with this id (or id prefix, as the runtime matches).
        #[arg(long)]
        id: Option<String>,
        /// Only pods whose name contains this (anchor with ^ and $).
        #[arg(long)]
        name: Option<String>,
        /// Only pods whose namespace contains this (anchor with ^ and $).
        #[arg(long)]
        namespace: Option<String>,
        /// Only pods in this state: ready or notready.
        #[arg(long, short = 's')]
        state: Option<String>,
        /// Only pods with this label, key=value (repeatable).
        #[arg(long)]
        label: Vec<String>,
        /// Show verbose information.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Only pod ids.
        #[arg(long, short = 'q')]
        quiet: bool,
        #[arg(long, short = 'o', default_value = "table")]
        output: Format,
        /// Only the newest pod.
        #[arg(long, short = 'l')]
        latest: bool,
        /// Only the N newest pods (0: all).
        #[arg(long, short = 'n', default_value_t = 0)]
        last: usize,
        /// Show whole ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Stop one or more pods.
    Stopp {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove one or more pods.
    Rmp {
        /// Stop a ready pod first.
        #[arg(long, short = 'f')]
        force: bool,
        /// Remove every pod.
        #[arg(long, short = 'a')]
        all: bool,
        ids: Vec<String>,
    },
    /// Show the status of one or more pods.
    Inspectp {
        #[arg(long, short = 'o', default_value = "json")]
        output: Format,
        /// Leave out the runtime's verbose info.
        #[arg(long, short = 'q')]
        quiet: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Create a container in a pod; prints its id.
    Create {
        #[command(flatten)]
        pull: PullFlags,
        pod_id: String,
        container_config: PathBuf,
        pod_config: PathBuf,
    },
    /// Start one or more created containers.
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a container in a new pod (runp, create and start); prints the container id.
    Run {
        /// Runtime handler for the pod.
        #[arg(long, short = 'r', default_value = "")]
        runtime: String,
        #[command(flatten)]
        pull: PullFlags,
        container_config: PathBuf,
        pod_config: PathBuf,
    },
    /// List containers (running ones unless --all).
    Ps {
        /// Show all containers, not just running ones.
        #[arg(long, short = 'a')]
        all: bool,
        /// Only the container with this id.
        #[arg(long)]
        id: Option<String>,
        /// Only containers whose name contains this (anchor with ^ and $).
        #[arg(long)]
        name: Option<String>,
        /// Only containers of this pod id.
        #[arg(long, short = 'p')]
        pod: Option<String>,
        /// Only containers of pods whose namespace contains this.
        #[arg(long)]
        namespace: Option<String>,
        /// Only containers of this image (name or id).
        #[arg(long)]
        image: Option<String>,
        /// Only containers in this state: created, running, exited or unknown.
        #[arg(long, short = 's')]
        state: Option<String>,
        /// Only containers with this label, key=value (repeatable).
        #[arg(long)]
        label: Vec<String>,
        /// Show verbose information.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Only container ids.
        #[arg(long, short = 'q')]
        quiet: bool,
        #[arg(long, short = 'o')]
        output: Option<Format>,
        /// Only the newest container (in any state).
        #[arg(long, short = 'l')]
        latest: bool,
        /// Only the N newest containers, in any state (0: all).
        #[arg(long, short = 'n', default_value_t = 0)]
        last: usize,
        /// Show whole ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show the status of one or more containers.
    Inspect {
        #[arg(long, short = 'o', default_value = "json")]
        output: Format,
        /// Leave out the runtime's verbose info.
        #[arg(long, short = 'q')]
        quiet: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Print a container's logs.
    Logs {
        /// Keep printing what is appended until the container stops.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines (-1: all).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        tail: i64,
        /// Prefix each line with its time.
        #[arg(long, short = 't')]
        timestamps: bool,
        /// Only lines since a time (2024-01-02T13:23:37Z), a duration ago (42m) or unix seconds.
        #[arg(long)]
        since: Option<String>,
        /// Only this stream: stdout or stderr.
        #[arg(long, short = 's')]
        stream: Option<String>,
        id: String,
    },
    /// Run a command in a running container and exit with its exit code (ExecSync; with
    /// -i/-t the streaming Exec).
    Exec {
        /// Seconds the command may take (0: no limit; ExecSync only).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
        /// Run synchronously (ExecSync), even with -i/-t.
        #[arg(long, short = 's')]
        sync: bool,
        /// Keep stdin open and send it to the command.
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Allocate a terminal (needs -i).
        #[arg(long, short = 't')]
        tty: bool,
        #[command(flatten)]
        stream: stream::StreamFlags,
        id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Attach to a running container's stdio.
    Attach(stream::AttachArgs),
    /// Forward local ports to a pod.
    PortForward(port_forward::PortForwardArgs),
    /// Stop one or more running containers.
    Stop {
        /// Seconds to wait after the stop signal before killing.
        #[arg(long, short = 't', default_value_t = 0)]
        timeout: i64,
        /// Stop every running container.
        #[arg(long, short = 'a')]
        all: bool,
        ids: Vec<String>,
    },
    /// Remove one or more containers.
    Rm {
        /// Stop a running container first.
        #[arg(long, short = 'f')]
        force: bool,
        /// Remove every container.
        #[arg(long, short = 'a')]
        all: bool,
        /// Keep the container's log files.
        #[arg(long, short = 'k')]
        keep_logs: bool,
        ids: Vec<String>,
    },
    /// Show container resource usage.
    Stats {
        /// All containers, not just running ones.
        #[arg(long, short = 'a')]
        all: bool,
        /// Only the container with this id.
        #[arg(long)]
        id: Option<String>,
        /// Only containers of this pod id.
        #[arg(long, short = 'p')]
        pod: Option<String>,
        /// Only containers with this label, key=value (repeatable).
        #[arg(long)]
        label: Vec<String>,
        #[arg(long, short = 'o')]
        output: Option<Format>,
        /// Seconds between the two samples the CPU column needs.
        #[arg(long, short = 's', default_value_t = 1)]
        seconds: u64,
        /// A container id (as --id).
        container: Option<String>,
    },
    /// Show pod resource usage.
    Statsp {
        /// Only the pod with this id.
        #[arg(long)]
        id: Option<String>,
        /// Only pods with this label, key=value (repeatable).
        #[arg(long)]
        label: Vec<String>,
        #[arg(long, short = 'o')]
        output: Option<Format>,
        #[arg(long, short = 's', default_value_t = 1)]
        seconds: u64,
        /// A pod id (as --id).
        pod: Option<String>,
    },
    /// Update the resources of one or more containers.
    Update {
        /// Memory limit in bytes.
        #[arg(long)]
        memory: Option<i64>,
        /// CPU shares (relative weight).
        #[arg(long, alias = "cpu-share")]
        cpu_shares: Option<i64>,
        /// CPU CFS quota in microseconds per period.
        #[arg(long)]
        cpu_quota: Option<i64>,
        /// CPU CFS period in microseconds.
        #[arg(long)]
        cpu_period: Option<i64>,
        /// CPUs to run on (0-3, 0,1).
        #[arg(long)]
        cpuset_cpus: Option<String>,
        /// Memory nodes to use.
        #[arg(long)]
        cpuset_mems: Option<String>,
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn stream(s: Option<String>) -> anyhow::Result<Option<Stream>> {
    match s.as_deref() {
        None => Ok(None),
        Some("stdout") => Ok(Some(Stream::Stdout)),
        Some("stderr") => Ok(Some(Stream::Stderr)),
        Some(o) => anyhow::bail!("--stream {o:?}: use stdout or stderr"),
    }
}

/// Runs a command; returns the exit code (0, or what `exec`'s command exited with).
pub async fn run(ctx: &Ctx, w: Workload) -> anyhow::Result<i32> {
    let t = ctx.timeout;
    match w {
        Workload::Runp { runtime, config } => {
            let config = pods::load_config(&config)?;
            println!(
                "{}",
                pods::run(&ctx.runtime().await?, config, &runtime).await?
            );
        }
        Workload::Pods {
            id,
            name,
            namespace,
            state,
            label,
            verbose,
            quiet,
            output,
            latest,
            last,
            no_trunc,
        } => {
            let o = pods::ListOptions {
                id,
                name,
                namespace,
                state,
                labels: label,
                verbose,
                quiet,
                output,
                latest,
                last,
                no_trunc,
            };
            pods::list(&ctx.runtime().await?, t, o).await?;
        }
        Workload::Stopp { ids } => {
            let client = ctx.runtime().await?;
            for id in ids {
                pods::stop(&client, &id).await?;
            }
        }
        Workload::Rmp { force, all, ids } => {
            pods::remove(&ctx.runtime().await?, t, &ids, all, force).await?;
        }
        Workload::Inspectp { output, quiet, ids } => {
            pods::inspect(&ctx.runtime().await?, t, &ids, output, !quiet).await?;
        }
        Workload::Create {
            pull,
            pod_id,
            container_config,
            pod_config,
        } => {
            let pull = pull.options()?;
            let config = crate::config_file::load_container(&container_config)?;
            let pod = pods::load_config(&pod_config)?;
            let (rt, im) = (ctx.runtime().await?, ctx.images().await?);
            let id = containers::create(&rt, &im, t, &pod_id, config, pod, &pull).await?;
            println!("{id}");
        }
        Workload::Start { ids } => {
            let client = ctx.runtime().await?;
            for id in ids {
                containers::start(&client, &id).await?;
                println!("{id}");
            }
        }
        Workload::Run {
            runtime,
            pull,
            container_config,
            pod_config,
        } => {
            let pull = pull.options()?;
            let config = crate::config_file::load_container(&container_config)?;
            let pod = pods::load_config(&pod_config)?;
            let (rt, im) = (ctx.runtime().await?, ctx.images().await?);
            let pod_id = pods::run(&rt, pod.clone(), &runtime).await?;
            let id = containers::create(&rt, &im, t, &pod_id, config, pod, &pull)
                .await
                .map_err(|e| e.context(format!("in pod {pod_id}")))?;
            containers::start(&rt, &id).await?;
            println!("{id}");
        }
        Workload::Ps {
            all,
            id,
            name,
            pod,
            namespace,
            image,
            state,
            label,
            verbose,
            quiet,
            output,
            latest,
            last,
            no_trunc,
        } => {
            let o = ps::Options {
                all,
                id,
                name,
                pod,
                namespace,
                image,
                state,
                labels: label,
                verbose,
                quiet,
                output,
                latest,
                last,
                no_trunc,
            };
            let (rt, im) = (ctx.runtime().await?, ctx.images().await?);
            ps::list(&rt, &im, t, o).await?;
        }
        Workload::Inspect { output, quiet, ids } => {
            containers::inspect(&ctx.runtime().await?, t, &ids, output, !quiet).await?;
        }
        Workload::Logs {
            follow,
            tail,
            timestamps,
            since,
            stream: s,
            id,
        } => {
            let o = logs::Options {
                follow,
                tail: usize::try_from(tail).ok(),
                timestamps,
                since: since.as_deref().map(logs::since).transpose()?,
                stream: stream(s)?,
            };
            logs::logs(&ctx.runtime().await?, t, &id, &o).await?;
        }
        Workload::Exec {
            timeout,
            sync,
            interactive,
            tty,
            stream: flags,
            id,
            cmd,
        } => {
            let client = ctx.runtime().await?;
            if sync || !(interactive || tty) {
                return exec::exec_sync(&client, t, &id, cmd, timeout).await;
            }
            return stream::exec(&client, t, &id, cmd, interactive, tty, &flags).await;
        }
        Workload::Attach(args) => {
            return stream::attach(&ctx.runtime().await?, t, &args).await;
        }
        Workload::PortForward(args) => {
            return port_forward::port_forward(&ctx.runtime().await?, t, args).await;
        }
        Workload::Stop { timeout, all, ids } => {
            containers::stop_many(&ctx.runtime().await?, t, &ids, all, timeout).await?;
        }
        Workload::Rm {
            force,
            all,
            keep_logs,
            ids,
        } => {
            let o = RemoveOptions {
                all,
                force,
                keep_logs,
            };
            containers::remove(&ctx.runtime().await?, t, &ids, o).await?;
        }
        Workload::Stats {
            all,
            id,
            pod,
            label,
            output,
            seconds,
            container,
        } => {
            let o = stats::Options {
                all,
                id: id.or(container),
                pod,
                labels: label,
                output,
                sample: Duration::from_secs(seconds),
            };
            stats::containers(&ctx.runtime().await?, t, o).await?;
        }
        Workload::Statsp {
            id,
            label,
            output,
            seconds,
            pod,
        } => {
            let o = stats::PodOptions {
                id: id.or(pod),
                labels: label,
                output,
                sample: Duration::from_secs(seconds),
            };
            stats::pods(&ctx.runtime().await?, t, o).await?;
        }
        Workload::Update {
            memory,
            cpu_shares,
            cpu_quota,
            cpu_period,
            cpuset_cpus,
            cpuset_mems,
            ids,
        } => {
            let u = Update {
                memory,
                cpu_shares,
                cpu_quota,
                cpu_period,
                cpuset_cpus,
                cpuset_mems,
            };
            containers::update(&ctx.runtime().await?, t, &ids, &u).await?;
        }
    }
    Ok(0)
}
