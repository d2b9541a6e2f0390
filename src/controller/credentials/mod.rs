//! The TemporaryCredential controller (docs/controller.md §Reconcile flow): fetch the Secret and
//! the source, authorize, plan, and then mint and apply, keep, or wait, writing the status and an
//! Event on each transition. The decisions are pure ([`plan`], [`status`], [`failure`],
//! [`secret`]); this module does the I/O between them.

pub mod failure;
pub mod formats;
pub mod login;
pub mod mint;
pub mod pending;
pub mod plan;
pub mod registry;
pub mod secret;
pub mod status;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::DeleteParams,
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, warn};

use self::{
    failure::{Decision, MintError},
    pending::PendingWrite,
    plan::{MintReason, Plan, PlanInput, plan},
    secret::{Observed, Times},
    status::{Base, Minted},
};
use super::{
    apply,
    authorize::{self, Authorized, Problem, Request},
    context::Context,
    entry,
    error::{Error, error_class},
    namespace_gate, restart,
};
use crate::{
    api::{TemporaryCredential, TemporaryCredentialStatus, annotations, condition::reasons, labels},
    schedule::{RenewPolicy, expiry_in_cluster_time, lifetime_shortened, renewal_time, until, whole_second},
    source::Source,
    time::rfc3339,
};

/// Entry point for the runtime (see [`entry`]): one namespace holds at most its share of the
/// slots, and a panic is contained to this object (an error with backoff, a condition and an
/// Event).
pub async fn reconcile(
    obj: Arc<DeserializeGuard<TemporaryCredential>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    if ctx.excluded(&ns) {
        return Ok(Action::await_change());
    }
    // The first reconciles after a start come from the credentials' own listing, which may be
    // complete before the sources' and namespaces': judged against a half-filled cache, a valid
    // object would be marked SourceNotFound and then Ready again — two false status writes and a
    // false Warning per object on every restart.
    if !ctx.stores.synced().await {
        return Ok(Action::await_change());
    }
    let Some(_permit) = ctx.namespace_gate.try_enter(&ns, &obj.name_any(), urgency(&obj)) else {
        return Ok(Action::requeue(namespace_gate::busy_retry(&entry::object_key(
            obj.as_ref(),
        ))));
    };
    let result = entry::contained(&ctx, obj.as_ref(), reconcile_object(&obj, &ctx)).await;
    if let (Err(Error::Panicked(_)), Ok(tc)) = (&result, &obj.0) {
        report_panic(&ctx, tc).await;
    }
    result
}

/// When `obj` needs its reconcile: the renewal (or expiry, if earlier) its status names, else
/// when it was created (a new object has no credential at all). Earlier is more urgent: a full
/// namespace admits the most urgent waiter first ([`namespace_gate`]).
fn urgency(obj: &DeserializeGuard<TemporaryCredential>) -> Timestamp {
    let (status, created) = match &obj.0 {
        Ok(tc) => (tc.status.as_ref(), tc.metadata.creation_timestamp.as_ref()),
        Err(invalid) => (None, invalid.metadata.creation_timestamp.as_ref()),
    };
    let due = status.and_then(|s| {
        let renewal = s.renewal_time.as_ref().map(|t| t.0);
        let expiry = s.expires_at.as_ref().map(|t| t.0);
        renewal.into_iter().chain(expiry).min()
    });
    due.or(created.map(|t| t.0)).unwrap_or_else(Timestamp::now)
}

async fn reconcile_object(
    obj: &DeserializeGuard<TemporaryCredential>,
    ctx: &Context,
) -> Result<Action, Error> {
    let _timer = ctx.metrics.record_reconcile();
    let tc = match &obj.0 {
        Ok(tc) => tc,
        Err(invalid) => {
            write_unreadable_status(ctx, obj, invalid).await;
            entry::report_invalid(ctx, obj, invalid).await;
            return Ok(Action::await_change());
        }
    };
    if tc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if super::shard::let_go(ctx, tc).await? {
        return Ok(Action::await_change());
    }
    let fresh = match fresh_if_cache_is_behind(ctx, tc).await? {
        Freshness::Current => None,
        Freshness::Read(fresh) => Some(*fresh),
        Freshness::Gone => return Ok(Action::await_change()),
    };
    let tc = fresh.as_ref().unwrap_or(tc);
    Reconciler {
        ctx,
        tc,
        now: Timestamp::now(),
        prev: tc.status.clone().unwrap_or_default(),
        secret_touched: AtomicBool::new(false),
        write_proven: AtomicBool::new(false),
    }
    .run()
    .await
}

