//! The managed Secret: building it from an issued credential (pure), reading back what a live
//! Secret holds, and the hashes that tell a restarted controller whether it is still good.
//!
//! What tcred trusts in a Secret it manages (docs/security.md H5, L3):
//! - **Only its own keys.** The data hash (`tcred.dev/data-hash`) covers the keys that hold the
//!   credential ([`keys::ALL`]); every other key tcred writes for the spec (ids, consumer formats,
//!   extra names: [`formats::render`]) is derived from them, and is checked by rendering it again
//!   from them: a difference rewrites it without minting. A key someone else adds is ignored: it
//!   is neither hashed nor compared, so it does not make the Secret look edited (and trigger a
//!   re-mint), and it is not removed: tcred never applies it, so a server-side apply leaves it to
//!   the field manager that wrote it.
//! - **The data, not the annotations.** The expiry is read from the hashed data key
//!   `HUAWEICLOUD_SDK_EXPIRES_AT`; the `tcred.dev/expires-at` annotation is a mirror, rewritten
//!   when it disagrees. The `tcred.dev/issued-at` annotation is covered by the data hash; when it
//!   was edited, the issue time the status recorded (`lastRotationTime`) is used if the hash
//!   vouches for it, and the annotation is rewritten; otherwise the Secret counts as edited.
//!   Either way an edited annotation neither keeps a credential past its real expiry nor counts as
//!   a rotation.
//!
//! The hash is not a signature: whoever can write the Secret can also recompute it. It tells
//! edits apart from tcred's own writes; it does not stop someone who may write the Secret from
//! breaking the credential in it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{formats, registry};
use crate::{
    api::{DeletionPolicy, TemporaryCredential, annotations, labels},
    cloud::IssuedCredential,
    sensitive::SecretString,
    shard,
};

/// Secret keys (contract: docs/api.md, "The Secret"). [`ALL`](keys::ALL) are the keys that hold the
/// credential, which tcred reads back; the rest of what it writes is in `api::secret_output`.
pub mod keys {
    pub const ACCESS_KEY: &str = "HUAWEICLOUD_SDK_AK";
    pub const SECRET_KEY: &str = "HUAWEICLOUD_SDK_SK";
    pub const SECURITY_TOKEN: &str = "HUAWEICLOUD_SDK_SECURITY_TOKEN";
    pub const EXPIRES_AT: &str = "HUAWEICLOUD_SDK_EXPIRES_AT";
    pub const CREDENTIALS_FILE: &str = "credentials";
    pub const DOMAIN_ID: &str = "HUAWEICLOUD_SDK_DOMAIN_ID";
    pub const PROJECT_ID: &str = "HUAWEICLOUD_SDK_PROJECT_ID";
    pub const ALL: [&str; 5] = [
        ACCESS_KEY,
        SECRET_KEY,
        SECURITY_TOKEN,
        EXPIRES_AT,
        CREDENTIALS_FILE,
    ];
}

/// What the Secret of a credential's mode holds: its type, tcred's keys in it, and the key its
/// expiry is read from. An `imagePullSecret` credential writes `registry`'s layout
/// (docs/registry.md), every other one the SDK keys above.
struct Layout {
    type_: &'static str,
    keys: &'static [&'static str],
    expires_key: &'static str,
}

fn layout(tc: &TemporaryCredential) -> Layout {
    match tc.spec.image_pull_secret {
        Some(_) => Layout {
            type_: registry::SECRET_TYPE,
            keys: &registry::keys::ALL,
            expires_key: registry::keys::EXPIRES_AT,
        },
        None => Layout {
            type_: "Opaque",
            keys: &keys::ALL,
            expires_key: keys::EXPIRES_AT,
        },
    }
}

/// The type of the Secret tcred writes for `tc`.
pub fn secret_type(tc: &TemporaryCredential) -> &'static str {
    layout(tc).type_
}

/// Annotation: hash of the Secret template (labels, annotations, deletion policy) last applied.
const TEMPLATE_HASH: &str = "tcred.dev/template-hash";

/// The Secret's name for a TemporaryCredential.
pub fn secret_name(tc: &TemporaryCredential) -> String {
    tc.spec.secret.name.clone().unwrap_or_else(|| tc.name_any())
}

