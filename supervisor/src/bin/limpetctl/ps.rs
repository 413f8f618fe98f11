//! `ps`: list containers with crictl's filters and columns.

use std::collections::HashMap;
use std::time::Duration;

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::image_service_client::ImageServiceClient;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{
    Container, ContainerFilter, ContainerState, ContainerStateValue, ImageSpec, ImageStatusRequest,
    ListContainersRequest, ListPodSandboxRequest,
};

use crate::client::call;
use crate::containers::state_word;
use crate::cri_json;
use crate::filters::{self, Pattern};
use crate::output::{self, table, Format};
use crate::times::ago;

type Client = RuntimeServiceClient<Channel>;
type Images = ImageServiceClient<Channel>;

/// The labels kubelet puts on containers; crictl reads the POD and NAMESPACE columns there.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

#[derive(Default)]
pub struct Options {
    pub all: bool,
    pub id: Option<String>,
    pub name: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub image: Option<String>,
    pub state: Option<String>,
    pub labels: Vec<String>,
    pub verbose: bool,
    pub quiet: bool,
    pub output: Option<Format>,
    pub latest: bool,
    pub last: usize,
    pub no_trunc: bool,
}

fn parse_state(s: &str) -> anyhow::Result<ContainerState> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "created" => ContainerState::ContainerCreated,
        "running" => ContainerState::ContainerRunning,
        "exited" => ContainerState::ContainerExited,
        "unknown" => ContainerState::ContainerUnknown,
        _ => anyhow::bail!("--state {s:?}: use created, running, exited or unknown"),
    })
}

/// The filter crictl sends: running only, unless --all, --state, --latest or --last.
fn filter(o: &Options) -> anyhow::Result<ContainerFilter> {
    let mut state = match &o.state {
        Some(s) => Some(parse_state(s)?),
        None if o.all => None,
        None => Some(ContainerState::ContainerRunning),
    };
    if o.latest || o.last > 0 {
        state = None;
    }
    Ok(ContainerFilter {
        id: o.id.clone().unwrap_or_default(),
        state: state.map(|s| ContainerStateValue { state: s as i32 }),
        pod_sandbox_id: o.pod.clone().unwrap_or_default(),
        label_selector: filters::labels(&o.labels)?,
    })
}

/// Pod names and namespaces by pod id, for containers that lack kubelet's labels.
async fn pod_names(client: &Client, t: Duration) -> HashMap<String, (String, String)> {
    let mut c = client.clone();
    let Ok(resp) = call(
        "list pod sandboxes",
        t,
        c.list_pod_sandbox(ListPodSandboxRequest { filter: None }),
    )
    .await
    else {
        return HashMap::new();
    };
    resp.items
        .into_iter()
        .map(|p| {
            let m = p.metadata.unwrap_or_default();
            (p.id, (m.name, m.namespace))
        })
        .collect()
}

async fn image_id(images: &Images, t: Duration, image: &str) -> anyhow::Result<Option<String>> {
    let mut c = images.clone();
    let resp = call(
        &format!("image status {image}"),
        t,
        c.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        }),
    )
    .await?;
    Ok(resp.image.map(|i| i.id))
}

