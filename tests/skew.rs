//! Version skew: an older tcred meets a TemporaryCredential written for a newer CRD (here, a
//! restart kind it does not know). The object is reported on its status and in an Event and
//! skipped; every other credential keeps being served.
//!
//! The test widens the shared CRD for a moment, so it lives alone in this test binary (cargo
//! runs test binaries one after another) and restores the CRD whatever happens.

mod support;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, JSON};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    core::{ApiResource, DynamicObject},
};
use serde_json::json;
use support::*;
use tcred::api::{TemporaryCredential, condition::reasons};

/// Applies `crd` and waits until the API server validates with it: a dry-run create naming a
/// `CronJob` restart target is accepted exactly when `cron_jobs` says the schema allows one.
async fn apply_crd(client: &kube::Client, crd: &CustomResourceDefinition, cron_jobs: bool) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let name = crd.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("tcred-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .expect("apply CRD");
    // (untyped: the operator's own type cannot hold the newer kind)
    let probe: DynamicObject = serde_json::from_value(agency_credential(
        "default",
        "schema-probe",
        "corp",
        json!({"rolloutRestartTargets": [{"kind": "CronJob", "name": "web"}]}),
    ))
    .expect("probe");
    let tcs = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::erase::<TemporaryCredential>(&()),
    );
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for(
        Duration::from_secs(30),
        "the API server to serve the applied schema",
        || async { (tcs.create(&dry_run, &probe).await.is_ok() == cron_jobs).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_credential_written_for_a_newer_crd_is_reported_and_skipped() {
    let client = admin().await;
    let current = <TemporaryCredential as kube::CustomResourceExt>::crd();
    let mut newer = current.clone();
    let schema = newer.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    let kind = schema
        .properties
        .as_mut()
        .unwrap()
        .get_mut("spec")
        .unwrap()
        .properties
        .as_mut()
        .unwrap()
        .get_mut("rolloutRestartTargets")
        .unwrap()
        .items
        .as_mut()
        .unwrap();
    let k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(
        item,
    ) = kind
    else {
        panic!("rolloutRestartTargets items")
    };
    item.properties
        .as_mut()
        .unwrap()
        .get_mut("kind")
        .unwrap()
        .enum_
        .as_mut()
        .unwrap()
        .push(JSON(json!("CronJob")));
    apply_crd(&client, &newer, true).await;

    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(with_namespace(
        "version-skew",
        |client, ns| async move {
            let sim = Simulator::start(&default_sim_config()).await;
            access_key_source(&client, &ns, "corp", &sim).await;
            let _op = Operator::start("version-skew", &ns).await;
            apply(
                &client,
                agency_credential(
                    &ns,
                    "future",
                    "corp",
                    json!({"rolloutRestartTargets": [{"kind": "CronJob", "name": "web"}]}),
                ),
            )
            .await;
            apply(&client, agency_credential(&ns, "present", "corp", json!({}))).await;

            wait_ready_reason(&client, &ns, "present", reasons::ISSUED, Duration::from_secs(30)).await;
            let untyped = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                &ns,
                &ApiResource::erase::<TemporaryCredential>(&()),
            );
            let message = wait_for(
                Duration::from_secs(30),
                "the unreadable credential is reported",
                || async {
                    let obj = untyped.get("future").await.ok()?;
                    obj.data["status"]["conditions"]
                        .as_array()?
                        .iter()
                        .find(|c| {
                            c["type"] == "Ready"
                                && c["status"] == "False"
                                && c["reason"] == reasons::INVALID_SPEC
                        })
                        .map(|c| c["message"].as_str().unwrap_or_default().to_owned())
                },
            )
            .await;
            assert!(
                message.contains("cannot be read") && message.contains("CronJob"),
                "{message}"
            );
            wait_event(&client, &ns, "future", reasons::INVALID_SPEC).await;
            assert!(get_secret(&client, &ns, "future").await.is_none());
            assert_eq!(sim.mints_total().await, 1, "only the readable credential minted");
            // Remove it before the CRD narrows again.
            untyped.delete("future", &Default::default()).await.unwrap();
        },
    )))
    .await;
    apply_crd(&client, &current, false).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
