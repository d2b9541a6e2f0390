//! The source controller's one write besides its status: refreshing an Identity Center session
//! ahead of its expiry when Huawei issued a refresh token, and persisting the new tokens so a
//! rotated refresh token is never lost (docs/controller.md §Session refresh).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use crate::{
    api::SourceView,
    cloud::{endpoints, oidc},
    controller::{apply, context::Context},
    session::{
        Session, keys,
        store::{self, Next, Outcome, WriteError},
    },
    source::SourceResource,
    time::rfc3339,
};

/// A session Secret as read for a check: where it is and what it holds.
pub struct Loaded {
    pub api: Api<Secret>,
    pub secret: Secret,
    pub session: Session,
}

/// The session to check: refreshed first when it has a refresh token and the refresh is due. A
/// failed refresh is a warning (log and Event) and the session as it was is checked. When the
/// refresh cannot even be tried because the Secret lacks keys only a refresh needs (a session
/// Secret made by hand), that is returned too, for the status to name them.
pub async fn refresh_if_due<K: SourceResource>(
    ctx: &Context,
    src: &K,
    view: &SourceView<'_>,
    loaded: Loaded,
    now: Timestamp,
) -> (Session, Option<String>) {
    if loaded.session.refresh_token.is_none() || loaded.session.refresh_at() > now {
        return (loaded.session, None);
    }
    if let Err(missing) = loaded.session.refresh_client() {
        return (loaded.session, Some(missing));
    }
    match refresh(ctx, src, view, &loaded, now).await {
        Ok(fresh) => (fresh, None),
        Err(message) => {
            warn!(%message, "could not refresh the Identity Center session");
            apply::publish(ctx, src, true, "SessionRefreshFailed", "Refresh", message).await;
            (loaded.session, None)
        }
    }
}

/// Exchanges the refresh token and persists the new tokens on top of the Secret read, so a
/// concurrent `tcred login` is kept when it is newer.
async fn refresh<K: SourceResource>(
    ctx: &Context,
    src: &K,
    view: &SourceView<'_>,
    loaded: &Loaded,
    now: Timestamp,
) -> Result<Session, String> {
    let session = &loaded.session;
    let refresh_token = session.refresh_token.as_ref().ok_or("no refresh token")?;
    let (client_id, client_secret) = session.refresh_client()?;
    // A namespaced source's endpoints must be allowed before its tokens go anywhere.
    let overrides = crate::source::overrides(K::KIND, ctx.http.policy());
    let eps = endpoints::resolve(&session.region, view.endpoints, overrides).map_err(|e| e.to_string())?;
    let tokens = oidc::refresh(&ctx.http, &eps.oidc, client_id, client_secret, refresh_token)
        .await
        .map_err(|e| {
            format!(
                "refreshing the Identity Center access token failed: {e}; run `{}` if this persists",
                src.login_hint()
            )
        })?;
    let fresh = Session {
        access_token: tokens.access_token,
        access_token_expires_at: tokens.expires_at,
        access_token_issued_at: Some(now),
        // Huawei may or may not rotate the refresh token; keep the old one when it did not.
        refresh_token: tokens.refresh_token.or_else(|| session.refresh_token.clone()),
        ..session.clone()
    };
    let kept = persist(&loaded.api, loaded.secret.clone(), &fresh).await?;
    if let Some(latest) = kept {
        return Ok(latest);
    }
    let until = rfc3339(fresh.access_token_expires_at);
    info!(expires_at = %until, "refreshed the Identity Center session");
    let note = format!("refreshed the Identity Center access token; valid until {until}");
    apply::publish(ctx, src, false, "SessionRefreshed", "Refresh", note).await;
    Ok(fresh)
}

/// Writes `fresh` over the session Secret. `Some(latest)` when a newer login replaced the
/// session meanwhile: it wins, and nothing was written.
async fn persist(api: &Api<Secret>, secret: Secret, fresh: &Session) -> Result<Option<Session>, String> {
    let name = secret.name_any();
    let on_top = |current: Option<&Secret>, reread: bool| {
        let Some(current) = current else {
            return Next::Keep;
        };
        if reread
            && let Ok(latest) = Session::from_secret(current)
            && latest.access_token_expires_at > fresh.access_token_expires_at
        {
            return Next::Keep;
        }
        let mut next = current.clone();
        let data = next.data.get_or_insert_with(Default::default);
        data.extend(fresh.to_data());
        if fresh.refresh_token.is_none() {
            data.remove(keys::REFRESH_TOKEN);
        }
        Next::Write(Box::new(next))
    };
    match store::write(api, &name, apply::FIELD_MANAGER, Some(secret), on_top).await {
        Ok(Outcome::Written(_)) => Ok(None),
        Ok(Outcome::Kept(Some(latest))) => Session::from_secret(&latest)
            .map(Some)
            .map_err(|e| format!("the session Secret: {e}")),
        Ok(Outcome::Kept(None)) => Err("re-reading the session Secret: it no longer exists".into()),
        Err(WriteError::Conflicting) => {
            Err("writing the refreshed session kept conflicting; will retry".into())
        }
        Err(e @ WriteError::Reread(_)) => Err(e.to_string()),
        Err(WriteError::Write(e)) => Err(format!("writing the refreshed session: {e}")),
    }
}
