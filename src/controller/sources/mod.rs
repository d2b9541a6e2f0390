//! The source controllers (CredentialSource and ClusterCredentialSource): check what each mode
//! needs (the access key Secret, the Identity Center session), show the session's expiry with
//! SessionExpiringSoon / SessionExpired conditions and Events, and refresh the access token ahead
//! of expiry when Huawei issued a refresh token — writing the rotated refresh token back with
//! optimistic concurrency so a refresh is never lost.

use std::{collections::BTreeMap, fmt::Debug, sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    core::DeserializeGuard,
    runtime::controller::Action,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::{info, warn};

use super::{Error, apply, authorize::Problem, context::Context, secret::rfc3339};
use crate::{
    api::{
        ClusterCredentialSource, CredentialSource, SecretReference, SourceKind, SourceMode, SourceStatus,
        SourceView,
        condition::{ConditionUpdate, find, reasons, remove_condition, set_condition, types},
    },
    cloud::{endpoints, oidc},
    session::{Session, labels as session_labels},
};

/// Re-check sources at least this often (Secrets referenced by sources are not watched).
const RECHECK: Duration = Duration::from_secs(300);

/// What the source controllers need from either kind.
pub trait SourceResource:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    const KIND: SourceKind;
    fn view(&self) -> SourceView<'_>;
    fn source_status(&self) -> Option<&SourceStatus>;
    /// How `tcred login` names this source.
    fn login_hint(&self) -> String;
    /// Where the Secrets this source references live.
    fn secret_namespace(&self, r: &SecretReference) -> Option<String>;
    /// The API for this object (namespaced or cluster-scoped).
    fn api(&self, client: kube::Client) -> Api<Self>;
}

impl SourceResource for CredentialSource {
    const KIND: SourceKind = SourceKind::CredentialSource;

    fn view(&self) -> SourceView<'_> {
        self.spec.view()
    }

    fn source_status(&self) -> Option<&SourceStatus> {
        self.status.as_ref()
    }

    fn login_hint(&self) -> String {
        format!(
            "tcred login --source {} -n {}",
            self.name_any(),
            self.namespace().unwrap_or_default()
        )
    }

    fn secret_namespace(&self, r: &SecretReference) -> Option<String> {
        // Only the source's own namespace, whatever the reference says (the schema forbids one).
        r.namespace.is_none().then(|| self.namespace()).flatten()
    }

    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::namespaced(client, &self.namespace().unwrap_or_default())
    }
}

impl SourceResource for ClusterCredentialSource {
    const KIND: SourceKind = SourceKind::ClusterCredentialSource;

    fn view(&self) -> SourceView<'_> {
        self.spec.view()
    }

    fn source_status(&self) -> Option<&SourceStatus> {
        self.status.as_ref()
    }

    fn login_hint(&self) -> String {
        format!("tcred login --cluster-source {}", self.name_any())
    }

    fn secret_namespace(&self, r: &SecretReference) -> Option<String> {
        r.namespace.clone()
    }

    fn api(&self, client: kube::Client) -> Api<Self> {
        Api::all(client)
    }
}

