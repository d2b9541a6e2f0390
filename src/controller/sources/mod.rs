//! The source controllers (CredentialSource and ClusterCredentialSource): check what each mode
//! needs (the access key Secret, the Identity Center session), refresh the session ahead of its
//! expiry ([`refresh`]), and show the outcome in the status ([`status`]) with Events
//! (docs/controller.md §Sources).

pub mod refresh;
pub mod status;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt, runtime::controller::Action};

use self::{
    refresh::Loaded,
    status::{Check, SessionProblem, next_check, status_for},
};
use super::{apply, context::Context, error::Error};
use crate::{
    api::{
        SecretReference, SourceMode, SourceStatus, SourceView,
        condition::{find, reasons, types},
    },
    session::Session,
    source::{ACCESS_KEY_ID, KeyError, SECRET_ACCESS_KEY, SourceResource, read_key},
};

/// One reconcile of a readable, live source: check, refresh a session that is due, write the
/// status when it changed (with an Event per changed condition), and come back in time for the
/// next warning, refresh or expiry.
pub async fn reconcile<K: SourceResource>(src: &K, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let warning = ctx.config.session_warning;
    let view = src.view();
    let (check, refresh_at) = match view.mode {
        None => (Check::NoMode, None),
        Some(SourceMode::WebIdentity(_)) => (Check::WebIdentity, None),
        Some(SourceMode::AccessKey(ak)) => (check_access_key(ctx, src, &ak.secret_ref).await?, None),
        Some(SourceMode::IdentityCenter(ic)) => match load_session(ctx, src, &ic.session_secret_ref).await? {
            Err(check) => (check, None),
            Ok(loaded) => checked_session(ctx, src, &view, loaded, now).await,
        },
    };
    let prev = src.source_status().cloned().unwrap_or_default();
    let next = status_for(
        &prev,
        src.meta().generation,
        view.mode.map(|m| m.name()),
        &check,
        now,
        warning,
        &src.login_hint(),
    );
    if Some(&next) != src.source_status() {
        apply::write_status(&src.api(ctx.client.clone()), &src.name_any(), &next)
            .await
            .map_err(Error::Kube)?;
        announce(ctx, src, &prev, &next).await;
    }
    Ok(Action::requeue(next_check(&check, refresh_at, now, warning)))
}

/// The session after a refresh that was due, as a check, and when the next refresh is due.
async fn checked_session<K: SourceResource>(
    ctx: &Context,
    src: &K,
    view: &SourceView<'_>,
    loaded: Loaded,
    now: Timestamp,
) -> (Check, Option<Timestamp>) {
    let (session, blocked) = refresh::refresh_if_due(ctx, src, view, loaded, now).await;
    let expires = session.access_token_expires_at;
    match blocked {
        // Nothing to schedule: the refresh waits for the missing keys (the Secret is re-read at
        // every check).
        Some(missing) => (Check::SessionRefreshBlocked { expires, missing }, None),
        None => {
            let refresh_at = session.refresh_token.as_ref().map(|_| session.refresh_at());
            (Check::Session(Ok(expires)), refresh_at)
        }
    }
}

/// One Event per condition that changed status or reason.
async fn announce<K: SourceResource>(ctx: &Context, src: &K, prev: &SourceStatus, next: &SourceStatus) {
    for c in &next.conditions {
        let before = find(&prev.conditions, &c.type_);
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        let (warning, reason) = match (c.type_.as_str(), c.status.as_str()) {
            (types::SESSION_EXPIRING_SOON, "True") => (true, types::SESSION_EXPIRING_SOON),
            (types::SESSION_EXPIRED, "True") => (true, types::SESSION_EXPIRED),
            (types::READY, "False") => (true, c.reason.as_str()),
            (types::READY, "True") if before.is_some() => (false, c.reason.as_str()),
            _ => continue,
        };
        apply::publish(ctx, src, warning, reason, "Check", c.message.clone()).await;
    }
}

/// The Secret `r` names, read where the source may read it, or the check that says why not.
async fn read_secret<K: SourceResource>(
    ctx: &Context,
    src: &K,
    r: &SecretReference,
) -> Result<Result<(String, Option<Secret>), String>, Error> {
    let ns = match src.secret_namespace(r) {
        Ok(ns) => ns,
        Err(p) => return Ok(Err(p.message)),
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&r.name)
        .await
        .map_err(Error::Kube)?;
    Ok(Ok((ns, secret)))
}

