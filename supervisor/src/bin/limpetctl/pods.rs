//! Pod commands: runp, pods, stopp, rmp, inspectp.

use std::path::Path;
use std::time::Duration;

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    ListPodSandboxRequest, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxState,
    PodSandboxStateValue, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StopPodSandboxRequest,
};

use crate::client::{call, call_unbounded};
use crate::config_file;
use crate::cri_json;
use crate::filters::{self, Pattern};
use crate::output::{self, table, Format};
use crate::times::{ago, rfc3339};

type Client = RuntimeServiceClient<Channel>;

/// Reads a pod config file, printing its warnings.
pub fn load_config(path: &Path) -> anyhow::Result<PodSandboxConfig> {
    let loaded = config_file::load_pod(path)?;
    for w in &loaded.warnings {
        eprintln!("limpetctl: warning: {}: {w}", path.display());
    }
    Ok(loaded.config)
}

/// RunPodSandbox; returns the pod id.
pub async fn run(
    client: &Client,
    config: PodSandboxConfig,
    handler: &str,
) -> anyhow::Result<String> {
    let mut c = client.clone();
    let resp = call_unbounded(
        "run pod sandbox",
        c.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.to_string(),
        }),
    )
    .await?;
    Ok(resp.pod_sandbox_id)
}

pub async fn stop(client: &Client, id: &str) -> anyhow::Result<()> {
    let mut c = client.clone();
    call_unbounded(
        &format!("stop pod sandbox {id}"),
        c.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        }),
    )
    .await?;
    println!("Stopped sandbox {id}");
    Ok(())
}

pub struct ListOptions {
    pub id: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub state: Option<String>,
    pub labels: Vec<String>,
    pub verbose: bool,
    pub quiet: bool,
    pub output: Format,
    pub latest: bool,
    pub last: usize,
    pub no_trunc: bool,
}

/// ListPodSandbox with the runtime's filters, then name/namespace patterns, newest first.
pub async fn select(
    client: &Client,
    t: Duration,
    o: &ListOptions,
) -> anyhow::Result<Vec<PodSandbox>> {
    let state = match o.state.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("ready") => Some(PodSandboxState::SandboxReady),
        Some("notready") => Some(PodSandboxState::SandboxNotready),
        Some(s) => anyhow::bail!("--state {s:?}: use ready or notready"),
    };
    let filter = PodSandboxFilter {
        id: o.id.clone().unwrap_or_default(),
        state: state.map(|s| PodSandboxStateValue { state: s as i32 }),
        label_selector: filters::labels(&o.labels)?,
    };
    let mut c = client.clone();
    let resp = call(
        "list pod sandboxes",
        t,
        c.list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(filter),
        }),
    )
    .await?;
    let name = Pattern::new(o.name.as_deref());
    let namespace = Pattern::new(o.namespace.as_deref());
    let mut pods: Vec<PodSandbox> = resp
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .as_ref()
                .is_some_and(|m| name.matches(&m.name) && namespace.matches(&m.namespace))
        })
        .collect();
    pods.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    pods.truncate(filters::keep(pods.len(), o.latest, o.last));
    Ok(pods)
}