/// Hash of the spec fields that shape the credential itself. A change means the Secret holds a
/// credential for something no longer asked for, so it is re-minted. (Renewal timing and the
/// Secret's metadata are not in it: changing them re-schedules or re-labels without minting.)
pub fn spec_hash(tc: &TemporaryCredential) -> String {
    let s = &tc.spec;
    let mut shaping = json!({
        "sourceRef": s.source_ref,
        "permissionSet": s.permission_set,
        "agencyUrn": s.agency_urn,
        "duration": s.duration.map(|d| std::time::Duration::from(d).as_secs()),
        "policy": s.policy,
        "sessionName": s.session_name,
        "serviceAccountName": s.service_account_name,
    });
    // Only when set, so the hash of every other credential stays what it was.
    if let (Some(pull), Some(obj)) = (&s.image_pull_secret, shaping.as_object_mut()) {
        obj.insert("imagePullSecret".into(), json!(pull));
    }
    short_hash(shaping.to_string().as_bytes())
}

/// Hash of what shapes the Secret but not the credential: its metadata and which keys it holds.
/// A change rewrites the Secret without minting; keys the spec no longer asks for are dropped by
/// that apply.
fn template_hash(tc: &TemporaryCredential) -> String {
    let t = &tc.spec.secret;
    short_hash(
        json!({
            "labels": t.labels,
            "annotations": t.annotations,
            "deletionPolicy": t.deletion_policy,
            "outputs": {
                "version": 2,
                "formats": t.formats,
                "keys": t.keys,
                "projectId": t.project_id,
                "region": t.region,
            },
        })
        .to_string()
        .as_bytes(),
    )
}

fn short_hash(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..12])
}

/// Hash of tcred's own keys in the Secret's data and of the credential's issue time, to detect
/// edits. A one-way hash of high-entropy keys; it reveals nothing about them. Keys tcred does not
/// write are left out (see the module doc).
pub fn data_hash(data: &BTreeMap<String, ByteString>, issued_at: Timestamp) -> String {
    data_hash_of(data, issued_at, &keys::ALL)
}

/// [`data_hash`] over the keys `own` of a layout.
fn data_hash_of(data: &BTreeMap<String, ByteString>, issued_at: Timestamp, own: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"tcred-secret-data-v2");
    hash_own_keys(&mut h, data, own);
    let issued = rfc3339(issued_at);
    h.update((issued.len() as u64).to_be_bytes());
    h.update(issued.as_bytes());
    hex::encode(h.finalize())
}

/// The hash written before it covered the issue time. Still accepted (the Secret then gets its
/// metadata rewritten with the current hash), so an upgrade re-mints nothing.
fn legacy_data_hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut h = Sha256::new();
    h.update(b"tcred-secret-data-v1");
    hash_own_keys(&mut h, data, &keys::ALL);
    hex::encode(h.finalize())
}

fn hash_own_keys(h: &mut Sha256, data: &BTreeMap<String, ByteString>, own: &[&str]) {
    for (k, v) in data.iter().filter(|(k, _)| own.contains(&k.as_str())) {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_be_bytes());
        h.update(&v.0);
    }
}

/// Kept at its former path for callers outside the crate.
pub use crate::time::rfc3339;

/// When the credential in a Secret was issued and when it is to be renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    pub issued_at: Timestamp,
    pub renewal_at: Timestamp,
}

/// The Secret holding `cred`: every key written in one object, so readers never mix credentials.
pub fn build(tc: &TemporaryCredential, cred: &IssuedCredential, times: Times) -> Secret {
    secret_of(tc, formats::render(tc, cred), cred.expires_at, times)
}

/// The Secret for `tc` holding the credential that `data` (a live Secret's data) holds, with
/// every key the spec asks for rendered again from it (for rewriting metadata and keys without
/// minting). Other keys are left out, so the apply leaves them as they are.
pub fn with_data(
    tc: &TemporaryCredential,
    mut data: BTreeMap<String, ByteString>,
    expires_at: Timestamp,
    times: Times,
) -> Secret {
    let layout = layout(tc);
    match held_credential(&data) {
        // An image pull Secret holds a registry login, not the credential: no formats apply.
        Some(cred) if tc.spec.image_pull_secret.is_none() => data = formats::render(tc, &cred),
        // Not a credential tcred wrote (only called with an intact one): keep what is there.
        _ => data.retain(|k, _| layout.keys.contains(&k.as_str())),
    }
    secret_of(tc, data, expires_at, times)
}

/// The credential a Secret's data holds, read from the keys tcred reads back.
fn held_credential(data: &BTreeMap<String, ByteString>) -> Option<IssuedCredential> {
    let text = |k: &str| {
        data.get(k)
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .filter(|v| !v.is_empty())
    };
    Some(IssuedCredential {
        access_key_id: text(keys::ACCESS_KEY)?.to_owned(),
        secret_access_key: SecretString::new(text(keys::SECRET_KEY)?.to_owned()),
        security_token: SecretString::new(text(keys::SECURITY_TOKEN)?.to_owned()),
        expires_at: text(keys::EXPIRES_AT)?.trim().parse().ok()?,
        clock_skew_seconds: None,
    })
}