/// The containers `o` selects, newest first.
pub async fn select(
    client: &Client,
    images: &Images,
    t: Duration,
    o: &Options,
) -> anyhow::Result<Vec<Container>> {
    let mut c = client.clone();
    let resp = call(
        "list containers",
        t,
        c.list_containers(ListContainersRequest {
            filter: Some(filter(o)?),
        }),
    )
    .await?;
    let name = Pattern::new(o.name.as_deref());
    let namespace = Pattern::new(o.namespace.as_deref());
    let pods = if o.namespace.is_some() {
        pod_names(client, t).await
    } else {
        HashMap::new()
    };
    // --image matches by image id, as crictl does, so a tag and a digest find the same.
    let wanted_image = match &o.image {
        Some(i) => Some(image_id(images, t, i).await?),
        None => None,
    };
    let mut ids: HashMap<String, Option<String>> = HashMap::new();
    let mut out = Vec::new();
    for c in resp.containers {
        if !c.metadata.as_ref().is_some_and(|m| name.matches(&m.name)) {
            continue;
        }
        if o.namespace.is_some() && !namespace.matches(&pod_of(&c, &pods).1) {
            continue;
        }
        if let Some(wanted) = &wanted_image {
            let Some(wanted) = wanted else {
                continue; // the runtime does not know that image: nothing uses it
            };
            let spec = c
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default();
            let id = match ids.get(&spec) {
                Some(id) => id.clone(),
                None => {
                    let id = image_id(images, t, &spec).await.ok().flatten();
                    ids.insert(spec.clone(), id.clone());
                    id
                }
            };
            if id.as_ref() != Some(wanted) && &c.image_ref != wanted {
                continue;
            }
        }
        out.push(c);
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    out.truncate(filters::keep(out.len(), o.latest, o.last));
    Ok(out)
}

/// (pod name, pod namespace): kubelet's labels, else the pod's metadata, else "unknown".
fn pod_of(c: &Container, pods: &HashMap<String, (String, String)>) -> (String, String) {
    let known = pods.get(&c.pod_sandbox_id);
    let pick = |label: &str, from_pod: Option<&String>| {
        c.labels
            .get(label)
            .or(from_pod)
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    };
    (
        pick(POD_NAME_LABEL, known.map(|p| &p.0)),
        pick(POD_NAMESPACE_LABEL, known.map(|p| &p.1)),
    )
}

pub async fn list(client: &Client, images: &Images, t: Duration, o: Options) -> anyhow::Result<()> {
    let containers = select(client, images, t, &o).await?;
    let format = o.output.unwrap_or(Format::Table);
    if format != Format::Table {
        let items: Vec<_> = containers.iter().map(cri_json::container).collect();
        return output::print(&serde_json::json!({ "containers": items }), format);
    }
    if o.quiet {
        for c in &containers {
            println!("{}", c.id);
        }
        return Ok(());
    }
    let pods = pod_names(client, t).await;
    if o.verbose {
        for c in &containers {
            print!("{}", verbose(c, &pods));
        }
        return Ok(());
    }
    let mut rows = vec![[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
        "NAMESPACE",
    ]
    .map(String::from)
    .to_vec()];
    for c in &containers {
        let m = c.metadata.clone().unwrap_or_default();
        let image = c.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
        let (pod, namespace) = pod_of(c, &pods);
        rows.push(vec![
            filters::short_id(&c.id, o.no_trunc),
            filters::short_image(image, o.no_trunc),
            ago(c.created_at),
            state_word(c.state).into(),
            m.name,
            m.attempt.to_string(),
            filters::short_id(&c.pod_sandbox_id, o.no_trunc),
            pod,
            namespace,
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

fn verbose(c: &Container, pods: &HashMap<String, (String, String)>) -> String {
    let (_, namespace) = pod_of(c, pods);
    let mut s = format!(
        "ID: {}\nPodID: {}\nNamespace: {namespace}\n",
        c.id, c.pod_sandbox_id
    );
    if let Some(m) = &c.metadata {
        s.push_str(&format!("Name: {}\nAttempt: {}\n", m.name, m.attempt));
    }
    s.push_str(&format!("State: {}\n", state_word(c.state)));
    if let Some(i) = &c.image {
        s.push_str(&format!("Image: {}\n", i.image));
    }
    s.push_str(&format!("Created: {}\n", ago(c.created_at)));
    for (title, map) in [("Labels", &c.labels), ("Annotations", &c.annotations)] {
        if !map.is_empty() {
            let mut kv: Vec<_> = map.iter().collect();
            kv.sort();
            s.push_str(&format!("{title}:\n"));
            for (k, v) in kv {
                s.push_str(&format!("\t{k} -> {v}\n"));
            }
        }
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_only_unless_asked() {
        let f = filter(&Options::default()).unwrap();
        assert_eq!(
            f.state.map(|s| s.state),
            Some(ContainerState::ContainerRunning as i32)
        );
        let all = Options {
            all: true,
            ..Default::default()
        };
        assert!(filter(&all).unwrap().state.is_none());
        let latest = Options {
            latest: true,
            state: Some("exited".into()),
            ..Default::default()
        };
        assert!(filter(&latest).unwrap().state.is_none());
        let exited = Options {
            state: Some("Exited".into()),
            ..Default::default()
        };
        assert_eq!(
            filter(&exited).unwrap().state.map(|s| s.state),
            Some(ContainerState::ContainerExited as i32)
        );
        let bad = Options {
            state: Some("sleeping".into()),
            ..Default::default()
        };
        assert!(filter(&bad).is_err());
    }
}
