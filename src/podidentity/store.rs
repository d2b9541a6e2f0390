//! What the credentials endpoint serves from: watches (reflectors) of TemporaryCredentials and of
//! the Secrets tcred manages, on every replica, and the decision for one request (allowed or not,
//! and the credential held). No API-server call per request.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::{StreamExt, future};
use jiff::Timestamp;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::api::{TemporaryCredential, labels};

/// The managed Secret's keys that make up the credential (contract: docs/api.md, "The Secret").
mod keys {
    pub const ACCESS_KEY: &str = "HUAWEICLOUD_SDK_AK";
    pub const SECRET_KEY: &str = "HUAWEICLOUD_SDK_SK";
    pub const SECURITY_TOKEN: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
    pub const EXPIRES_AT: &str = "HUAWEICLOUD_SDK_EXPIRES_AT";
}

/// A credential as served; the secret parts never leave this type except into the 200 body.
#[derive(Clone)]
pub struct Held {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub security_token: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The answer to "may `namespace/service_account` have credential `namespace/name`?".
#[derive(Debug)]
pub enum Decision {
    /// No such credential, no `podIdentity`, or the ServiceAccount is not listed.
    Forbidden,
    /// Allowed, but nothing usable is held (not issued yet, expired, caches not synced).
    Unavailable,
    Serve(Held),
}

/// The two caches. Cheap to clone.
#[derive(Clone)]
pub struct CredentialStore {
    credentials: Store<DeserializeGuard<TemporaryCredential>>,
    secrets: Store<Secret>,
    synced: Arc<AtomicBool>,
}

/// Which namespaces to watch (as the controller does: `--namespace`, `--exclude-namespaces`).
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub exclude_namespaces: Vec<String>,
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    fn config(&self) -> watcher::Config {
        let config = watcher::Config::default();
        if self.exclude_namespaces.is_empty() {
            return config;
        }
        let fields: Vec<String> = self
            .exclude_namespaces
            .iter()
            .map(|n| format!("metadata.namespace!={n}"))
            .collect();
        config.fields(&fields.join(","))
    }
}

impl CredentialStore {
    /// Starts both watches (they run until `client`'s process ends, retrying with backoff) and
    /// returns the store at once; it answers `Unavailable` until both have listed. Objects are
    /// trimmed before caching as the controllers' are ([`crate::controller::trim_cached`]).
    pub fn start(client: &Client, scope: &Scope) -> Self {
        let (credentials, cw) = reflector::store::<DeserializeGuard<TemporaryCredential>>();
        let cred_stream = reflector::reflector(
            cw,
            watcher(scope.api(client), scope.config())
                .modify(crate::controller::trim_cached::<DeserializeGuard<TemporaryCredential>>),
        );
        let (secrets, sw) = reflector::store::<Secret>();
        let secret_config = scope.config().labels(labels::MANAGED_SELECTOR);
        let secret_stream = reflector::reflector(
            sw,
            watcher(scope.api(client), secret_config).modify(crate::controller::trim_cached::<Secret>),
        );
        tokio::spawn(drive(cred_stream.default_backoff()));
        tokio::spawn(drive(secret_stream.default_backoff()));
        let synced = Arc::new(AtomicBool::new(false));
        let (c, s, flag) = (credentials.clone(), secrets.clone(), synced.clone());
        tokio::spawn(async move {
            if c.wait_until_ready().await.is_ok() && s.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
            }
        });
        Self {
            credentials,
            secrets,
            synced,
        }
    }

    /// Whether both watches have listed once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// TemporaryCredentials cached (for metrics and benchmarks).
    pub fn credentials_cached(&self) -> usize {
        self.credentials.state().len()
    }

    /// Decides one request of ServiceAccount `namespace/service_account` for `namespace/name`.
    pub fn decide(&self, namespace: &str, name: &str, service_account: &str, now: Timestamp) -> Decision {
        if !self.is_synced() {
            return Decision::Unavailable;
        }
        let key = ObjectRef::<DeserializeGuard<TemporaryCredential>>::new(name).within(namespace);
        let Some(guard) = self.credentials.get(&key) else {
            return Decision::Forbidden;
        };
        let Ok(tc) = &guard.0 else {
            return Decision::Forbidden;
        };
        if !listed(tc, service_account) {
            return Decision::Forbidden;
        }
        let secret_name = secret_name(tc);
        let secret = self.secrets.get(&ObjectRef::new(secret_name).within(namespace));
        match secret.as_deref().and_then(|s| held(s, name)) {
            Some(h) if h.expires_at > now => Decision::Serve(h),
            _ => Decision::Unavailable,
        }
    }
}

