//! Minting one credential through a source: read what the source needs (access key Secret,
//! session Secret, or a ServiceAccount token), take a token from the endpoint's bucket, and call
//! Huawei Cloud.

use std::{
    collections::{BTreeMap, HashSet},
    sync::OnceLock,
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec},
    core::v1::{Secret, ServiceAccount},
};
use kube::{
    Api, ResourceExt,
    api::{GetParams, PostParams},
};

use crate::{
    api::{
        SourceKind, SourceMode, TemporaryCredential, annotations, condition::reasons, opted_in,
        source::AuditSettings,
    },
    cloud::{
        ErrorClass, IssuedCredential,
        audit::{self, RESERVED_TAG_PREFIX, SessionAudit, SessionTag},
        endpoints::{self, ResolvedEndpoints},
        portal,
        signer::AccessKey,
        sts::{self, AssumeRequest},
    },
    controller::{
        authorize::{Authorized, Problem, Target},
        context::{AGENCY_URN_TTL, Context},
        error::kube_message,
    },
    sensitive::SecretString,
    session::Session,
    source::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, Source, read_key},
};

pub use super::failure::MintError;

/// Lifetime of the ServiceAccount tokens exchanged with STS (TokenRequest's minimum).
const DEFAULT_SA_TOKEN_SECONDS: i64 = 600;

/// The session name for `tc`: the spec's, or `<namespace>-<name>`, within Huawei's rules (2–64
/// of `[A-Za-z0-9_+=,.@-]`). Through a ClusterCredentialSource the namespace always leads, so a
/// tenant's `sessionName` cannot pose as another tenant's in Huawei's audit logs.
pub fn session_name(tc: &TemporaryCredential) -> String {
    let ns = tc.namespace().unwrap_or_default();
    let raw = match (&tc.spec.session_name, tc.spec.source_ref.kind) {
        (Some(n), SourceKind::CredentialSource) => n.clone(),
        (Some(n), SourceKind::ClusterCredentialSource) => format!("{ns}-{n}"),
        (None, _) => format!("{ns}-{}", tc.name_any()),
    };
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while s.len() < 2 {
        s.push('-');
    }
    s
}

/// Session tag keys (docs/security.md#audit-attribution).
pub const TAG_NAMESPACE: &str = "tcred.namespace";
pub const TAG_CREDENTIAL: &str = "tcred.credential";
pub const TAG_SOURCE: &str = "tcred.source";

/// What AssumeAgency tells Huawei's trace service about `tc`'s sessions, as the source's
/// `audit` settings ask: always derived from the object's namespace and name (and the source it
/// names), never from anything a tenant writes, so no tenant can be attributed as another.
pub fn session_audit(tc: &TemporaryCredential, settings: Option<&AuditSettings>) -> SessionAudit {
    let Some(settings) = settings else {
        return SessionAudit::default();
    };
    let ns = tc.namespace().unwrap_or_default();
    let name = tc.name_any();
    let source = &tc.spec.source_ref;
    let kind = match source.kind {
        SourceKind::CredentialSource => "CredentialSource",
        SourceKind::ClusterCredentialSource => "ClusterCredentialSource",
    };
    let mut tags = if settings.session_tags {
        vec![
            audit::tag(TAG_NAMESPACE, &ns),
            audit::tag(TAG_CREDENTIAL, &name),
            audit::tag(TAG_SOURCE, &format!("{kind}:{}", source.name)),
        ]
    } else {
        Vec::new()
    };
    add_source_tags(&mut tags, &settings.tags);
    let transitive_tag_keys = if settings.transitive_tags {
        tags.iter().map(|t| t.key.clone()).collect()
    } else {
        Vec::new()
    };
    SessionAudit {
        source_identity: settings
            .source_identity
            .then(|| audit::source_identity(&[&ns, &name])),
        tags,
        transitive_tag_keys,
    }
}

/// Appends the source owner's fixed `audit.tags`, cleaned like tcred's own. The schema refuses a
/// key starting with `tcred.` or `_sys_`, keys differing only in case and more than fit; a spec
/// written under an older CRD may still hold them, so they are dropped here too: such a key must
/// neither pass for one of tcred's tags nor make every AssumeAgency of the source fail.
fn add_source_tags(tags: &mut Vec<SessionTag>, extra: &BTreeMap<String, String>) {
    let mut seen: HashSet<String> = tags.iter().map(|t| t.key.to_ascii_lowercase()).collect();
    for (key, value) in extra {
        if tags.len() >= audit::MAX_TAGS {
            break;
        }
        let tag = audit::tag(key, value);
        let folded = tag.key.to_ascii_lowercase();
        let reserved =
            folded.starts_with("tcred.") || key.to_ascii_lowercase().starts_with(RESERVED_TAG_PREFIX);
        if !reserved && seen.insert(folded) {
            tags.push(tag);
        }
    }
}

