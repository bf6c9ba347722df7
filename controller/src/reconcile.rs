//! The reconciler: a thin adapter over the one rotation driver
//! (`ksa_kube::driver`). Each reconcile starts a rotation when the spec asks
//! for one, then runs one driver pass with the resource's status as the
//! state store, in the one world (`ksa_kube::world`) over the controller's
//! ports: the key Secrets, the roll-out and the outside locations. The
//! controller runtime's requeue is its loop.
//!
//! It decides nothing about the rotation itself: the core does, and the
//! driver saves the next state before it applies any effect.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::issuer::Issuer;
use ksa_core::signing_issuer::signing_issuer;

use crate::publish::Locations;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use ksa_core::key::{PrivateKey, PublicKey};
use ksa_core::rotation::{
    self, CutOff, IssuerChange, Observation, Plan, Policy, PublicationView, RotationState,
    StartRequest, Step,
};
use ksa_kube::api::{
    KSASigningKeyRotation, READY_BLOCKED, READY_CONDITION_TYPE, READY_FAILING, READY_PROGRESSING,
    RefusalStatus, RotationStatus,
};
use ksa_kube::cluster::TargetCluster;
use ksa_kube::driver::{self, Findings, PassError, StateStore};
use ksa_kube::keystore::KeyStore;
use ksa_kube::lock;
use ksa_kube::provenance::{Kind, NotOurs, Sealer, Subject};
use ksa_kube::world::{ApiServers, ClusterWorld, KeyStorage, Lease, Outside, RollOut};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource as _, ResourceExt as _};

use crate::error::{Error, Result};
use crate::rollout::{Refusal, Rollout};

/// What every reconcile shares.
pub struct Context {
    /// The admin cluster, where rotation resources, keys and locks live.
    pub client: kube::Client,
    /// The controller's own cluster as a target, for rotations that name no
    /// other.
    pub own: TargetCluster,
    pub recorder: Recorder,
    pub backend: AwsLc,
    /// The key every object ksa writes and trusts is sealed with.
    pub sealer: Sealer,
    pub metrics: Arc<crate::serve::Metrics>,
    /// What `/livez` checks: the status writes the watch must deliver.
    pub liveness: Arc<crate::liveness::Liveness>,
    /// Where rotations publish for outside verifiers, from the flags.
    pub publish: crate::publish::Settings,
    /// The audit webhook, when the controller serves one
    /// (`--audit-public-url`): where `tokenRefresh.observe` rotations see
    /// their kubelets' refreshes.
    pub audit: Option<crate::audit::Settings>,
    /// The backoff of each rotation whose last reconcile failed.
    pub failures: std::sync::Mutex<
        std::collections::HashMap<ObjectRef<KSASigningKeyRotation>, backon::ExponentialBackoff>,
    >,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// One rotation resource and the handles to act on it.
struct Rotation<'a> {
    resource: &'a KSASigningKeyRotation,
    name: String,
    namespace: String,
    api: Api<KSASigningKeyRotation>,
    keystore: KeyStore,
    cluster: TargetCluster,
    /// The roll-out its spec asks for, checked to name only objects
    /// labelled for it.
    rollout: Rollout,
    /// Where outside verifiers read its keys.
    locations: Locations,
    policy: Policy,
    ctx: &'a Context,
}

pub async fn reconcile(resource: Arc<KSASigningKeyRotation>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = resource.namespace().unwrap_or_default();
    let name = resource.name_any();
    let api = Api::namespaced(ctx.client.clone(), &namespace);
    let outcome = async {
        let cluster = TargetCluster::connect(
            &ctx.own,
            &ctx.client,
            &namespace,
            resource.spec.cluster.as_ref(),
        )
        .await?;
        // Before anything changes: the spec names only objects ksa owns.
        let rollout = Rollout::of(&resource, &name)?;
        rollout.check_owned(&ctx.client, &namespace, &name).await?;
        let locations = Locations::of(&ctx.publish, &resource, &ctx.client).await?;
        let rotation = Rotation {
            resource: &resource,
            keystore: KeyStore::sealed(ctx.client.clone(), &namespace, &name, ctx.sealer.clone()),
            name: name.clone(),
            namespace: namespace.clone(),
            api: api.clone(),
            cluster,
            rollout,
            locations,
            policy: resource.spec.policy(),
            ctx: &ctx,
        };
        rotation.reconcile().await
    }
    .await;
    match &outcome {
        // A stale read (the cache lags our own last write): the next
        // reconcile reads again. Not worth an operator's attention.
        Err(error) if error.is_stale_read() => {
            tracing::debug!(rotation = %name, "status changed meanwhile; reconciling again");
        }
        Err(error) => {
            tracing::warn!(rotation = %name, namespace = %namespace, %error, "reconcile failed");
            // Best effort: show the error where operators look. No error
            // holds Secret data (`ksa_kube::Error::Kubeconfig` names fields only).
            let refusal = error.refusal_reason().map(|reason| RefusalStatus {
                reason: reason.to_owned(),
                message: error.to_string(),
            });
            if let Some(refusal) = &refusal {
                let note = refusal.message.clone();
                publish_event(&ctx, &resource, EventType::Warning, &refusal.reason, note).await;
            }
            let _ = show_error(&api, &resource, &ctx, error, refusal).await;
        }
        Ok(_) => {
            ctx.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ObjectRef::from_obj(&*resource));
        }
    }
    outcome
}

