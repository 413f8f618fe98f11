//! A private limpetd (own root, state, socket and certs.d under a temp dir), driven with
//! `limpetctl` and with a CRI gRPC client, as operators and kubelet drive it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;

use crate::env::target_dir;
use crate::error::{io_err, HarnessError, Result};

/// Where the binaries under test are: `LIMPETD_BIN` / `LIMPETCTL_BIN`, else this build's.
pub fn binary(name: &str) -> Result<PathBuf> {
    let var = format!("{}_BIN", name.to_ascii_uppercase());
    let path = match std::env::var_os(&var) {
        Some(p) => PathBuf::from(p),
        None => {
            // test executables live in <target>/<profile>/deps
            let exe = std::env::current_exe().map_err(io_err("current exe"))?;
            let profile_dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf);
            profile_dir
                .map(|d| d.join(name))
                .unwrap_or_else(|| target_dir().join("debug").join(name))
        }
    };
    if !path.is_file() {
        return Err(HarnessError::Skip(format!(
            "{} is not built (cargo build -p limpetd, or set {var})",
            path.display()
        )));
    }
    Ok(path)
}

/// Settings of one limpetd.
#[derive(Debug, Clone)]
pub struct Options {
    pub read_timeout: u64,
    pub metrics: bool,
    /// Use this directory as root (for a tmpfs, say) instead of one in the temp dir.
    pub root: Option<PathBuf>,
    /// Write a pod network of its own (bridge + host-local + portmap) into the CNI conf dir.
    pub pod_network: bool,
    /// Extra TOML appended to the config file.
    pub extra_config: String,
    /// Environment of the daemon (for example FAILPOINTS).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            read_timeout: 5,
            metrics: false,
            root: None,
            pod_network: false,
            extra_config: String::new(),
            env: Vec::new(),
        }
    }
}

pub struct Limpetd {
    dir: tempfile::TempDir,
    pub root: PathBuf,
    pub socket: PathBuf,
    pub certs_d: PathBuf,
    pub config: PathBuf,
    pub metrics_addr: Option<String>,
    child: Option<Child>,
    bin: PathBuf,
    ctl: PathBuf,
    pub env: Vec<(String, String)>,
    /// The pod network's bridge and subnet prefix (`10.198.N.`), when it has one.
    pub network: Option<PodNet>,
}

/// A private pod network: its bridge and the first three octets of its /24.
#[derive(Debug, Clone)]
pub struct PodNet {
    pub bridge: String,
    pub prefix: String,
}

/// Writes a bridge + host-local + portmap conflist with a bridge and /24 no other run uses.
fn write_pod_network(dir: &Path) -> Result<PodNet> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() as usize;
    let bridge = format!("lp{}x{}", pid % 100000, n);
    let routes = Command::new("ip")
        .args(["-4", "addr"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let third = (0..250)
        .map(|i| (pid + n * 7 + i) % 250 + 1)
        .find(|x| !routes.contains(&format!("10.198.{x}.")))
        .ok_or_else(|| HarnessError::Setup("no free 10.198.x.0/24".into()))?;
    let conf_dir = dir.join("net.d");
    std::fs::create_dir_all(&conf_dir).map_err(io_err("create net.d"))?;
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "subnet": format!("10.198.{third}.0/24"),
                    "dataDir": dir.join("ipam"),
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}
        ]
    });
    std::fs::write(
        conf_dir.join("10-limpet-test.conflist"),
        conflist.to_string(),
    )
    .map_err(io_err("write conflist"))?;
    Ok(PodNet {
        bridge,
        prefix: format!("10.198.{third}."),
    })
}