/// Mints one credential for `tc` through `source`.
pub async fn mint(
    ctx: &Context,
    tc: &TemporaryCredential,
    source: &Source,
    auth: &Authorized<'_>,
) -> Result<IssuedCredential, MintError> {
    let view = source
        .view()
        .map_err(|p| MintError::new(ErrorClass::InvalidRequest, p.message))?;
    // Resolved (and, for a namespaced source, checked against the administrator's allowlist)
    // before anything is read or sent.
    let endpoints = endpoints::resolve(
        auth.mode.region(),
        view.endpoints,
        source.overrides(ctx.http.policy()),
    )?;
    let session = session_name(tc);
    let duration_seconds = auth
        .duration
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let audit = session_audit(tc, view.audit);
    let assume = |agency_urn| AssumeRequest {
        agency_urn,
        session_name: &session,
        duration_seconds,
        policy: tc.spec.policy.as_deref(),
        audit: &audit,
    };
    match (&auth.mode, &auth.target) {
        (SourceMode::AccessKey(ak), Target::Agency { urn, .. }) => {
            let ns = source
                .secret_namespace(&ak.secret_ref)
                .map_err(|p| MintError::new(ErrorClass::InvalidRequest, p.message))?;
            let key = read_access_key(ctx, source, &ns, &ak.secret_ref.name).await?;
            ctx.limiter.acquire(&endpoints.sts).await;
            Ok(sts::assume_agency(&ctx.http, &endpoints.sts, &key, &assume(urn)).await?)
        }
        (SourceMode::WebIdentity(wi), Target::Agency { urn, .. }) => {
            let ns = tc.namespace().unwrap_or_default();
            let sa = tc.spec.service_account_name.as_deref().unwrap_or("default");
            let seconds = wi
                .token_expiration
                .map(|d| i64::try_from(Duration::from(d).as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(DEFAULT_SA_TOKEN_SECONDS);
            // Cheap first line: audiences that are obviously the API server's own.
            if let Some(p) = api_server_audience(&wi.audience, cluster_issuer(ctx).await) {
                return Err(MintError::refused(p));
            }
            check_token_opt_in(ctx, &ns, sa, &tc.name_any()).await?;
            let token = service_account_token(ctx, &ns, sa, &wi.audience, seconds).await?;
            // The exact check: would the API server itself accept this token?
            refuse_api_server_token(ctx, &token, &wi.audience).await?;
            ctx.limiter.acquire(&endpoints.sts).await;
            Ok(sts::assume_agency_with_oidc(
                &ctx.http,
                &endpoints.sts,
                &wi.provider_urn,
                &token,
                &assume(urn),
            )
            .await?)
        }
        (SourceMode::IdentityCenter(ic), Target::PermissionSet { account_id, name }) => {
            let ns = source
                .secret_namespace(&ic.session_secret_ref)
                .map_err(|p| MintError::new(ErrorClass::InvalidRequest, p.message))?;
            let session = read_session(ctx, source, &ns, &ic.session_secret_ref.name).await?;
            mint_portal(ctx, source, &endpoints, &session, account_id, name).await
        }
        _ => Err(MintError::new(
            ErrorClass::InvalidRequest,
            "the target does not fit the source mode",
        )),
    }
}

async fn mint_portal(
    ctx: &Context,
    source: &Source,
    endpoints: &ResolvedEndpoints,
    session: &Session,
    account_id: &str,
    permission_set: &str,
) -> Result<IssuedCredential, MintError> {
    let key = (source.uid(), account_id.to_owned(), permission_set.to_owned());
    let cached = {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still valid.
        let map = ctx.agency_urns.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&key)
            .filter(|(_, at)| at.elapsed() < AGENCY_URN_TTL)
            .map(|(urn, _)| urn.clone())
    };
    let urn = match cached {
        Some(urn) => urn,
        None => {
            ctx.limiter.acquire(&endpoints.portal).await;
            let urn = portal::resolve_permission_set(
                &ctx.http,
                &endpoints.portal,
                &session.access_token,
                account_id,
                permission_set,
            )
            .await?;
            ctx.agency_urns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), (urn.clone(), std::time::Instant::now()));
            urn
        }
    };
    ctx.limiter.acquire(&endpoints.portal).await;
    match portal::get_credentials(
        &ctx.http,
        &endpoints.portal,
        &session.access_token,
        account_id,
        &urn,
    )
    .await
    {
        Err(e) if e.class() == ErrorClass::NotFound => {
            // The permission set may have been re-provisioned under a new agency: look it up again next time.
            ctx.agency_urns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            Err(e.into())
        }
        other => Ok(other?),
    }
}

