//! The pod-identity certificates when cert-manager is not installed: a CA and a serving
//! certificate (for the credentials and webhook Services) that the leader generates, keeps in two
//! Secrets of its namespace and rotates ahead of expiry, and the CA bundle it writes into the
//! MutatingWebhookConfiguration.
//!
//! - `<ca-secret>` (only the controller reads it): `state.json`, the CAs and the serving pair.
//! - `<tls-secret>` (`kubernetes.io/tls`, mounted by the controller and, `ca.crt` only, by the
//!   agents): `tls.crt`, `tls.key`, `ca.crt` (the bundle).
//!
//! Rotation keeps every client working: a successor CA is first *staged* (added to the bundle
//! while the old CA still signs the serving certificate) for [`Policy::stage_for`], long enough
//! for the mounted bundles and the webhook's `caBundle` to carry it; then it is promoted and signs
//! a new serving certificate, and the old CA stays in the bundle until it expires. The decisions
//! are the pure [`step`]; [`run`] does the reading and writing.

use std::{collections::BTreeMap, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Field manager of the certificate writes.
pub const FIELD_MANAGER: &str = "tcred-certs";

/// Lifetimes and margins of the generated certificates.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub ca_lifetime: SignedDuration,
    /// A successor CA is staged when the current one has less than this left.
    pub ca_renew_before: SignedDuration,
    /// How long a staged CA sits in the bundle before it signs.
    pub stage_for: SignedDuration,
    pub leaf_lifetime: SignedDuration,
    /// The serving certificate is re-issued when it has less than this left.
    pub leaf_renew_before: SignedDuration,
}

impl Default for Policy {
    fn default() -> Self {
        let day = SignedDuration::from_hours(24);
        Self {
            ca_lifetime: day * 365 * 5,
            ca_renew_before: day * 180,
            stage_for: day,
            leaf_lifetime: day * 90,
            leaf_renew_before: day * 30,
        }
    }
}

/// Errors of generating certificates or writing them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("a timestamp out of range")]
    Time,
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// One CA: its certificate and key (PEM), the subject it was made with and its validity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ca {
    pub cert: String,
    /// Empty for a previous CA: it no longer signs.
    pub key: String,
    pub common_name: String,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

/// The serving certificate: chain and key (PEM), names, validity and the CA that signed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub dns_names: Vec<String>,
    pub not_after: Timestamp,
    pub issuer: String,
}

/// Everything the CA Secret holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    pub current: Option<Ca>,
    pub next: Option<Ca>,
    /// The previous CA (certificate only), kept in the bundle until it expires.
    pub previous: Option<Ca>,
    pub leaf: Option<Leaf>,
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime, Error> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|_| Error::Time)
}

fn ca_params(
    common_name: &str,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<CertificateParams, Error> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = offset(not_before)?;
    p.not_after = offset(not_after)?;
    Ok(p)
}

/// A new CA valid from `now` for the policy's lifetime.
pub fn new_ca(now: Timestamp, policy: &Policy) -> Result<Ca, Error> {
    let not_before = now
        .checked_sub(SignedDuration::from_mins(5))
        .map_err(|_| Error::Time)?;
    let not_after = now.checked_add(policy.ca_lifetime).map_err(|_| Error::Time)?;
    let common_name = format!("tcred pod-identity CA {}", now.as_second());
    let key = KeyPair::generate()?;
    let cert = ca_params(&common_name, not_before, not_after)?.self_signed(&key)?;
    Ok(Ca {
        cert: cert.pem(),
        key: key.serialize_pem(),
        common_name,
        not_before,
        not_after,
    })
}

/// A serving certificate for `dns_names` signed by `ca`, valid for the policy's lifetime but
/// never past the CA.
pub fn new_leaf(ca: &Ca, dns_names: &[String], now: Timestamp, policy: &Policy) -> Result<Leaf, Error> {
    let issuer_key = KeyPair::from_pem(&ca.key)?;
    let issuer = Issuer::new(
        ca_params(&ca.common_name, ca.not_before, ca.not_after)?,
        issuer_key,
    );
    let not_after = now
        .checked_add(policy.leaf_lifetime)
        .map_err(|_| Error::Time)?
        .min(ca.not_after);
    let mut p = CertificateParams::new(dns_names.to_vec())?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().map(String::as_str).unwrap_or("tcred"),
    );
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = offset(
        now.checked_sub(SignedDuration::from_mins(5))
            .map_err(|_| Error::Time)?,
    )?;
    p.not_after = offset(not_after)?;
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(Leaf {
        cert: cert.pem(),
        key: key.serialize_pem(),
        dns_names: dns_names.to_vec(),
        not_after,
        issuer: ca.common_name.clone(),
    })
}