impl Limpetd {
    pub fn start(opts: Options) -> Result<Limpetd> {
        crate::env::require_root()?;
        let bin = binary("limpetd")?;
        let ctl = binary("limpetctl")?;
        let dir = tempfile::Builder::new()
            .prefix("limpetd-")
            .tempdir()
            .map_err(io_err("temp dir"))?;
        let root = opts.root.clone().unwrap_or_else(|| dir.path().join("root"));
        let socket = dir.path().join("state/limpetd.sock");
        let certs_d = dir.path().join("certs.d");
        std::fs::create_dir_all(&certs_d).map_err(io_err("create certs.d"))?;
        let metrics_addr = if opts.metrics {
            Some(format!("127.0.0.1:{}", crate::registry::free_port()?))
        } else {
            None
        };
        let network = if opts.pod_network {
            Some(write_pod_network(dir.path())?)
        } else {
            None
        };
        // The shim under test when it is ours (the Go shim cannot serve limpetd: it speaks
        // task API v2 only); otherwise limpetd finds the one built beside it.
        let shim = std::env::var_os("LIMPET_SHIM")
            .map(PathBuf::from)
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim-limpet"))
            })
            .map(|p| {
                format!(
                    "[runtime.runtimes.runc]\nshim = {:?}\n",
                    p.display().to_string()
                )
            })
            .unwrap_or_default();
        let config = dir.path().join("limpetd.toml");
        let text = format!(
            "root = {:?}\nstate = {:?}\n[grpc]\naddress = {:?}\n[debug]\nlevel = \"debug\"\n[metrics]\naddress = {:?}\n[registry]\nconfig_path = {:?}\nread_timeout = {}\n[cni]\nconf_dir = {:?}\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\n{}\n",
            root,
            dir.path().join("state"),
            socket,
            metrics_addr.clone().unwrap_or_default(),
            certs_d,
            opts.read_timeout,
            dir.path().join("net.d"),
            opts.extra_config,
        ) + &shim;
        std::fs::write(&config, text).map_err(io_err("write limpetd config"))?;
        let mut d = Limpetd {
            dir,
            root,
            socket,
            certs_d,
            config,
            metrics_addr,
            child: None,
            bin,
            ctl,
            env: opts.env.clone(),
            network,
        };
        d.launch()?;
        Ok(d)
    }

    /// Starts the daemon and waits for its socket to answer.
    pub fn launch(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("limpetd.log"))
            .map_err(io_err("limpetd log"))?;
        let child = Command::new(&self.bin)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err("log"))?)
            .stderr(log)
            .spawn()
            .map_err(io_err("start limpetd"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(c) = &mut self.child {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(HarnessError::Setup(format!(
                        "limpetd exited ({status}): {}",
                        self.log()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Setup(format!(
                    "limpetd did not come up: {}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, and waits for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs limpetctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(&self.ctl)
            .arg("--runtime-endpoint")
            .arg(self.endpoint())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run limpetctl: {e}"))
    }

    /// Runs limpetctl and returns its stdout, failing the test if it fails.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "limpetctl {args:?} failed: {}\nlimpetd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A CRI runtime client.
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        let channel = limpet_protos::cri::connect(&self.endpoint())
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        RuntimeServiceClient::new(channel)
    }

    /// A CRI image client (the test's own gRPC client, not limpetctl).
    pub async fn images(&self) -> ImageServiceClient<Channel> {
        let channel = limpet_protos::cri::connect(&self.endpoint())
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        ImageServiceClient::new(channel)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("limpetd.log")).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Writes `<certs.d>/<host>/hosts.toml`.
    pub fn hosts_toml(&self, host: &str, text: &str) -> Result<()> {
        let d = self.certs_d.join(host);
        std::fs::create_dir_all(&d).map_err(io_err("create host dir"))?;
        std::fs::write(d.join("hosts.toml"), text).map_err(io_err("write hosts.toml"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn metrics(&self) -> Option<String> {
        let addr = self.metrics_addr.as_ref()?;
        crate::registry::http(addr, "GET", "/metrics", &[], b"").map(|(_, body)| body)
    }
}

impl Drop for Limpetd {
    fn drop(&mut self) {
        // Pods first, through the daemon, so that CNI releases addresses and host rules.
        if self.child.is_some() {
            let _ = self.ctl(&["rmp", "--all", "--force"]);
        }
        self.kill();
        crate::cleanup::kill_pids(&crate::cleanup::shim_pids(&self.socket, None));
        if let Some(net) = &self.network {
            let _ = Command::new("ip")
                .args(["link", "del", &net.bridge])
                .output();
        }
        // whatever a case mounted under our dir
        for m in crate::cleanup::mounts_under(self.dir.path())
            .into_iter()
            .rev()
        {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Files (not directories) under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => out.push(
                    p.strip_prefix(dir)
                        .map(|r| r.display().to_string())
                        .unwrap_or_default(),
                ),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// A case's set-up result: a missing prerequisite skips the case loudly (None), any other
/// set-up failure fails it.
pub fn ready<T>(case: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(HarnessError::Skip(reason)) => {
            crate::skip(&format!("{case} ({reason})"));
            None
        }
        Err(e) => panic!("{case}: set-up failed: {e}"),
    }
}

/// Runs an async block on a small runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}