/// Refuses a Secret that is not labelled for `source`, before anything else is read from it.
fn check_bound(source: &Source, secret: &Secret) -> Result<(), MintError> {
    source.check_bound(secret).map_err(MintError::refused)
}

/// A source's access-key Secret, read every mint. Served from the API server's watch cache
/// (`resourceVersion=0`): the same key is read for every credential of the source, and a
/// quorum read from etcd per mint was one of the costliest requests of a burst
/// (docs/benchmarks.md). A Secret the cache does not hold yet (just created) is read again from
/// etcd; a key edited a moment ago may be read as it was, which Huawei then refuses like any
/// stale key, and the next attempt reads the new one.
async fn source_secret(ctx: &Context, namespace: &str, name: &str) -> Result<Secret, kube::Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    match api.get_with(name, &GetParams::any()).await {
        Err(kube::Error::Api(s)) if s.code == 404 => api.get(name).await,
        other => other,
    }
}

async fn read_access_key(
    ctx: &Context,
    source: &Source,
    namespace: &str,
    name: &str,
) -> Result<AccessKey, MintError> {
    let secret = source_secret(ctx, namespace, name)
        .await
        .map_err(|e| MintError::kube(&format!("reading access key Secret {namespace}/{name}"), &e))?;
    check_bound(source, &secret)?;
    let field = |k: &str| {
        read_key(&secret, k).map_err(|e| {
            MintError::new(
                ErrorClass::InvalidRequest,
                format!("Secret {namespace}/{name}: {}", e.describe(k)),
            )
        })
    };
    Ok(AccessKey {
        id: field(ACCESS_KEY_ID)?,
        secret: SecretString::new(field(SECRET_ACCESS_KEY)?),
        security_token: None,
    })
}

async fn read_session(
    ctx: &Context,
    source: &Source,
    namespace: &str,
    name: &str,
) -> Result<Session, MintError> {
    let login_hint = source.login_hint();
    // A quorum read: tcred itself rewrites this Secret when it refreshes the session, and a
    // token read from a cache a moment behind could already be replaced at the portal.
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| {
            MintError::kube(
                &format!("reading session Secret {namespace}/{name}; run `{login_hint}`"),
                &e,
            )
        })?;
    check_bound(source, &secret)?;
    let session = Session::from_secret(&secret).map_err(|e| {
        MintError::new(
            ErrorClass::Auth,
            format!("session Secret {namespace}/{name}: {e}; run `{login_hint}`"),
        )
    })?;
    if session.is_expired(Timestamp::now()) {
        return Err(MintError::new(
            ErrorClass::Auth,
            format!(
                "the Identity Center session expired at {}; run `{login_hint}`",
                crate::time::rfc3339(session.access_token_expires_at)
            ),
        ));
    }
    Ok(session)
}

async fn service_account_token(
    ctx: &Context,
    namespace: &str,
    service_account: &str,
    audience: &str,
    seconds: i64,
) -> Result<SecretString, MintError> {
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_owned()]),
            expiration_seconds: Some(seconds),
            bound_object_ref: None,
        }),
        ..Default::default()
    };
    let resp = Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace)
        .create_token_request(service_account, &PostParams::default(), &req)
        .await
        .map_err(|e| {
            MintError::kube(
                &format!("requesting a token for ServiceAccount {namespace}/{service_account}"),
                &e,
            )
        })?;
    resp.status
        .and_then(|s| s.token)
        .map(SecretString::new)
        .ok_or_else(|| MintError::new(ErrorClass::Server, "the TokenRequest returned no token"))
}