async fn drive<S, T, E>(stream: S)
where
    S: futures::Stream<Item = Result<T, E>>,
{
    stream.for_each(|_| future::ready(())).await;
}

fn listed(tc: &TemporaryCredential, service_account: &str) -> bool {
    tc.meta().deletion_timestamp.is_none()
        && tc
            .spec
            .pod_identity
            .as_ref()
            .is_some_and(|p| p.service_accounts.iter().any(|s| s == service_account))
}

/// The Secret the controller writes: the one its status names, else the spec's, else the
/// credential's own name.
fn secret_name(tc: &TemporaryCredential) -> &str {
    tc.status
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
        .or(tc.spec.secret.name.as_deref())
        .unwrap_or_else(|| tc.meta().name.as_deref().unwrap_or_default())
}

/// The credential in `secret`, if tcred wrote it for credential `name` and all four keys parse.
fn held(secret: &Secret, name: &str) -> Option<Held> {
    let l = secret.labels();
    if l.get(labels::MANAGED_BY).map(String::as_str) != Some(labels::MANAGED_BY_VALUE)
        || l.get(labels::CREDENTIAL).map(String::as_str) != Some(name)
    {
        return None;
    }
    let data = secret.data.as_ref()?;
    let expires_at: Timestamp = text(data, keys::EXPIRES_AT)?.trim().parse().ok()?;
    Some(Held {
        access_key_id: text(data, keys::ACCESS_KEY)?,
        secret_access_key: text(data, keys::SECRET_KEY)?,
        security_token: text(data, keys::SECURITY_TOKEN)?,
        expires_at,
    })
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    let s = String::from_utf8(data.get(key)?.0.clone()).ok()?;
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, expires: &str) -> Secret {
        let mut s = Secret::default();
        s.metadata.labels = Some(
            [
                (labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned()),
                (labels::CREDENTIAL.to_owned(), name.to_owned()),
            ]
            .into(),
        );
        let b = |v: &str| ByteString(v.as_bytes().to_vec());
        s.data = Some(
            [
                (keys::ACCESS_KEY.to_owned(), b("AK")),
                (keys::SECRET_KEY.to_owned(), b("SK")),
                (keys::SECURITY_TOKEN.to_owned(), b("TOK")),
                (keys::EXPIRES_AT.to_owned(), b(expires)),
            ]
            .into(),
        );
        s
    }

    #[test]
    fn a_secret_is_read_only_for_the_credential_it_is_labelled_for() {
        let s = secret("billing", "2026-12-02T10:00:00Z");
        let h = held(&s, "billing").unwrap();
        assert_eq!(h.access_key_id, "AK");
        assert_eq!(h.expires_at, "2026-12-02T10:00:00Z".parse::<Timestamp>().unwrap());
        assert!(held(&s, "other").is_none());
        assert!(!format!("{h:?}").contains("SK"));
    }

    #[test]
    fn a_secret_with_a_garbage_or_missing_key_is_not_served() {
        assert!(held(&secret("a", "yesterday"), "a").is_none());
        let mut s = secret("a", "2026-12-02T10:00:00Z");
        s.data.as_mut().unwrap().remove(keys::SECRET_KEY);
        assert!(held(&s, "a").is_none());
    }
}