fn left(until: Timestamp, now: Timestamp) -> SignedDuration {
    until.duration_since(now)
}

/// One step of the certificate lifecycle at `now`: `Some(new state)` when something must change
/// (first CA, staging a successor, promoting it, dropping an expired previous CA, re-issuing the
/// serving certificate), `None` when the stored state is good.
pub fn step(
    stored: &Stored,
    dns_names: &[String],
    now: Timestamp,
    policy: &Policy,
) -> Result<Option<Stored>, Error> {
    let mut s = stored.clone();
    let usable = |ca: &Ca| ca.not_before <= now && left(ca.not_after, now) > SignedDuration::ZERO;
    if !s.current.as_ref().is_some_and(usable) {
        s = Stored {
            current: Some(new_ca(now, policy)?),
            ..Stored::default()
        };
    }
    let current = s.current.clone().ok_or(Error::Time)?;
    if s.next.is_none() && left(current.not_after, now) < policy.ca_renew_before {
        s.next = Some(new_ca(now, policy)?);
    }
    if let Some(next) = s.next.clone() {
        let staged_until = next
            .not_before
            .checked_add(policy.stage_for)
            .map_err(|_| Error::Time)?;
        if staged_until <= now {
            s.previous = s.current.replace(next).map(|old| Ca {
                key: String::new(),
                ..old
            });
            s.next = None;
        }
    }
    if s.previous.as_ref().is_some_and(|p| p.not_after <= now) {
        s.previous = None;
    }
    let current = s.current.clone().ok_or(Error::Time)?;
    let leaf_good = s.leaf.as_ref().is_some_and(|l| {
        l.issuer == current.common_name
            && l.dns_names == dns_names
            && left(l.not_after, now)
                >= policy
                    .leaf_renew_before
                    .min(current.not_after.duration_since(now))
            && l.not_after > now
    });
    if !leaf_good {
        s.leaf = Some(new_leaf(&current, dns_names, now, policy)?);
    }
    Ok((s != *stored).then_some(s))
}

/// The CA bundle clients trust: the current CA, a staged successor and the previous CA.
pub fn bundle(s: &Stored) -> String {
    [&s.current, &s.next, &s.previous]
        .into_iter()
        .flatten()
        .map(|ca| ca.cert.as_str())
        .collect::<Vec<_>>()
        .join("")
}

/// Flags of the generated certificates (flattened into the controller's arguments through
/// [`crate::webhook::WebhookArgs`]).
#[derive(Clone, Debug, clap::Args)]
pub struct CertArgs {
    /// Generate and rotate the pod-identity CA and serving certificate (the leader does), for when
    /// cert-manager is not installed.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, env = "TCRED_MANAGE_CERTIFICATES")]
    pub manage_certificates: bool,
    /// Secret (in the controller's namespace) holding the CA; only the controller reads it.
    #[arg(long, default_value = "tcred-ca", env = "TCRED_CA_SECRET")]
    pub ca_secret: String,
    /// `kubernetes.io/tls` Secret (in the controller's namespace) with the serving certificate
    /// and `ca.crt`.
    #[arg(long, default_value = "tcred-tls", env = "TCRED_TLS_SECRET")]
    pub tls_secret: String,
    /// DNS names of the serving certificate (comma-separated), e.g. the credentials and webhook
    /// Services' `<name>.<namespace>.svc`.
    #[arg(long, value_delimiter = ',', env = "TCRED_CERTIFICATE_DNS_NAMES")]
    pub certificate_dns_names: Vec<String>,
    /// MutatingWebhookConfiguration whose `caBundle` is kept equal to the CA bundle.
    #[arg(long, env = "TCRED_WEBHOOK_CONFIGURATION")]
    pub webhook_configuration: Option<String>,
}

