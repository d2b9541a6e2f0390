//! The ValidatingAdmissionPolicy the chart installs refuses at admission exactly the
//! TemporaryCredentials the controller denies for a ClusterCredentialSource's allowedNamespaces
//! and limits: every case of a matrix (namespaces allowed by name, by selector, or not at all ×
//! durations, accounts, agencies and permission sets) is decided by the real API server and by the
//! controller's own `authorize`, and the two agree. Later edits are checked only when the spec
//! changes.
//!
//! The policy is applied from the chart's file (under this run's name) with a binding scoped to
//! this test's namespaces and sources, so no other test's credentials are affected.

mod support;

use std::{collections::BTreeMap, panic::AssertUnwindSafe, time::Duration};

use futures::FutureExt;
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    core::v1::Namespace,
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::*;
use tcred::{
    api::{
        ClusterCredentialSource, SourceKind, TemporaryCredential, TemporaryCredentialSpec, condition::reasons,
    },
    controller::authorize::{Request, authorize},
};

const POLICY_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/tcred/files/admission/cluster-source-policy.yaml"
);
const TEST_LABEL: &str = "tcred.dev/test";

/// The ValidatingAdmissionPolicy document of the chart's file, as shipped.
fn shipped_policy() -> Value {
    let text = std::fs::read_to_string(POLICY_FILE).expect("read the policy file");
    serde_saphyr::from_multiple::<Value>(&text)
        .expect("yaml")
        .into_iter()
        .find(|v| v["kind"] == "ValidatingAdmissionPolicy")
        .expect("a ValidatingAdmissionPolicy in the file")
}

/// The outcome the API server gives a (dry-run) create: `Ok` or the refusal message.
async fn admit(client: &Client, ns: &str, spec: &Value) -> Result<(), String> {
    let tc: TemporaryCredential = serde_json::from_value(json!({
        "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
        "metadata": {"name": "probe", "namespace": ns}, "spec": spec,
    }))
    .expect("a TemporaryCredential");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match Api::<TemporaryCredential>::namespaced(client.clone(), ns)
        .create(&pp, &tc)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 403 => Err(s.message),
        Err(e) => panic!("unexpected error for {spec}: {e}"),
    }
}

/// The controller's decision for the same request: `Err` when it denies by policy.
fn decide(
    ns: &str,
    labels: &BTreeMap<String, String>,
    spec: &Value,
    source: &ClusterCredentialSource,
) -> Result<(), String> {
    let spec: TemporaryCredentialSpec = serde_json::from_value(spec.clone()).expect("spec");
    let name = source.metadata.name.clone().unwrap_or_default();
    match authorize(Request {
        namespace: ns,
        namespace_labels: Some(labels),
        spec: &spec,
        source_kind: SourceKind::ClusterCredentialSource,
        source_name: &name,
        source: source.spec.view(),
    }) {
        Ok(_) => Ok(()),
        Err(p) if p.reason == reasons::DENIED => Err(p.message),
        Err(p) => panic!("not a policy decision for {spec:?}: {} {}", p.reason, p.message),
    }
}

