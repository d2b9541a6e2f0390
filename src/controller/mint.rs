//! Minting one credential through a source: read what the source needs (access key Secret,
//! session Secret, or a ServiceAccount token), take a token from the endpoint's bucket, and call
//! Huawei Cloud.

use std::{fmt, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::{Secret, ServiceAccount},
};
use kube::{Api, ResourceExt, api::PostParams};

use super::{
    authorize::{Authorized, Target},
    context::{AGENCY_URN_TTL, Context, Source},
};
use crate::{
    api::{SourceMode, TemporaryCredential, condition::reasons},
    cloud::{
        CloudError, ErrorClass, IssuedCredential,
        endpoints::{self, Overrides, ResolvedEndpoints},
        portal,
        signer::AccessKey,
        sts::{self, AssumeRequest},
    },
    sensitive::SecretString,
    session::Session,
};

/// Keys of an accessKey source's Secret.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";

/// Lifetime of the ServiceAccount tokens exchanged with STS (TokenRequest's minimum).
const DEFAULT_SA_TOKEN_SECONDS: i64 = 600;

/// A failed mint, classified. Its message never carries secret material.
#[derive(Debug)]
pub struct MintError {
    pub class: ErrorClass,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// A condition reason more specific than the class, when one applies
    /// (`EndpointNotAllowed`: nothing was sent, and retrying cannot help until the spec or the
    /// operator's flags change).
    pub reason: Option<&'static str>,
    /// Huawei Cloud's clock skew measured from the failing call's own response (trusted hosts only).
    pub clock_skew_seconds: Option<i64>,
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<CloudError> for MintError {
    fn from(e: CloudError) -> Self {
        Self {
            class: e.class(),
            retry_after: e.retry_after(),
            reason: matches!(e, CloudError::EndpointNotAllowed { .. })
                .then_some(reasons::ENDPOINT_NOT_ALLOWED),
            clock_skew_seconds: e.clock_skew_seconds(),
            message: e.to_string(),
        }
    }
}

impl MintError {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            retry_after: None,
            reason: None,
            clock_skew_seconds: None,
        }
    }

    fn kube(what: &str, e: &kube::Error) -> Self {
        let class = match e {
            kube::Error::Api(s) if s.code == 404 => ErrorClass::NotFound,
            kube::Error::Api(s) if s.code == 403 || s.code == 401 => ErrorClass::Auth,
            kube::Error::Api(s) if s.code == 429 => ErrorClass::Throttled,
            kube::Error::Api(s) if s.code >= 500 => ErrorClass::Server,
            kube::Error::Api(_) => ErrorClass::InvalidRequest,
            _ => ErrorClass::Network,
        };
        Self::new(class, format!("{what}: {}", super::kube_message(e)))
    }
}

/// The session name for `tc`: the spec's, or `<namespace>-<name>` trimmed to Huawei's rules
/// (2–64 of `[A-Za-z0-9_+=,.@-]`).
pub fn session_name(tc: &TemporaryCredential) -> String {
    if let Some(n) = &tc.spec.session_name {
        return n.clone();
    }
    let raw = format!("{}-{}", tc.namespace().unwrap_or_default(), tc.name_any());
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

/// How a source's endpoint overrides are checked: a namespaced source is written by a tenant, so
/// its endpoints must be allowed by the administrator; a cluster source's are the administrator's.
pub fn overrides_of<'p>(source: &Source, policy: &'p endpoints::EndpointPolicy) -> Overrides<'p> {
    match source {
        Source::Namespaced(_) => Overrides::Namespaced(policy),
        Source::Cluster(_) => Overrides::Admin,
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
        overrides_of(source, ctx.http.policy()),
    )?;
    let session = session_name(tc);
    let duration_seconds = auth
        .duration
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let assume = |agency_urn| AssumeRequest {
        agency_urn,
        session_name: &session,
        duration_seconds,
        policy: tc.spec.policy.as_deref(),
    };
    match (&auth.mode, &auth.target) {
        (SourceMode::AccessKey(ak), Target::Agency { urn, .. }) => {
            let ns = source
                .secret_namespace(&ak.secret_ref)
                .map_err(|p| MintError::new(ErrorClass::InvalidRequest, p.message))?;
            let key = read_access_key(ctx, &ns, &ak.secret_ref.name).await?;
            ctx.limiter.acquire(&endpoints.sts).await;
            Ok(sts::assume_agency(&ctx.http, &endpoints.sts, &key, &assume(urn)).await?)
        }
        (SourceMode::WebIdentity(wi), Target::Agency { urn, .. }) => {
            let sa = tc.spec.service_account_name.as_deref().unwrap_or("default");
            let seconds = wi
                .token_expiration
                .map(|d| Duration::from(d).as_secs() as i64)
                .unwrap_or(DEFAULT_SA_TOKEN_SECONDS);
            let token = service_account_token(
                ctx,
                &tc.namespace().unwrap_or_default(),
                sa,
                &wi.audience,
                seconds,
            )
            .await?;
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
            let session = read_session(ctx, &ns, &ic.session_secret_ref.name, &source.login_hint()).await?;
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

async fn read_access_key(ctx: &Context, namespace: &str, name: &str) -> Result<AccessKey, MintError> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| MintError::kube(&format!("reading access key Secret {namespace}/{name}"), &e))?;
    let field = |k: &str| -> Result<String, MintError> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                MintError::new(
                    ErrorClass::InvalidRequest,
                    format!("Secret {namespace}/{name} has no key {k}"),
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
    namespace: &str,
    name: &str,
    login_hint: &str,
) -> Result<Session, MintError> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| {
            MintError::kube(
                &format!("reading session Secret {namespace}/{name}; run `{login_hint}`"),
                &e,
            )
        })?;
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
                super::secret::rfc3339(session.access_token_expires_at)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::tc;

    #[test]
    fn a_refused_endpoint_becomes_the_endpoint_not_allowed_reason() {
        let e = MintError::from(CloudError::EndpointNotAllowed {
            endpoint: "https://collector.example".into(),
        });
        assert_eq!(e.reason, Some(reasons::ENDPOINT_NOT_ALLOWED));
        assert_eq!(e.class, ErrorClass::InvalidRequest);
        assert!(e.message.contains("--allowed-endpoint-hosts"), "{}", e.message);
    }

    #[test]
    fn a_failed_call_carries_its_own_clock_measurement() {
        let e = MintError::from(CloudError::Api {
            operation: "AssumeAgency",
            status: 401,
            code: Some("APIGW.0301".into()),
            message: "verify aksk signature fail".into(),
            request_id: None,
            retry_after: None,
            clock_skew_seconds: Some(1200),
        });
        assert_eq!(e.clock_skew_seconds, Some(1200));
        assert_eq!(e.reason, None);
        assert_eq!(e.class, ErrorClass::Auth);
    }

    #[test]
    fn session_names_default_to_namespace_and_name_within_huaweis_rules() {
        assert_eq!(session_name(&tc("billing")), "team-a-billing");
        let long = tc(&"x".repeat(80));
        assert_eq!(session_name(&long).len(), 64);
        let mut named = tc("billing");
        named.spec.session_name = Some("ci@prod".into());
        assert_eq!(session_name(&named), "ci@prod");
    }
}
