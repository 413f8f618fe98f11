//! limpetctl: the operator's CRI client, shaped like crictl (same subcommands and common
//! flags), talking to limpetd, containerd or CRI-O over their CRI socket.

mod client;
mod commands;
mod config_file;
mod containers;
mod cri_json;
mod cri_log;
mod exec;
mod filters;
mod images;
mod logs;
mod output;
mod pods;
mod port_forward;
mod progress;
mod ps;
mod runtime;
mod stats;
mod stream;
mod terminal;
mod times;

use std::time::Duration;

use clap::{Parser, Subcommand};

use output::Format;

const DEFAULT_ENDPOINT: &str = "unix:///run/limpet/limpetd.sock";

#[derive(Parser)]
#[command(
    name = "limpetctl",
    version,
    about = "CRI client for limpetd (and any CRI runtime), shaped like crictl"
)]
struct Cli {
    // These come before the command, as with crictl: commands reuse -r, -i and -t
    // (`runp -r HANDLER`, `exec -i`, `stop -t`, `logs -t`).
    /// CRI runtime endpoint (unix:///path or /path).
    #[arg(long, short = 'r', env = "CONTAINER_RUNTIME_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    runtime_endpoint: String,
    /// CRI image endpoint; defaults to the runtime endpoint.
    #[arg(long, short = 'i', env = "IMAGE_SERVICE_ENDPOINT")]
    image_endpoint: Option<String>,
    /// Timeout of connecting and of each short request (for example 2s, 500ms, 1m).
    #[arg(long, short = 't', default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Display runtime version information.
    Version,
    /// Display information of the container runtime.
    Info {
        #[arg(long, short = 'o', default_value = "json")]
        output: Format,
    },
    /// Pull an image from a registry.
    Pull {
        /// Registry credentials, USERNAME:PASSWORD.
        #[arg(long)]
        creds: Option<String>,
        /// Registry auth string (base64 of USERNAME:PASSWORD).
        #[arg(long)]
        auth: Option<String>,
        /// Registry username (password from --password).
        #[arg(long, short = 'u')]
        username: Option<String>,
        #[arg(long, short = 'p', requires = "username")]
        password: Option<String>,
        image: String,
    },
    /// List images.
    #[command(alias = "image", alias = "img")]
    Images {
        /// Only show image IDs.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Show verbose information about images.
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Show digests.
        #[arg(long)]
        digests: bool,
        /// Show output without truncating the ID.
        #[arg(long)]
        no_trunc: bool,
        #[arg(long, short = 'o', default_value = "table")]
        output: Format,
        /// Only images this name or id finds.
        image: Option<String>,
    },
    /// Return the status of one or more images.
    Inspecti {
        #[arg(long, short = 'o', default_value = "json")]
        output: Format,
        /// Do not show verbose information.
        #[arg(long, short = 'q')]
        quiet: bool,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove one or more images.
    Rmi {
        /// Remove all images.
        #[arg(long, short = 'a')]
        all: bool,
        /// Remove all unused images (no container uses one yet: all of them).
        #[arg(long, short = 'q')]
        prune: bool,
        images: Vec<String>,
    },
    /// Return image filesystem info.
    Imagefsinfo {
        #[arg(long, short = 'o', default_value = "json")]
        output: Format,
    },
    #[command(flatten)]
    Workload(commands::Workload),
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 2s, 500ms or 1m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs.max(0.001)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("limpetctl: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// Runs a command; the exit code is 0 but for `exec`, which passes its command's on.
async fn run(cli: Cli) -> anyhow::Result<i32> {
    let image_ep = cli
        .image_endpoint
        .clone()
        .unwrap_or_else(|| cli.runtime_endpoint.clone());
    let t = cli.timeout;
    match cli.command {
        Command::Version => {
            runtime::version(&client::runtime(&cli.runtime_endpoint, t).await?, t).await
        }
        Command::Info { output } => {
            runtime::info(&client::runtime(&cli.runtime_endpoint, t).await?, t, output).await
        }
        Command::Pull {
            creds,
            auth,
            username,
            password,
            image,
        } => {
            let auth = images::auth_config(creds, auth, username, password)?;
            images::pull(&client::images(&image_ep, t).await?, &image, auth).await
        }
        Command::Images {
            quiet,
            verbose,
            digests,
            no_trunc,
            output,
            image,
        } => {
            let opts = images::ListOptions {
                quiet,
                verbose,
                digests,
                no_trunc,
                output,
            };
            images::list(&client::images(&image_ep, t).await?, t, image, opts).await
        }
        Command::Inspecti {
            output,
            quiet,
            images: specs,
        } => {
            images::inspect(
                &client::images(&image_ep, t).await?,
                t,
                &specs,
                output,
                !quiet,
            )
            .await
        }
        Command::Rmi {
            all,
            prune,
            images: specs,
        } => {
            images::remove(
                &client::images(&image_ep, t).await?,
                t,
                &specs,
                all || prune,
            )
            .await
        }
        Command::Imagefsinfo { output } => {
            images::fs_info(&client::images(&image_ep, t).await?, t, output).await
        }
        Command::Workload(w) => {
            let ctx = commands::Ctx {
                runtime_endpoint: cli.runtime_endpoint,
                image_endpoint: image_ep,
                timeout: t,
            };
            return commands::run(&ctx, w).await;
        }
    }
    .map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_do_not_clash() {
        Cli::command().debug_assert();
        // crictl's short flags after the command are the command's own
        let cli = Cli::try_parse_from(["limpetctl", "-t", "3s", "stop", "-t", "5", "x"]).unwrap();
        assert_eq!(cli.timeout, Duration::from_secs(3));
        let cli = Cli::try_parse_from(["limpetctl", "exec", "c1", "sh", "-c", "exit 3"]).unwrap();
        match cli.command {
            Command::Workload(commands::Workload::Exec { id, cmd, .. }) => {
                assert_eq!(id, "c1");
                assert_eq!(cmd, ["sh", "-c", "exit 3"]);
            }
            _ => panic!("not exec"),
        }
    }
}