async fn check_access_key<K: SourceResource>(
    ctx: &Context,
    src: &K,
    r: &SecretReference,
) -> Result<Check, Error> {
    let (ns, secret) = match read_secret(ctx, src, r).await? {
        Ok(found) => found,
        Err(message) => return Ok(Check::AccessKey(Err(message))),
    };
    let Some(secret) = secret else {
        return Ok(Check::AccessKey(Err(format!(
            "Secret {ns}/{} does not exist",
            r.name
        ))));
    };
    if let Err(p) = src.check_bound(&secret) {
        return Ok(Check::SecretNotBound(p.message));
    }
    Ok(Check::AccessKey(access_key_id(&secret, &ns, &r.name)))
}

/// The access key id of an access key Secret, read as every mint reads it: both keys present,
/// UTF-8 and not blank.
fn access_key_id(secret: &Secret, ns: &str, name: &str) -> Result<String, String> {
    let missing = |k: &str| {
        format!(
            "Secret {ns}/{name} must hold non-empty keys {ACCESS_KEY_ID} and {SECRET_ACCESS_KEY} (missing: {k})"
        )
    };
    let id = read_key(secret, ACCESS_KEY_ID);
    let sk = read_key(secret, SECRET_ACCESS_KEY);
    match (id, sk) {
        (Ok(id), Ok(_)) => Ok(id),
        (Err(KeyError::NotUtf8), _) => Err(format!(
            "Secret {ns}/{name}: {}",
            KeyError::NotUtf8.describe(ACCESS_KEY_ID)
        )),
        (Err(_), _) => Err(missing(ACCESS_KEY_ID)),
        (_, Err(KeyError::NotUtf8)) => Err(format!(
            "Secret {ns}/{name}: {}",
            KeyError::NotUtf8.describe(SECRET_ACCESS_KEY)
        )),
        (_, Err(_)) => Err(missing(SECRET_ACCESS_KEY)),
    }
}

/// The session Secret of an identityCenter source, bound to it and readable, or the check that
/// says what is wrong.
async fn load_session<K: SourceResource>(
    ctx: &Context,
    src: &K,
    r: &SecretReference,
) -> Result<Result<Loaded, Check>, Error> {
    let hint = src.login_hint();
    let problem = |reason, message| Err(Check::Session(Err(SessionProblem { reason, message })));
    let (ns, secret) = match read_secret(ctx, src, r).await? {
        Ok(found) => found,
        Err(message) => return Ok(problem(reasons::SECRET_INVALID, message)),
    };
    let Some(secret) = secret else {
        let message = format!(
            "no Identity Center session yet (Secret {ns}/{} does not exist): run `{hint}`",
            r.name
        );
        return Ok(problem(reasons::LOGIN_REQUIRED, message));
    };
    // Before anything is read from the Secret, and so before any refresh sends its tokens.
    if let Err(p) = src.check_bound(&secret) {
        return Ok(Err(Check::SecretNotBound(p.message)));
    }
    Ok(match Session::from_secret(&secret) {
        Ok(session) => Ok(Loaded {
            api: Api::namespaced(ctx.client.clone(), &ns),
            secret,
            session,
        }),
        Err(e) => problem(
            reasons::SECRET_INVALID,
            format!("session Secret {ns}/{}: {e}; run `{hint}`", r.name),
        ),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(id: &[u8], sk: &[u8]) -> Secret {
        Secret {
            data: Some(
                [(ACCESS_KEY_ID, id), (SECRET_ACCESS_KEY, sk)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn an_access_key_secret_is_usable_only_when_both_keys_read_as_text() {
        assert_eq!(
            access_key_id(&secret(b"AK1\n", b"sk"), "team-a", "corp-ak"),
            Ok("AK1".into())
        );
        let missing = access_key_id(&secret(b"AK1", b" "), "team-a", "corp-ak").unwrap_err();
        assert!(missing.ends_with("(missing: secretAccessKey)"), "{missing}");
    }

    /// A non-UTF-8 secret access key used to pass this check (read lossily) while every mint
    /// refused it: the source was Ready and nothing could be minted.
    #[test]
    fn a_secret_access_key_that_is_not_utf8_makes_the_source_not_ready() {
        let e = access_key_id(&secret(b"AK1", b"\xff\xfe-not-text"), "team-a", "corp-ak").unwrap_err();
        assert_eq!(e, "Secret team-a/corp-ak: key secretAccessKey is not UTF-8");
        let e = access_key_id(&secret(b"\xffAK", b"sk"), "team-a", "corp-ak").unwrap_err();
        assert_eq!(e, "Secret team-a/corp-ak: key accessKeyId is not UTF-8");
    }
}