/// Whether every key tcred writes for `tc` holds what tcred would write for the credential the
/// data holds. Keys beyond those are not looked at.
fn outputs_current(tc: &TemporaryCredential, data: &BTreeMap<String, ByteString>) -> bool {
    if tc.spec.image_pull_secret.is_some() {
        return true;
    }
    held_credential(data).is_some_and(|cred| {
        formats::render(tc, &cred)
            .iter()
            .all(|(k, v)| data.get(k) == Some(v))
    })
}

fn secret_of(
    tc: &TemporaryCredential,
    data: BTreeMap<String, ByteString>,
    expires_at: Timestamp,
    times: Times,
) -> Secret {
    let layout = layout(tc);
    let template = &tc.spec.secret;
    let mut labels_out = template.labels.clone();
    // The shard labels are the credential's own (docs/sharding.md), never the template's: the
    // Secret watch of the credential's shard must see this Secret.
    labels_out.retain(|k, _| !shard::is_shard_label(k));
    labels_out.extend(shard::shard_labels(tc.labels()));
    labels_out.insert(labels::MANAGED_BY.into(), labels::MANAGED_BY_VALUE.into());
    labels_out.insert(labels::CREDENTIAL.into(), tc.name_any());

    let mut ann = template.annotations.clone();
    ann.insert(annotations::EXPIRES_AT.into(), rfc3339(expires_at));
    ann.insert(annotations::RENEWAL_TIME.into(), rfc3339(times.renewal_at));
    ann.insert(annotations::ISSUED_AT.into(), rfc3339(times.issued_at));
    ann.insert(annotations::SPEC_HASH.into(), spec_hash(tc));
    ann.insert(
        annotations::DATA_HASH.into(),
        data_hash_of(&data, times.issued_at, layout.keys),
    );
    ann.insert(TEMPLATE_HASH.into(), template_hash(tc));

    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(tc)),
            namespace: tc.namespace(),
            labels: Some(labels_out),
            annotations: Some(ann),
            owner_references: owner_references(tc),
            ..Default::default()
        },
        type_: Some(layout.type_.into()),
        data: Some(data),
        ..Default::default()
    }
}

fn owner_references(tc: &TemporaryCredential) -> Option<Vec<OwnerReference>> {
    match tc.spec.secret.deletion_policy {
        DeletionPolicy::Delete => tc.controller_owner_ref(&()).map(|o| vec![o]),
        DeletionPolicy::Retain => None,
    }
}

/// What the live Secret holds, as far as planning is concerned. Never carries secret material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    Missing,
    /// A Secret of that name exists but is not tcred's for this TemporaryCredential.
    Foreign,
    Managed(ManagedSecret),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedSecret {
    /// All of tcred's keys present and the data hash matches: nobody edited them.
    pub intact: bool,
    pub spec_hash_matches: bool,
    /// Labels, annotations and owner references are what the spec asks for, and the schedule
    /// annotations mirror what the data hash vouches for.
    pub metadata_current: bool,
    pub access_key_id: Option<String>,
    /// When the credential was issued: the `tcred.dev/issued-at` annotation when the data hash
    /// vouches for it, else the status' `lastRotationTime` when the hash vouches for that.
    pub issued_at: Option<Timestamp>,
    /// When the credential expires, from the data key `HUAWEICLOUD_SDK_EXPIRES_AT`.
    pub expires_at: Option<Timestamp>,
}