/// Writes the error into the status (`waitingFor`, the refusal, Ready
/// Blocked or Failing): beside the stored state, or, when there is none
/// yet, with the state the resource stands at (a status without the state
/// would not load back).
async fn show_error(
    api: &Api<KSASigningKeyRotation>,
    resource: &KSASigningKeyRotation,
    ctx: &Context,
    error: &Error,
    refusal: Option<RefusalStatus>,
) -> Result<()> {
    let name = resource.name_any();
    let now = Timestamp::now();
    let generation = resource.meta().generation;
    let health = match &refusal {
        Some(refusal) => Health::Blocked(format!("refused: {}", refusal.message)),
        None => Health::Failing(error.to_string()),
    };
    let waiting = match &refusal {
        Some(refusal) => format!("refused: {}", refusal.message),
        None => format!("error: {error}"),
    };
    let patch = match &resource.status {
        Some(previous) => {
            // From the stored fields, not the state: the error may be that
            // the state does not load.
            let mut conditions = previous.conditions.clone();
            set_ready(
                &mut conditions,
                &previous.conditions,
                ready(previous.step, previous.key_version, None, &health),
                generation,
                now,
            );
            serde_json::json!({"status": {
                "waitingFor": waiting,
                "refusal": refusal,
                "conditions": conditions,
            }})
        }
        None => {
            let state = resource.state()?;
            let mut status = RotationStatus::of(&state, None, Some(waiting), generation, now)
                .sealed(&ctx.sealer, resource, &state);
            status.refusal = refusal;
            set_ready(
                &mut status.conditions,
                &[],
                ready(state.step(), state.key_version().get(), None, &health),
                generation,
                now,
            );
            serde_json::json!({
                "metadata": {"resourceVersion": resource.resource_version()},
                "status": status,
            })
        }
    };
    let written = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.liveness
        .wrote(resource, &written, std::time::Instant::now());
    Ok(())
}

/// What the Ready condition says besides the rotation's state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    /// The rotation moves on by itself.
    Progressing,
    /// It waits for something only an operator can do: what.
    Blocked(String),
    /// Its passes fail: the error.
    Failing(String),
}

/// The Ready condition's status, reason and message for a rotation at
/// `step` of `key_version`, what it waits for and `health`: True once
/// completed (and nothing refused or failing), else False with the reason
/// `Progressing`, `Blocked` or `Failing`.
fn ready(
    step: Step,
    key_version: u64,
    waiting: Option<&str>,
    health: &Health,
) -> (bool, &'static str, String) {
    let completed = step == Step::Completed;
    let at = if completed {
        format!("settled on key version {key_version}")
    } else {
        format!("at step {step}")
    };
    match health {
        Health::Progressing if completed => (true, "Completed", at),
        Health::Progressing => match waiting.filter(|w| !w.is_empty()) {
            Some(waiting) => (
                false,
                READY_PROGRESSING,
                format!("{at}, waiting for {waiting}"),
            ),
            None => (false, READY_PROGRESSING, at),
        },
        Health::Blocked(what) => (false, READY_BLOCKED, format!("{at}: {what}")),
        Health::Failing(error) => (false, READY_FAILING, format!("{at}: {error}")),
    }
}

/// The longest Ready message written (the API server takes 32 KiB).
const MAX_CONDITION_MESSAGE: usize = 4096;

/// Sets the Ready condition in `conditions`, its transition time kept
/// from `previous` while its status is unchanged.
fn set_ready(
    conditions: &mut Vec<Condition>,
    previous: &[Condition],
    (status, reason, message): (bool, &str, String),
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == READY_CONDITION_TYPE && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    let condition = Condition {
        type_: READY_CONDITION_TYPE.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: truncate(message, MAX_CONDITION_MESSAGE),
        last_transition_time,
        observed_generation: generation,
    };
    match conditions
        .iter_mut()
        .find(|c| c.type_ == READY_CONDITION_TYPE)
    {
        Some(ready) => *ready = condition,
        None => conditions.push(condition),
    }
}

/// Records an Event about the rotation; a failure to is only logged.
async fn publish_event(
    ctx: &Context,
    resource: &KSASigningKeyRotation,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let note = truncate(note, MAX_EVENT_NOTE);
    let event = Event {
        type_,
        reason: reason.to_owned(),
        action: event_action(&note),
        note: Some(note),
        secondary: None,
    };
    let reference = resource.object_ref(&());
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::debug!(%error, "could not record event");
    }
}

/// The Event's action: `Rotate`, told apart by its note. kube-runtime's
/// recorder folds an Event into an earlier one of the same reason and
/// action as a series (a count), keeping the first note: a second
/// `RefreshBlocked` naming another holder was lost. The same note again
/// is still one Event counted again.
fn event_action(note: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    note.hash(&mut hasher);
    format!("Rotate-{:016x}", hasher.finish())
}

/// The API server refuses an Event note over 1 KiB.
const MAX_EVENT_NOTE: usize = 1024;

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// After a failed reconcile: try again after an exponential backoff with
/// jitter, per rotation (a refusal, which stands until someone changes the
/// spec or what it names, starts from a longer delay), reset by the next
/// success.
pub fn error_policy(
    resource: Arc<KSASigningKeyRotation>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let first = if error.refusal_reason().is_some() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(2)
    };
    let delay = ctx
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(ObjectRef::from_obj(&*resource))
        .or_insert_with(|| backon::BackoffBuilder::build(backoff(first)))
        .next();
    Action::requeue(delay.unwrap_or(MAX_BACKOFF))
}