impl CertArgs {
    /// The configuration for `namespace`, or `None` when certificates are not managed.
    pub fn config(&self, namespace: &str) -> Option<CertConfig> {
        if !self.manage_certificates {
            return None;
        }
        Some(CertConfig {
            namespace: namespace.to_owned(),
            ca_secret: self.ca_secret.clone(),
            tls_secret: self.tls_secret.clone(),
            dns_names: self
                .certificate_dns_names
                .iter()
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect(),
            webhook_configuration: self.webhook_configuration.clone().filter(|n| !n.is_empty()),
            policy: Policy::default(),
        })
    }
}

/// Where the certificates live and what they are for.
#[derive(Clone, Debug)]
pub struct CertConfig {
    pub namespace: String,
    pub ca_secret: String,
    pub tls_secret: String,
    pub dns_names: Vec<String>,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept equal to the bundle.
    pub webhook_configuration: Option<String>,
    pub policy: Policy,
}

const STATE_KEY: &str = "state.json";

/// Reads the state from the CA Secret's data; anything unreadable is an empty state (so a fresh
/// CA is generated), never an error that stops rotation.
pub fn from_secret(secret: Option<&Secret>) -> Stored {
    let raw = secret
        .and_then(|s| s.data.as_ref())
        .and_then(|d| d.get(STATE_KEY));
    match raw.map(|b| serde_json::from_slice::<Stored>(&b.0)) {
        Some(Ok(s)) => s,
        Some(Err(error)) => {
            warn!(%error, "the CA Secret is unreadable; generating a new CA");
            Stored::default()
        }
        None => Stored::default(),
    }
}

/// The data of the serving Secret (`kubernetes.io/tls`).
pub fn tls_data(s: &Stored) -> BTreeMap<String, ByteString> {
    let mut d = BTreeMap::new();
    if let Some(leaf) = &s.leaf {
        d.insert("tls.crt".into(), ByteString(leaf.cert.clone().into_bytes()));
        d.insert("tls.key".into(), ByteString(leaf.key.clone().into_bytes()));
    }
    d.insert("ca.crt".into(), ByteString(bundle(s).into_bytes()));
    d
}

fn secret_apply(
    cfg: &CertConfig,
    name: &str,
    type_: &str,
    data: BTreeMap<String, ByteString>,
) -> Patch<Secret> {
    Patch::Apply(Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "tcred".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Default::default()
    })
}

/// One pass: generate or rotate what is due, then make the serving Secret and the webhook's
/// `caBundle` match. Every write is skipped when nothing differs.
pub async fn reconcile(client: &Client, cfg: &CertConfig, now: Timestamp) -> Result<Stored, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let live = secrets.get_opt(&cfg.ca_secret).await?;
    let mut stored = from_secret(live.as_ref());
    if let Some(next) = step(&stored, &cfg.dns_names, now, &cfg.policy)? {
        let state = serde_json::to_vec(&next).map_err(|_| Error::Time)?;
        let data = BTreeMap::from([(STATE_KEY.to_owned(), ByteString(state))]);
        let patch = secret_apply(cfg, &cfg.ca_secret, "Opaque", data);
        secrets.patch(&cfg.ca_secret, &pp, &patch).await?;
        info!(secret = %cfg.ca_secret, ca = next.current.as_ref().map(|c| c.common_name.as_str()).unwrap_or_default(), "wrote the pod-identity certificates");
        stored = next;
    }
    let want = tls_data(&stored);
    let tls = secrets.get_opt(&cfg.tls_secret).await?;
    if tls.and_then(|t| t.data) != Some(want.clone()) {
        let patch = secret_apply(cfg, &cfg.tls_secret, "kubernetes.io/tls", want);
        secrets.patch(&cfg.tls_secret, &pp, &patch).await?;
        info!(secret = %cfg.tls_secret, "wrote the serving certificate");
    }
    if let Some(name) = &cfg.webhook_configuration {
        patch_ca_bundle(client, name, bundle(&stored).as_bytes()).await?;
    }
    Ok(stored)
}

