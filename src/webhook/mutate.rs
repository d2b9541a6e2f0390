//! The pod mutation of pod identity, as a pure function: a pod labelled
//! `tcred.dev/pod-identity: <TemporaryCredential name>` gets, in every container and init
//! container, the environment Huawei's SDKs read (`TCRED_AGENT_HOST`,
//! `HC_CONTAINER_CREDENTIALS_FULL_URI`, `HC_CONTAINER_AUTHORIZATION_TOKEN_FILE`) and a read-only
//! mount of a projected ServiceAccount token with tcred's audience.
//!
//! Nothing the pod already has is replaced: an env var of the same name in a container keeps the
//! pod's value, a volume named `tcred-token` is the pod's own (and is what gets mounted), and a
//! container that already mounts that name or that path keeps its mount. That makes the mutation
//! idempotent (a reinvocation adds nothing).

use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, ProjectedVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use serde_json::Value;

use crate::agent::request::{is_dns_label, is_dns_subdomain};

/// The opt-in label; its value names a TemporaryCredential of the pod's namespace.
pub const LABEL: &str = "tcred.dev/pod-identity";
pub const AGENT_HOST_ENV: &str = "TCRED_AGENT_HOST";
pub const FULL_URI_ENV: &str = "HC_CONTAINER_CREDENTIALS_FULL_URI";
pub const TOKEN_FILE_ENV: &str = "HC_CONTAINER_AUTHORIZATION_TOKEN_FILE";
pub const VOLUME: &str = "tcred-token";
pub const MOUNT_PATH: &str = "/var/run/secrets/tcred.dev/serviceaccount";
pub const TOKEN_PATH: &str = "token";

/// What the injected environment and token point at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// Audience of the projected token (the controller's `--pod-identity-audience`).
    pub audience: String,
    /// Port of the node agent.
    pub agent_port: u16,
    /// Lifetime the kubelet requests for the projected token.
    pub token_expiration_seconds: i64,
}

impl Default for Injection {
    fn default() -> Self {
        Self {
            audience: "tcred.dev".into(),
            agent_port: 8182,
            token_expiration_seconds: 3600,
        }
    }
}

/// Why an opted-in pod is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("label {LABEL} must name a TemporaryCredential of the pod's namespace (a DNS-1123 subdomain)")]
    CredentialName,
    #[error("the pod's namespace is missing or not a valid namespace name")]
    Namespace,
}

/// The credential a pod opted into, if it did.
pub fn opted_in(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(LABEL).map(String::as_str)
}

/// The JSON patch that injects pod identity into `pod` (created in `namespace`): `Ok(None)` when
/// the pod did not opt in or already has everything.
pub fn mutate(pod: &Pod, namespace: &str, injection: &Injection) -> Result<Option<Patch>, Invalid> {
    let Some(name) = opted_in(pod) else {
        return Ok(None);
    };
    if !is_dns_subdomain(name) {
        return Err(Invalid::CredentialName);
    }
    if !is_dns_label(namespace) {
        return Err(Invalid::Namespace);
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(None);
    };
    let env = env_vars(namespace, name, injection.agent_port);
    let mut ops = Vec::new();
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    if !volumes.iter().any(|v| v.name == VOLUME) {
        let volume = to_value(token_volume(injection));
        ops.push(append(&["spec", "volumes"], spec.volumes.is_some(), vec![volume]));
    }
    let lists = [
        ("initContainers", spec.init_containers.as_deref()),
        ("containers", Some(&spec.containers[..])),
    ];
    for (field, containers) in lists {
        for (i, c) in containers.unwrap_or_default().iter().enumerate() {
            container_ops(&mut ops, field, i, c, &env);
        }
    }
    Ok((!ops.is_empty()).then(|| Patch(ops.into_iter().flatten().collect())))
}

