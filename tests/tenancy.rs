//! Many tenants, one cluster: a ClusterCredentialSource serves only the namespaces it allows
//! (by name or label selector, reacting to label changes without a restart), its limits hold,
//! a namespaced source serves only its own namespace, and RBAC-limited tenant users can neither
//! read another tenant's Secrets nor mint from another tenant's source. Every denial mints
//! nothing.
//!
//! One test with one operator watching all namespaces: cargo runs test binaries one after
//! another, so no other test's operator is running meanwhile.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::*;
use tcred::api::{TemporaryCredential, condition::reasons};

fn cluster_credential(ns: &str, name: &str, source: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut m = agency_credential(ns, name, source, extra);
    m["spec"]["sourceRef"]["kind"] = json!("ClusterCredentialSource");
    m
}

async fn grant(client: &kube::Client, ns: &str, user: &str) {
    apply(
        client,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "tcred-tenant", "namespace": ns},
            "rules": [
                {"apiGroups": ["tcred.dev"], "resources": ["temporarycredentials", "credentialsources"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create"]},
            ],
        }),
    )
    .await;
    apply(
        client,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "tcred-tenant", "namespace": ns},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "Role", "name": "tcred-tenant", "apiGroup": "rbac.authorization.k8s.io"},
        }),
    )
    .await;
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test]
async fn cluster_sources_serve_only_allowed_namespaces_within_limits_and_tenants_stay_apart() {
    let admin = admin().await;
    let suffix = rand::random::<u32>() % 100_000;
    let system = create_namespace(&admin, "tenancy-system", &[]).await;
    let by_name = create_namespace(&admin, "tenancy-by-name", &[]).await;
    let by_label = create_namespace(&admin, "tenancy-by-label", &[("tcred.dev/tenant", "true")]).await;
    let outsider = create_namespace(&admin, "tenancy-outsider", &[]).await;
    let all = [
        system.clone(),
        by_name.clone(),
        by_label.clone(),
        outsider.clone(),
    ];
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
        let sim = Simulator::start(&default_sim_config()).await;
        let source = format!("corp-{suffix}");
        create_labelled_secret(
            &admin,
            &system,
            "corp-ak",
            &bound_to("ClusterCredentialSource", &source),
            &[("accessKeyId", CI_BOT_AK), ("secretAccessKey", CI_BOT_SK)],
        )
        .await;
        apply(
            &admin,
            json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "ClusterCredentialSource",
                "metadata": {"name": source},
                "spec": {
                    "accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "corp-ak", "namespace": system}},
                    "endpoints": {"sts": sim.url},
                    "allowedNamespaces": {"names": [by_name], "selector": {"matchLabels": {"tcred.dev/tenant": "true"}}},
                    "limits": {"maxDuration": "2h", "allowedAccounts": [ACCOUNT], "allowedAgencies": [AGENCY]},
                },
            }),
        )
        .await;
        let _op = Operator::start_with(
            "tenancy",
            OperatorOptions { namespace: None, lease_namespace: Some(&system), ..Default::default() },
        )
        .await;

        // Allowed by name and by label.
        apply(&admin, cluster_credential(&by_name, "app", &source, json!({}))).await;
        apply(&admin, cluster_credential(&by_label, "app", &source, json!({}))).await;
        wait_ready_reason(&admin, &by_name, "app", reasons::ISSUED, Duration::from_secs(30)).await;
        wait_ready_reason(&admin, &by_label, "app", reasons::ISSUED, Duration::from_secs(30)).await;

        // Through a cluster source the session name always starts with the namespace: a tenant
        // cannot pose as another in Huawei's audit logs.
        let posing_as = format!("{by_name}-app");
        apply(&admin, cluster_credential(&by_label, "posing", &source, json!({"sessionName": posing_as}))).await;
        wait_ready_reason(&admin, &by_label, "posing", reasons::ISSUED, Duration::from_secs(30)).await;
        let secret = get_secret(&admin, &by_label, "posing").await.expect("Secret");
        let key = tcred::cloud::signer::AccessKey {
            id: secret_text(&secret, "HUAWEICLOUD_SDK_AK"),
            secret: secret_text(&secret, "HUAWEICLOUD_SDK_SK").into(),
            security_token: Some(secret_text(&secret, "HUAWEICLOUD_SDK_SECURITY_TOKEN").into()),
        };
        let http = tcred::cloud::HttpClient::new(Default::default()).unwrap();
        let sts = tcred::cloud::endpoints::parse_endpoint(&sim.url).unwrap();
        let who = tcred::cloud::sts::caller_identity(&http, &sts, &key).await.expect("the credential works");
        let expected: String = format!("{by_label}-{posing_as}").chars().take(64).collect();
        assert!(who.principal_urn.ends_with(&format!("/{expected}")), "{} (key {})", who.principal_urn, key.id);

        // Not allowed.
        apply(&admin, cluster_credential(&outsider, "app", &source, json!({}))).await;
        wait_ready_reason(&admin, &outsider, "app", reasons::DENIED, Duration::from_secs(30)).await;
        let msg = ready_message(&get_tc(&admin, &outsider, "app").await);
        assert!(msg.contains(&format!("namespace {outsider} is not allowed")), "{msg}");

        // Limits: too long, another agency, another account.
        apply(&admin, cluster_credential(&by_name, "too-long", &source, json!({"duration": "4h"}))).await;
        apply(&admin, cluster_credential(&by_name, "other-agency", &source, json!({"agencyUrn": agency_urn("readonly")}))).await;
        apply(
            &admin,
            cluster_credential(&by_name, "other-account", &source, json!({"agencyUrn": "iam::fedcba9876543210fedcba9876543210:agency:ops"})),
        )
        .await;
        for (name, needle) in [
            ("too-long", "duration 14400s exceeds the 7200s"),
            ("other-agency", "agency readonly is not allowed"),
            ("other-account", "account fedcba9876543210fedcba9876543210 is not allowed"),
        ] {
            wait_ready_reason(&admin, &by_name, name, reasons::DENIED, Duration::from_secs(30)).await;
            let msg = ready_message(&get_tc(&admin, &by_name, name).await);
            assert!(msg.contains(needle), "{name}: {msg}");
        }

        // Namespace label changes take effect without a restart, both ways.
        let namespaces = Api::<Namespace>::all(admin.clone());
        let label = |v: Option<&str>| json!({"metadata": {"labels": {"tcred.dev/tenant": v}}});
        namespaces.patch(&outsider, &PatchParams::default(), &Patch::Merge(&label(Some("true")))).await.unwrap();
        wait_ready_reason(&admin, &outsider, "app", reasons::ISSUED, Duration::from_secs(30)).await;
        namespaces.patch(&by_label, &PatchParams::default(), &Patch::Merge(&label(None))).await.unwrap();
        wait_ready_reason(&admin, &by_label, "app", reasons::DENIED, Duration::from_secs(30)).await;
        // The credential already minted stays until its own expiry; nothing new is minted.
        assert!(get_secret(&admin, &by_label, "app").await.is_some());
        let msg = ready_message(&get_tc(&admin, &by_label, "app").await);
        assert!(msg.contains("keeps the current credential"), "{msg}");

        // A namespaced source serves only its own namespace: a reference resolves in the
        // credential's namespace, so another tenant's source is simply not found.
        access_key_source(&admin, &by_label, "team-b-only", &sim).await;
        apply(&admin, agency_credential(&by_name, "borrowed", "team-b-only", json!({}))).await;
        wait_ready_reason(&admin, &by_name, "borrowed", reasons::SOURCE_NOT_FOUND, Duration::from_secs(30)).await;
        // ... and it may not point at another namespace's Secret (refused by the schema).
        let (ok, out) = kubectl_with_input(
            &["apply", "-f", "-"],
            &json!({
                "apiVersion": "tcred.dev/v1alpha1", "kind": "CredentialSource",
                "metadata": {"name": "sneaky", "namespace": by_name},
                "spec": {"accessKey": {"region": "ap-southeast-1", "secretRef": {"name": "corp-ak", "namespace": system}}},
            })
            .to_string(),
        );
        assert!(!ok && out.contains("may only reference Secrets in its own namespace"), "{out}");

        // Every denial minted nothing: one mint per Issued credential, none for `readonly`.
        assert_eq!(sim.mints(&agency_urn("readonly")).await, 0);
        assert_eq!(sim.mints_total().await, 4, "by-name, by-label (app and posing) and the relabelled outsider");

        // RBAC-limited tenants: tenant-a owns by_name, tenant-b owns by_label.
        grant(&admin, &by_name, "tenant-a").await;
        grant(&admin, &by_label, "tenant-b").await;
        let tenant_a = tenant("tenant-a").await;
        Api::<Secret>::namespaced(tenant_a.clone(), &by_name).list(&Default::default()).await.expect("own Secrets");
        assert!(forbidden(Api::<Secret>::namespaced(tenant_a.clone(), &by_label).list(&Default::default()).await));
        assert!(forbidden(Api::<Secret>::namespaced(tenant_a.clone(), &by_label).get("app").await));
        // tenant-a cannot create a credential in tenant-b's namespace (where the source is) ...
        let in_b: TemporaryCredential =
            serde_json::from_value(agency_credential(&by_label, "stolen", "team-b-only", json!({}))).unwrap();
        assert!(forbidden(
            Api::<TemporaryCredential>::namespaced(tenant_a.clone(), &by_label).create(&PostParams::default(), &in_b).await
        ));
        // ... and one in its own namespace naming tenant-b's source mints nothing.
        let in_a: TemporaryCredential =
            serde_json::from_value(agency_credential(&by_name, "stolen", "team-b-only", json!({}))).unwrap();
        Api::<TemporaryCredential>::namespaced(tenant_a.clone(), &by_name)
            .create(&PostParams::default(), &in_a)
            .await
            .expect("tenant-a may create credentials in its own namespace");
        wait_ready_reason(&admin, &by_name, "stolen", reasons::SOURCE_NOT_FOUND, Duration::from_secs(30)).await;
        assert!(get_secret(&admin, &by_name, "stolen").await.is_none());
        assert_eq!(sim.mints_total().await, 4, "nothing minted for tenant-a from tenant-b's source");
        // Cluster sources are cluster-admin business.
        assert!(forbidden(Api::<tcred::api::ClusterCredentialSource>::all(tenant_a).list(&Default::default()).await));
        let _ = Api::<tcred::api::ClusterCredentialSource>::all(admin.clone()).delete(&source, &Default::default()).await;
    }))
    .await;
    for ns in &all {
        delete_namespace(&admin, ns).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