/// The longest a failing rotation waits before it is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The delays after consecutive failures: between half of and all of
/// `first`, doubling to between half of and all of [`MAX_BACKOFF`] (a base
/// from `first / 2`, each lengthened by a random part of itself), so that
/// rotations failing together do not retry together and a refusal an
/// operator fixes is tried again no later than the undisturbed doubling.
fn backoff(first: Duration) -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::new()
        .with_min_delay(first / 2)
        .with_factor(2.0)
        .with_max_delay(MAX_BACKOFF / 2)
        .without_max_times()
        .with_jitter()
}

impl Rotation<'_> {
    async fn reconcile(&self) -> Result<Action> {
        let now = Timestamp::now();
        // Only a state the controller wrote is acted on.
        let mut state = self.resource.sealed_state(&self.ctx.sealer)?;
        // Only keys the controller made, or the operator's import once every
        // API server has shown it signs with and accepts it.
        self.adopt_imported_keys(&state).await?;
        // A state of an older key version than a key ksa has made since is
        // an old status put back (or the unsealed "settled on key 1"):
        // never acted on.
        if let Some(newer) = state.predates(self.keystore.public_keys().await?.into_keys()) {
            tracing::warn!(rotation = %self.name, stored = %newer, state = %state.key_version(), "the stored state is older than a key ksa made");
            return Err(ksa_kube::Error::from(NotOurs::new(
                &Subject {
                    kind: Kind::State,
                    namespace: &self.namespace,
                    name: &self.name,
                },
                "its state is older than a key ksa has made since",
            ))
            .into());
        }
        let target = KeyVersion::new(self.resource.spec.key_version);
        let issuer = if state.is_completed() {
            self.issuer_change(&state).await?
        } else {
            None
        };
        if state.is_completed() && (target != state.key_version() || issuer.is_some()) {
            match self.start(&state, target, issuer, now).await? {
                Some(started) => state = started,
                None => return Ok(Action::requeue(Duration::from_secs(30))),
            }
        }
        // Nowhere to publish: no location is contacted, as in kubeadm mode.
        let outside = (!self.locations.is_empty()).then_some(Publications(self));
        let lease = Lease {
            client: &self.ctx.client,
            namespace: &self.namespace,
            rotation: &self.name,
        };
        let feed = self.refresh_feed(&state).await;
        let mut world = ClusterWorld::new(
            &self.cluster,
            &self.policy,
            KeySecrets(self),
            ApiServerRollout(self),
            outside,
            lease,
        );
        if let Some(feed) = &feed {
            world = world.with_refresh_feed(feed);
        }
        let pass = driver::pass(&mut Status(self), &mut world, &state, &self.policy, now).await;
        let reminted = world.reminted();
        if reminted > 0 {
            self.ctx.metrics.secrets_refreshed.inc_by(reminted as u64);
            tracing::info!(rotation = %self.name, secrets = reminted, "re-minted legacy tokens");
        }
        let pass = pass.map_err(|error| self.pass_error(error))?;
        self.record_signing_key(pass.plan.next.versions().private_key_version())
            .await;
        let after = pass.plan.requeue_after.unwrap_or(Duration::from_secs(300));
        Ok(Action::requeue(after.max(Duration::from_millis(250))))
    }

    /// The audit webhook's records of this rotation, when its spec asks to
    /// observe its kubelets' refreshes: its Secret written (sealed) and its
    /// token registered. Without an endpoint, or with a Secret ksa did not
    /// seal, a Warning Event says so and the window alone decides. Its
    /// requests are recorded only while it is in RefreshTokens, from when
    /// the step began; a rotation that stops observing is forgotten.
    async fn refresh_feed(&self, state: &RotationState) -> Option<crate::audit::RotationFeed> {
        if !self.resource.spec.observes_refreshes() {
            if let Some(settings) = &self.ctx.audit {
                settings.feeds.forget(&self.namespace, &self.name);
            }
            return None;
        }
        let Some(settings) = &self.ctx.audit else {
            // Said while a rotation runs, not every pass of a settled one.
            if state.is_completed() {
                return None;
            }
            self.event(
                EventType::Warning,
                "AuditWebhookNotServed",
                "spec.tokenRefresh.observe is AuditWebhook, but this controller serves no audit \
                 endpoint (start it with --audit-public-url, docs/controller.md): RefreshTokens \
                 waits out the kubelet refresh window"
                    .to_owned(),
            )
            .await;
            return None;
        };
        match crate::audit::ensure(
            settings,
            &self.ctx.sealer,
            &self.ctx.client,
            &self.namespace,
            &self.name,
            (state.step() == Step::RefreshTokens)
                .then(|| state.step_started_at())
                .flatten(),
        )
        .await
        {
            Ok(feed) => Some(feed),
            Err(error) => {
                if matches!(error, crate::audit::NoFeed::NotOurs(_)) {
                    settings.feeds.forget(&self.namespace, &self.name);
                }
                tracing::warn!(rotation = %self.name, %error, "the audit webhook Secret");
                self.event(
                    EventType::Warning,
                    "AuditWebhookRefused",
                    format!(
                        "{error}; until then RefreshTokens waits out the kubelet refresh window"
                    ),
                )
                .await;
                None
            }
        }
    }

    /// A Warning Event naming the pods RefreshTokens of the `wait` policy
    /// did not see refreshing when the window closed.
    async fn refresh_not_observed(&self, unseen: &ksa_core::rotation::refresh::KubeletRefreshes) {
        self.event(
            EventType::Warning,
            "RefreshNotObserved",
            format!(
                "RefreshTokens ends by the kubelet refresh window: {} of {} pods from before it \
                 were not seen getting a new token in the API servers' audit stream{}. Their \
                 kubelets should have refreshed by now (audit events can be dropped: a full \
                 batch buffer, a controller restart); Retire stops the old key verifying \
                 (docs/rotation.md: Observing the kubelets' refreshes)",
                unseen.unseen_count(),
                unseen.pods,
                if unseen.unseen.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", unseen.unseen.join(", "))
                }
            ),
        )
        .await;
    }

    /// The controller's error for a pass that stopped.
    fn pass_error(&self, error: PassError<Error>) -> Error {
        match error {
            PassError::Observe(error) | PassError::Save(error) | PassError::Apply { error, .. } => {
                error
            }
            PassError::MissingKey(version) => ksa_kube::Error::MissingKey {
                version,
                secret: self.keystore.secret_name(version),
            }
            .into(),
            PassError::Step(error) => error.into(),
        }
    }

    /// After the status is written: the step's metrics, and an Event when
    /// the step advanced.
    async fn saved(&self, state: &RotationState, next: &RotationState) {
        let now = next.step_started_at().unwrap_or_else(Timestamp::now);
        self.record(state, next, now);
        if next.step() != state.step() {
            self.event(
                EventType::Normal,
                &format!("Step{}", next.step()),
                format!("{} confirmed; {}", state.step(), next.status_line()),
            )
            .await;
            tracing::info!(rotation = %self.name, from = %state.step(), to = %next.step(), "step confirmed");
        }
    }

    /// A Warning Event naming the legacy tokens held outside the cluster
    /// that the re-mint cuts off.
    async fn held_outside(&self, names: &[String]) {
        if !names.is_empty() {
            self.event(
                EventType::Warning,
                "LegacyTokensHeldOutside",
                format!(
                    "{} legacy token Secret(s) used in the last 30 days are mounted by no pod; the re-mint now cuts their holders outside the cluster off: hand each the re-minted token (README: Before you rotate): {}",
                    names.len(),
                    names.join("; ")
                ),
            )
            .await;
        }
    }

    /// An Event when the holders only an operator can let proceed change:
    /// a Warning naming them, or a Normal one once none is left.
    async fn blocked_changed(&self, blocked: &[String]) {
        let before = self
            .resource
            .status
            .as_ref()
            .map(|status| status.blocked_holders.as_slice())
            .unwrap_or_default();
        if before == blocked {
            return;
        }
        if blocked.is_empty() {
            self.event(
                EventType::Normal,
                "RefreshUnblocked",
                "no token holder waits for an operator any more".to_owned(),
            )
            .await;
        } else {
            self.event(
                EventType::Warning,
                "RefreshBlocked",
                format!(
                    "{} token holder(s) cannot be refreshed until an operator lets them (README: Refreshing bound tokens, Legacy token Secrets ksa cannot re-mint): {}",
                    blocked.len(),
                    blocked.join("; ")
                ),
            )
            .await;
        }
    }

    /// A Warning Event when API server instances hold the step by name
    /// (one that does not answer, one back on an older configuration), once
    /// per change of what holds it.
    async fn instances_held(&self, waiting: &ksa_core::rotation::Waiting) {
        use ksa_core::rotation::Wait;
        let held: Vec<String> = waiting
            .iter()
            .filter(|wait| {
                matches!(
                    wait,
                    Wait::ApiServersUnanswered { .. } | Wait::ApiServersRegressed { .. }
                )
            })
            .map(ToString::to_string)
            .collect();
        let before = self
            .resource
            .status
            .as_ref()
            .and_then(|status| status.waiting_for.as_deref())
            .unwrap_or_default();
        if held.is_empty() || held.iter().all(|text| before.contains(text.as_str())) {
            return;
        }
        self.event(
            EventType::Warning,
            "ApiServersHoldStep",
            format!(
                "the step holds until every API server instance confirms it (README: Every API server instance): {}",
                held.join("; ")
            ),
        )
        .await;
    }

    /// A Warning Event naming the legacy token Secrets RefreshTokens left
    /// stale when it ended: their holders are cut off at Retire.
    async fn cut_off(&self, cut_off: &CutOff, old: KeyVersion) {
        if cut_off.is_empty() {
            return;
        }
        self.event(
            EventType::Warning,
            "LegacyTokensCutOff",
            format!(
                "RefreshTokens goes on without {} legacy token Secret(s) not re-minted; Retire cuts their holders off when key {old} stops verifying (README: Legacy token Secrets ksa cannot re-mint): {cut_off}",
                cut_off.total()
            ),
        )
        .await;
    }

    fn record(&self, state: &RotationState, next: &RotationState, now: Timestamp) {
        let labels = crate::serve::RotationLabels::new(&self.namespace, &self.name);
        let metrics = &self.ctx.metrics;
        metrics.set_step(&labels, next.step());
        metrics
            .in_progress
            .get_or_create(&labels)
            .set(i64::from(!next.is_completed()));
        metrics
            .key_version
            .get_or_create(&labels)
            .set(i64::try_from(next.key_version().get()).unwrap_or(i64::MAX));
        let step_labels = |step: Step| crate::serve::StepLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            step: step.to_string(),
        };
        if next.is_completed() && !state.is_completed() {
            metrics
                .last_completion
                .get_or_create(&labels)
                .set(now.as_second());
        }
        if next.step() != state.step()
            && let Some(entered) = state.step_started_at()
        {
            let seconds = now.duration_since(entered).as_secs_f64().max(0.0);
            metrics
                .step_seconds
                .get_or_create(&step_labels(state.step()))
                .observe(seconds);
        }
    }

    /// For the key-age metric: when the key `version`, which the rotation
    /// signs with, was created (its Secret's creation; for an imported
    /// key, its import). Read once per version, metadata only; a failure
    /// to read is only logged.
    async fn record_signing_key(&self, version: KeyVersion) {
        let labels = crate::serve::RotationLabels::new(&self.namespace, &self.name);
        if self.ctx.metrics.signing_key_version(&labels) == Some(version.get()) {
            return;
        }
        let secrets: Api<k8s_openapi::api::core::v1::Secret> =
            Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let name = self.keystore.secret_name(version);
        match secrets.get_metadata_opt(&name).await {
            Ok(Some(secret)) => {
                if let Some(Time(created)) = secret.metadata.creation_timestamp {
                    self.ctx
                        .metrics
                        .set_signing_key(&labels, version.get(), created);
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%error, secret = %name, "cannot read when the signing key was created");
            }
        }
    }

    /// The issuer change `spec.issuer` asks of a completed `state`: from
    /// the issuer the cluster signs with (the last rotation's, or before
    /// any, the one its discovery document names); `None` when it asks
    /// for none.
    async fn issuer_change(&self, state: &RotationState) -> Result<Option<IssuerChange>> {
        let Some(target) = &self.resource.spec.issuer else {
            return Ok(None);
        };
        let to =
            Issuer::target(target.as_str()).map_err(|problem| Refusal::BadIssuer { problem })?;
        let from = signing_issuer(state, async {
            let discovered = self.cluster.issuer().await?;
            discovered
                .and_then(|issuer| Issuer::new(issuer).ok())
                .ok_or_else(|| Error::from(Refusal::IssuerUnknown))
        })
        .await?;
        Ok((from != to).then_some(IssuerChange { from, to }))
    }

    /// Starts a rotation, or records the refusal and returns `None`.
    async fn start(
        &self,
        state: &RotationState,
        target: KeyVersion,
        issuer: Option<IssuerChange>,
        now: Timestamp,
    ) -> Result<Option<RotationState>> {
        let missing =
            crate::grants::missing(&self.cluster.client, &self.policy.bound_token_refresh).await?;
        if !missing.is_empty() {
            let refusal = missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            self.refuse(state, "MissingGrant", refusal).await?;
            return Ok(None);
        }
        let lock = lock::observe(&self.ctx.client, &self.namespace, &self.name).await?;
        let request = StartRequest {
            target,
            issuer,
            advanced_cluster: false,
            lock,
        };
        match rotation::start(state, &request, now) {
            Ok(started) => {
                // The lease is the compare-and-swap between racing starters.
                lock::hold(&self.ctx.client, &self.namespace, &self.name).await?;
                self.event(EventType::Normal, "RotationStarted", started_note(&started))
                    .await;
                Ok(Some(started))
            }
            Err(refusal) => {
                self.refuse(state, "RotationRefused", refusal.to_string())
                    .await?;
                Ok(None)
            }
        }
    }

    /// Seals the operator's import of the key the cluster signs with now,
    /// once every API server instance shows that it signs with that key and
    /// accepts it; refuses, by name, any other key Secret it did not seal
    /// (a planted next key, an import of a key the cluster does not use).
    async fn adopt_imported_keys(&self, state: &RotationState) -> Result<()> {
        for unsealed in self.keystore.unsealed().await? {
            let current = state.versions().private_key_version();
            let adoptable = unsealed.version.is_some_and(|v| state.adopts_import(v));
            let Some(key) = unsealed.key.as_ref().filter(|_| adoptable) else {
                return Err(ksa_kube::Error::from(unsealed.refused.clone()).into());
            };
            let secret = format!("{}/{}", self.namespace, self.keystore.secret_name(current));
            // A kid names the public half only: the private half must sign
            // what the public half verifies, or a Secret carrying the
            // cluster's public key beside a private key of someone else's
            // would pass every check below.
            if !is_key_pair(&self.ctx.backend, key) {
                return Err(Refusal::ImportNotAKeyPair {
                    secret,
                    kid: key.kid().to_string(),
                }
                .into());
            }
            let keys = BTreeMap::from([(current, key.public_key().clone())]);
            let observation = Observation {
                api_servers: true,
                signing: true,
                ..Observation::default()
            };
            let views = self
                .cluster
                .observe_api_servers(&keys, &observation, None)
                .await?;
            if let Err(not_in_use) = ksa_core::instances::in_use_everywhere(&views, current) {
                return Err(Refusal::ImportNotInUse {
                    secret,
                    kid: key.kid().to_string(),
                    instances: not_in_use.to_string(),
                }
                .into());
            }
            // Its public key is served from now on, as ksa's own; written
            // before the seal, so that a pass cut off between the two does
            // both again.
            self.keystore
                .publish_jwks(&[key.public_key().clone()])
                .await?;
            self.keystore.adopt(&unsealed, key).await?;
            tracing::info!(rotation = %self.name, version = %current, kid = %key.kid(), "sealed the imported key: every API server signs with it and accepts it");
            self.event(
                EventType::Normal,
                "KeyImported",
                format!(
                    "key version {current} (kid {}) checked on every API server instance and sealed",
                    key.kid()
                ),
            )
            .await;
        }
        Ok(())
    }

    /// The issuers to publish documents for: those the step's effect names,
    /// or the one the cluster signs with.
    async fn published_issuers(&self, issuers: Option<Vec<Issuer>>) -> Result<Vec<Issuer>> {
        if let Some(issuers) = issuers {
            return Ok(issuers);
        }
        let issuer = self.cluster.issuer().await?;
        let issuer = issuer
            .and_then(|issuer| Issuer::new(issuer).ok())
            .ok_or(Error::IssuerUnknown)?;
        Ok(vec![issuer])
    }

    fn location_labels(&self, sink: &'static str) -> crate::serve::LocationLabels {
        crate::serve::LocationLabels {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            sink: sink.to_owned(),
        }
    }

    /// Records the refusal to start a rotation from `state`: in the status
    /// (Ready Blocked) and a Warning Event with `reason`.
    async fn refuse(&self, state: &RotationState, reason: &str, message: String) -> Result<()> {
        let refusal = RefusalStatus {
            reason: reason.to_owned(),
            message: message.clone(),
        };
        self.write_status_with(
            state,
            Some(format!("refused: {message}")),
            Vec::new(),
            None,
            Some(refusal),
        )
        .await?;
        self.event(EventType::Warning, reason, message).await;
        Ok(())
    }

    /// Writes the status of `state`, what it waits for, the holders only
    /// an operator can let proceed, when given, the legacy tokens held
    /// outside the cluster (otherwise the list stays as it was), and the
    /// refusal, if any; the Ready condition says which.
    async fn write_status_with(
        &self,
        state: &RotationState,
        waiting: Option<String>,
        blocked_holders: Vec<String>,
        outside_legacy_tokens: Option<Vec<String>>,
        refusal: Option<RefusalStatus>,
    ) -> Result<()> {
        let replace_outside = outside_legacy_tokens.is_some();
        let now = Timestamp::now();
        let generation = self.resource.meta().generation;
        let health = match (&refusal, blocked_holders.is_empty()) {
            (Some(refusal), _) => Health::Blocked(format!("refused: {}", refusal.message)),
            (None, false) => Health::Blocked(format!(
                "{} token holder(s) wait for an operator: {}",
                blocked_holders.len(),
                blocked_holders.join("; ")
            )),
            (None, true) => Health::Progressing,
        };
        let mut status = RotationStatus {
            blocked_holders,
            outside_legacy_tokens: outside_legacy_tokens.unwrap_or_default(),
            refusal,
            ..RotationStatus::of(
                state,
                self.resource.status.as_ref(),
                waiting,
                generation,
                now,
            )
            .sealed(&self.ctx.sealer, self.resource, state)
        };
        let previous = self
            .resource
            .status
            .as_ref()
            .map(|status| status.conditions.as_slice())
            .unwrap_or_default();
        set_ready(
            &mut status.conditions,
            previous,
            ready(
                state.step(),
                state.key_version().get(),
                status.waiting_for.as_deref(),
                &health,
            ),
            generation,
            now,
        );
        // Conditional on the resourceVersion read: a concurrent writer (a
        // second controller that thinks it leads) makes this fail instead of
        // overwriting.
        let mut patch = serde_json::json!({
            "metadata": {"resourceVersion": self.resource.resource_version()},
            "status": status,
        });
        // A merge patch keeps what it leaves out: every optional field the
        // new status lacks is written as null, or the last rotation's
        // value would stay (a `changesKey: false` of an issuer rotation
        // would make the next key rotation's status unloadable, an old
        // `confirmedAt` would cut its trust lead time short).
        for field in [
            "startedAt",
            "stepStartedAt",
            "confirmedAt",
            "completedAt",
            "changesKey",
            "issuer",
            "waitingFor",
            "refusal",
            "blockedHolders",
        ] {
            if patch["status"].get(field).is_none() {
                patch["status"][field] = serde_json::Value::Null;
            }
        }
        if replace_outside && patch["status"].get("outsideLegacyTokens").is_none() {
            patch["status"]["outsideLegacyTokens"] = serde_json::Value::Null;
        }
        let written = self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.ctx
            .liveness
            .wrote(self.resource, &written, std::time::Instant::now());
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        publish_event(self.ctx, self.resource, type_, reason, note).await;
    }
}