/// Whether `audience` is one the Kubernetes API server obviously accepts: its issuer (from
/// `/.well-known/openid-configuration`), `kubernetes`, or `https://kubernetes.default.svc…`.
/// A token for it would be a bearer token for the cluster itself.
pub fn api_server_audience(audience: &str, issuer: Option<&str>) -> Option<Problem> {
    let trimmed = audience.trim().trim_end_matches('/');
    let host = trimmed.strip_prefix("https://").unwrap_or(trimmed);
    let is_issuer = issuer.is_some_and(|i| {
        let i = i.trim().trim_end_matches('/');
        !i.is_empty() && i.eq_ignore_ascii_case(trimmed)
    });
    let lower = host.to_ascii_lowercase();
    let is_kubernetes = lower == "kubernetes" || lower.starts_with("kubernetes.default");
    (is_issuer || is_kubernetes).then(|| token_not_allowed_audience(audience))
}

fn token_not_allowed_audience(audience: &str) -> Problem {
    Problem::new(
        reasons::TOKEN_NOT_ALLOWED,
        format!(
            "the audience {audience} is accepted by the Kubernetes API server; tcred refuses to send such a token"
        ),
    )
}

/// Whether ServiceAccount `namespace/sa`, with these annotations, lets TemporaryCredential
/// `credential` have tokens requested for it.
pub fn token_opt_in(
    sa_annotations: &BTreeMap<String, String>,
    namespace: &str,
    sa: &str,
    credential: &str,
) -> Result<(), Problem> {
    if opted_in(sa_annotations, annotations::ALLOWED_CREDENTIALS, credential) {
        return Ok(());
    }
    Err(Problem::new(
        reasons::TOKEN_NOT_ALLOWED,
        format!(
            "ServiceAccount {namespace}/{sa} has not opted in to token exchange for TemporaryCredential {credential}: \
             annotate it `{}={credential}` (a comma-separated list, or `*`)",
            annotations::ALLOWED_CREDENTIALS
        ),
    ))
}

/// The cluster's ServiceAccount token issuer, fetched once from the API server's
/// `/.well-known/openid-configuration` and kept for the process (a failed fetch is tried again
/// next time; the TokenReview is the exact check anyway).
async fn cluster_issuer(ctx: &Context) -> Option<&'static str> {
    static ISSUER: OnceLock<String> = OnceLock::new();
    if let Some(i) = ISSUER.get() {
        return Some(i.as_str());
    }
    let req = http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .ok()?;
    let doc: serde_json::Value = match ctx.client.request(req).await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %kube_message(&e), "could not read the cluster's OIDC discovery document");
            return None;
        }
    };
    let issuer = doc.get("issuer")?.as_str()?.to_owned();
    Some(ISSUER.get_or_init(|| issuer).as_str())
}

async fn check_token_opt_in(
    ctx: &Context,
    namespace: &str,
    sa: &str,
    credential: &str,
) -> Result<(), MintError> {
    let account = Api::<ServiceAccount>::namespaced(ctx.client.clone(), namespace)
        .get(sa)
        .await
        .map_err(|e| MintError::kube(&format!("reading ServiceAccount {namespace}/{sa}"), &e))?;
    token_opt_in(account.annotations(), namespace, sa, credential).map_err(MintError::refused)
}

