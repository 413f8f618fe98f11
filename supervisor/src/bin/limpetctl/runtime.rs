//! Runtime commands: version, info.

use std::time::Duration;

use limpet_protos::cri::tonic::transport::Channel;
use limpet_protos::cri::v1::runtime_service_client::RuntimeServiceClient;
use limpet_protos::cri::v1::{StatusRequest, VersionRequest};

use crate::client::call;
use crate::output::{self, Format};

type Client = RuntimeServiceClient<Channel>;

pub async fn version(client: &Client, t: Duration) -> anyhow::Result<()> {
    let mut c = client.clone();
    let v = call(
        "version",
        t,
        c.version(VersionRequest {
            version: "v1".into(),
        }),
    )
    .await?;
    println!("Version:  {}", v.version);
    println!("RuntimeName:  {}", v.runtime_name);
    println!("RuntimeVersion:  {}", v.runtime_version);
    println!("RuntimeApiVersion:  {}", v.runtime_api_version);
    Ok(())
}

pub async fn info(client: &Client, t: Duration, format: Format) -> anyhow::Result<()> {
    let mut c = client.clone();
    let s = call("status", t, c.status(StatusRequest { verbose: true })).await?;
    let mut doc = serde_json::Map::new();
    doc.insert("status".into(), output::to_value(&s.status));
    let mut keys: Vec<_> = s.info.keys().cloned().collect();
    keys.sort();
    for k in keys {
        let v = &s.info[&k];
        doc.insert(
            k,
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone())),
        );
    }
    output::print(
        &serde_json::Value::Object(doc),
        if format == Format::Table {
            Format::Json
        } else {
            format
        },
    )
}
