//! Sharding (docs/sharding.md): three controller processes with different label selectors — shards
//! `a` and `b` and the default shard, which serves what neither selects — each with its own Lease.
//! Each mints only its own credentials and no credential is minted twice (counted per credential
//! in the simulator, which gives every credential its own agency, and per process in its metrics);
//! only the default shard writes source status; a relabelled credential moves to its new shard
//! with no mint; and a tenant flipping its own credential's shard label back and forth neither
//! causes mints nor starves a victim namespace.
//!
//! The operators watch every namespace: cargo runs test binaries one after another, so no other
//! test's operator runs meanwhile.

mod support;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};
use support::*;
use tcred::{
    api::TemporaryCredential,
    shard::{DRAIN_LABEL_PREFIX, RING_LEASE_LABEL, SHARD_LABEL, SHARDER_LABEL_PREFIX},
};

const LEASE_ID: &str = "tcred-shard-test";

/// Victim credentials by shard (`None`: the default shard), and the tenant's two.
const VICTIMS: [(&str, Option<&str>); 6] = [
    ("v-a-0", Some("a")),
    ("v-a-1", Some("a")),
    ("v-b-0", Some("b")),
    ("v-b-1", Some("b")),
    ("v-d-0", None),
    ("v-d-1", None),
];
const MOVED: &str = "t-moved";
/// Assigned by a (simulated) dynamic sharder to shard `ring-0` of ring `tcred-test`, then drained.
const RINGED: &str = "v-ring";
const RING: &str = "tcred-test";
const FLIPPED: &str = "t-flipped";
/// Created in the victim namespace while the tenant flips its label.
const LATE: [(&str, Option<&str>); 2] = [("v-late-a", Some("a")), ("v-late-d", None)];

/// Every credential mints through an agency of its own, so the simulator counts mints per object.
fn agency_of(name: &str) -> String {
    format!("shard-{name}")
}

fn sim_config() -> Value {
    let mut world = default_sim_config();
    let names = VICTIMS
        .iter()
        .chain(LATE.iter())
        .map(|(n, _)| *n)
        .chain([MOVED, FLIPPED, RINGED]);
    let agencies = world["accounts"][0]["agencies"]
        .as_array_mut()
        .expect("fixture agencies");
    for name in names {
        agencies
            .push(json!({"name": agency_of(name), "maxSessionSeconds": 43200, "trustedUsers": ["ci-bot"]}));
    }
    world
}

fn credential(ns: &str, name: &str, shard: Option<&str>) -> Value {
    let mut tc = agency_credential(
        ns,
        name,
        "src",
        json!({"agencyUrn": agency_urn(&agency_of(name))}),
    );
    if let Some(s) = shard {
        tc["metadata"]["labels"] = json!({SHARD_LABEL: s});
    }
    tc
}

/// A shard's controller process: `shard` and `selector`, serving sources or not.
async fn shard_operator(lease_ns: &str, shard: &str, selector: &str, serve_sources: bool) -> Operator {
    let identity = format!("shard-{shard}");
    Operator::start_with(
        "shard",
        OperatorOptions {
            leader_elect: true,
            lease_namespace: Some(lease_ns),
            identity: &identity,
            extra: vec![
                format!("--leader-election-id={LEASE_ID}"),
                format!("--shard={shard}"),
                format!("--shard-selector={selector}"),
                format!("--serve-sources={serve_sources}"),
            ],
            ..Default::default()
        },
    )
    .await
}

/// Successful mints this process counted for the source of namespace `ns`.
async fn mints_by(op: &Operator, ns: &str) -> u64 {
    let line = format!("tcred_mint_total{{source=\"{ns}/src\",result=\"success\"}}");
    sample(&op.metrics().await, &line).unwrap_or(0.0) as u64
}

async fn wait_all_ready(client: &Client, ns: &str, names: &[&str]) {
    for name in names {
        wait_for(Duration::from_secs(60), &format!("{ns}/{name} Ready"), || async {
            let tc = get_tc(client, ns, name).await;
            (ready_of(&tc).map(|(s, _)| s).as_deref() == Some("True")).then_some(())
        })
        .await;
    }
}