/// Reads the live Secret (or its absence) against what `tc` expects.
pub fn observe(tc: &TemporaryCredential, secret: Option<&Secret>) -> Observed {
    let Some(secret) = secret else {
        return Observed::Missing;
    };
    let l = secret.labels();
    if l.get(labels::MANAGED_BY).map(String::as_str) != Some(labels::MANAGED_BY_VALUE)
        || l.get(labels::CREDENTIAL) != Some(&tc.name_any())
    {
        return Observed::Foreign;
    }
    let layout = layout(tc);
    // A Secret's type is immutable: one of another type can never hold this credential.
    if registry::type_mismatch(secret, layout.type_).is_some() {
        return Observed::Foreign;
    }
    let ann = secret.annotations();
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let all_keys = layout
        .keys
        .iter()
        .all(|k| data.get(*k).is_some_and(|v| !v.0.is_empty()));
    let issued_annotation = ann
        .get(annotations::ISSUED_AT)
        .and_then(|v| v.parse::<Timestamp>().ok());
    let expires_at = data
        .get(layout.expires_key)
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .and_then(|v| v.trim().parse::<Timestamp>().ok());
    let written_hash = ann.get(annotations::DATA_HASH);
    let vouched = |t: &Timestamp| written_hash == Some(&data_hash_of(data, *t, layout.keys));
    let recorded_issue = tc
        .status
        .as_ref()
        .and_then(|s| s.last_rotation_time.as_ref())
        .map(|t| t.0);
    // (intact, issue time, whether the issued-at annotation needs no rewrite)
    let (intact, issued_at, issued_current) = if !all_keys {
        (false, issued_annotation, true)
    } else if let Some(t) = issued_annotation.filter(vouched) {
        (true, Some(t), true)
    } else if let Some(t) = recorded_issue.filter(vouched) {
        // The annotation was edited; the status knows the real issue time.
        (true, Some(t), false)
    } else if tc.spec.image_pull_secret.is_none() && written_hash == Some(&legacy_data_hash(data)) {
        // (Image pull Secrets were never written with the legacy hash.)
        (true, issued_annotation, false)
    } else {
        (false, issued_annotation, true)
    };
    let expires_current = match expires_at {
        Some(exp) => ann.get(annotations::EXPIRES_AT) == Some(&rfc3339(exp)),
        None => true,
    };
    let metadata_current = ann.get(TEMPLATE_HASH) == Some(&template_hash(tc))
        && (!intact || outputs_current(tc, data))
        && shard::shard_labels(l) == shard::shard_labels(tc.labels())
        && issued_current
        && expires_current
        && secret.metadata.owner_references.clone().unwrap_or_default()
            == owner_references(tc).unwrap_or_default();
    Observed::Managed(ManagedSecret {
        intact,
        spec_hash_matches: ann.get(annotations::SPEC_HASH) == Some(&spec_hash(tc)),
        metadata_current,
        access_key_id: data
            .get(keys::ACCESS_KEY)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned()),
        issued_at,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{credential, tc};

    fn times() -> Times {
        Times {
            issued_at: Timestamp::from_second(1_000).unwrap(),
            renewal_at: Timestamp::from_second(2_000).unwrap(),
        }
    }

    #[test]
    fn secret_holds_every_contract_key_from_one_credential() {
        let s = build(&tc("billing"), &credential("AKID1", 3_600), times());
        let data = s.data.as_ref().unwrap();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
        assert_eq!(text(keys::ACCESS_KEY), "AKID1");
        assert_eq!(text(keys::SECRET_KEY), "SK-for-AKID1");
        assert_eq!(text(keys::SECURITY_TOKEN), "token-for-AKID1");
        assert_eq!(text(keys::EXPIRES_AT), "1970-01-01T01:00:00Z");
        let ini = text(keys::CREDENTIALS_FILE);
        for section in ["[basic]", "[global]", "[basiccredentials]", "[globalcredentials]"] {
            assert!(
                ini.contains(&format!(
                    "{section}\nak = AKID1\nsk = SK-for-AKID1\nsecurity_token = token-for-AKID1\n"
                )),
                "{ini}"
            );
        }
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(s.metadata.name.as_deref(), Some("billing"));
    }

    #[test]
    fn secret_carries_labels_annotations_and_owner_reference() {
        let mut t = tc("billing");
        t.spec.secret.labels.insert("team".into(), "a".into());
        t.spec.secret.annotations.insert("note".into(), "x".into());
        let s = build(&t, &credential("AKID1", 3_600), times());
        let l = s.metadata.labels.as_ref().unwrap();
        assert_eq!(l[labels::MANAGED_BY], "tcred");
        assert_eq!(l[labels::CREDENTIAL], "billing");
        assert_eq!(l["team"], "a");
        let a = s.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[annotations::EXPIRES_AT], "1970-01-01T01:00:00Z");
        assert_eq!(a[annotations::RENEWAL_TIME], "1970-01-01T00:33:20Z");
        assert_eq!(a["note"], "x");
        let owners = s.metadata.owner_references.unwrap();
        assert_eq!(owners[0].kind, "TemporaryCredential");
        assert_eq!(owners[0].controller, Some(true));
    }

    #[test]
    fn retain_policy_leaves_the_secret_unowned() {
        let mut t = tc("billing");
        t.spec.secret.deletion_policy = DeletionPolicy::Retain;
        assert!(
            build(&t, &credential("AKID1", 3_600), times())
                .metadata
                .owner_references
                .is_none()
        );
    }

    #[test]
    fn user_labels_cannot_take_over_the_managed_labels() {
        let mut t = tc("billing");
        t.spec
            .secret
            .labels
            .insert(labels::MANAGED_BY.into(), "someone-else".into());
        let s = build(&t, &credential("AKID1", 3_600), times());
        assert_eq!(s.metadata.labels.unwrap()[labels::MANAGED_BY], "tcred");
    }

    #[test]
    fn the_secret_carries_the_credentials_shard_labels_and_never_the_templates() {
        let mut t = tc("billing");
        t.metadata.labels = Some(BTreeMap::from([
            (shard::SHARD_LABEL.to_owned(), "a".to_owned()),
            ("team".to_owned(), "x".to_owned()),
        ]));
        t.spec.secret.labels.insert(shard::SHARD_LABEL.into(), "b".into());
        let sharder = format!("{}tcred", shard::SHARDER_LABEL_PREFIX);
        t.spec.secret.labels.insert(sharder.clone(), "tcred-1".into());
        let s = build(&t, &credential("AKID1", 3_600), times());
        let l = s.metadata.labels.unwrap();
        assert_eq!(l[shard::SHARD_LABEL], "a");
        assert!(
            !l.contains_key(&sharder),
            "a template cannot place the Secret in a shard"
        );
        assert!(!l.contains_key("team"), "only shard labels are copied");
    }

    #[test]
    fn a_credential_moved_to_another_shard_relabels_its_secret_without_a_mint() {
        let mut t = tc("billing");
        t.metadata.labels = Some(BTreeMap::from([(shard::SHARD_LABEL.to_owned(), "a".to_owned())]));
        let s = build(&t, &credential("AKID1", 3_600), times());
        t.metadata.labels = Some(BTreeMap::from([(shard::SHARD_LABEL.to_owned(), "b".to_owned())]));
        let Observed::Managed(m) = observe(&t, Some(&s)) else {
            panic!("the Secret is still the credential's")
        };
        assert!(
            m.intact && m.spec_hash_matches,
            "the credential it holds stays good"
        );
        assert!(!m.metadata_current, "its shard label is rewritten");
        t.metadata.labels = None;
        let Observed::Managed(m) = observe(&t, Some(&build(&t, &credential("AKID1", 3_600), times()))) else {
            panic!("managed")
        };
        assert!(
            m.metadata_current,
            "an unsharded credential's Secret carries no shard label"
        );
    }

    #[test]
    fn a_secret_tcred_built_reads_back_as_intact_and_current() {
        let t = tc("billing");
        let s = build(&t, &credential("AKID1", 3_600), times());
        let Observed::Managed(m) = observe(&t, Some(&s)) else {
            panic!("not managed")
        };
        assert!(m.intact && m.spec_hash_matches && m.metadata_current);
        assert_eq!(m.access_key_id.as_deref(), Some("AKID1"));
        assert_eq!(m.expires_at, Some(Timestamp::from_second(3_600).unwrap()));
        assert_eq!(m.issued_at, Some(times().issued_at));
    }

    #[test]
    fn an_edited_secret_is_not_intact() {
        let t = tc("billing");
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        s.data
            .as_mut()
            .unwrap()
            .insert(keys::SECRET_KEY.into(), ByteString(b"tampered".to_vec()));
        let Observed::Managed(m) = observe(&t, Some(&s)) else {
            panic!()
        };
        assert!(!m.intact);

        let mut s = build(&t, &credential("AKID1", 3_600), times());
        s.data.as_mut().unwrap().remove(keys::CREDENTIALS_FILE);
        s.metadata.annotations.as_mut().unwrap().insert(
            annotations::DATA_HASH.into(),
            data_hash(s.data.as_ref().unwrap(), times().issued_at),
        );
        let Observed::Managed(m) = observe(&t, Some(&s)) else {
            panic!()
        };
        assert!(!m.intact, "a missing key is not intact even with a matching hash");
    }

    #[test]
    fn spec_changes_that_shape_the_credential_change_the_hash_and_others_do_not() {
        let base = tc("billing");
        let mut other_agency = base.clone();
        other_agency.spec.agency_urn = Some("iam::0123:agency:other".into());
        assert_ne!(spec_hash(&base), spec_hash(&other_agency));

        let mut renew = base.clone();
        renew.spec.renew_before_percentage = Some(50);
        renew.spec.secret.labels.insert("x".into(), "y".into());
        assert_eq!(spec_hash(&base), spec_hash(&renew));

        let s = build(&base, &credential("AKID1", 3_600), times());
        let Observed::Managed(m) = observe(&renew, Some(&s)) else {
            panic!()
        };
        assert!(m.spec_hash_matches && !m.metadata_current);
    }

    #[test]
    fn secrets_tcred_does_not_manage_are_foreign() {
        let t = tc("billing");
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        s.metadata.labels = None;
        assert_eq!(observe(&t, Some(&s)), Observed::Foreign);
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        s.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(labels::CREDENTIAL.into(), "another".into());
        assert_eq!(observe(&t, Some(&s)), Observed::Foreign);
        assert_eq!(observe(&t, None), Observed::Missing);
    }

    #[test]
    fn secret_name_defaults_to_the_credential_name() {
        let mut t = tc("billing");
        assert_eq!(secret_name(&t), "billing");
        t.spec.secret.name = Some("billing-creds".into());
        assert_eq!(secret_name(&t), "billing-creds");
    }
    fn managed(t: &TemporaryCredential, s: &Secret) -> ManagedSecret {
        match observe(t, Some(s)) {
            Observed::Managed(m) => m,
            other => panic!("not managed: {other:?}"),
        }
    }

    fn annotate(s: &mut Secret, key: &str, value: &str) {
        s.metadata
            .annotations
            .get_or_insert_default()
            .insert(key.into(), value.into());
    }

    #[test]
    fn a_key_someone_else_added_is_neither_an_edit_nor_removed() {
        let t = tc("billing");
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        s.data
            .as_mut()
            .unwrap()
            .insert("EXTRA".into(), ByteString(b"added by someone".to_vec()));
        let m = managed(&t, &s);
        assert!(m.intact && m.metadata_current, "{m:?}");
        assert_eq!(m.access_key_id.as_deref(), Some("AKID1"));

        // Re-applying the metadata carries only tcred's keys: the apply does not take the other
        // key over, so it stays with whoever wrote it.
        let relabelled = with_data(&t, s.data.clone().unwrap(), m.expires_at.unwrap(), times());
        let keys_written: Vec<_> = relabelled.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(
            keys_written.len(),
            formats::render(&t, &credential("AKID1", 3_600)).len()
        );
        assert!(!keys_written.contains(&"EXTRA".to_owned()));
        assert_eq!(
            relabelled.metadata.annotations.as_ref().unwrap()[annotations::DATA_HASH],
            s.metadata.annotations.as_ref().unwrap()[annotations::DATA_HASH]
        );
    }

    #[test]
    fn an_edited_expiry_annotation_is_ignored_and_rewritten() {
        // docs/security.md L3: `tcred.dev/expires-at=9999-01-01T00:00:00Z` kept the credential for ever.
        let t = tc("billing");
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        annotate(&mut s, annotations::EXPIRES_AT, "9999-01-01T00:00:00Z");
        let m = managed(&t, &s);
        assert!(m.intact);
        assert_eq!(m.expires_at, Some(Timestamp::from_second(3_600).unwrap()));
        assert!(!m.metadata_current, "the mirror is rewritten");

        let relabelled = with_data(&t, s.data.clone().unwrap(), m.expires_at.unwrap(), times());
        assert_eq!(
            relabelled.metadata.annotations.as_ref().unwrap()[annotations::EXPIRES_AT],
            "1970-01-01T01:00:00Z"
        );
        assert!(managed(&t, &relabelled).metadata_current);
    }

    #[test]
    fn an_edited_expiry_in_the_data_is_an_edit() {
        let t = tc("billing");
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        s.data.as_mut().unwrap().insert(
            keys::EXPIRES_AT.into(),
            ByteString(b"9999-01-01T00:00:00Z".to_vec()),
        );
        assert!(!managed(&t, &s).intact);
    }

    #[test]
    fn an_edited_issue_time_is_recovered_from_the_status_or_counts_as_an_edit() {
        // docs/security.md L3: a later `tcred.dev/issued-at` counted as a rotation and restarted workloads.
        let mut t = tc("billing");
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        annotate(&mut s, annotations::ISSUED_AT, "1970-01-01T00:30:00Z");

        // The status recorded the real issue time: the hash vouches for it.
        t.status = Some(crate::api::TemporaryCredentialStatus {
            last_rotation_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                times().issued_at,
            )),
            rotations: 1,
            ..Default::default()
        });
        let m = managed(&t, &s);
        assert!(m.intact);
        assert_eq!(m.issued_at, Some(times().issued_at));
        assert!(!m.metadata_current, "the annotation is rewritten");

        // Without that record nothing vouches for any issue time: the Secret was edited.
        let m = managed(&tc("billing"), &s);
        assert!(!m.intact);
    }

    #[test]
    fn a_secret_written_before_the_hash_covered_the_issue_time_stays_intact_and_is_rewritten() {
        let t = tc("billing");
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        let legacy = legacy_data_hash(s.data.as_ref().unwrap());
        annotate(&mut s, annotations::DATA_HASH, &legacy);
        let m = managed(&t, &s);
        assert!(m.intact && !m.metadata_current, "{m:?}");
        assert_eq!(m.issued_at, Some(times().issued_at));
    }

    /// A Secret as the release before consumer formats wrote it: four INI sections, no domain id,
    /// the template hash without outputs, and the v2 data hash (or the v1 one).
    fn previous_release_secret(t: &TemporaryCredential, v1: bool) -> Secret {
        let mut s = build(t, &credential("AKID1", 3_600), times());
        let data = s.data.as_mut().unwrap();
        data.remove(keys::DOMAIN_ID);
        let mut ini = String::new();
        for section in ["basic", "global", "basiccredentials", "globalcredentials"] {
            ini.push_str(&format!(
                "[{section}]\nak = AKID1\nsk = SK-for-AKID1\nsecurity_token = token-for-AKID1\n\n"
            ));
        }
        data.insert(keys::CREDENTIALS_FILE.into(), ByteString(ini.into_bytes()));
        let hash = match v1 {
            true => legacy_data_hash(data),
            false => data_hash(data, times().issued_at),
        };
        let sp = &t.spec.secret;
        let old_template = short_hash(
            json!({"labels": sp.labels, "annotations": sp.annotations, "deletionPolicy": sp.deletion_policy})
                .to_string()
                .as_bytes(),
        );
        annotate(&mut s, annotations::DATA_HASH, &hash);
        annotate(&mut s, TEMPLATE_HASH, &old_template);
        s
    }

    #[test]
    fn an_upgrade_keeps_the_credential_and_rewrites_the_secret_with_the_new_keys() {
        let t = tc("billing");
        for v1 in [false, true] {
            let old = previous_release_secret(&t, v1);
            let m = managed(&t, &old);
            assert!(m.intact && m.spec_hash_matches && !m.metadata_current, "{m:?}");
            let rewritten = with_data(&t, old.data.clone().unwrap(), m.expires_at.unwrap(), times());
            let data = rewritten.data.as_ref().unwrap();
            assert_eq!(data[keys::DOMAIN_ID].0, b"0123456789abcdef0123456789abcdef");
            assert!(String::from_utf8_lossy(&data[keys::CREDENTIALS_FILE].0).contains("[basic.credentials]"));
            assert_eq!(data[keys::SECRET_KEY].0, b"SK-for-AKID1");
            let m2 = managed(&t, &rewritten);
            assert!(m2.intact && m2.metadata_current, "{m2:?}");
            assert_eq!((m2.access_key_id, m2.issued_at), (m.access_key_id, m.issued_at));
        }
    }

    #[test]
    fn changing_formats_rewrites_the_keys_without_a_new_credential() {
        let t = tc("billing");
        let s = build(&t, &credential("AKID1", 3_600), times());
        let mut with_obs = t.clone();
        with_obs.spec.secret.formats = vec!["obs".into()];
        with_obs.spec.secret.keys = BTreeMap::from([("OBS_ACCESS_KEY_ID".into(), "MY_AK".into())]);
        let m = managed(&with_obs, &s);
        assert!(m.intact && m.spec_hash_matches && !m.metadata_current, "{m:?}");
        let rewritten = with_data(&with_obs, s.data.clone().unwrap(), m.expires_at.unwrap(), times());
        let data = rewritten.data.as_ref().unwrap();
        assert_eq!(data["OBS_SECRET_ACCESS_KEY"].0, b"SK-for-AKID1");
        assert_eq!(data["MY_AK"].0, b"AKID1");
        assert!(managed(&with_obs, &rewritten).metadata_current);

        // Dropping the format again: the keys are not applied any more, so the apply removes them.
        let m = managed(&t, &rewritten);
        assert!(m.intact && !m.metadata_current);
        let back = with_data(
            &t,
            rewritten.data.clone().unwrap(),
            m.expires_at.unwrap(),
            times(),
        );
        assert!(!back.data.as_ref().unwrap().contains_key("OBS_ACCESS_KEY_ID"));
        assert!(!back.data.as_ref().unwrap().contains_key("MY_AK"));
    }

    #[test]
    fn an_edited_format_key_is_rewritten_from_the_credential_not_re_minted() {
        let mut t = tc("billing");
        t.spec.secret.formats = vec!["aws".into()];
        let mut s = build(&t, &credential("AKID1", 3_600), times());
        s.data
            .as_mut()
            .unwrap()
            .insert("AWS_SECRET_ACCESS_KEY".into(), ByteString(b"tampered".to_vec()));
        let m = managed(&t, &s);
        assert!(m.intact && !m.metadata_current, "{m:?}");
        let repaired = with_data(&t, s.data.clone().unwrap(), m.expires_at.unwrap(), times());
        assert_eq!(
            repaired.data.as_ref().unwrap()["AWS_SECRET_ACCESS_KEY"].0,
            b"SK-for-AKID1"
        );
    }

    #[test]
    fn times_at_the_edge_of_time_format_without_panicking() {
        for t0 in [Timestamp::MIN, Timestamp::MAX, Timestamp::UNIX_EPOCH] {
            assert!(!rfc3339(t0).is_empty());
            let mut cred = credential("AKID1", 0);
            cred.expires_at = t0;
            let times = Times {
                issued_at: t0,
                renewal_at: t0,
            };
            let _ = observe(&tc("billing"), Some(&build(&tc("billing"), &cred, times)));
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_text() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,30}",
                "[-+0-9TZ:.]{0,30}",
                (-377_705_116_800i64..253_402_207_200)
                    .prop_map(|s| Timestamp::from_second(s).unwrap().to_string()),
            ]
        }

        fn tcred_key() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(keys::ALL.to_vec()).prop_map(str::to_owned),
                proptest::sample::select(vec![
                    annotations::EXPIRES_AT,
                    annotations::ISSUED_AT,
                    annotations::DATA_HASH,
                    annotations::SPEC_HASH,
                    TEMPLATE_HASH,
                ])
                .prop_map(str::to_owned),
                ".{0,20}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn observing_any_annotations_and_data_never_panics(
                ann in proptest::collection::btree_map(tcred_key(), any_text(), 0..8),
                data in proptest::collection::btree_map(
                    tcred_key(),
                    proptest::collection::vec(any::<u8>(), 0..40),
                    0..8,
                ),
                start_from_built in any::<bool>(),
            ) {
                let t = tc("billing");
                let mut s = if start_from_built {
                    build(&t, &credential("AKID1", 3_600), times())
                } else {
                    Secret {
                        metadata: ObjectMeta {
                            labels: Some(BTreeMap::from([
                                (labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned()),
                                (labels::CREDENTIAL.to_owned(), "billing".to_owned()),
                            ])),
                            ..Default::default()
                        },
                        ..Default::default()
                    }
                };
                s.metadata.annotations.get_or_insert_default().extend(ann);
                let d = s.data.get_or_insert_default();
                for (k, v) in data {
                    d.insert(k, ByteString(v));
                }
                let _ = observe(&t, Some(&s));
            }

            #[test]
            fn a_built_secret_reads_back_intact_with_its_access_key_and_expiry(
                ak in "[A-Z0-9]{1,24}",
                sk in ".{1,40}",
                token in ".{1,200}",
                issued in 946_684_800i64..4_102_444_800,
                lifetime in 0i64..40 * 86_400,
                renewal in any::<i64>(),
            ) {
                let t = tc("billing");
                let cred = IssuedCredential {
                    access_key_id: ak.clone(),
                    secret_access_key: sk.into(),
                    security_token: token.into(),
                    expires_at: Timestamp::from_second(issued + lifetime).unwrap(),
                    clock_skew_seconds: None,
                };
                let times = Times {
                    issued_at: Timestamp::from_second(issued).unwrap(),
                    renewal_at: Timestamp::from_second(renewal.rem_euclid(4_102_444_800)).unwrap(),
                };
                let m = managed(&t, &build(&t, &cred, times));
                prop_assert!(m.intact && m.spec_hash_matches && m.metadata_current, "{m:?}");
                prop_assert_eq!(m.access_key_id, Some(ak));
                prop_assert_eq!(m.expires_at, Some(cred.expires_at));
                prop_assert_eq!(m.issued_at, Some(times.issued_at));
            }

            #[test]
            fn building_a_secret_for_any_times_never_panics(
                expires in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
                issued in Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
                nanos in 0i32..1_000_000_000,
            ) {
                let t = tc("billing");
                let mut cred = credential("AKID1", 0);
                cred.expires_at = Timestamp::new(expires, nanos).unwrap_or(Timestamp::MAX);
                let times = Times {
                    issued_at: Timestamp::from_second(issued).unwrap(),
                    renewal_at: Timestamp::from_second(issued).unwrap(),
                };
                let _ = observe(&t, Some(&build(&t, &cred, times)));
            }
        }
    }
}
