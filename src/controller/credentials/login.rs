//! Obtaining the SWR login of an `imagePullSecret` credential (docs/registry.md): the credential
//! just minted signs one `CreateSecret` call for the registry's region, after the rate limiter.
//! The endpoint is resolved (and, for a namespaced source, checked against the allowlist) before
//! anything is minted, so a refused endpoint costs no mint.

use std::time::Duration;

use url::Url;

use super::{failure::MintError, registry};
use crate::{
    api::TemporaryCredential,
    cloud::{
        ErrorClass, IssuedCredential, endpoints,
        signer::AccessKey,
        swr::{self, RegistryLogin},
    },
    controller::{authorize::Authorized, context::Context},
    source::Source,
};

/// Where an `imagePullSecret` credential gets its login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    /// The SWR API endpoint (the source's `endpoints.swr`, or `swr-api.<region>…`).
    pub endpoint: Url,
    /// The SWR region (`projectname`): the spec's, or the source's.
    pub region: String,
    /// The spec's `validity`.
    pub validity: Option<Duration>,
}

/// The registry `tc` asks for, `None` when it is not an `imagePullSecret` credential.
pub fn registry_of(
    ctx: &Context,
    tc: &TemporaryCredential,
    source: &Source,
    auth: &Authorized<'_>,
) -> Result<Option<Registry>, MintError> {
    let Some(pull) = &tc.spec.image_pull_secret else {
        return Ok(None);
    };
    let view = source
        .view()
        .map_err(|p| MintError::new(ErrorClass::InvalidRequest, p.message))?;
    let region = pull
        .region
        .clone()
        .unwrap_or_else(|| auth.mode.region().to_owned());
    let endpoint = endpoints::resolve_swr(&region, view.endpoints, source.overrides(ctx.http.policy()))?;
    Ok(Some(Registry {
        endpoint,
        region,
        validity: pull.validity.map(Into::into),
    }))
}

/// Asks SWR for a login with `cred`, valid at most `credential_left` (what `cred` has left).
pub async fn obtain(
    ctx: &Context,
    registry: &Registry,
    cred: &IssuedCredential,
    credential_left: Duration,
) -> Result<RegistryLogin, MintError> {
    let key = AccessKey {
        id: cred.access_key_id.clone(),
        secret: cred.secret_access_key.clone(),
        security_token: Some(cred.security_token.clone()),
    };
    let seconds = registry::requested_seconds(registry.validity, credential_left);
    ctx.limiter.acquire(&registry.endpoint).await;
    Ok(swr::create_secret(&ctx.http, &registry.endpoint, &key, &registry.region, seconds).await?)
}