#[tokio::test]
async fn admission_refuses_exactly_what_the_controller_denies() {
    let client = admin().await;
    let run = create_namespace(&client, "admission-run", &[]).await;
    let scope = [(TEST_LABEL, run.as_str())];
    let named = create_namespace(&client, "admission-named", &scope).await;
    let selected = create_namespace(
        &client,
        "admission-selected",
        &[scope[0], ("tcred.dev/tenant", "yes")],
    )
    .await;
    let other = create_namespace(&client, "admission-other", &scope).await;
    let (sts, ic) = (format!("{run}-sts"), format!("{run}-ic"));
    let binding = format!("{run}-binding");
    let policy_name = format!("{run}-policy");

    let outcome = AssertUnwindSafe(async {
        let mut policy = shipped_policy();
        policy["metadata"]["name"] = json!(policy_name);
        apply(&client, policy).await;
        apply(
            &client,
            json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": binding},
                "spec": {
                    "policyName": policy_name,
                    "validationActions": ["Deny"],
                    "paramRef": {"selector": {"matchLabels": {TEST_LABEL: run}}, "parameterNotFoundAction": "Allow"},
                    "matchResources": {"namespaceSelector": {"matchLabels": {TEST_LABEL: run}}},
                },
            }),
        )
        .await;
        let guard = json!({
            "allowedNamespaces": {
                "names": [named],
                "selector": {"matchExpressions": [{"key": "tcred.dev/tenant", "operator": "In", "values": ["yes"]}]},
            },
            "limits": {
                "maxDuration": "2h",
                "allowedAccounts": [ACCOUNT],
                "allowedAgencies": [AGENCY],
                "allowedPermissionSets": ["ReadOnlyAccess"],
            },
        });
        let mut sources = BTreeMap::new();
        for (name, mode) in [
            (&sts, json!({"accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "corp-ak", "namespace": run}}})),
            (&ic, json!({"identityCenter": {"region": "ap-southeast-1", "sessionSecretRef": {"name": "corp-session", "namespace": run}}})),
        ] {
            let mut spec = guard.clone();
            spec.as_object_mut().unwrap().extend(mode.as_object().unwrap().clone());
            let manifest = json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "ClusterCredentialSource",
                "metadata": {"name": name, "labels": {TEST_LABEL: run}}, "spec": spec,
            });
            apply(&client, manifest.clone()).await;
            sources.insert(name.clone(), serde_json::from_value::<ClusterCredentialSource>(manifest).unwrap());
        }

        let via = |source: &str| json!({"kind": "ClusterCredentialSource", "name": source});
        let agency = |account: &str, name: &str, duration: &str| {
            json!({"sourceRef": via(&sts), "agencyUrn": format!("iam::{account}:agency:{name}"), "duration": duration})
        };
        let permission_set =
            |account: &str, name: &str| json!({"sourceRef": via(&ic), "permissionSet": {"accountId": account, "name": name}});
        let variants = [
            agency(ACCOUNT, AGENCY, "1h"),
            agency(ACCOUNT, AGENCY, "2h"),
            agency(ACCOUNT, AGENCY, "3h"),
            agency("fedcba9876543210fedcba9876543210", AGENCY, "1h"),
            agency(ACCOUNT, "admin", "1h"),
            permission_set(ACCOUNT, "ReadOnlyAccess"),
            permission_set(ACCOUNT, "AdministratorAccess"),
            permission_set("999999", "ReadOnlyAccess"),
        ];

        // the API server loads a new policy and binding within a moment
        wait_for(Duration::from_secs(30), "the policy to take effect", || async {
            admit(&client, &other, &variants[0]).await.err()
        })
        .await;

        let labels_of = |ns: &str| {
            let client = client.clone();
            let ns = ns.to_owned();
            async move {
                Api::<Namespace>::all(client)
                    .get(&ns)
                    .await
                    .unwrap()
                    .metadata
                    .labels
                    .unwrap_or_default()
            }
        };
        let (mut allowed, mut refused) = (0, 0);
        for ns in [&named, &selected, &other] {
            let labels = labels_of(ns).await;
            for spec in &variants {
                let source = &sources[spec["sourceRef"]["name"].as_str().unwrap()];
                let controller = decide(ns, &labels, spec, source);
                let admission = admit(&client, ns, spec).await;
                assert_eq!(
                    controller.is_ok(),
                    admission.is_ok(),
                    "in {ns}, {spec}: the controller says {controller:?}, admission says {admission:?}"
                );
                match admission {
                    Ok(()) => allowed += 1,
                    Err(message) => {
                        refused += 1;
                        assert!(message.contains("is not allowed") || message.contains("exceeds"), "{message}");
                    }
                }
            }
        }
        // named and selected allow 1h, 2h and the allowed permission set; other allows nothing
        assert_eq!((allowed, refused), (6, 18));
        let (ok, output) = kubectl_with_input(
            &["apply", "-f", "-"],
            &json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
                "metadata": {"name": "probe", "namespace": other}, "spec": variants[0],
            })
            .to_string(),
        );
        assert!(!ok);
        assert!(
            output.contains(&format!("namespace {other} is not allowed to use ClusterCredentialSource {sts}")),
            "{output}"
        );

        // A credential whose namespace loses access later: metadata edits still pass (the
        // controller reports the denial), spec edits are refused.
        let api = Api::<TemporaryCredential>::namespaced(client.clone(), &selected);
        apply(
            &client,
            json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "TemporaryCredential",
                "metadata": {"name": "billing", "namespace": selected}, "spec": variants[0],
            }),
        )
        .await;
        let unlabel = json!({"metadata": {"labels": {"tcred.dev/tenant": null}}});
        Api::<Namespace>::all(client.clone())
            .patch(&selected, &PatchParams::default(), &Patch::Merge(&unlabel))
            .await
            .unwrap();
        let annotate = json!({"metadata": {"annotations": {"example.com/owner": "billing-team"}}});
        // (the API server sees the namespace's new labels a moment later; each try edits anew)
        let tries = std::sync::atomic::AtomicU32::new(0);
        wait_for(Duration::from_secs(30), "a spec edit refused", || async {
            let minutes = 61 + tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let edit = json!({"spec": {"duration": format!("{minutes}m")}});
            api.patch("billing", &PatchParams::default(), &Patch::Merge(&edit))
                .await
                .err()
        })
        .await;
        api.patch("billing", &PatchParams::default(), &Patch::Merge(&annotate))
            .await
            .expect("a metadata edit passes");
    })
    .catch_unwind()
    .await;

    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(&binding, &DeleteParams::default())
        .await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(&policy_name, &DeleteParams::default())
        .await;
    for name in [&sts, &ic] {
        let _ = Api::<ClusterCredentialSource>::all(client.clone())
            .delete(name, &DeleteParams::default())
            .await;
    }
    for ns in [&run, &named, &selected, &other] {
        delete_namespace(&client, ns).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