/// Mints the simulator counted for each of `names` (each credential has its own agency).
async fn per_object(sim: &Simulator, names: &[&'static str]) -> BTreeMap<&'static str, u64> {
    let stats = sim.stats().await;
    names
        .iter()
        .map(|n| {
            (
                *n,
                stats["mints"][agency_urn(&agency_of(n))].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

async fn set_shard(client: &Client, ns: &str, name: &str, shard: Option<&str>) {
    let patch = json!({"metadata": {"labels": {SHARD_LABEL: shard}}});
    Api::<TemporaryCredential>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("relabel the TemporaryCredential");
}

/// Waits until the managed Secret of `ns/name` carries the shard label `shard` (written by the
/// shard that now serves it).
async fn wait_secret_shard(client: &Client, ns: &str, name: &str, shard: Option<&str>) {
    wait_for(
        Duration::from_secs(30),
        &format!("Secret {ns}/{name} labelled for shard {shard:?}"),
        || async {
            let s = get_secret(client, ns, name).await?;
            let labels = s.metadata.labels.unwrap_or_default();
            (labels.get(SHARD_LABEL).map(String::as_str) == shard).then_some(())
        },
    )
    .await;
}

async fn source_conditions(client: &Client, ns: &str) -> usize {
    let src = Api::<tcred::api::CredentialSource>::namespaced(client.clone(), ns)
        .get("src")
        .await
        .expect("get the CredentialSource");
    src.status.map(|s| s.conditions.len()).unwrap_or(0)
}

/// The tenant may edit its own TemporaryCredentials (labels included), nothing more.
async fn grant_tenant(client: &Client, ns: &str) {
    apply(
        client,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "tcred-tenant", "namespace": ns},
            "rules": [{"apiGroups": ["tcred.dev"], "resources": ["temporarycredentials"], "verbs": ["get", "list", "patch", "update"]}],
        }),
    )
    .await;
    apply(
        client,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "tcred-tenant", "namespace": ns},
            "subjects": [{"kind": "User", "name": "tenant-a", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "Role", "name": "tcred-tenant", "apiGroup": "rbac.authorization.k8s.io"},
        }),
    )
    .await;
}

#[tokio::test]
async fn shards_mint_only_their_own_credentials_and_relabelled_ones_move_without_a_mint() {
    let admin = admin().await;
    let kubeconfig = admin_kubeconfig();
    skip_without_control_plane(&kubeconfig);
    let victim = create_namespace(&admin, "shard-victim", &[]).await;
    let tenant_ns = create_namespace(&admin, "shard-tenant", &[]).await;
    let lease_ns = create_namespace(&admin, "shard-lease", &[]).await;
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario(
        &admin, &victim, &tenant_ns, &lease_ns,
    )))
    .await;
    if std::env::var_os("TCRED_KEEP_NAMESPACES").is_none() {
        for ns in [&victim, &tenant_ns, &lease_ns] {
            delete_namespace(&admin, ns).await;
        }
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(admin: &Client, victim: &str, tenant_ns: &str, lease_ns: &str) {
    let sim = Simulator::start(&sim_config()).await;
    for ns in [victim, tenant_ns] {
        access_key_source(admin, ns, "src", &sim).await;
    }
    grant_tenant(admin, tenant_ns).await;

    // Shards a and b first: they mint their credentials from the cached sources but leave the
    // sources' status (what is not sharded) to the default shard, which is not running yet.
    let a = shard_operator(lease_ns, "a", "tcred.dev/shard=a", false).await;
    let b = shard_operator(lease_ns, "b", "tcred.dev/shard in (b)", false).await;
    for (name, shard) in VICTIMS {
        apply(admin, credential(victim, name, shard)).await;
    }
    apply(admin, credential(tenant_ns, MOVED, Some("a"))).await;
    apply(admin, credential(tenant_ns, FLIPPED, Some("a"))).await;
    wait_all_ready(admin, victim, &["v-a-0", "v-a-1", "v-b-0", "v-b-1"]).await;
    wait_all_ready(admin, tenant_ns, &[MOVED, FLIPPED]).await;
    for name in ["v-d-0", "v-d-1"] {
        let tc = get_tc(admin, victim, name).await;
        assert!(
            tc.status.is_none(),
            "{name} belongs to the default shard, which is not running"
        );
    }
    assert_eq!(
        source_conditions(admin, victim).await,
        0,
        "only the default shard writes source status"
    );

    // The default shard serves what neither a, b nor the dynamic sharder's ring has.
    let default_selector = format!("tcred.dev/shard notin (a,b),!{SHARDER_LABEL_PREFIX}{RING}");
    let default = shard_operator(lease_ns, "default", &default_selector, true).await;
    wait_all_ready(admin, victim, &["v-d-0", "v-d-1"]).await;
    wait_for(
        Duration::from_secs(30),
        "the default shard writes source status",
        || async { (source_conditions(admin, victim).await > 0).then_some(()) },
    )
    .await;

    // Each shard holds its own Lease.
    let leases = Api::<Lease>::namespaced(admin.clone(), lease_ns);
    for (lease, holder) in [
        (format!("{LEASE_ID}-a"), "shard-a"),
        (format!("{LEASE_ID}-b"), "shard-b"),
        (LEASE_ID.to_owned(), "shard-default"),
    ] {
        let l = leases.get(&lease).await.expect("the shard's Lease");
        let held = l.spec.and_then(|s| s.holder_identity);
        assert_eq!(held.as_deref(), Some(holder), "Lease {lease}");
    }

    // Each shard minted its own, once each; the Secrets carry their credential's shard label.
    let all: Vec<&'static str> = VICTIMS.iter().map(|(n, _)| *n).chain([MOVED, FLIPPED]).collect();
    let counts = per_object(&sim, &all).await;
    assert!(
        counts.values().all(|c| *c == 1),
        "one mint per credential: {counts:?}"
    );
    assert_eq!(
        (
            mints_by(&a, victim).await,
            mints_by(&b, victim).await,
            mints_by(&default, victim).await
        ),
        (2, 2, 2),
        "victim mints by shard a, b, default"
    );
    assert_eq!(
        (
            mints_by(&a, tenant_ns).await,
            mints_by(&b, tenant_ns).await,
            mints_by(&default, tenant_ns).await
        ),
        (2, 0, 0),
        "tenant mints by shard a, b, default"
    );
    wait_secret_shard(admin, victim, "v-a-0", Some("a")).await;
    wait_secret_shard(admin, victim, "v-b-0", Some("b")).await;
    wait_secret_shard(admin, victim, "v-d-0", None).await;

    // A relabelled credential moves to its new shard: the Secret is relabelled, nothing minted.
    let before = get_tc(admin, tenant_ns, MOVED).await.status.expect("status");
    set_shard(admin, tenant_ns, MOVED, Some("b")).await;
    wait_secret_shard(admin, tenant_ns, MOVED, Some("b")).await;
    set_shard(admin, tenant_ns, MOVED, None).await;
    wait_secret_shard(admin, tenant_ns, MOVED, None).await;
    let after = get_tc(admin, tenant_ns, MOVED).await.status.expect("status");
    assert_eq!(
        after.access_key_id, before.access_key_id,
        "the moved credential was not re-minted"
    );
    assert_eq!(per_object(&sim, &[MOVED]).await[MOVED], 1, "no mint for a move");

    let ring = drained_by_a_dynamic_sharder(admin, victim, lease_ns, &sim, &default).await;

    flip_while_the_victim_is_served(admin, victim, tenant_ns, &sim, [&a, &b, &default]).await;

    // Every count still adds up: one mint per credential (the victim's rotated one: two), each
    // counted by exactly one process.
    let mut everything = all.clone();
    everything.extend(LATE.iter().map(|(n, _)| *n));
    everything.push(RINGED);
    let counts = per_object(&sim, &everything).await;
    for (name, count) in &counts {
        let expected = if *name == "v-b-0" { 2 } else { 1 };
        assert_eq!(*count, expected, "mints of {name}: {counts:?}");
    }
    let mut by_processes = 0;
    for op in [&a, &b, &default, &ring] {
        by_processes += mints_by(op, victim).await + mints_by(op, tenant_ns).await;
    }
    assert_eq!(
        by_processes,
        counts.values().sum::<u64>(),
        "each mint counted by one process"
    );
    for op in [&a, &b, &default, &ring] {
        assert!(!op.logs().contains("panicked"), "log {}", op.log.display());
    }
}

/// The tenant flips its credential's shard label as fast as the API server takes it, while the
/// victim namespace gets new credentials and a rotation: the tenant's credential is never
/// minted again and the victim's are served within seconds.
async fn flip_while_the_victim_is_served(
    admin: &Client,
    victim: &str,
    tenant_ns: &str,
    sim: &Simulator,
    ops: [&Operator; 3],
) {
    let tenant = tenant("tenant-a").await;
    let flipping = {
        let (tenant, ns) = (tenant.clone(), tenant_ns.to_owned());
        tokio::spawn(async move {
            let cycle = [Some("b"), None, Some("a"), Some("b"), Some("a")];
            for round in 0..80 {
                set_shard(&tenant, &ns, FLIPPED, cycle[round % cycle.len()]).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let started = Instant::now();
    for (name, shard) in LATE {
        apply(admin, credential(victim, name, shard)).await;
    }
    let rotated_before = get_tc(admin, victim, "v-b-0").await.status.expect("status");
    rotate(admin, victim, "v-b-0", "during-the-flipping").await;
    wait_all_ready(admin, victim, &["v-late-a", "v-late-d"]).await;
    wait_for(Duration::from_secs(30), "the victim's rotation", || async {
        let s = get_tc(admin, victim, "v-b-0").await.status?;
        (s.access_key_id != rotated_before.access_key_id).then_some(())
    })
    .await;
    let victim_latency = started.elapsed();
    flipping.await.expect("the flipping task");
    // The last label was `a` (80 rounds of 5): shard a serves it again and relabels its Secret.
    wait_secret_shard(admin, tenant_ns, FLIPPED, Some("a")).await;
    // Give any stale timer or in-flight reconcile time to act, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sim.mints(&agency_urn(&agency_of(FLIPPED))).await,
        1,
        "flipping the shard label minted"
    );
    let mut tenant_mints = 0;
    for op in ops {
        tenant_mints += mints_by(op, tenant_ns).await;
    }
    assert_eq!(tenant_mints, 2, "the tenant's two credentials, minted once each");
    assert!(
        victim_latency < Duration::from_secs(30),
        "the victim waited {victim_latency:?}"
    );
    eprintln!("victim served during the flipping in {victim_latency:?}");
}

/// A shard of a dynamic sharder's ring (`timebertt/kubernetes-controller-sharding`'s contract,
/// the sharder played by this test): its Lease is named after it, held by it and labelled for
/// the ring; it serves what carries its shard label; asked to drain a credential, it removes the
/// drain and shard labels and lets go, and the default shard resumes the credential without a
/// mint. Returns the shard's process, for the final count.
async fn drained_by_a_dynamic_sharder(
    admin: &Client,
    victim: &str,
    lease_ns: &str,
    sim: &Simulator,
    default: &Operator,
) -> Operator {
    let shard_label = format!("{SHARDER_LABEL_PREFIX}{RING}");
    let ring = Operator::start_with(
        "shard",
        OperatorOptions {
            leader_elect: true,
            lease_namespace: Some(lease_ns),
            identity: "ring-0",
            extra: vec![
                "--leader-election-id=ring-0".to_owned(),
                format!("--shard-selector={shard_label}=ring-0"),
                format!("--controller-ring={RING}"),
                "--serve-sources=false".to_owned(),
            ],
            ..Default::default()
        },
    )
    .await;
    let lease = Api::<Lease>::namespaced(admin.clone(), lease_ns)
        .get("ring-0")
        .await
        .expect("the shard's Lease");
    let labels = lease.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(RING_LEASE_LABEL).map(String::as_str), Some(RING));
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("ring-0")
    );

    let mut tc = credential(victim, RINGED, None);
    tc["metadata"]["labels"] = json!({&shard_label: "ring-0"});
    apply(admin, tc).await;
    wait_all_ready(admin, victim, &[RINGED]).await;
    assert_eq!(
        mints_by(&ring, victim).await,
        1,
        "the ring's shard minted its credential"
    );
    let secret = get_secret(admin, victim, RINGED).await.expect("the Secret");
    let secret_labels = secret.metadata.labels.unwrap_or_default();
    assert_eq!(
        secret_labels.get(&shard_label).map(String::as_str),
        Some("ring-0")
    );

    let default_before = mints_by(default, victim).await;
    let drain = json!({"metadata": {"labels": {format!("{DRAIN_LABEL_PREFIX}{RING}"): "true"}}});
    Api::<TemporaryCredential>::namespaced(admin.clone(), victim)
        .patch(RINGED, &PatchParams::default(), &Patch::Merge(&drain))
        .await
        .expect("ask for a drain");
    wait_for(Duration::from_secs(30), "the drain acknowledged", || async {
        let labels = get_tc(admin, victim, RINGED)
            .await
            .metadata
            .labels
            .unwrap_or_default();
        labels.is_empty().then_some(())
    })
    .await;
    // Now unassigned, the credential is the default shard's: its Secret loses the ring's label.
    wait_for(
        Duration::from_secs(30),
        "the default shard relabels the Secret",
        || async {
            let s = get_secret(admin, victim, RINGED).await?;
            (!s.metadata.labels.unwrap_or_default().contains_key(&shard_label)).then_some(())
        },
    )
    .await;
    assert_eq!(
        sim.mints(&agency_urn(&agency_of(RINGED))).await,
        1,
        "no mint for a drain"
    );
    assert_eq!(mints_by(default, victim).await, default_before);
    ring
}
