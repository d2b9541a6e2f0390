//! One reconcile of a TemporaryCredential: fetch the Secret and the source, authorize, plan, and
//! then mint and apply, keep, or wait, writing the status and an Event on each transition.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{info, warn};

pub mod mint;
pub mod pending;
pub mod plan;
pub mod secret;
pub mod status;

use self::{
    pending::PendingWrite,
    plan::{MintReason, Plan, PlanInput, plan},
    secret::{Observed, Times},
    status::{Base, Minted},
};
use super::{
    Error,
    apply::{self, FIELD_MANAGER},
    authorize::{self, Problem, Request},
    context::Context,
    guard, restart,
};
use crate::{
    api::{TemporaryCredential, TemporaryCredentialStatus, annotations, condition::reasons, labels},
    cloud::ErrorClass,
    metrics::Timer,
    schedule::{
        RenewPolicy, RetryInput, expiry_in_cluster_time, lifetime_shortened, renewal_time, retry_delay, until,
    },
};

/// Entry point for the runtime. A panic inside is contained to this object (an error with
/// backoff, a condition and an Event), and one namespace holds at most its share of the slots.
pub async fn reconcile(
    obj: Arc<DeserializeGuard<TemporaryCredential>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    if ctx.excluded(&ns) {
        return Ok(Action::await_change());
    }
    let key = object_key(&obj);
    let Some(_permit) = ctx.namespace_gate.try_enter(&ns) else {
        return Ok(Action::requeue(guard::busy_retry(&key)));
    };
    match guard::contained(reconcile_object(obj.clone(), ctx.clone())).await {
        Ok(Ok(action)) => {
            ctx.error_backoff.succeeded(&key);
            Ok(action)
        }
        Ok(Err(e)) => Err(e),
        Err(panic) => {
            report_panic(&ctx, &obj, &panic).await;
            Err(Error::Panicked(panic))
        }
    }
}