/// Whether `key`'s private half signs what its public half verifies.
fn is_key_pair(backend: &AwsLc, key: &ksa_core::key::PrivateKey) -> bool {
    use ksa_core::crypto::CryptoBackend as _;
    const MESSAGE: &[u8] = b"ksa.dev/key-pair-check";
    let Ok(signer) = backend.signing_key(key) else {
        return false;
    };
    let Ok(signature) = signer.sign(MESSAGE) else {
        return false;
    };
    backend
        .verifying_key(key.public_key())
        .is_ok_and(|verifier| verifier.verify(MESSAGE, &signature))
}

/// What the RotationStarted Event says.
fn started_note(started: &RotationState) -> String {
    let issuer = started
        .issuer()
        .filter(|_| started.changes_issuer())
        .map(|change| {
            format!(
                "the service-account issuer from {} to {}",
                change.from, change.to
            )
        });
    let key = started.changes_key().then(|| {
        format!(
            "the service-account signing key to version {}",
            started.key_version()
        )
    });
    let what: Vec<String> = key.into_iter().chain(issuer).collect();
    format!("rotating {}", what.join(" and "))
}

/// The rotation resource's status, as the driver's state store.
struct Status<'a, 'b>(&'a Rotation<'b>);

impl StateStore for Status<'_, '_> {
    type Error = Error;