fn container_ops(ops: &mut Vec<Vec<PatchOperation>>, field: &str, i: usize, c: &Container, env: &[EnvVar]) {
    let index = i.to_string();
    let have = c.env.as_deref().unwrap_or_default();
    let missing: Vec<Value> = env
        .iter()
        .filter(|e| !have.iter().any(|h| h.name == e.name))
        .map(to_value)
        .collect();
    if !missing.is_empty() {
        ops.push(append(&["spec", field, &index, "env"], c.env.is_some(), missing));
    }
    let mounts = c.volume_mounts.as_deref().unwrap_or_default();
    if !mounts
        .iter()
        .any(|m| m.name == VOLUME || m.mount_path == MOUNT_PATH)
    {
        let mount = to_value(VolumeMount {
            name: VOLUME.into(),
            mount_path: MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        ops.push(append(
            &["spec", field, &index, "volumeMounts"],
            c.volume_mounts.is_some(),
            vec![mount],
        ));
    }
}

/// Operations that add `values` to the array at `path`: one `add` of the whole array when it does
/// not exist yet, else one `add` at `-` per value.
fn append(path: &[&str], exists: bool, values: Vec<Value>) -> Vec<PatchOperation> {
    let ptr = PointerBuf::from_tokens(path.iter().copied());
    if !exists {
        return vec![PatchOperation::Add(AddOperation {
            path: ptr,
            value: Value::Array(values),
        })];
    }
    values
        .into_iter()
        .map(|value| {
            let mut p = ptr.clone();
            p.push_back("-");
            PatchOperation::Add(AddOperation { path: p, value })
        })
        .collect()
}

fn to_value<T: serde::Serialize>(v: T) -> Value {
    // k8s-openapi types serialize to JSON objects without fail (no maps with non-string keys).
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The environment, in order: `TCRED_AGENT_HOST` comes first so the URI can refer to it.
pub fn env_vars(namespace: &str, name: &str, agent_port: u16) -> Vec<EnvVar> {
    vec![
        EnvVar {
            name: AGENT_HOST_ENV.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.hostIP".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        EnvVar {
            name: FULL_URI_ENV.into(),
            value: Some(format!(
                "http://$({AGENT_HOST_ENV}):{agent_port}/v1/credentials/{namespace}/{name}"
            )),
            ..EnvVar::default()
        },
        EnvVar {
            name: TOKEN_FILE_ENV.into(),
            value: Some(format!("{MOUNT_PATH}/{TOKEN_PATH}")),
            ..EnvVar::default()
        },
    ]
}

/// The projected token volume: the pod's ServiceAccount token for tcred's audience.
pub fn token_volume(injection: &Injection) -> Volume {
    Volume {
        name: VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(injection.audience.clone()),
                    expiration_seconds: Some(injection.token_expiration_seconds),
                    path: TOKEN_PATH.into(),
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodSpec;
    use proptest::prelude::*;

    use super::*;

    fn container(name: &str) -> Container {
        Container {
            name: name.into(),
            image: Some("app".into()),
            ..Container::default()
        }
    }

    fn pod(label: Option<&str>, containers: Vec<Container>, init: Option<Vec<Container>>) -> Pod {
        let mut p = Pod::default();
        p.metadata.labels = label.map(|l| BTreeMap::from([(LABEL.to_owned(), l.to_owned())]));
        p.spec = Some(PodSpec {
            containers,
            init_containers: init,
            ..PodSpec::default()
        });
        p
    }

    fn apply(pod: &Pod, patch: &Patch) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut doc, &patch.0).unwrap();
        serde_json::from_value(doc).unwrap()
    }

    fn env_of<'a>(c: &'a Container, name: &str) -> Vec<&'a EnvVar> {
        c.env.iter().flatten().filter(|e| e.name == name).collect()
    }

    #[test]
    fn a_pod_without_the_label_is_left_alone() {
        let p = pod(None, vec![container("app")], None);
        assert_eq!(mutate(&p, "team-a", &Injection::default()), Ok(None));
        let other = {
            let mut p = p.clone();
            p.metadata.labels = Some(BTreeMap::from([("app".into(), "x".into())]));
            p
        };
        assert_eq!(mutate(&other, "team-a", &Injection::default()), Ok(None));
    }

    #[test]
    fn every_container_and_init_container_gets_env_and_mount_and_the_pod_one_volume() {
        let p = pod(
            Some("app-creds"),
            vec![container("a"), container("b")],
            Some(vec![container("init")]),
        );
        let patch = mutate(&p, "team-a", &Injection::default()).unwrap().unwrap();
        let out = apply(&p, &patch);
        let spec = out.spec.unwrap();
        let vols = spec.volumes.unwrap();
        assert_eq!(vols.len(), 1);
        let token = vols[0].projected.as_ref().unwrap().sources.as_ref().unwrap()[0]
            .service_account_token
            .as_ref()
            .unwrap();
        assert_eq!(token.audience.as_deref(), Some("tcred.dev"));
        assert_eq!(token.expiration_seconds, Some(3600));
        assert_eq!(token.path, "token");
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            let names: Vec<_> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
            assert_eq!(
                names,
                [AGENT_HOST_ENV, FULL_URI_ENV, TOKEN_FILE_ENV],
                "{}",
                c.name
            );
            assert_eq!(
                env_of(c, FULL_URI_ENV)[0].value.as_deref(),
                Some("http://$(TCRED_AGENT_HOST):8182/v1/credentials/team-a/app-creds")
            );
            assert_eq!(
                env_of(c, TOKEN_FILE_ENV)[0].value.as_deref(),
                Some("/var/run/secrets/tcred.dev/serviceaccount/token")
            );
            let host = env_of(c, AGENT_HOST_ENV)[0].value_from.as_ref().unwrap();
            assert_eq!(host.field_ref.as_ref().unwrap().field_path, "status.hostIP");
            let m = c.volume_mounts.as_ref().unwrap();
            assert_eq!(
                (m[0].name.as_str(), m[0].mount_path.as_str()),
                (VOLUME, MOUNT_PATH)
            );
            assert_eq!(m[0].read_only, Some(true));
        }
    }

    #[test]
    fn what_the_pod_already_sets_is_kept() {
        let mut c = container("app");
        c.env = Some(vec![
            EnvVar {
                name: "OTHER".into(),
                value: Some("1".into()),
                ..EnvVar::default()
            },
            EnvVar {
                name: FULL_URI_ENV.into(),
                value: Some("http://mine".into()),
                ..EnvVar::default()
            },
        ]);
        c.volume_mounts = Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..VolumeMount::default()
        }]);
        let mut p = pod(Some("app-creds"), vec![c], None);
        let own = Volume {
            name: VOLUME.into(),
            ..Volume::default()
        };
        p.spec.as_mut().unwrap().volumes = Some(vec![own.clone()]);
        let out = apply(&p, &mutate(&p, "team-a", &Injection::default()).unwrap().unwrap());
        let spec = out.spec.unwrap();
        assert_eq!(
            spec.volumes.unwrap(),
            vec![own],
            "the pod's own volume stays, none added"
        );
        let c = &spec.containers[0];
        let uri = env_of(c, FULL_URI_ENV);
        assert_eq!(uri.len(), 1);
        assert_eq!(uri[0].value.as_deref(), Some("http://mine"));
        assert_eq!(env_of(c, "OTHER").len(), 1);
        assert_eq!(env_of(c, TOKEN_FILE_ENV).len(), 1);
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].name, "data");
    }

    #[test]
    fn a_mount_at_the_token_path_is_kept() {
        let mut c = container("app");
        c.volume_mounts = Some(vec![VolumeMount {
            name: "elsewhere".into(),
            mount_path: MOUNT_PATH.into(),
            ..VolumeMount::default()
        }]);
        let p = pod(Some("x"), vec![c], None);
        let out = apply(&p, &mutate(&p, "ns", &Injection::default()).unwrap().unwrap());
        let mounts = out.spec.unwrap().containers[0].volume_mounts.clone().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].name, "elsewhere");
    }

    #[test]
    fn invalid_label_values_and_namespaces_are_refused_not_patched() {
        for bad in ["", "App", "a_b", "-a", "a/b", "a..b", "a:8182"] {
            let p = pod(Some(bad), vec![container("app")], None);
            assert_eq!(
                mutate(&p, "team-a", &Injection::default()),
                Err(Invalid::CredentialName),
                "{bad:?}"
            );
        }
        let p = pod(Some("ok"), vec![container("app")], None);
        assert_eq!(mutate(&p, "", &Injection::default()), Err(Invalid::Namespace));
        assert_eq!(mutate(&p, "a/b", &Injection::default()), Err(Invalid::Namespace));
    }

    #[test]
    fn a_pod_without_spec_gets_no_patch() {
        let mut p = pod(Some("ok"), vec![], None);
        p.spec = None;
        assert_eq!(mutate(&p, "ns", &Injection::default()), Ok(None));
    }

    const NAMES: [&str; 5] = [AGENT_HOST_ENV, FULL_URI_ENV, TOKEN_FILE_ENV, "A", "B"];
    const PATHS: [&str; 3] = [MOUNT_PATH, "/data", "/cache"];

    fn arb_container() -> impl Strategy<Value = Container> {
        (
            proptest::option::of(proptest::sample::subsequence(NAMES.to_vec(), 0..=5)),
            proptest::option::of(proptest::sample::subsequence(PATHS.to_vec(), 0..=3)),
            any::<bool>(),
        )
            .prop_map(|(env, paths, named)| Container {
                name: "c".into(),
                env: env.map(|names| {
                    names
                        .into_iter()
                        .map(|n| EnvVar {
                            name: n.into(),
                            value: Some(format!("pod-{n}")),
                            ..EnvVar::default()
                        })
                        .collect()
                }),
                volume_mounts: paths.map(|ps| {
                    ps.into_iter()
                        .enumerate()
                        .map(|(i, p)| VolumeMount {
                            name: if named && i == 0 {
                                VOLUME.into()
                            } else {
                                format!("v{i}")
                            },
                            mount_path: p.into(),
                            ..VolumeMount::default()
                        })
                        .collect()
                }),
                ..Container::default()
            })
    }

    fn arb_pod() -> impl Strategy<Value = Pod> {
        (
            proptest::collection::vec(arb_container(), 1..4),
            proptest::option::of(proptest::collection::vec(arb_container(), 0..3)),
            proptest::option::of(proptest::sample::subsequence(vec![VOLUME, "data"], 0..=2)),
        )
            .prop_map(|(containers, init, volumes)| {
                let mut p = pod(Some("creds"), containers, init);
                p.spec.as_mut().unwrap().volumes = volumes.map(|vs| {
                    vs.into_iter()
                        .map(|v| Volume {
                            name: v.into(),
                            ..Volume::default()
                        })
                        .collect()
                });
                p
            })
    }

    proptest! {
        #[test]
        fn the_patch_applies_keeps_the_pods_values_and_is_idempotent(p in arb_pod()) {
            let injection = Injection::default();
            let Some(patch) = mutate(&p, "ns", &injection).unwrap() else {
                // Nothing to add: every container and the volumes already have it all.
                prop_assert_eq!(mutate(&p, "ns", &injection), Ok(None));
                return Ok(());
            };
            let out = apply(&p, &patch);
            prop_assert_eq!(mutate(&out, "ns", &injection), Ok(None));
            let spec = out.spec.as_ref().unwrap();
            prop_assert_eq!(spec.volumes.iter().flatten().filter(|v| v.name == VOLUME).count(), 1);
            let before = p.spec.as_ref().unwrap();
            let pairs = before.containers.iter().zip(&spec.containers)
                .chain(before.init_containers.iter().flatten().zip(spec.init_containers.iter().flatten()));
            for (old, new) in pairs {
                for name in [AGENT_HOST_ENV, FULL_URI_ENV, TOKEN_FILE_ENV] {
                    prop_assert_eq!(env_of(new, name).len(), 1);
                }
                for e in old.env.iter().flatten() {
                    prop_assert_eq!(env_of(new, &e.name), vec![e]);
                }
                let mounts = new.volume_mounts.as_deref().unwrap_or_default();
                prop_assert!(mounts.iter().any(|m| m.name == VOLUME || m.mount_path == MOUNT_PATH));
                prop_assert_eq!(mounts.iter().filter(|m| m.mount_path == MOUNT_PATH).count().max(1), 1);
                let old_mounts = old.volume_mounts.as_deref().unwrap_or_default();
                prop_assert_eq!(&mounts[..old_mounts.len()], old_mounts);
            }
        }
    }
}