/// Asks the API server whether it would accept `token` itself (a TokenReview naming no
/// audiences is checked against the API server's own). If so, the token never leaves.
async fn refuse_api_server_token(
    ctx: &Context,
    token: &SecretString,
    audience: &str,
) -> Result<(), MintError> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.expose().to_owned(),
            audiences: None,
        },
        ..Default::default()
    };
    let resp = Api::<TokenReview>::all(ctx.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| MintError::kube("checking the ServiceAccount token with a TokenReview", &e))?;
    if resp.status.and_then(|s| s.authenticated).unwrap_or(false) {
        return Err(MintError::refused(token_not_allowed_audience(audience)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::tc;

    #[test]
    fn session_names_default_to_namespace_and_name_within_huaweis_rules() {
        assert_eq!(session_name(&tc("billing")), "team-a-billing");
        let long = tc(&"x".repeat(80));
        assert_eq!(session_name(&long).len(), 64);
        let mut named = tc("billing");
        named.spec.session_name = Some("ci@prod".into());
        assert_eq!(session_name(&named), "ci@prod");
    }

    #[test]
    fn through_a_cluster_source_the_session_name_always_starts_with_the_namespace() {
        let mut posing = tc("billing");
        posing.spec.source_ref.kind = SourceKind::ClusterCredentialSource;
        posing.spec.session_name = Some("team-b-billing".into());
        assert_eq!(session_name(&posing), "team-a-team-b-billing");
        posing.spec.session_name = None;
        assert_eq!(session_name(&posing), "team-a-billing");
        // trimmed to Huawei's 64 characters, the prefix kept
        posing.spec.session_name = Some("x".repeat(64));
        let name = session_name(&posing);
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("team-a-x"), "{name}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Any namespace, name and sessionName give a name Huawei accepts, and through a
        /// cluster source it starts with `<namespace>-` (as far as 64 characters allow).
        #[test]
        fn session_names_fit_huaweis_rules(ns in "[a-z0-9-]{1,63}", name in "[a-z0-9.-]{1,80}", spec in proptest::option::of("[A-Za-z0-9_+=,.@-]{2,64}"), cluster: bool) {
            let mut t = tc(&name);
            t.metadata.namespace = Some(ns.clone());
            t.spec.session_name = spec;
            if cluster {
                t.spec.source_ref.kind = SourceKind::ClusterCredentialSource;
            }
            let s = session_name(&t);
            proptest::prop_assert!((2..=64).contains(&s.len()));
            proptest::prop_assert!(s.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)));
            if cluster || t.spec.session_name.is_none() {
                let prefix: String = format!("{ns}-").chars().take(64).collect();
                proptest::prop_assert!(s.starts_with(&prefix), "{} does not start with {}", s, prefix);
            }
        }
    }

    fn all_audit() -> AuditSettings {
        AuditSettings {
            source_identity: true,
            session_tags: true,
            transitive_tags: true,
            tags: BTreeMap::new(),
        }
    }

    fn keys(a: &SessionAudit) -> Vec<&str> {
        a.tags.iter().map(|t| t.key.as_str()).collect()
    }

    #[test]
    fn a_sources_own_tags_follow_tcreds_and_are_transitive_with_them() {
        let t = tc("billing");
        let mut settings = all_audit();
        settings.tags = BTreeMap::from([
            ("cluster".to_owned(), "prod-eu".to_owned()),
            ("cost-center".to_owned(), "4711".to_owned()),
        ]);
        let a = session_audit(&t, Some(&settings));
        assert_eq!(
            keys(&a),
            [
                TAG_NAMESPACE,
                TAG_CREDENTIAL,
                TAG_SOURCE,
                "cluster",
                "cost-center"
            ]
        );
        assert_eq!(a.tags[3].value, "prod-eu");
        assert_eq!(a.transitive_tag_keys, keys(&a));
        // sent without tcred's own tags too, and not transitive unless asked
        settings.session_tags = false;
        settings.transitive_tags = false;
        let a = session_audit(&t, Some(&settings));
        assert_eq!(keys(&a), ["cluster", "cost-center"]);
        assert!(a.transitive_tag_keys.is_empty());
    }

    #[test]
    fn tags_the_schema_refuses_are_dropped_never_sent_as_tcreds_or_beyond_huaweis_limit() {
        // What an object written under an older CRD could hold.
        let t = tc("billing");
        let mut settings = all_audit();
        settings.tags = BTreeMap::from([
            ("tcred.namespace".to_owned(), "team-b".to_owned()),
            ("TCRED.credential".to_owned(), "victim".to_owned()),
            ("_sys_owner".to_owned(), "x".to_owned()),
            ("Cluster".to_owned(), "a".to_owned()),
            ("cluster".to_owned(), "b".to_owned()),
            ("team b".to_owned(), "v w".to_owned()),
        ]);
        let a = session_audit(&t, Some(&settings));
        assert_eq!(
            keys(&a),
            [TAG_NAMESPACE, TAG_CREDENTIAL, TAG_SOURCE, "Cluster", "team-b"]
        );
        assert_eq!(a.tags[0].value, "team-a", "tcred's own tag keeps its value");
        assert_eq!(a.tags[4].value, "v-w");

        settings.tags = (0..40).map(|i| (format!("k{i:02}"), "v".to_owned())).collect();
        let a = session_audit(&t, Some(&settings));
        assert_eq!(a.tags.len(), audit::MAX_TAGS);
        assert_eq!(a.transitive_tag_keys.len(), audit::MAX_TAGS);
    }

    #[test]
    fn no_audit_settings_send_nothing_and_each_setting_adds_its_part() {
        let t = tc("billing");
        assert_eq!(session_audit(&t, None), SessionAudit::default());
        assert_eq!(
            session_audit(&t, Some(&AuditSettings::default())),
            SessionAudit::default()
        );
        let only_identity = AuditSettings {
            source_identity: true,
            ..Default::default()
        };
        let a = session_audit(&t, Some(&only_identity));
        assert_eq!(a.source_identity.as_deref(), Some("team-a.billing"));
        assert!(a.tags.is_empty() && a.transitive_tag_keys.is_empty());
    }

    #[test]
    fn a_tenant_cannot_be_attributed_as_another_whatever_it_writes() {
        // The spec's sessionName, the one free-form field, plays no part in the attribution.
        let mut posing = tc("billing");
        posing.spec.source_ref.kind = SourceKind::ClusterCredentialSource;
        posing.spec.source_ref.name = "corp".into();
        posing.spec.session_name = Some("team-b.billing".into());
        let a = session_audit(&posing, Some(&all_audit()));
        assert_eq!(a.source_identity.as_deref(), Some("team-a.billing"));
        let tags: Vec<(&str, &str)> = a
            .tags
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_str()))
            .collect();
        assert_eq!(
            tags,
            [
                (TAG_NAMESPACE, "team-a"),
                (TAG_CREDENTIAL, "billing"),
                (TAG_SOURCE, "ClusterCredentialSource:corp"),
            ]
        );
        assert_eq!(a.transitive_tag_keys, [TAG_NAMESPACE, TAG_CREDENTIAL, TAG_SOURCE]);
    }

    #[test]
    fn a_long_namespace_and_name_still_make_a_call_huawei_accepts() {
        let mut t = tc(&format!("{}.{}", "n".repeat(200), "x".repeat(52)));
        t.metadata.namespace = Some("m".repeat(63));
        let a = session_audit(&t, Some(&all_audit()));
        let si = a.source_identity.unwrap_or_default();
        assert_eq!(si.len(), 64, "{si}");
        assert!(si.starts_with(&"m".repeat(55)), "{si}");
        assert!(a.tags.iter().all(|t| t.value.len() <= 255 && t.key.len() <= 128));
    }

    #[test]
    fn the_api_servers_own_audiences_are_refused_before_any_token_request() {
        let issuer = Some("https://kubernetes.default.svc.cluster.local");
        for aud in [
            "https://kubernetes.default.svc.cluster.local",
            "https://kubernetes.default.svc.cluster.local/",
            "https://kubernetes.default.svc",
            "https://kubernetes.default.svc:443",
            "kubernetes.default.svc",
            "kubernetes",
            "https://KUBERNETES.default.svc",
        ] {
            let p = api_server_audience(aud, issuer).unwrap_or_else(|| panic!("{aud} accepted"));
            assert_eq!(p.reason, reasons::TOKEN_NOT_ALLOWED);
            assert_eq!(
                p.message,
                format!(
                    "the audience {aud} is accepted by the Kubernetes API server; tcred refuses to send such a token"
                )
            );
        }
        // the cluster's issuer, whatever it is called
        let custom = Some("https://oidc.cluster.example.com/issuer");
        assert!(api_server_audience("https://oidc.cluster.example.com/issuer", custom).is_some());
        assert!(api_server_audience("https://oidc.cluster.example.com/issuer/", custom).is_some());
        // Huawei's audiences are fine
        for aud in [
            "sts.huaweicloud",
            "https://sts.ap-southeast-1.myhuaweicloud.com",
            "kubernetes-sts",
        ] {
            assert!(api_server_audience(aud, custom).is_none(), "{aud}");
            assert!(api_server_audience(aud, None).is_none(), "{aud}");
        }
    }

    #[test]
    fn a_service_account_must_name_the_credential_to_opt_in() {
        let with = |v: &str| BTreeMap::from([(annotations::ALLOWED_CREDENTIALS.to_owned(), v.to_owned())]);
        assert!(token_opt_in(&with("billing"), "team-a", "ci", "billing").is_ok());
        assert!(token_opt_in(&with("web,billing"), "team-a", "ci", "billing").is_ok());
        assert!(token_opt_in(&with("*"), "team-a", "ci", "billing").is_ok());
        let p = token_opt_in(&with("web"), "team-a", "ci", "billing").unwrap_err();
        assert_eq!(p.reason, reasons::TOKEN_NOT_ALLOWED);
        let p = token_opt_in(&BTreeMap::new(), "team-a", "ci", "billing").unwrap_err();
        assert!(
            p.message.contains("ServiceAccount team-a/ci has not opted in")
                && p.message.contains("tcred.dev/allowed-credentials=billing"),
            "{}",
            p.message
        );
    }
}