    async fn save(
        &mut self,
        before: &RotationState,
        plan: &Plan,
        findings: &Findings,
    ) -> Result<()> {
        let outside = findings.outside_legacy_tokens.clone();
        let waiting = (plan.next.step() == before.step()).then(|| plan.waiting.to_string());
        let blocked: Vec<String> = plan
            .waiting
            .blocked_holders()
            .map(ToString::to_string)
            .collect();
        self.0
            .write_status_with(&plan.next, waiting, blocked.clone(), outside.clone(), None)
            .await?;
        self.0.saved(before, &plan.next).await;
        self.0.blocked_changed(&blocked).await;
        self.0.instances_held(&plan.waiting).await;
        self.0
            .cut_off(&plan.cut_off, before.previous_version())
            .await;
        if let Some(unseen) = &plan.refresh_not_observed {
            self.0.refresh_not_observed(unseen).await;
        }
        if let Some(outside) = outside {
            self.0.held_outside(&outside).await;
        }
        Ok(())
    }
}

/// The key Secrets, as the world's key storage.
struct KeySecrets<'a, 'b>(&'a Rotation<'b>);

impl KeyStorage<Error> for KeySecrets<'_, '_> {
    async fn public_keys(&self) -> Result<BTreeMap<KeyVersion, PublicKey>> {
        Ok(self.0.keystore.public_keys().await?)
    }