fn state_word(state: i32) -> &'static str {
    match PodSandboxState::try_from(state) {
        Ok(PodSandboxState::SandboxReady) => "Ready",
        Ok(PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

fn handler(p: &PodSandbox) -> &str {
    if p.runtime_handler.is_empty() {
        "(default)"
    } else {
        &p.runtime_handler
    }
}

fn sorted(map: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort();
    v
}

fn verbose(p: &PodSandbox) -> String {
    let mut s = format!("ID: {}\n", p.id);
    if let Some(m) = &p.metadata {
        for (k, v) in [
            ("Name", &m.name),
            ("UID", &m.uid),
            ("Namespace", &m.namespace),
        ] {
            if !v.is_empty() {
                s.push_str(&format!("{k}: {v}\n"));
            }
        }
        if m.attempt != 0 {
            s.push_str(&format!("Attempt: {}\n", m.attempt));
        }
    }
    s.push_str(&format!("Status: {}\n", state_word(p.state)));
    s.push_str(&format!("Created: {}\n", rfc3339(p.created_at)));
    for (title, map) in [("Labels", &p.labels), ("Annotations", &p.annotations)] {
        if !map.is_empty() {
            s.push_str(&format!("{title}:\n"));
            for (k, v) in sorted(map) {
                s.push_str(&format!("\t{k} -> {v}\n"));
            }
        }
    }
    s.push_str(&format!("Runtime: {}\n\n", handler(p)));
    s
}

pub async fn list(client: &Client, t: Duration, o: ListOptions) -> anyhow::Result<()> {
    let pods = select(client, t, &o).await?;
    if o.output != Format::Table {
        let items: Vec<_> = pods.iter().map(cri_json::pod).collect();
        return output::print(&serde_json::json!({ "items": items }), o.output);
    }
    if o.quiet {
        for p in &pods {
            println!("{}", p.id);
        }
        return Ok(());
    }
    if o.verbose {
        for p in &pods {
            print!("{}", verbose(p));
        }
        return Ok(());
    }
    let mut rows = vec![[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]
    .map(String::from)
    .to_vec()];
    for p in &pods {
        let m = p.metadata.clone().unwrap_or_default();
        rows.push(vec![
            filters::short_id(&p.id, o.no_trunc),
            ago(p.created_at),
            state_word(p.state).into(),
            m.name,
            m.namespace,
            m.attempt.to_string(),
            handler(p).into(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// `rmp`: ids, or every pod with `all`; a ready pod is refused unless `force` stops it first.
pub async fn remove(
    client: &Client,
    t: Duration,
    ids: &[String],
    all: bool,
    force: bool,
) -> anyhow::Result<()> {
    let mut targets = ids.to_vec();
    if all {
        let mut c = client.clone();
        let resp = call(
            "list pod sandboxes",
            t,
            c.list_pod_sandbox(ListPodSandboxRequest { filter: None }),
        )
        .await?;
        targets = resp.items.into_iter().map(|p| p.id).collect();
        if targets.is_empty() {
            eprintln!("No pods to remove");
            return Ok(());
        }
    } else if targets.is_empty() {
        anyhow::bail!("name at least one pod id, or use --all");
    }
    let mut failed = Vec::new();
    for id in &targets {
        if let Err(e) = remove_one(client, t, id, force).await {
            eprintln!("limpetctl: {e:#}");
            failed.push(id.clone());
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("could not remove pod(s): {}", failed.join(", "));
    }
    Ok(())
}

async fn remove_one(client: &Client, t: Duration, id: &str, force: bool) -> anyhow::Result<()> {
    let mut c = client.clone();
    let status = call(
        &format!("status of pod {id}"),
        t,
        c.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        }),
    )
    .await?;
    let ready = status
        .status
        .is_some_and(|s| s.state == PodSandboxState::SandboxReady as i32);
    if ready {
        if !force {
            anyhow::bail!("pod sandbox {id} is running: stop it first, or use --force");
        }
        stop(client, id).await?;
    }
    call_unbounded(
        &format!("remove pod sandbox {id}"),
        c.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        }),
    )
    .await?;
    println!("Removed sandbox {id}");
    Ok(())
}

pub async fn inspect(
    client: &Client,
    t: Duration,
    ids: &[String],
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let mut docs = Vec::new();
    for id in ids {
        let mut c = client.clone();
        let resp = call(
            &format!("status of pod {id}"),
            t,
            c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose,
            }),
        )
        .await?;
        let Some(status) = resp.status else {
            anyhow::bail!("pod {id}: the runtime returned no status");
        };
        if format == Format::Table {
            print!("{}", status_table(&status, verbose.then_some(&resp.info)));
            continue;
        }
        docs.push(cri_json::with_info(
            cri_json::pod_status(&status),
            &resp.info,
        ));
    }
    if docs.is_empty() {
        return Ok(());
    }
    cri_json::print_statuses(docs, format)
}

fn status_table(
    s: &limpet_protos::cri::v1::PodSandboxStatus,
    info: Option<&std::collections::HashMap<String, String>>,
) -> String {
    let mut out = format!("ID: {}\n", s.id);
    if let Some(m) = &s.metadata {
        for (k, v) in [
            ("Name", &m.name),
            ("UID", &m.uid),
            ("Namespace", &m.namespace),
        ] {
            if !v.is_empty() {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        out.push_str(&format!("Attempt: {}\n", m.attempt));
    }
    out.push_str(&format!("Status: {}\n", state_word(s.state)));
    out.push_str(&format!("Created: {}\n", rfc3339(s.created_at)));
    if let Some(n) = &s.network {
        out.push_str(&format!("IP Addresses: {}\n", n.ip));
        for ip in &n.additional_ips {
            out.push_str(&format!("Additional IP: {}\n", ip.ip));
        }
    }
    for (title, map) in [("Labels", &s.labels), ("Annotations", &s.annotations)] {
        if !map.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for (k, v) in sorted(map) {
                out.push_str(&format!("\t{k} -> {v}\n"));
            }
        }
    }
    if let Some(info) = info {
        for (k, v) in sorted(info) {
            out.push_str(&format!("Info[{k}]: {v}\n"));
        }
    }
    out
}