/// Sets `caBundle` of every webhook of the configuration `name` to `bundle` (one JSON patch, only
/// when one differs). A missing configuration is not an error (the chart may not install it).
pub async fn patch_ca_bundle(client: &Client, name: &str, bundle: &[u8]) -> Result<(), Error> {
    use base64::Engine;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let Some(mwc) = api.get_opt(name).await? else {
        return Ok(());
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    let ops: Vec<json_patch::PatchOperation> = mwc
        .webhooks
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, w)| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle))
        .map(|(i, _)| {
            let path = format!("/webhooks/{i}/clientConfig/caBundle");
            json_patch::PatchOperation::Add(json_patch::AddOperation {
                path: json_patch::jsonptr::PointerBuf::parse(path).unwrap_or_default(),
                value: serde_json::Value::String(encoded.clone()),
            })
        })
        .collect();
    if ops.is_empty() {
        return Ok(());
    }
    let patch: Patch<()> = Patch::Json(json_patch::Patch(ops));
    api.patch(name, &PatchParams::default(), &patch).await?;
    info!(configuration = name, "updated the webhook's CA bundle");
    Ok(())
}

/// Keeps the certificates current until `stop` resolves (run by the leader only).
pub async fn run(
    client: Client,
    cfg: CertConfig,
    interval: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = reconcile(&client, &cfg, Timestamp::now()).await {
            warn!(%error, "keeping the pod-identity certificates failed; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{
        RootCertStore,
        client::{WebPkiServerVerifier, danger::ServerCertVerifier},
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
    };

    use super::*;

    fn names() -> Vec<String> {
        vec![
            "tcred-credentials.tcred.svc".into(),
            "tcred-webhook.tcred.svc".into(),
        ]
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn verifies(bundle: &str, leaf: &Leaf, name: &str, at: Timestamp) -> bool {
        crate::cloud::http::install_crypto_provider();
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = WebPkiServerVerifier::builder(Arc::new(roots)).build().unwrap();
        let der = CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap();
        let when = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.as_second() as u64));
        let server = ServerName::try_from(name.to_owned()).unwrap();
        verifier.verify_server_cert(&der, &[], &server, &[], when).is_ok()
    }

    fn short() -> Policy {
        let h = SignedDuration::from_hours(1);
        Policy {
            ca_lifetime: h * 100,
            ca_renew_before: h * 30,
            stage_for: h * 2,
            leaf_lifetime: h * 20,
            leaf_renew_before: h * 5,
        }
    }

    #[test]
    fn a_fresh_state_gets_a_ca_and_a_serving_certificate_for_both_services() {
        let now = t("2026-12-02T06:00:00Z");
        let s = step(&Stored::default(), &names(), now, &short())
            .unwrap()
            .unwrap();
        let leaf = s.leaf.clone().unwrap();
        assert!(verifies(&bundle(&s), &leaf, "tcred-credentials.tcred.svc", now));
        assert!(verifies(&bundle(&s), &leaf, "tcred-webhook.tcred.svc", now));
        assert!(!verifies(&bundle(&s), &leaf, "evil.example.com", now));
        assert_eq!(
            step(&s, &names(), now, &short()).unwrap(),
            None,
            "nothing due: no change"
        );
    }

    #[test]
    fn the_serving_certificate_is_reissued_ahead_of_expiry_and_when_names_change() {
        let p = short();
        let t0 = t("2026-12-02T06:00:00Z");
        let s = step(&Stored::default(), &names(), t0, &p).unwrap().unwrap();
        let t1 = t0.checked_add(SignedDuration::from_hours(16)).unwrap();
        let s1 = step(&s, &names(), t1, &p).unwrap().unwrap();
        assert_eq!(s1.current, s.current, "same CA");
        assert_ne!(s1.leaf, s.leaf);
        assert!(verifies(
            &bundle(&s1),
            s1.leaf.as_ref().unwrap(),
            "tcred-webhook.tcred.svc",
            t1
        ));
        let other = vec!["tcred-webhook.other.svc".to_owned()];
        let s2 = step(&s1, &other, t1, &p).unwrap().unwrap();
        assert!(verifies(
            &bundle(&s2),
            s2.leaf.as_ref().unwrap(),
            "tcred-webhook.other.svc",
            t1
        ));
    }

    #[test]
    fn a_ca_is_staged_then_promoted_and_the_old_one_stays_until_it_expires() {
        let p = short();
        let h = SignedDuration::from_hours(1);
        let t0 = t("2026-12-02T06:00:00Z");
        let s0 = step(&Stored::default(), &names(), t0, &p).unwrap().unwrap();
        let old = s0.current.clone().unwrap();
        // 71 h in: 29 h left < 30 h: a successor is staged; the old CA still signs.
        let t1 = t0.checked_add(h * 71).unwrap();
        let s1 = step(&s0, &names(), t1, &p).unwrap().unwrap();
        assert_eq!(s1.current.as_ref(), Some(&old));
        assert!(s1.next.is_some());
        assert_eq!(s1.leaf.as_ref().unwrap().issuer, old.common_name);
        assert!(bundle(&s1).contains(&s1.next.as_ref().unwrap().cert));
        assert!(verifies(
            &bundle(&s1),
            s1.leaf.as_ref().unwrap(),
            "tcred-webhook.tcred.svc",
            t1
        ));
        // Staged long enough: promoted; the new CA signs; the old one is in the bundle.
        let t2 = t1.checked_add(h * 3).unwrap();
        let s2 = step(&s1, &names(), t2, &p).unwrap().unwrap();
        let new = s2.current.clone().unwrap();
        assert_eq!(new.cert, s1.next.as_ref().unwrap().cert);
        assert_eq!(s2.previous.as_ref().unwrap().cert, old.cert);
        assert!(
            s2.previous.as_ref().unwrap().key.is_empty(),
            "a previous CA keeps no key"
        );
        assert_eq!(s2.leaf.as_ref().unwrap().issuer, new.common_name);
        let b2 = bundle(&s2);
        assert!(b2.contains(&old.cert) && b2.contains(&new.cert));
        assert!(verifies(
            &b2,
            s2.leaf.as_ref().unwrap(),
            "tcred-webhook.tcred.svc",
            t2
        ));
        // A client that only has the bundle of the staging step trusts the new serving cert.
        assert!(verifies(
            &bundle(&s1),
            s2.leaf.as_ref().unwrap(),
            "tcred-webhook.tcred.svc",
            t2
        ));
        // Past the old CA's end: it leaves the bundle.
        let t3 = old.not_after.checked_add(h).unwrap();
        let s3 = step(&s2, &names(), t3, &p).unwrap().unwrap();
        assert!(s3.previous.is_none());
        assert!(!bundle(&s3).contains(&old.cert));
    }

    #[test]
    fn an_expired_or_garbled_state_starts_over() {
        let p = short();
        let t0 = t("2026-12-02T06:00:00Z");
        let s0 = step(&Stored::default(), &names(), t0, &p).unwrap().unwrap();
        let late = t0.checked_add(SignedDuration::from_hours(500)).unwrap();
        let s1 = step(&s0, &names(), late, &p).unwrap().unwrap();
        assert_ne!(s1.current, s0.current);
        assert!(verifies(
            &bundle(&s1),
            s1.leaf.as_ref().unwrap(),
            "tcred-webhook.tcred.svc",
            late
        ));
        let garbled = Secret {
            data: Some(BTreeMap::from([(
                STATE_KEY.to_owned(),
                ByteString(b"{not json".to_vec()),
            )])),
            ..Secret::default()
        };
        assert_eq!(from_secret(Some(&garbled)), Stored::default());
        assert_eq!(from_secret(None), Stored::default());
    }

    #[test]
    fn the_state_round_trips_through_the_secret() {
        let s = step(&Stored::default(), &names(), t("2026-12-02T06:00:00Z"), &short())
            .unwrap()
            .unwrap();
        let secret = Secret {
            data: Some(BTreeMap::from([(
                STATE_KEY.to_owned(),
                ByteString(serde_json::to_vec(&s).unwrap()),
            )])),
            ..Secret::default()
        };
        assert_eq!(from_secret(Some(&secret)), s);
        let tls = tls_data(&s);
        assert_eq!(tls["ca.crt"].0, bundle(&s).into_bytes());
        assert!(String::from_utf8_lossy(&tls["tls.key"].0).contains("PRIVATE KEY"));
    }
}