    async fn private_key(&self, version: KeyVersion) -> Result<PrivateKey> {
        Ok(self.0.keystore.private_key(version).await?)
    }

    async fn contains(&self, version: KeyVersion) -> Result<bool> {
        match self.0.keystore.private_key(version).await {
            Ok(_) => Ok(true),
            Err(ksa_kube::Error::MissingKey { .. }) => Ok(false),
            // Planted: refused by name, never adopted.
            Err(other) => Err(other.into()),
        }
    }

    async fn create(&mut self, version: KeyVersion, key: &PrivateKey) -> Result<()> {
        // Refuses, by name, a Secret someone else made there.
        self.0.keystore.create(version, key).await?;
        tracing::info!(rotation = %self.0.name, %version, kid = %key.kid(), "generated key");
        Ok(())
    }

    async fn retire(&mut self, version: KeyVersion, _current: KeyVersion) -> Result<()> {
        Ok(self.0.keystore.delete(version).await?)
    }
}

/// The API server key Secret and the roll-out the spec names, as the
/// world's API servers.
struct ApiServerRollout<'a, 'b>(&'a Rotation<'b>);

impl ApiServers<Error> for ApiServerRollout<'_, '_> {
    async fn roll_out(&mut self, to: RollOut<'_>) -> Result<()> {
        let rotation = self.0;
        rotation
            .rollout
            .apply(
                &rotation.ctx.client,
                &rotation.namespace,
                &rotation.keystore,
                to.signing,
                to.public,
                to.issuers,
            )
            .await
    }
}