/// A reconcile panicked (a bug): say so on the object, keeping the rest of its status, and in an
/// Event. The panic's text goes to the operator log only.
async fn report_panic(ctx: &Context, tc: &TemporaryCredential) {
    let message = "tcred hit an internal error reconciling this object (a bug: the operator log has the \
                   details); it retries with backoff and keeps whatever the Secret holds"
        .to_owned();
    let prev = tc.status.clone().unwrap_or_default();
    let base = Base {
        now: Timestamp::now(),
        generation: tc.metadata.generation,
        prev: &prev,
        target: prev.target.clone(),
        secret_name: secret::secret_name(tc),
    };
    let next = status::after_problem(
        &base,
        &Problem::new(reasons::INTERNAL_ERROR, message.clone()),
        prev.expires_at.as_ref().map(|t| t.0),
    );
    if let Err(error) = apply::patch_status(ctx, tc, &next).await {
        warn!(%error, "could not write the status after a contained panic");
    }
    if status::ready_reason(&prev) != Some(reasons::INTERNAL_ERROR) {
        apply::publish(ctx, tc, true, reasons::INTERNAL_ERROR, "Reconcile", message).await;
    }
}

/// An unreadable TemporaryCredential says so on its status (Ready=False, InvalidSpec) besides
/// the Event every unreadable object gets.
async fn write_unreadable_status(
    ctx: &Context,
    obj: &DeserializeGuard<TemporaryCredential>,
    invalid: &InvalidObject,
) {
    let generation = invalid.metadata.generation;
    let status = json!({
        "observedGeneration": generation,
        "conditions": [{
            "type": "Ready", "status": "False", "reason": reasons::INVALID_SPEC,
            "message": entry::invalid_message::<TemporaryCredential>(invalid),
            "lastTransitionTime": rfc3339(Timestamp::now()),
            "observedGeneration": generation,
        }],
    });
    let api = Api::<DeserializeGuard<TemporaryCredential>>::namespaced(
        ctx.client.clone(),
        &obj.namespace().unwrap_or_default(),
    );
    if let Err(error) = apply::write_status(&api, &obj.name_any(), &status).await {
        warn!(%error, "could not write the status of an unreadable TemporaryCredential");
    }
}

/// Whether a reconcile can trust the cached object.
enum Freshness {
    /// The cache has seen the last status write (or there was none).
    Current,
    /// The cache may not have: the object as the API server has it.
    Read(Box<TemporaryCredential>),
    /// Deleted (or replaced by a new object of the same name) meanwhile.
    Gone,
}

async fn fresh_if_cache_is_behind(ctx: &Context, tc: &TemporaryCredential) -> Result<Freshness, Error> {
    let ns = tc.namespace().unwrap_or_default();
    let name = tc.name_any();
    let stale = ctx.status_writes.cache_may_be_stale(
        &ns,
        &name,
        tc.uid().as_deref(),
        tc.resource_version().as_deref(),
    );
    if !stale {
        return Ok(Freshness::Current);
    }
    ctx.metrics.record_stale_cache_read();
    let fresh = Api::<TemporaryCredential>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
        .map_err(Error::Kube)?;
    Ok(match fresh {
        Some(f) if f.uid() == tc.uid() => {
            if f.resource_version() == tc.resource_version() {
                ctx.status_writes.caught_up(&ns, &name);
            }
            Freshness::Read(Box::new(f))
        }
        _ => {
            ctx.status_writes.caught_up(&ns, &name);
            Freshness::Gone
        }
    })
}

struct Reconciler<'a> {
    ctx: &'a Context,
    tc: &'a TemporaryCredential,
    now: Timestamp,
    prev: TemporaryCredentialStatus,
    /// Somebody else changed the Secret while this reconcile wrote it: its watch event was held
    /// back (docs/controller.md §Watches), so the reconcile comes back at once.
    secret_touched: AtomicBool,
    /// A dry run of creating the Secret passed in this reconcile (see `read_secret`).
    write_proven: AtomicBool,
}

