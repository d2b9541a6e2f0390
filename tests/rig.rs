//! The test rig itself: a real apiserver that enforces RBAC for the tenant users, and a
//! simulator that enforces Huawei's signature rules.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::ListParams};
use serde_json::json;
use support::*;
use tcred::cloud::{
    ErrorClass, HttpClient,
    endpoints::parse_endpoint,
    signer::AccessKey,
    sts::{self, AssumeRequest},
};

#[tokio::test]
async fn rbac_is_enforced_tenant_a_reads_its_secrets_and_is_forbidden_in_tenant_b() {
    let admin = admin().await;
    let ns_a = create_namespace(&admin, "rig-tenant-a", &[]).await;
    let ns_b = create_namespace(&admin, "rig-tenant-b", &[]).await;
    create_secret(&admin, &ns_a, "a-secret", &[("k", "v")]).await;
    create_secret(&admin, &ns_b, "b-secret", &[("k", "v")]).await;
    for (ns, user) in [(&ns_a, "tenant-a"), (&ns_b, "tenant-b")] {
        apply(
            &admin,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "secret-reader", "namespace": ns},
                   "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]}),
        )
        .await;
        apply(
            &admin,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": "secret-reader", "namespace": ns},
                   "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
                   "roleRef": {"kind": "Role", "name": "secret-reader", "apiGroup": "rbac.authorization.k8s.io"}}),
        )
        .await;
    }
    let tenant_a = tenant("tenant-a").await;
    // RBAC bindings take a moment to reach the authorizer's cache.
    let own = wait_for(
        std::time::Duration::from_secs(10),
        "tenant-a can list its Secrets",
        || async {
            Api::<Secret>::namespaced(tenant_a.clone(), &ns_a)
                .list(&ListParams::default())
                .await
                .ok()
        },
    )
    .await;
    assert!(
        own.items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("a-secret"))
    );
    for denied in [
        Api::<Secret>::namespaced(tenant_a.clone(), &ns_b)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        Api::<Secret>::all(tenant_a.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ()),
    ] {
        match denied {
            Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden")),
            other => panic!("expected 403, got {other:?}"),
        }
    }
    delete_namespace(&admin, &ns_a).await;
    delete_namespace(&admin, &ns_b).await;
}

#[tokio::test]
async fn the_simulator_rejects_unknown_keys_and_bad_signatures_and_enforces_durations() {
    let sim = Simulator::start(&default_sim_config()).await;
    let http = HttpClient::new(Default::default()).unwrap();
    let sts_url = parse_endpoint(&sim.url).unwrap();
    let good = AccessKey {
        id: CI_BOT_AK.into(),
        secret: CI_BOT_SK.into(),
        security_token: None,
    };
    let urn = agency_urn(AGENCY);
    let assume = |key: AccessKey, duration: Option<u32>| {
        let (http, sts_url, urn) = (http.clone(), sts_url.clone(), urn.clone());
        async move {
            let r = AssumeRequest {
                agency_urn: &urn,
                session_name: "rig",
                duration_seconds: duration,
                policy: None,
                audit: &Default::default(),
            };
            sts::assume_agency(&http, &sts_url, &key, &r).await
        }
    };
    let c = assume(good.clone(), Some(900))
        .await
        .expect("a valid request is accepted");
    assert!(c.expires_at > jiff::Timestamp::now());

    let e = assume(
        AccessKey {
            id: "HPUAUNKNOWN000000000".into(),
            ..good.clone()
        },
        None,
    )
    .await
    .unwrap_err();
    assert_eq!((e.status(), e.class()), (Some(401), ErrorClass::Auth));
    let e = assume(
        AccessKey {
            secret: "WrongSecretKey0123456789abcdefghijABCDEF".into(),
            ..good.clone()
        },
        None,
    )
    .await
    .unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(401), Some("APIGW.0301")));
    let e = assume(good.clone(), Some(899)).await.unwrap_err();
    assert_eq!((e.status(), e.class()), (Some(400), ErrorClass::InvalidRequest));
    let e = assume(good, Some(43_201)).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
}
