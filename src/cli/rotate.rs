//! `tcred rotate NAMESPACE/NAME`: force one rotation (the `tcred.dev/rotate` annotation) and wait
//! for the new credential.

use std::time::Duration;

use jiff::Timestamp;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::wait::await_condition,
};
use serde_json::json;

use super::error::Error;
use crate::{
    api::{
        TemporaryCredential, annotations,
        condition::{find, types},
    },
    time::rfc3339,
};

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The TemporaryCredential, as NAMESPACE/NAME (or NAME with --namespace).
    pub credential: String,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// How long to wait for the new credential.
    #[arg(long, default_value = "2m")]
    pub timeout: kube::core::Duration,
}

pub async fn run(args: RotateArgs) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let (ns, name) = match args.credential.split_once('/') {
        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
        None => (
            args.namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned()),
            args.credential.clone(),
        ),
    };
    let api = Api::<TemporaryCredential>::namespaced(client, &ns);
    let before = api.get(&name).await?;
    let rotations_before = before.status.as_ref().map_or(0, |s| s.rotations);
    let request = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {annotations::ROTATE: request}}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    println!("Requested a rotation of {ns}/{name}; waiting for the new credential...");

    // Watch the object until its status shows this request honoured by a new rotation.
    let honoured = {
        let request = request.clone();
        move |tc: Option<&TemporaryCredential>| {
            tc.and_then(|t| t.status.as_ref()).is_some_and(|s| {
                s.last_rotate_request.as_deref() == Some(request.as_str()) && s.rotations > rotations_before
            })
        }
    };
    let timeout = Duration::from(args.timeout);
    let waited = tokio::time::timeout(timeout, await_condition(api.clone(), &name, honoured)).await;
    match waited {
        Ok(Ok(Some(tc))) => {
            let s = tc.status.unwrap_or_default();
            println!(
                "Rotated {ns}/{name}: access key {}, valid until {}, next renewal at {}.",
                s.access_key_id.as_deref().unwrap_or("-"),
                s.expires_at.map(|t| rfc3339(t.0)).unwrap_or_else(|| "-".into()),
                s.renewal_time.map(|t| rfc3339(t.0)).unwrap_or_else(|| "-".into()),
            );
            Ok(())
        }
        Ok(Ok(None)) => Err(Error::Usage(format!(
            "{ns}/{name} was deleted while waiting for the rotation"
        ))),
        Ok(Err(e)) => Err(Error::Usage(format!("watching {ns}/{name}: {e}"))),
        Err(_) => {
            let s = api.get(&name).await?.status.unwrap_or_default();
            let why = find(&s.conditions, types::READY)
                .map(|c| format!("{} ({}): {}", c.status, c.reason, c.message))
                .unwrap_or_else(|| "no Ready condition yet".into());
            Err(Error::Usage(format!(
                "no new credential within {timeout:?}; Ready is {why}"
            )))
        }
    }
}