/// What a mint works with: the source, what it allows, and what the Secret holds now.
struct Minting<'a> {
    source: &'a Source,
    auth: &'a Authorized<'a>,
    /// The expiry of the intact credential the Secret holds, if any.
    held_expiry: Option<Timestamp>,
    /// No Secret existed: the write creates it (and never adopts one that appeared meanwhile).
    missing: bool,
}

impl Reconciler<'_> {
    fn base(&self) -> Base<'_> {
        Base {
            now: self.now,
            generation: self.tc.metadata.generation,
            prev: &self.prev,
            target: authorize::target_of(&self.tc.spec).ok().map(|t| t.display()),
            secret_name: secret::secret_name(self.tc),
        }
    }

    fn namespace(&self) -> String {
        self.tc.namespace().unwrap_or_default()
    }

    fn policy(&self) -> RenewPolicy {
        RenewPolicy {
            renew_before: self.tc.spec.renew_before.map(Into::into),
            renew_before_percentage: self.tc.spec.renew_before_percentage,
            served_min_interval: self
                .tc
                .spec
                .pod_identity
                .as_ref()
                .map(|_| self.ctx.config.min_mint_interval),
        }
    }

    fn uid(&self) -> String {
        self.tc.uid().unwrap_or_else(|| self.tc.name_any())
    }

    fn rotate_request(&self) -> Option<&str> {
        self.tc.annotations().get(annotations::ROTATE).map(String::as_str)
    }

    /// The Secret as the API server has it now. A credential never reconciled before (no status)
    /// almost never has one: there a dry run of creating it answers that and proves the first
    /// write in one round trip, instead of a read followed by the same dry run before the mint
    /// (docs/benchmarks.md). Any refusal falls back to the read (and the dry run before the mint
    /// then reports it).
    async fn read_secret(&self) -> Result<Option<Secret>, Error> {
        if self.tc.status.is_none() && self.dry_run_secret(true).await.is_ok() {
            self.write_proven.store(true, Ordering::Relaxed);
            return Ok(None);
        }
        Api::<Secret>::namespaced(self.ctx.client.clone(), &self.namespace())
            .get_opt(&secret::secret_name(self.tc))
            .await
            .map_err(Error::Kube)
    }

    async fn run(self) -> Result<Action, Error> {
        let live = self.read_secret().await?;
        let observed = secret::observe(self.tc, live.as_ref());
        let held_expiry = match &observed {
            Observed::Managed(m) if m.intact => m.expires_at,
            _ => None,
        };
        let source = match self.ctx.source_of(self.tc) {
            Ok(s) => s,
            Err(p) => return self.blocked(p, held_expiry).await,
        };
        let ns = self.namespace();
        let ns_labels = self.ctx.namespace_labels(&ns);
        let authorized = source.view().and_then(|view| {
            authorize::authorize(Request {
                namespace: &ns,
                namespace_labels: ns_labels.as_ref(),
                spec: &self.tc.spec,
                source_kind: self.tc.spec.source_ref.kind,
                source_name: &self.tc.spec.source_ref.name,
                source: view,
            })
        });
        let auth = match authorized {
            Ok(a) => a,
            Err(p) => {
                if p.reason == reasons::DENIED {
                    self.ctx.metrics.record_denied();
                }
                return self.blocked(p, held_expiry).await;
            }
        };
        let decision = plan(PlanInput {
            now: self.now,
            generation: self.tc.metadata.generation,
            status: &self.prev,
            observed: &observed,
            rotate_request: self.rotate_request(),
            policy: self.policy(),
            uid: &self.uid(),
            source_version: source.resource_version().as_deref(),
            last_mint: plan::last_mint(&self.prev, &observed, self.now),
            min_interval: self.ctx.config.min_mint_interval,
        });
        let minting = Minting {
            source: &source,
            auth: &auth,
            held_expiry,
            missing: matches!(observed, Observed::Missing),
        };
        self.act(decision, live, &observed, &minting).await
    }

    /// Carries out the plan.
    async fn act(
        &self,
        decision: Plan,
        live: Option<Secret>,
        observed: &Observed,
        m: &Minting<'_>,
    ) -> Result<Action, Error> {
        match decision {
            Plan::Conflict => {
                let why = live
                    .as_ref()
                    .and_then(|l| registry::type_mismatch(l, secret::secret_type(self.tc)))
                    .unwrap_or_else(|| "is not managed by tcred for this TemporaryCredential".to_owned());
                let p = Problem::new(
                    reasons::SECRET_CONFLICT,
                    format!(
                        "Secret {}/{} exists and {why}; tcred will not overwrite it: delete it or set spec.secret.name",
                        self.namespace(),
                        secret::secret_name(self.tc)
                    ),
                );
                self.blocked(p, None).await
            }
            Plan::Keep {
                renewal,
                issued_at,
                expires_at,
                refresh_metadata,
            } => {
                if refresh_metadata && let Some(live) = live {
                    let times = Times {
                        issued_at,
                        renewal_at: renewal.at,
                    };
                    let relabelled =
                        secret::with_data(self.tc, live.data.unwrap_or_default(), expires_at, times);
                    let touched = apply::apply_secret(self.ctx, &relabelled)
                        .await
                        .map_err(Error::Kube)?;
                    self.secret_touched.store(touched, Ordering::Relaxed);
                    super::shard::drop_stale_shard_labels(
                        self.ctx,
                        &relabelled,
                        live.metadata.labels.as_ref(),
                    )
                    .await
                    .map_err(Error::Kube)?;
                }
                let ak = match observed {
                    Observed::Managed(m) => m.access_key_id.as_deref(),
                    _ => None,
                };
                let next = status::after_keep(&self.base(), ak, issued_at, expires_at, renewal);
                self.finish(next, renewal.at).await
            }
            Plan::Backoff { retry_at, .. } => {
                let next = status::during_backoff(&self.base(), m.held_expiry);
                self.write_status(&next).await?;
                let wake = match m.held_expiry {
                    Some(exp) if exp > self.now => retry_at.min(exp),
                    _ => retry_at,
                };
                Ok(requeue_until(self.now, wake))
            }
            Plan::Defer { until, reason } => {
                let next = status::during_defer(&self.base(), reason, until, m.held_expiry);
                self.write_status(&next).await?;
                Ok(requeue_until(self.now, until))
            }
            Plan::Mint(reason) => self.mint(reason, m).await,
        }
    }

    /// Mints (or takes the credential an earlier mint could not write) and writes it.
    async fn mint(&self, reason: MintReason, m: &Minting<'_>) -> Result<Action, Error> {
        if !self.ctx.still_served(self.tc) {
            info!("not minting: the object moved to another shard meanwhile");
            return Ok(Action::await_change());
        }
        let uid = self.uid();
        let spec_hash = secret::spec_hash(self.tc);
        let min_left = self.ctx.config.min_credential_lifetime;
        if let Some(waiting) = self.ctx.pending.take(&uid, &spec_hash, self.now, min_left) {
            info!("writing a credential minted earlier");
            return self.write_minted(reason, m, waiting).await;
        }
        if self.write_unproven(reason)
            && !self.write_proven.load(Ordering::Relaxed)
            && let Err(e) = self.dry_run_secret(m.missing).await
        {
            return match e {
                DryRun::Appeared => Ok(Action::requeue(Duration::from_secs(1))),
                DryRun::Refused(e) => {
                    let message = failure::write_failure_message(&e, false, false, "");
                    self.secret_write_failed(&e, message, m).await
                }
            };
        }
        match self.call(spec_hash, m).await {
            Ok(minted) => self.write_minted(reason, m, minted).await,
            Err(e) => self.mint_failed(reason, e, m).await,
        }
    }

    /// Calls Huawei Cloud, and takes the credential into cluster time.
    async fn call(&self, spec_hash: String, m: &Minting<'_>) -> Result<PendingWrite, MintError> {
        // Whole seconds: issue times are written to the Secret at that precision, and a schedule
        // recomputed from them after a restart must match this one exactly.
        let started = whole_second(Timestamp::now());
        // Resolved before the mint, so a refused SWR endpoint costs no credential.
        let registry = login::registry_of(self.ctx, self.tc, m.source, m.auth)?;
        let result = {
            let _timer = self.ctx.metrics.record_mint_call();
            mint::mint(self.ctx, self.tc, m.source, m.auth).await
        };
        let min_left = self.ctx.config.min_credential_lifetime;
        let mut cred = result.and_then(|c| failure::usable(started, c, min_left))?;
        // Everything here (the Secret, the status, the schedule) uses cluster time, corrected by
        // the skew this very call measured (trusted hosts only), never another reconcile's.
        let issued_expiry = cred.expires_at;
        cred.expires_at = expiry_in_cluster_time(started, issued_expiry, cred.clock_skew_seconds);
        let login = match registry {
            Some(r) => {
                let got = self.registry_login(&r, &mut cred, started).await;
                let result = got.as_ref().map_or_else(|e| e.class.label(), |_| "success");
                self.ctx.metrics.record_registry_login(m.source.label(), result);
                Some(got?)
            }
            None => None,
        };
        self.ctx.metrics.record_mint_success(m.source.label());
        info!(access_key_id = %cred.access_key_id, expires_at = %rfc3339(cred.expires_at), "credential minted");
        Ok(PendingWrite {
            spec_hash,
            credential: cred,
            issued_at: started,
            issued_expiry,
            rotate_request: self.rotate_request().map(str::to_owned),
            login,
        })
    }

    /// The SWR login of an `imagePullSecret` credential, obtained with `cred`, whose expiry
    /// becomes the earlier of the two (docs/registry.md); a login too short to be worth writing
    /// is a failed mint like a short credential.
    async fn registry_login(
        &self,
        registry: &login::Registry,
        cred: &mut crate::cloud::IssuedCredential,
        started: Timestamp,
    ) -> Result<crate::cloud::swr::RegistryLogin, MintError> {
        let left = until(started, cred.expires_at);
        let mut got = login::obtain(self.ctx, registry, cred, left).await?;
        got.expires_at = expiry_in_cluster_time(started, got.expires_at, got.clock_skew_seconds);
        cred.expires_at = registry::effective_expiry(got.expires_at, cred.expires_at);
        crate::schedule::check_issued(started, cred.expires_at, self.ctx.config.min_credential_lifetime)
            .map_err(|message| {
                MintError::new(
                    crate::cloud::ErrorClass::InvalidResponse,
                    format!("SWR: {message} (--min-credential-lifetime)"),
                )
            })?;
        info!(registry = %got.host, expires_at = %rfc3339(cred.expires_at), "registry login obtained");
        Ok(got)
    }

    /// Whether the Secret write that follows this mint has not been seen to work: the first write,
    /// a write after the Secret went or changed, a new spec (its labels and annotations), or a
    /// retry after a failed write. Such a write is tried without effect (a dry run) before a
    /// credential is minted for it.
    fn write_unproven(&self, reason: MintReason) -> bool {
        matches!(
            reason,
            MintReason::Initial
                | MintReason::SecretMissing
                | MintReason::SecretEdited
                | MintReason::SpecChanged
        ) || status::ready_reason(&self.prev) == Some(reasons::SECRET_WRITE_FAILED)
    }

    /// Tries the Secret write this mint will make, with a credential of the same shape, as a dry
    /// run: a label the API server refuses, a full quota, a policy webhook or an immutable Secret
    /// then costs no mint.
    async fn dry_run_secret(&self, missing: bool) -> Result<(), DryRun> {
        let now = self.now;
        let placeholder = crate::cloud::IssuedCredential {
            access_key_id: "X".repeat(20),
            secret_access_key: crate::sensitive::SecretString::new("x".repeat(40)),
            security_token: crate::sensitive::SecretString::new("x".repeat(2048)),
            expires_at: now
                .checked_add(jiff::SignedDuration::from_hours(1))
                .unwrap_or(now),
            clock_skew_seconds: None,
        };
        let times = Times {
            issued_at: now,
            renewal_at: now,
        };
        let built = match &self.tc.spec.image_pull_secret {
            Some(_) => {
                let login =
                    registry::placeholder("swr.region.myhuaweicloud.com".into(), placeholder.expires_at);
                secret::with_data(
                    self.tc,
                    registry::data(&login, login.expires_at),
                    login.expires_at,
                    times,
                )
            }
            None => secret::build(self.tc, &placeholder, times),
        };
        match apply::write_secret(self.ctx, &built, missing, true).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if missing && s.code == 409 => Err(DryRun::Appeared),
            Err(e) => Err(DryRun::Refused(e)),
        }
    }

    /// Writes a minted credential: created when no Secret existed (so a Secret that appeared
    /// meanwhile is never adopted), applied otherwise. A failed write keeps the credential for the
    /// next attempt, which writes it instead of minting again.
    async fn write_minted(
        &self,
        reason: MintReason,
        m: &Minting<'_>,
        minted: PendingWrite,
    ) -> Result<Action, Error> {
        let uid = self.uid();
        let cred = &minted.credential;
        let started = minted.issued_at;
        let renewal = renewal_time(started, cred.expires_at, self.policy(), &uid);
        let times = Times {
            issued_at: started,
            renewal_at: renewal.at,
        };
        let built = match &minted.login {
            Some(login) => secret::with_data(
                self.tc,
                registry::data(login, cred.expires_at),
                cred.expires_at,
                times,
            ),
            None => secret::build(self.tc, cred, times),
        };
        match apply::write_secret(self.ctx, &built, m.missing, false).await {
            Ok(touched) => self.secret_touched.store(touched, Ordering::Relaxed),
            Err(e) => {
                let appeared = m.missing && matches!(&e, kube::Error::Api(s) if s.code == 409);
                let message =
                    failure::write_failure_message(&e, true, appeared, &secret::secret_name(self.tc));
                self.ctx.pending.keep(&uid, minted, self.now);
                return self.secret_write_failed(&e, message, m).await;
            }
        }
        self.ctx.pending.forget(&uid);
        self.remove_renamed_secret().await;
        let shortened_from = m
            .auth
            .duration
            .filter(|d| lifetime_shortened(started, minted.issued_expiry, *d));
        let next = status::after_mint(
            &self.base(),
            &Minted {
                access_key_id: &cred.access_key_id,
                issued_at: started,
                expires_at: cred.expires_at,
                renewal,
                shortened_from,
                rotate_request: minted.rotate_request.as_deref(),
            },
        );
        info!(
            reason = %reason, access_key_id = %cred.access_key_id, renewal_at = %rfc3339(renewal.at),
            "credential written"
        );
        self.finish(next, renewal.at).await
    }

    /// What failures are judged against (see [`failure`]).
    fn judge<T>(&self, m: &Minting<'_>, f: impl FnOnce(&failure::Context<'_>) -> T) -> T {
        let base = self.base();
        let uid = self.uid();
        let source_version = m.source.resource_version();
        f(&failure::Context {
            base: &base,
            uid: &uid,
            held_expiry: m.held_expiry,
            source_version: source_version.as_deref(),
        })
    }

    /// A mint failed: [`failure::mint_failed`] decides what it means.
    async fn mint_failed(&self, reason: MintReason, e: MintError, m: &Minting<'_>) -> Result<Action, Error> {
        let decision = self.judge(m, |cx| failure::mint_failed(cx, &e));
        match &decision {
            Decision::Blocked(_) => warn!(error = %e.message, "endpoint not allowed"),
            Decision::Retry { delay, .. } => {
                self.ctx
                    .metrics
                    .record_mint_failure(m.source.label(), e.class.label());
                warn!(
                    reason = %reason, class = e.class.label(), retry_in_seconds = delay.as_secs(),
                    error = %e.message, "mint failed"
                );
            }
        }
        self.apply_decision(decision, m.held_expiry).await
    }

    /// A Secret write failed: [`failure::write_failed`] decides what it means.
    async fn secret_write_failed(
        &self,
        e: &kube::Error,
        message: String,
        m: &Minting<'_>,
    ) -> Result<Action, Error> {
        let decision = self.judge(m, |cx| failure::write_failed(cx, e, &message));
        self.ctx.metrics.record_secret_write_failure();
        if let Decision::Retry { delay, .. } = &decision {
            warn!(
                class = error_class(e).label(),
                retry_in_seconds = delay.as_secs(), error = %message, "Secret write failed"
            );
        }
        self.apply_decision(decision, m.held_expiry).await
    }

    async fn apply_decision(
        &self,
        decision: Decision,
        held_expiry: Option<Timestamp>,
    ) -> Result<Action, Error> {
        match decision {
            Decision::Blocked(p) => self.blocked(p, held_expiry).await,
            Decision::Retry { delay, status } => {
                self.write_status(&status).await?;
                Ok(Action::requeue(delay))
            }
        }
    }

    /// Nothing can be minted: record why, keep whatever the Secret holds.
    async fn blocked(&self, problem: Problem, held_expiry: Option<Timestamp>) -> Result<Action, Error> {
        let next = status::after_problem(&self.base(), &problem, held_expiry);
        self.write_status(&next).await?;
        // A change to the object, its source or its namespace triggers the next reconcile.
        Ok(Action::await_change())
    }

    /// The Secret holds a good credential: restart what the last rotation still owes, write the
    /// status, and come back for the renewal (or sooner to retry a failed restart).
    async fn finish(&self, next: TemporaryCredentialStatus, renewal_at: Timestamp) -> Result<Action, Error> {
        let (next, owed) = self.with_restarts(next).await;
        self.write_status(&next).await?;
        if self.secret_touched.load(Ordering::Relaxed) {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Ok(requeue_until(
            self.now,
            retry_restarts(self.now, renewal_at, owed),
        ))
    }

    /// Restarts owed for rotations that have not been followed by one yet (also after a crash or
    /// a leader change between the Secret write and the restart), folded into `next` by
    /// [`restart::fold`]; true while some remain owed. A workload already restarted after the
    /// rotation is not restarted again on the retry.
    async fn with_restarts(&self, next: TemporaryCredentialStatus) -> (TemporaryCredentialStatus, bool) {
        let targets = &self.tc.spec.rollout_restart_targets;
        let outcome = match restart::owed(&next, !targets.is_empty(), self.now) {
            restart::Owed::Settled(outcome) => outcome,
            restart::Owed::Due { rotated_at } => {
                let failed = restart::restart_targets(self.ctx, self.tc, targets, rotated_at, self.now).await;
                restart::Outcome::of_failures(&failed)
            }
        };
        restart::fold(next, outcome)
    }

    /// A Secret written under a former `spec.secret.name` is deleted once the new one exists.
    async fn remove_renamed_secret(&self) {
        let Some(old) = self.prev.secret_name.as_deref() else {
            return;
        };
        let current = secret::secret_name(self.tc);
        if old == current || self.tc.spec.secret.deletion_policy == crate::api::DeletionPolicy::Retain {
            return;
        }
        let api = Api::<Secret>::namespaced(self.ctx.client.clone(), &self.namespace());
        let ours = match api.get_opt(old).await {
            Ok(Some(s)) => s.labels().get(labels::CREDENTIAL) == Some(&self.tc.name_any()),
            _ => false,
        };
        if ours && let Err(error) = api.delete(old, &DeleteParams::default()).await {
            warn!(%error, secret = old, "could not delete the Secret written under the former name");
        }
    }

    /// Writes the status when it changed, with an Event when the Ready reason moved.
    async fn write_status(&self, next: &TemporaryCredentialStatus) -> Result<(), Error> {
        apply::patch_status(self.ctx, self.tc, next)
            .await
            .map_err(Error::Kube)?;
        let before = status::ready_reason(&self.prev);
        let after = status::ready_reason(next);
        let rotated = next.rotations != self.prev.rotations;
        if before != after || rotated {
            let Some(c) = crate::api::condition::find(&next.conditions, crate::api::condition::types::READY)
            else {
                return Ok(());
            };
            let warning = c.status != "True";
            apply::publish(
                self.ctx,
                self.tc,
                warning,
                &c.reason,
                action_of(&c.reason),
                c.message.clone(),
            )
            .await;
        }
        Ok(())
    }
}

/// Why a dry run of the Secret write did not pass.
enum DryRun {
    /// A Secret of that name appeared since the reconcile found none.
    Appeared,
    /// The API server refused the write.
    Refused(kube::Error),
}

fn action_of(reason: &str) -> &'static str {
    match reason {
        reasons::ISSUED | reasons::ROTATED => "Mint",
        reasons::RENEWAL_FAILING | reasons::EXPIRED | reasons::MINT_FAILED => "Mint",
        reasons::DENIED => "Authorize",
        reasons::SECRET_WRITE_FAILED => "Write",
        _ => "Reconcile",
    }
}

/// How soon a restart that failed (a workload missing, forbidden, or changing under us) is tried
/// again, unless the renewal comes first.
const RESTART_RETRY: Duration = Duration::from_secs(20);

fn retry_restarts(now: Timestamp, renewal: Timestamp, owed: bool) -> Timestamp {
    match now.checked_add(RESTART_RETRY) {
        Ok(retry) if owed => retry.min(renewal),
        _ => renewal,
    }
}

fn requeue_until(now: Timestamp, at: Timestamp) -> Action {
    Action::requeue(until(now, at).max(Duration::from_secs(1)))
}