/// What checking a source found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The spec names no single mode.
    NoMode,
    /// accessKey: the key's id, or what is wrong with its Secret.
    AccessKey(Result<String, String>),
    /// identityCenter: the session's expiry, or why there is no usable session.
    Session(Result<Timestamp, SessionProblem>),
    WebIdentity,
    /// The access key or session Secret is not labelled for this source: nothing else was read
    /// from it.
    SecretNotBound(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionProblem {
    pub reason: &'static str,
    pub message: String,
}

/// The status for a check, as a pure function (the transition time of an unchanged condition
/// stays put, so an unchanged world writes nothing).
pub fn status_for(
    prev: &SourceStatus,
    generation: Option<i64>,
    mode: Option<&str>,
    check: &Check,
    now: Timestamp,
    warning: Duration,
    login_hint: &str,
) -> SourceStatus {
    let mut s = SourceStatus {
        observed_generation: generation,
        mode: mode.map(str::to_owned),
        session_expires_at: None,
        access_key_id: None,
        ..prev.clone()
    };
    let set = |s: &mut SourceStatus, type_: &str, status: bool, reason: &str, message: String| {
        set_condition(
            &mut s.conditions,
            ConditionUpdate {
                type_,
                status,
                reason,
                message,
            },
            generation,
            now,
        );
    };
    match check {
        Check::NoMode => set(
            &mut s,
            types::READY,
            false,
            reasons::INVALID_SPEC,
            "exactly one of identityCenter, accessKey or webIdentity must be set".into(),
        ),
        Check::AccessKey(Ok(id)) => {
            s.access_key_id = Some(id.clone());
            set(
                &mut s,
                types::READY,
                true,
                reasons::CONFIGURED,
                format!("signing with access key {id}"),
            );
        }
        Check::AccessKey(Err(problem)) => set(
            &mut s,
            types::READY,
            false,
            reasons::SECRET_INVALID,
            problem.clone(),
        ),
        Check::WebIdentity => set(
            &mut s,
            types::READY,
            true,
            reasons::CONFIGURED,
            "exchanging ServiceAccount tokens with STS AssumeAgencyWithOIDC".into(),
        ),
        Check::SecretNotBound(message) => set(
            &mut s,
            types::READY,
            false,
            reasons::SECRET_NOT_BOUND,
            message.clone(),
        ),
        Check::Session(Err(p)) => {
            set(&mut s, types::READY, false, p.reason, p.message.clone());
            remove_condition(&mut s.conditions, types::SESSION_EXPIRING_SOON);
        }
        Check::Session(Ok(expires)) => {
            s.session_expires_at = Some(Time(*expires));
            let at = rfc3339(*expires);
            if *expires <= now {
                let msg = format!(
                    "the Identity Center session ended at {at}; credentials already minted stay valid until their own expiry; run `{login_hint}`"
                );
                set(&mut s, types::READY, false, reasons::SESSION_ENDED, msg.clone());
                set(&mut s, types::SESSION_EXPIRED, true, reasons::SESSION_ENDED, msg);
                set(
                    &mut s,
                    types::SESSION_EXPIRING_SOON,
                    false,
                    reasons::SESSION_ENDED,
                    format!("the session ended at {at}"),
                );
            } else {
                let soon = expires.checked_sub(signed(warning)).ok().is_none_or(|t| t <= now);
                set(
                    &mut s,
                    types::READY,
                    true,
                    reasons::SESSION_VALID,
                    format!("the Identity Center session is valid until {at}"),
                );
                set(
                    &mut s,
                    types::SESSION_EXPIRED,
                    false,
                    reasons::SESSION_VALID,
                    format!("the session is valid until {at}"),
                );
                if soon {
                    set(
                        &mut s,
                        types::SESSION_EXPIRING_SOON,
                        true,
                        reasons::SESSION_ENDING,
                        format!("the Identity Center session ends at {at}; run `{login_hint}` before then"),
                    );
                } else {
                    set(
                        &mut s,
                        types::SESSION_EXPIRING_SOON,
                        false,
                        reasons::SESSION_VALID,
                        format!("the session is valid until {at}"),
                    );
                }
            }
        }
    }
    if !matches!(check, Check::Session(_)) {
        remove_condition(&mut s.conditions, types::SESSION_EXPIRING_SOON);
        remove_condition(&mut s.conditions, types::SESSION_EXPIRED);
    }
    s
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Why a source may not use a Secret, or `None` when the Secret is labelled for it: a source
/// uses a Secret only when its labels `tcred.dev/source-kind` and `tcred.dev/source-name` name
/// that source (`tcred login` writes them), so a second source cannot borrow another's session or
/// access key (and bypass its limits, or send its tokens to another endpoint).
pub fn binding_problem(
    secret_labels: &BTreeMap<String, String>,
    kind: SourceKind,
    source: &str,
    namespace: &str,
    secret: &str,
) -> Option<Problem> {
    let kind_name = match kind {
        SourceKind::CredentialSource => "CredentialSource",
        SourceKind::ClusterCredentialSource => "ClusterCredentialSource",
    };
    let bound = secret_labels.get(session_labels::SOURCE_KIND).map(String::as_str) == Some(kind_name)
        && secret_labels.get(session_labels::SOURCE_NAME).map(String::as_str) == Some(source);
    (!bound).then(|| {
        Problem::new(
            reasons::SECRET_NOT_BOUND,
            format!(
                "Secret {namespace}/{secret} is not bound to {kind_name} {source}: label it {k}={kind_name} and {n}={source} \
                 (kubectl label secret -n {namespace} {secret} {k}={kind_name} {n}={source})",
                k = session_labels::SOURCE_KIND,
                n = session_labels::SOURCE_NAME,
            ),
        )
    })
}

/// When to look at a source again.
pub fn next_check(
    check: &Check,
    refresh_at: Option<Timestamp>,
    now: Timestamp,
    warning: Duration,
) -> Duration {
    // Checked arithmetic: the expiry comes from a Secret anyone in the namespace may write.
    let mut wake = now.checked_add(signed(RECHECK)).unwrap_or(Timestamp::MAX);
    if let Check::Session(Ok(expires)) = check {
        for t in [
            expires.checked_sub(signed(warning)).ok(),
            Some(*expires),
            refresh_at,
        ]
        .into_iter()
        .flatten()
        {
            if t > now && t < wake {
                wake = t;
            }
        }
    }
    crate::schedule::until(now, wake).max(Duration::from_secs(1))
}

/// Runtime entry point for either source kind.
pub async fn reconcile<K: SourceResource>(
    obj: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let src = match &obj.0 {
        Ok(s) => s,
        Err(invalid) => {
            warn!(object = %obj.name_any(), error = %invalid.error, "skipping a source that cannot be read");
            apply::publish(
                &ctx,
                obj.as_ref(),
                true,
                reasons::INVALID_SPEC,
                "Validate",
                format!("the source cannot be read: {}", invalid.error),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    if src.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let warning = ctx.config.session_warning;
    let view = src.view();
    let (check, refresh_at) = match view.mode {
        None => (Check::NoMode, None),
        Some(SourceMode::WebIdentity(_)) => (Check::WebIdentity, None),
        Some(SourceMode::AccessKey(ak)) => (check_access_key(&ctx, src, &ak.secret_ref).await?, None),
        Some(SourceMode::IdentityCenter(ic)) => {
            check_session(&ctx, src, &view, &ic.session_secret_ref, now).await?
        }
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
        write_status(&ctx, src, &next).await?;
        announce(&ctx, src, &prev, &next).await;
    }
    Ok(Action::requeue(next_check(&check, refresh_at, now, warning)))
}

async fn write_status<K: SourceResource>(ctx: &Context, src: &K, status: &SourceStatus) -> Result<(), Error> {
    let body = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    src.api(ctx.client.clone())
        .patch_status(
            &src.name_any(),
            &PatchParams::apply(apply::FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map(|_| ())
        .map_err(Error::Kube)
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

async fn check_access_key<K: SourceResource>(
    ctx: &Context,
    src: &K,
    r: &SecretReference,
) -> Result<Check, Error> {
    let Some(ns) = src.secret_namespace(r) else {
        return Ok(Check::AccessKey(Err(
            "the access key Secret's namespace is not allowed or not given".into(),
        )));
    };
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&r.name)
        .await
        .map_err(Error::Kube)?;
    let Some(secret) = secret else {
        return Ok(Check::AccessKey(Err(format!(
            "Secret {ns}/{} does not exist",
            r.name
        ))));
    };
    if let Some(p) = binding_problem(secret.labels(), K::KIND, &src.name_any(), &ns, &r.name) {
        return Ok(Check::SecretNotBound(p.message));
    }
    let value = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let check = match (
        value(super::mint::ACCESS_KEY_ID),
        value(super::mint::SECRET_ACCESS_KEY),
    ) {
        (Some(id), Some(_)) => Ok(id),
        (id, _) => Err(format!(
            "Secret {ns}/{} must hold non-empty keys {} and {} (missing: {})",
            r.name,
            super::mint::ACCESS_KEY_ID,
            super::mint::SECRET_ACCESS_KEY,
            if id.is_none() {
                super::mint::ACCESS_KEY_ID
            } else {
                super::mint::SECRET_ACCESS_KEY
            }
        )),
    };
    Ok(Check::AccessKey(check))
}

async fn check_session<K: SourceResource>(
    ctx: &Context,
    src: &K,
    view: &SourceView<'_>,
    r: &SecretReference,
    now: Timestamp,
) -> Result<(Check, Option<Timestamp>), Error> {
    let hint = src.login_hint();
    let Some(ns) = src.secret_namespace(r) else {
        let p = SessionProblem {
            reason: reasons::SECRET_INVALID,
            message: "the session Secret's namespace is not allowed or not given".into(),
        };
        return Ok((Check::Session(Err(p)), None));
    };
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    let Some(secret) = api.get_opt(&r.name).await.map_err(Error::Kube)? else {
        let p = SessionProblem {
            reason: reasons::LOGIN_REQUIRED,
            message: format!(
                "no Identity Center session yet (Secret {ns}/{} does not exist): run `{hint}`",
                r.name
            ),
        };
        return Ok((Check::Session(Err(p)), None));
    };
    // Before anything is read from the Secret, and so before any refresh sends its tokens.
    if let Some(p) = binding_problem(secret.labels(), K::KIND, &src.name_any(), &ns, &r.name) {
        return Ok((Check::SecretNotBound(p.message), None));
    }
    let mut session = match Session::from_secret(&secret) {
        Ok(s) => s,
        Err(e) => {
            let p = SessionProblem {
                reason: reasons::SECRET_INVALID,
                message: format!("session Secret {ns}/{}: {e}; run `{hint}`", r.name),
            };
            return Ok((Check::Session(Err(p)), None));
        }
    };
    if session.refresh_token.is_some() && session.refresh_at() <= now {
        match refresh(ctx, src, view, &api, secret, &session, now).await {
            Ok(fresh) => session = fresh,
            Err(message) => {
                warn!(source = %src.name_any(), %message, "could not refresh the Identity Center session");
                apply::publish(ctx, src, true, "SessionRefreshFailed", "Refresh", message).await;
            }
        }
    }
    let refresh_at = session.refresh_token.as_ref().map(|_| session.refresh_at());
    Ok((Check::Session(Ok(session.access_token_expires_at)), refresh_at))
}

/// Exchanges the refresh token and persists the new tokens. The write is a replace at the
/// resourceVersion read, retried on conflict on top of the latest Secret (so a concurrent
/// `tcred login` is kept when it is newer), so the rotated refresh token is never lost.
async fn refresh<K: SourceResource>(
    ctx: &Context,
    src: &K,
    view: &SourceView<'_>,
    api: &Api<Secret>,
    secret: Secret,
    session: &Session,
    now: Timestamp,
) -> Result<Session, String> {
    let refresh_token = session.refresh_token.as_ref().ok_or("no refresh token")?;
    // A namespaced source's endpoints must be allowed before its tokens go anywhere.
    let overrides = match K::KIND {
        SourceKind::CredentialSource => endpoints::Overrides::Namespaced(ctx.http.policy()),
        SourceKind::ClusterCredentialSource => endpoints::Overrides::Admin,
    };
    let eps = endpoints::resolve(&session.region, view.endpoints, overrides).map_err(|e| e.to_string())?;
    let tokens = oidc::refresh(
        &ctx.http,
        &eps.oidc,
        &session.client_id,
        &session.client_secret,
        refresh_token,
    )
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
    let name = secret.name_any();
    let mut current = secret;
    for _ in 0..5 {
        let mut next = current.clone();
        let data = next.data.get_or_insert_with(Default::default);
        for (k, v) in fresh.to_data() {
            data.insert(k, v);
        }
        if fresh.refresh_token.is_none() {
            data.remove(crate::session::keys::REFRESH_TOKEN);
        }
        match api
            .replace(
                &name,
                &PostParams {
                    field_manager: Some(apply::FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &next,
            )
            .await
        {
            Ok(_) => {
                info!(source = %src.name_any(), expires_at = %rfc3339(fresh.access_token_expires_at), "refreshed the Identity Center session");
                apply::publish(
                    ctx,
                    src,
                    false,
                    "SessionRefreshed",
                    "Refresh",
                    format!(
                        "refreshed the Identity Center access token; valid until {}",
                        rfc3339(fresh.access_token_expires_at)
                    ),
                )
                .await;
                return Ok(fresh);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                current = api
                    .get(&name)
                    .await
                    .map_err(|e| format!("re-reading the session Secret: {e}"))?;
                if let Ok(latest) = Session::from_secret(&current)
                    && latest.access_token_expires_at > fresh.access_token_expires_at
                {
                    // A newer login replaced the session meanwhile: it wins.
                    return Ok(latest);
                }
            }
            Err(e) => return Err(format!("writing the refreshed session: {e}")),
        }
    }
    Err("writing the refreshed session kept conflicting; will retry".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }
    const DAY: u64 = 86_400;
    const HINT: &str = "tcred login --cluster-source corp";

    fn cond<'a>(s: &'a SourceStatus, type_: &str) -> (&'a str, &'a str) {
        let c = find(&s.conditions, type_).unwrap_or_else(|| panic!("no {type_}"));
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn a_fresh_session_is_ready_and_not_expiring() {
        let s = status_for(
            &Default::default(),
            Some(1),
            Some("identityCenter"),
            &Check::Session(Ok(t(10 * DAY as i64))),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(cond(&s, types::READY), ("True", reasons::SESSION_VALID));
        assert_eq!(
            cond(&s, types::SESSION_EXPIRING_SOON),
            ("False", reasons::SESSION_VALID)
        );
        assert_eq!(
            cond(&s, types::SESSION_EXPIRED),
            ("False", reasons::SESSION_VALID)
        );
        assert_eq!(s.session_expires_at, Some(Time(t(10 * DAY as i64))));
    }

    #[test]
    fn a_session_ending_within_the_threshold_warns_then_expires() {
        let check = Check::Session(Ok(t(1000)));
        let soon = status_for(
            &Default::default(),
            Some(1),
            Some("identityCenter"),
            &check,
            t(500),
            Duration::from_secs(600),
            HINT,
        );
        assert_eq!(cond(&soon, types::READY), ("True", reasons::SESSION_VALID));
        assert_eq!(
            cond(&soon, types::SESSION_EXPIRING_SOON),
            ("True", reasons::SESSION_ENDING)
        );
        let msg = &find(&soon.conditions, types::SESSION_EXPIRING_SOON)
            .unwrap()
            .message;
        assert!(msg.contains(HINT), "{msg}");

        let ended = status_for(
            &soon,
            Some(1),
            Some("identityCenter"),
            &check,
            t(1000),
            Duration::from_secs(600),
            HINT,
        );
        assert_eq!(cond(&ended, types::READY), ("False", reasons::SESSION_ENDED));
        assert_eq!(
            cond(&ended, types::SESSION_EXPIRED),
            ("True", reasons::SESSION_ENDED)
        );
        assert_eq!(cond(&ended, types::SESSION_EXPIRING_SOON).0, "False");
    }

    #[test]
    fn an_unchanged_world_gives_an_unchanged_status() {
        let check = Check::Session(Ok(t(10 * DAY as i64)));
        let a = status_for(
            &Default::default(),
            Some(1),
            Some("identityCenter"),
            &check,
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        let b = status_for(
            &a,
            Some(1),
            Some("identityCenter"),
            &check,
            t(60),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn missing_sessions_and_bad_keys_are_not_ready() {
        let p = SessionProblem {
            reason: reasons::LOGIN_REQUIRED,
            message: format!("run `{HINT}`"),
        };
        let s = status_for(
            &Default::default(),
            Some(1),
            Some("identityCenter"),
            &Check::Session(Err(p)),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(cond(&s, types::READY), ("False", reasons::LOGIN_REQUIRED));
        let s = status_for(
            &Default::default(),
            Some(1),
            Some("accessKey"),
            &Check::AccessKey(Err("no key".into())),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(cond(&s, types::READY), ("False", reasons::SECRET_INVALID));
        assert!(find(&s.conditions, types::SESSION_EXPIRED).is_none());
        let s = status_for(
            &Default::default(),
            Some(1),
            Some("accessKey"),
            &Check::AccessKey(Ok("AK1".into())),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(s.access_key_id.as_deref(), Some("AK1"));
    }

    fn bound_to(kind: &str, name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (session_labels::SOURCE_KIND.to_owned(), kind.to_owned()),
            (session_labels::SOURCE_NAME.to_owned(), name.to_owned()),
        ])
    }

    #[test]
    fn a_source_uses_only_secrets_labelled_for_it() {
        let ns = SourceKind::CredentialSource;
        let cluster = SourceKind::ClusterCredentialSource;
        assert_eq!(
            binding_problem(
                &bound_to("CredentialSource", "corp"),
                ns,
                "corp",
                "team-a",
                "corp-ak"
            ),
            None
        );
        assert_eq!(
            binding_problem(
                &bound_to("ClusterCredentialSource", "corp"),
                cluster,
                "corp",
                "tcred-system",
                "corp-ak"
            ),
            None
        );
        // another source's Secret, the other kind's, half a binding, or none at all
        for labels in [
            bound_to("CredentialSource", "official"),
            bound_to("ClusterCredentialSource", "corp"),
            BTreeMap::from([(session_labels::SOURCE_NAME.to_owned(), "corp".to_owned())]),
            BTreeMap::new(),
        ] {
            let p = binding_problem(&labels, ns, "corp", "team-a", "corp-ak").expect("refused");
            assert_eq!(p.reason, reasons::SECRET_NOT_BOUND);
            assert!(
                p.message
                    .starts_with("Secret team-a/corp-ak is not bound to CredentialSource corp")
                    && p.message.contains("tcred.dev/source-kind=CredentialSource")
                    && p.message.contains("tcred.dev/source-name=corp"),
                "{}",
                p.message
            );
        }
    }

    #[test]
    fn an_unbound_secret_makes_the_source_not_ready_without_its_key_id() {
        let s = status_for(
            &SourceStatus {
                access_key_id: Some("AK-BEFORE".into()),
                ..Default::default()
            },
            Some(1),
            Some("accessKey"),
            &Check::SecretNotBound("label it".into()),
            t(0),
            Duration::from_secs(DAY),
            HINT,
        );
        assert_eq!(cond(&s, types::READY), ("False", reasons::SECRET_NOT_BOUND));
        assert_eq!(s.access_key_id, None);
        assert!(find(&s.conditions, types::SESSION_EXPIRED).is_none());
    }

    #[test]
    fn sessions_are_checked_again_at_the_warning_point_the_refresh_and_the_expiry() {
        let check = Check::Session(Ok(t(10_000)));
        let warning = Duration::from_secs(1_000);
        // far from everything: the periodic re-check
        assert_eq!(next_check(&check, None, t(0), warning), RECHECK);
        // the warning point (9000) comes first
        assert_eq!(
            next_check(&check, None, t(8_900), warning),
            Duration::from_secs(100)
        );
        // then the expiry
        assert_eq!(
            next_check(&check, None, t(9_950), warning),
            Duration::from_secs(50)
        );
        // a refresh before either
        assert_eq!(
            next_check(&check, Some(t(8_800)), t(8_700), warning),
            Duration::from_secs(100)
        );
    }
    #[test]
    fn next_check_does_not_panic_on_a_session_expiry_at_the_edge_of_time() {
        // Review C1: `expires - warning` overflowed for a session expiring at Timestamp::MIN.
        let warning = Duration::from_secs(DAY);
        for expires in [Timestamp::MIN, Timestamp::MAX] {
            let check = Check::Session(Ok(expires));
            for now in [t(0), Timestamp::MIN, Timestamp::MAX] {
                let d = next_check(&check, Some(Timestamp::MIN), now, warning);
                assert!(d >= Duration::from_secs(1) && d <= RECHECK, "{d:?}");
            }
        }
        let d = next_check(&Check::Session(Ok(t(100))), None, t(0), Duration::MAX);
        assert_eq!(
            d,
            Duration::from_secs(100),
            "the expiry itself, an absurd warning ignored"
        );
    }
}