/// The locations the spec and the controller's flags name, as the world's
/// outside.
struct Publications<'a, 'b>(&'a Rotation<'b>);

impl Outside<Error> for Publications<'_, '_> {
    async fn observe(
        &mut self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        issuers: Option<Vec<Issuer>>,
    ) -> Result<Vec<PublicationView>> {
        let rotation = self.0;
        let issuers = rotation.published_issuers(issuers).await?;
        let now = Timestamp::now().as_second();
        let mut views = Vec::new();
        for (location, view) in rotation.locations.observe(keys, &issuers).await {
            if view.serves.is_some() {
                rotation
                    .ctx
                    .metrics
                    .publish_confirmed
                    .get_or_create(&rotation.location_labels(location))
                    .set(now);
            }
            views.push(view);
        }
        Ok(views)
    }

    async fn publish(
        &mut self,
        keys: &[PublicKey],
        issuers: Option<Vec<Issuer>>,
        withdrawn: &[Issuer],
    ) -> Result<()> {
        let rotation = self.0;
        let issuers = rotation.published_issuers(issuers).await?;
        let written = rotation
            .locations
            .publish(keys, &issuers, withdrawn)
            .await?;
        let now = Timestamp::now().as_second();
        for location in written {
            rotation
                .ctx
                .metrics
                .publish_written
                .get_or_create(&rotation.location_labels(location))
                .set(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use backon::BackoffBuilder as _;
    use ksa_core::rotation::OperationLock;

    #[test]
    fn failures_back_off_exponentially_with_jitter_up_to_five_minutes() {
        let bases = [1, 2, 4, 8, 16, 32, 64, 128, 150, 150, 150, 150];
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let delays: Vec<Duration> = backoff(Duration::from_secs(2))
                .with_jitter_seed(seed)
                .build()
                .take(bases.len())
                .collect();
            assert_eq!(delays.len(), bases.len(), "the backoff never gives up");
            for (delay, base) in delays.iter().zip(bases) {
                let base = Duration::from_secs(base);
                // Lengthened by a random part of itself, never past the cap.
                assert!(
                    base <= *delay && *delay < base * 2 && *delay <= MAX_BACKOFF,
                    "seed {seed}: {delays:?}"
                );
            }
            firsts.insert(delays[0]);
        }
        // Rotations failing together do not retry together.
        assert!(firsts.len() > 40, "{firsts:?}");
        let refused = backoff(Duration::from_secs(30))
            .with_jitter_seed(1)
            .build()
            .next()
            .expect("a delay");
        // A refusal fixed by an operator is tried again within 30 s.
        assert!(
            refused >= Duration::from_secs(15) && refused < Duration::from_secs(30),
            "{refused:?}"
        );
    }

    fn settled(version: u64) -> RotationState {
        RotationState::settled(KeyVersion::new(version))
    }

    fn rotating() -> RotationState {
        let request = StartRequest {
            target: KeyVersion::new(2),
            issuer: None,
            advanced_cluster: false,
            lock: OperationLock::Free,
        };
        rotation::start(&settled(1), &request, Timestamp::UNIX_EPOCH).expect("starts")
    }

    fn ready_of(
        state: &RotationState,
        waiting: Option<&str>,
        health: &Health,
    ) -> (bool, &'static str, String) {
        ready(state.step(), state.key_version().get(), waiting, health)
    }

    fn text(ready: (bool, &str, String)) -> (bool, String, String) {
        (ready.0, ready.1.to_owned(), ready.2)
    }

    #[test]
    fn ready_is_true_once_completed_with_nothing_refused_or_failing() {
        assert_eq!(
            text(ready_of(&settled(2), None, &Health::Progressing)),
            (true, "Completed".into(), "settled on key version 2".into())
        );
    }

    #[test]
    fn ready_says_progressing_and_what_the_step_waits_for() {
        assert_eq!(
            text(ready_of(
                &rotating(),
                Some("key version 2 to be stored"),
                &Health::Progressing
            )),
            (
                false,
                "Progressing".into(),
                "at step Generate, waiting for key version 2 to be stored".into()
            )
        );
    }

    #[test]
    fn events_with_other_notes_are_not_folded_into_one() {
        let one = super::event_action("1 token holder(s): a");
        assert_eq!(one, super::event_action("1 token holder(s): a"));
        assert_ne!(one, super::event_action("2 token holder(s): a; b"));
        assert!(one.starts_with("Rotate-") && one.len() <= 128);
    }

    #[test]
    fn ready_says_blocked_when_a_refusal_waits_for_an_operator() {
        // The rotation the spec asks for was refused: the settled state is
        // not Ready, whatever it was before.
        let refused =
            Health::Blocked("refused: ClusterRole ksa-controller-restart-pods is not bound".into());
        assert_eq!(
            text(ready_of(&settled(1), None, &refused)),
            (
                false,
                "Blocked".into(),
                "settled on key version 1: refused: ClusterRole ksa-controller-restart-pods is not bound"
                    .into()
            )
        );
    }

    #[test]
    fn ready_says_blocked_when_token_holders_wait_for_an_operator() {
        let held = Health::Blocked(
            "1 token holder(s) wait for an operator: apps/web (PodDisruptionBudget web allows no disruption)"
                .into(),
        );
        let (status, reason, message) = ready_of(&rotating(), Some("..."), &held);
        assert_eq!((status, reason), (false, "Blocked"));
        assert!(
            message.starts_with("at step Generate: 1 token holder(s)"),
            "{message}"
        );
    }

    #[test]
    fn ready_says_failing_with_the_error() {
        assert_eq!(
            text(ready_of(
                &rotating(),
                None,
                &Health::Failing("key version 2 is missing".into())
            )),
            (
                false,
                "Failing".into(),
                "at step Generate: key version 2 is missing".into()
            )
        );
        // A settled rotation whose passes fail is not Ready either.
        assert_eq!(
            ready_of(&settled(2), None, &Health::Failing("x".into())).1,
            "Failing"
        );
    }

    #[test]
    fn ready_keeps_its_transition_time_while_its_status_is_unchanged() {
        let then: Timestamp = "2026-01-01T00:00:00Z".parse().expect("a time");
        let later: Timestamp = "2026-01-02T00:00:00Z".parse().expect("a time");
        let mut conditions = Vec::new();
        set_ready(
            &mut conditions,
            &[],
            ready_of(&rotating(), None, &Health::Progressing),
            Some(1),
            then,
        );
        let previous = conditions.clone();
        // Still False (Failing now): the time it turned False stays.
        set_ready(
            &mut conditions,
            &previous,
            ready_of(&rotating(), None, &Health::Failing("e".into())),
            Some(2),
            later,
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].reason, "Failing");
        assert_eq!(conditions[0].last_transition_time, Time(then));
        assert_eq!(conditions[0].observed_generation, Some(2));
        // True: a transition.
        set_ready(
            &mut conditions,
            &previous,
            ready_of(&settled(2), None, &Health::Progressing),
            Some(2),
            later,
        );
        assert_eq!(
            (
                conditions[0].status.as_str(),
                &conditions[0].last_transition_time
            ),
            ("True", &Time(later))
        );
        // A message is kept within what the API server takes.
        set_ready(
            &mut conditions,
            &previous,
            ready_of(&rotating(), None, &Health::Failing("é".repeat(5000))),
            None,
            later,
        );
        assert!(conditions[0].message.len() <= MAX_CONDITION_MESSAGE);
    }
}