fn object_key(obj: &DeserializeGuard<TemporaryCredential>) -> String {
    format!(
        "TemporaryCredential/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

async fn reconcile_object(
    obj: Arc<DeserializeGuard<TemporaryCredential>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let _timer = Timer::start(&ctx.metrics.reconcile_duration);
    let tc = match &obj.0 {
        Ok(tc) => tc,
        Err(invalid) => {
            report_invalid(&ctx, &obj, invalid).await;
            return Ok(Action::await_change());
        }
    };
    if tc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let fresh = match fresh_if_cache_is_behind(&ctx, tc).await? {
        Freshness::Current => None,
        Freshness::Read(fresh) => Some(*fresh),
        Freshness::Gone => return Ok(Action::await_change()),
    };
    let tc = fresh.as_ref().unwrap_or(tc);
    Reconciler {
        ctx: &ctx,
        tc,
        now: Timestamp::now(),
        prev: tc.status.clone().unwrap_or_default(),
    }
    .run()
    .await
}

/// A reconcile panicked (a bug): say so on the object, keeping the rest of its status, and in an
/// Event. The panic's text goes to the operator log only.
async fn report_panic(ctx: &Context, obj: &DeserializeGuard<TemporaryCredential>, panic: &str) {
    ctx.metrics.count_error("panic");
    tracing::error!(object = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default(), panic, "reconcile panicked; contained, retrying with backoff");
    let Ok(tc) = &obj.0 else {
        return;
    };
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
        warn!(%error, object = %tc.name_any(), "could not write the status after a contained panic");
    }
    if status::ready_reason(&prev) != Some(reasons::INTERNAL_ERROR) {
        apply::publish(ctx, tc, true, reasons::INTERNAL_ERROR, "Reconcile", message).await;
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
    ctx.metrics.stale_cache_reads.inc();
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

/// Requeue policy for reconcile errors (Kubernetes API failures, contained panics): retry with a
/// per-object backoff; the object's own schedule is in its status and is reached again on the
/// next successful reconcile.
pub fn error_policy(
    obj: Arc<DeserializeGuard<TemporaryCredential>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.count_error(error.metric_label());
    let delay = ctx.error_backoff.failed(&object_key(&obj));
    warn!(%error, object = %obj.name_any(), namespace = %obj.namespace().unwrap_or_default(), retry_in_seconds = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

/// An object that does not deserialize (stored before a schema rule existed, or written around
/// validation): report it on its status and in an Event, and leave it alone until it changes.
async fn report_invalid(ctx: &Context, obj: &DeserializeGuard<TemporaryCredential>, invalid: &InvalidObject) {
    ctx.metrics.count_error("invalid_object");
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    warn!(object = %name, namespace = %ns, error = %invalid.error, "skipping a TemporaryCredential that cannot be read");
    let message = format!("the TemporaryCredential cannot be read: {}", invalid.error);
    let body = json!({
        "apiVersion": TemporaryCredential::api_version(&()),
        "kind": TemporaryCredential::kind(&()),
        "status": {
            "observedGeneration": invalid.metadata.generation,
            "conditions": [{
                "type": "Ready", "status": "False", "reason": reasons::INVALID_SPEC, "message": message,
                "lastTransitionTime": secret::rfc3339(Timestamp::now()),
                "observedGeneration": invalid.metadata.generation,
            }],
        },
    });
    let api = Api::<DeserializeGuard<TemporaryCredential>>::namespaced(ctx.client.clone(), &ns);
    if let Err(error) = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
    {
        warn!(%error, object = %name, "could not write the status of an unreadable TemporaryCredential");
    }
    apply::publish(ctx, obj, true, reasons::INVALID_SPEC, "Validate", message).await;
}

struct Reconciler<'a> {
    ctx: &'a Context,
    tc: &'a TemporaryCredential,
    now: Timestamp,
    prev: TemporaryCredentialStatus,
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
        }
    }

    fn uid(&self) -> String {
        self.tc.uid().unwrap_or_else(|| self.tc.name_any())
    }

    async fn run(self) -> Result<Action, Error> {
        let ns = self.namespace();
        let secret_name = secret::secret_name(self.tc);
        let live = Api::<Secret>::namespaced(self.ctx.client.clone(), &ns)
            .get_opt(&secret_name)
            .await
            .map_err(Error::Kube)?;
        let observed = secret::observe(self.tc, live.as_ref());
        let held_expiry = match &observed {
            Observed::Managed(m) if m.intact => m.expires_at,
            _ => None,
        };

        let source = match self.ctx.source_of(self.tc) {
            Ok(s) => s,
            Err(p) => return self.blocked(p, held_expiry).await,
        };
        let view = match source.view() {
            Ok(v) => v,
            Err(p) => return self.blocked(p, held_expiry).await,
        };
        let ns_labels = self.ctx.namespace_labels(&ns);
        let auth = match authorize::authorize(Request {
            namespace: &ns,
            namespace_labels: ns_labels.as_ref(),
            spec: &self.tc.spec,
            source_kind: self.tc.spec.source_ref.kind,
            source_name: &self.tc.spec.source_ref.name,
            source: view,
        }) {
            Ok(a) => a,
            Err(p) => {
                if p.reason == reasons::DENIED {
                    self.ctx.metrics.count_error("denied");
                }
                return self.blocked(p, held_expiry).await;
            }
        };

        let uid = self.uid();
        let rotate_request = self.tc.annotations().get(annotations::ROTATE).cloned();
        let source_version = source.resource_version();
        let decision = plan(PlanInput {
            now: self.now,
            generation: self.tc.metadata.generation,
            status: &self.prev,
            observed: &observed,
            rotate_request: rotate_request.as_deref(),
            policy: self.policy(),
            uid: &uid,
            source_version: source_version.as_deref(),
            last_mint: plan::last_mint(&self.prev, &observed, self.now),
            min_interval: self.ctx.config.min_mint_interval,
        });
        match decision {
            Plan::Conflict => {
                let p = Problem::new(
                    reasons::SECRET_CONFLICT,
                    format!(
                        "Secret {ns}/{secret_name} exists and is not managed by tcred for this TemporaryCredential; \
                         tcred will not overwrite it: delete it or set spec.secret.name"
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
                    apply::apply_secret(self.ctx, &relabelled)
                        .await
                        .map_err(Error::Kube)?;
                }
                let ak = match &observed {
                    Observed::Managed(m) => m.access_key_id.clone(),
                    _ => None,
                };
                let mut next =
                    status::after_keep(&self.base(), ak.as_deref(), issued_at, expires_at, renewal);
                let owed = self.owed_restarts(&mut next).await;
                self.write_status(&next).await?;
                Ok(requeue_until(
                    self.now,
                    retry_restarts(self.now, renewal.at, owed),
                ))
            }
            Plan::Backoff { retry_at, .. } => {
                let next = status::during_backoff(&self.base(), held_expiry);
                self.write_status(&next).await?;
                let wake = match held_expiry {
                    Some(exp) if exp > self.now => retry_at.min(exp),
                    _ => retry_at,
                };
                Ok(requeue_until(self.now, wake))
            }
            Plan::Defer { until, reason } => {
                let next = status::during_defer(&self.base(), reason, until, held_expiry);
                self.write_status(&next).await?;
                Ok(requeue_until(self.now, until))
            }
            Plan::Mint(reason) => {
                let missing = matches!(observed, Observed::Missing);
                self.mint(
                    reason,
                    &source,
                    &auth,
                    held_expiry,
                    rotate_request.as_deref(),
                    missing,
                )
                .await
            }
        }
    }

    /// Mints (or takes the credential an earlier mint could not write) and writes it.
    async fn mint(
        &self,
        reason: MintReason,
        source: &super::context::Source,
        auth: &authorize::Authorized<'_>,
        held_expiry: Option<Timestamp>,
        rotate_request: Option<&str>,
        missing: bool,
    ) -> Result<Action, Error> {
        let uid = self.uid();
        let spec_hash = secret::spec_hash(self.tc);
        let min_left = self.ctx.config.min_credential_lifetime;
        if let Some(waiting) = self.ctx.pending.take(&uid, &spec_hash, self.now, min_left) {
            info!(object = %self.tc.name_any(), namespace = %self.namespace(), "writing a credential minted earlier");
            return self
                .write_minted(reason, source, auth, waiting, held_expiry, missing)
                .await;
        }
        if self.write_unproven(reason)
            && let Err(e) = self.dry_run_secret(missing).await
        {
            return match e {
                DryRun::Appeared => Ok(Action::requeue(Duration::from_secs(1))),
                DryRun::Refused(e) => self.write_failed(&e, held_expiry, source).await,
            };
        }

        // Whole seconds: issue times are written to the Secret at that precision, and a schedule
        // recomputed from them after a restart must match this one exactly.
        let started =
            Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now());
        let result = {
            let _t = Timer::start(&self.ctx.metrics.mint_duration);
            mint::mint(self.ctx, self.tc, source, auth).await
        };
        let source_label = source.label();
        // The skew this very call measured (trusted hosts only), never another reconcile's.
        let skew = match &result {
            Ok(c) => c.clock_skew_seconds,
            Err(e) => e.clock_skew_seconds,
        };
        let mut cred = match result.and_then(|c| usable(started, c, min_left)) {
            Ok(c) => c,
            Err(e) if e.reason == Some(reasons::ENDPOINT_NOT_ALLOWED) => {
                // Nothing was sent; only a change to the source (or the operator's flags) helps.
                warn!(object = %self.tc.name_any(), namespace = %self.namespace(), error = %e.message, "endpoint not allowed");
                return self
                    .blocked(
                        Problem::new(reasons::ENDPOINT_NOT_ALLOWED, e.message),
                        held_expiry,
                    )
                    .await;
            }
            Err(mut e) => {
                if let Some(hint) = clock_hint(e.class, skew) {
                    e.message.push_str(&hint);
                }
                return self.mint_failed(reason, e, source, held_expiry).await;
            }
        };
        self.ctx.metrics.record_mint(source_label, "success");

        // Everything here (the Secret, the status, the schedule) uses cluster time.
        let issued_expiry = cred.expires_at;
        cred.expires_at = expiry_in_cluster_time(started, issued_expiry, skew);
        info!(
            object = %self.tc.name_any(), namespace = %self.namespace(), reason = %reason, access_key_id = %cred.access_key_id,
            expires_at = %secret::rfc3339(cred.expires_at), "credential minted"
        );
        let minted = PendingWrite {
            spec_hash,
            credential: cred,
            issued_at: started,
            issued_expiry,
            rotate_request: rotate_request.map(str::to_owned),
        };
        self.write_minted(reason, source, auth, minted, held_expiry, missing)
            .await
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
        let built = secret::build(
            self.tc,
            &placeholder,
            Times {
                issued_at: now,
                renewal_at: now,
            },
        );
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
        source: &super::context::Source,
        auth: &authorize::Authorized<'_>,
        minted: PendingWrite,
        held_expiry: Option<Timestamp>,
        missing: bool,
    ) -> Result<Action, Error> {
        let uid = self.uid();
        let cred = &minted.credential;
        let started = minted.issued_at;
        let renewal = renewal_time(started, cred.expires_at, self.policy(), &uid);
        let built = secret::build(
            self.tc,
            cred,
            Times {
                issued_at: started,
                renewal_at: renewal.at,
            },
        );
        if let Err(e) = apply::write_secret(self.ctx, &built, missing, false).await {
            self.ctx.pending.keep(&uid, minted, self.now);
            return self
                .write_failed_after_mint(&e, held_expiry, source, missing)
                .await;
        }
        self.ctx.pending.forget(&uid);
        self.remove_renamed_secret().await;

        let shortened_from = auth
            .duration
            .filter(|d| lifetime_shortened(started, minted.issued_expiry, *d));
        let mut next = status::after_mint(
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
            object = %self.tc.name_any(), namespace = %self.namespace(), reason = %reason, access_key_id = %cred.access_key_id,
            renewal_at = %secret::rfc3339(renewal.at), "credential written"
        );
        let owed = self.owed_restarts(&mut next).await;
        self.write_status(&next).await?;
        Ok(requeue_until(
            self.now,
            retry_restarts(self.now, renewal.at, owed),
        ))
    }

    /// A mint failed: the status says why and when the next attempt is; backoff grows with each
    /// failure and never waits past a quarter of what the Secret still holds.
    async fn mint_failed(
        &self,
        reason: MintReason,
        e: mint::MintError,
        source: &super::context::Source,
        held_expiry: Option<Timestamp>,
    ) -> Result<Action, Error> {
        let class = e.class;
        self.ctx.metrics.record_mint(source.label(), class.label());
        self.ctx.metrics.count_error(&format!("mint_{}", class.label()));
        let (delay, retry_at) = self.retry(class, e.retry_after, held_expiry);
        warn!(
            object = %self.tc.name_any(), namespace = %self.namespace(), reason = %reason, class = class.label(),
            retry_in_seconds = delay.as_secs(), error = %e.message, "mint failed"
        );
        let mut next = status::after_failure(
            &self.base(),
            class,
            &e.message,
            retry_at,
            held_expiry,
            source.resource_version().as_deref(),
        );
        mint::with_refusal_reason(&mut next, e.reason);
        self.write_status(&next).await?;
        Ok(Action::requeue(delay))
    }

    /// When the next attempt after a failure of `class` is due.
    fn retry(
        &self,
        class: ErrorClass,
        retry_after: Option<Duration>,
        held_expiry: Option<Timestamp>,
    ) -> (Duration, Timestamp) {
        let remaining = held_expiry.filter(|x| *x > self.now).map(|x| until(self.now, x));
        let uid = self.uid();
        let delay = retry_delay(RetryInput {
            attempt: u32::try_from(self.prev.failed_attempts)
                .unwrap_or(0)
                .saturating_add(1),
            class,
            retry_after,
            remaining_validity: remaining,
            jitter_key: &uid,
        });
        let retry_at = jiff::SignedDuration::try_from(delay)
            .ok()
            .and_then(|d| self.now.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX);
        (delay, retry_at)
    }

    /// The Secret cannot be written (seen in the dry run): nothing is minted until it can.
    async fn write_failed(
        &self,
        e: &kube::Error,
        held_expiry: Option<Timestamp>,
        source: &super::context::Source,
    ) -> Result<Action, Error> {
        let message = format!(
            "the Secret cannot be written, so nothing was minted: {}",
            super::kube_message(e)
        );
        self.secret_write_failed(e, message, held_expiry, source.resource_version().as_deref())
            .await
    }

    /// A credential was minted but its Secret write failed: it is kept and only the write is
    /// retried.
    async fn write_failed_after_mint(
        &self,
        e: &kube::Error,
        held_expiry: Option<Timestamp>,
        source: &super::context::Source,
        missing: bool,
    ) -> Result<Action, Error> {
        let appeared = missing && matches!(e, kube::Error::Api(s) if s.code == 409);
        let message = if appeared {
            format!(
                "a Secret named {} was created by someone else while tcred minted; tcred does not adopt it",
                secret::secret_name(self.tc)
            )
        } else {
            format!(
                "a credential was minted but the Secret write failed: {}; tcred keeps the credential and retries only the write",
                super::kube_message(e)
            )
        };
        self.secret_write_failed(e, message, held_expiry, source.resource_version().as_deref())
            .await
    }

    async fn secret_write_failed(
        &self,
        e: &kube::Error,
        message: String,
        held_expiry: Option<Timestamp>,
        source_version: Option<&str>,
    ) -> Result<Action, Error> {
        let class = apply::error_class(e);
        self.ctx.metrics.count_error("secret_write");
        let (delay, retry_at) = self.retry(class, None, held_expiry);
        warn!(
            object = %self.tc.name_any(), namespace = %self.namespace(), class = class.label(),
            retry_in_seconds = delay.as_secs(), error = %message, "Secret write failed"
        );
        let mut next = status::after_failure(
            &self.base(),
            class,
            &message,
            retry_at,
            held_expiry,
            source_version,
        );
        let detail = crate::api::condition::find(&next.conditions, crate::api::condition::types::READY)
            .map(|c| c.message.clone())
            .unwrap_or(message);
        crate::api::condition::set_condition(
            &mut next.conditions,
            crate::api::condition::ConditionUpdate {
                type_: crate::api::condition::types::READY,
                status: false,
                reason: reasons::SECRET_WRITE_FAILED,
                message: detail,
            },
            self.tc.metadata.generation,
            self.now,
        );
        self.write_status(&next).await?;
        Ok(Action::requeue(delay))
    }

    /// Nothing can be minted: record why, keep whatever the Secret holds.
    async fn blocked(&self, problem: Problem, held_expiry: Option<Timestamp>) -> Result<Action, Error> {
        let next = status::after_problem(&self.base(), &problem, held_expiry);
        self.write_status(&next).await?;
        // A change to the object, its source or its namespace triggers the next reconcile.
        Ok(Action::await_change())
    }

    /// Restarts owed for rotations that have not been followed by one yet (also after a crash or
    /// a leader change between the Secret write and the restart). True while some remain owed;
    /// a workload already restarted after the rotation is not restarted again on the retry.
    async fn owed_restarts(&self, next: &mut TemporaryCredentialStatus) -> bool {
        let targets = &self.tc.spec.rollout_restart_targets;
        let done = next.restarted_rotation.unwrap_or(0);
        if targets.is_empty() || next.rotations < 2 {
            next.restarted_rotation = Some(next.rotations);
            return false;
        }
        if done >= next.rotations {
            return false;
        }
        let rotated_at = next.last_rotation_time.as_ref().map_or(self.now, |t| t.0);
        if restart::restart_targets(self.ctx, self.tc, targets, rotated_at, self.now)
            .await
            .is_empty()
        {
            next.restarted_rotation = Some(next.rotations);
            return false;
        }
        true
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

/// A credential issued with less than `min_left` of validity is a failed mint (retried with
/// backoff), never written: writing it would make the next renewal due at once.
fn usable(
    issued_at: Timestamp,
    cred: crate::cloud::IssuedCredential,
    min_left: Duration,
) -> Result<crate::cloud::IssuedCredential, mint::MintError> {
    match crate::schedule::check_issued(issued_at, cred.expires_at, min_left) {
        Ok(()) => Ok(cred),
        Err(message) => Err(mint::MintError {
            class: ErrorClass::InvalidResponse,
            message: format!("{message} (--min-credential-lifetime)"),
            retry_after: None,
            reason: None,
            clock_skew_seconds: cred.clock_skew_seconds,
        }),
    }
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

/// Signed requests fail when the clocks differ by more than Huawei's 15-minute window; well before
/// that, an authentication failure says what the clocks look like.
fn clock_hint(class: crate::cloud::ErrorClass, skew: Option<i64>) -> Option<String> {
    const NOTABLE_SECONDS: i64 = 300;
    let s = skew?;
    (class == crate::cloud::ErrorClass::Auth && s.abs() >= NOTABLE_SECONDS).then(|| {
        let (by, way) = (s.abs(), if s > 0 { "ahead of" } else { "behind" });
        format!(
            " (Huawei Cloud's clock runs {by}s {way} this host's; signed requests are only accepted within 15 minutes of Huawei's time: check the node's NTP)"
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::ErrorClass;

    #[test]
    fn authentication_failures_name_a_large_clock_difference() {
        let hint = clock_hint(ErrorClass::Auth, Some(1200)).expect("a hint");
        assert!(
            hint.contains("1200s ahead of this host's") && hint.contains("NTP"),
            "{hint}"
        );
        let behind = clock_hint(ErrorClass::Auth, Some(-900)).expect("a hint");
        assert!(behind.contains("900s behind"), "{behind}");
    }

    #[test]
    fn small_differences_and_other_failures_get_no_hint() {
        assert_eq!(clock_hint(ErrorClass::Auth, Some(30)), None);
        assert_eq!(clock_hint(ErrorClass::Auth, None), None);
        assert_eq!(clock_hint(ErrorClass::Server, Some(1200)), None);
    }
}
