//! The rules of bound-token refresh, on plain values: whether a pod holds a
//! bound token, whether that token may predate the RefreshTokens step, and
//! how it is refreshed (restart its workload's template, evict it, or wait),
//! with the reason the status gives. No I/O: ksa-kube's `refresh` module
//! reads the cluster into these values (a PodDisruptionBudget's label
//! selector into plain [`Requirement`]s) and acts on the verdicts.
//!
//! The decisions, and why:
//!
//! - A pod holds a bound token only if its spec projects one (the
//!   ServiceAccount admission plugin adds the projected volume when a token
//!   is automounted), it is scheduled (the kubelet requests the token), and
//!   it has not finished (nothing runs that could present it). A static
//!   pod's mirror never holds one: the API server refuses a mirror pod that
//!   names a service account or projects a token, and the mirror annotation
//!   cannot be added or removed after creation.
//! - A token is fresh when its pod was created (or started, by the
//!   kubelet's clock, allowing for skew) after the step began, or when the
//!   kubelet has refreshed it since: it does so at 80% of the token's
//!   lifetime, or after 24 h, whichever is first. So no pod holds the
//!   rotation longer than its kubelet would take, whatever blocks its
//!   restart.
//! - Deployments, and StatefulSets and DaemonSets with a rolling update,
//!   are refreshed by restarting their pod template: their controllers
//!   replace the pods within what the strategy allows. A paused Deployment
//!   would not roll out, so its pods wait for it to be resumed. A rollout
//!   the cluster says cannot progress (a ReplicaSet that cannot create
//!   pods, a replacement pod that cannot be scheduled, crash-loops or
//!   cannot pull its image, a progress deadline exceeded) names its pods
//!   blocked, with the cluster's reason, until an operator fixes it
//!   ([`stall`]).
//! - Workloads whose template restart does not replace pods (`OnDelete`,
//!   the pods below a StatefulSet's partition), and pods whose controller
//!   ksa does not know (a ReplicaSet no Deployment controls, a
//!   ReplicationController, a custom resource's controller), are evicted
//!   through the Eviction API so their controllers replace them: one pod of
//!   a workload at a time, only while every other pod of it is available,
//!   and never past a PodDisruptionBudget. A bare pod (no controller) is
//!   evicted too, and nothing replaces it: that is what `restart-pods`
//!   means for it; a PodDisruptionBudget makes the rotation wait instead.
//! - A running Job's pod is never evicted: an eviction counts against the
//!   Job's `backoffLimit` (and fails a Job that allows no retry). The
//!   rotation waits for it to finish, or for the kubelet to refresh its
//!   token, whichever is first.

mod budget;
mod drain;
#[cfg(test)]
mod fixtures;
mod observed;
mod pacer;
mod stall;

pub use budget::{Budget, Requirement, Selector, eviction_blocked};
pub use drain::{Drain, drain};
pub use observed::{KubeletRefreshes, must_refresh, refreshed, refreshed_from, tally};
pub use pacer::Pacer;
pub use stall::{Condition, ContainerWaiting, RolloutStatus, Tally, pod_stall, workload_stall};

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::{HolderReason, Stall, WorkloadKind};

/// A projected token's lifetime when the volume does not say
/// (`expirationSeconds` defaults to an hour).
pub const DEFAULT_TOKEN_SECONDS: u64 = 3600;

/// A pod's phase; anything unknown counts as running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    pub fn parse(phase: Option<&str>) -> Phase {
        match phase {
            Some("Pending") | None => Phase::Pending,
            Some("Running") => Phase::Running,
            Some("Succeeded") => Phase::Succeeded,
            Some("Failed") => Phase::Failed,
            Some(_) => Phase::Unknown,
        }
    }

    pub(super) fn finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// How a workload's controller replaces its pods when the template changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Every pod (Deployments; StatefulSets and DaemonSets with a rolling
    /// update and no partition).
    Replace,
    /// A StatefulSet's rolling update with a partition: only pods with an
    /// ordinal at or above it.
    Partitioned { partition: u32 },
    /// None (`OnDelete`): pods are replaced only when deleted.
    OnDelete,
}

/// A workload whose pod template ksa can restart, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub strategy: Strategy,
    /// Its template carries the restart annotation for this rotation.
    pub restarted: bool,
    /// A paused Deployment.
    pub paused: bool,
    /// What its own status says stops its rollout ([`workload_stall`]).
    pub stall: Option<Stall>,
}

/// What controls a pod, as far as ksa knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller<'a> {
    /// No controller: a bare pod.
    None,
    /// A Job (its own or made by a CronJob).
    Job,
    /// A workload ksa restarts (a Deployment through its ReplicaSet).
    Workload(&'a Workload),
    /// Anything else: a ReplicaSet no Deployment controls, a
    /// ReplicationController, a custom resource, an owner not found.
    Other { kind: &'a str, uid: &'a str },
}

/// A pod, as the rules need it.
#[derive(Clone, Debug)]
pub struct Pod<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub phase: Phase,
    /// `spec.nodeName` is set.
    pub scheduled: bool,
    pub created: Option<Timestamp>,
    /// `status.startTime`, by the kubelet's clock.
    pub started: Option<Timestamp>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// A `DisruptionTarget` condition is true (it was evicted).
    pub evicted: bool,
    pub ready: bool,
    /// It carries `kubernetes.io/config.mirror`: a static pod's mirror.
    pub mirror: bool,
    /// Its `ksa.dev/restarted-for-key-version` annotation.
    pub restarted_for: Option<&'a str>,
    /// The longest lifetime of the service-account tokens its volumes
    /// project; `None` when it projects none.
    pub token_seconds: Option<u64>,
    pub controller: Controller<'a>,
    /// Its `PodScheduled` condition.
    pub pod_scheduled: Option<Condition<'a>>,
    /// Its containers (and init containers) that are waiting, and why.
    pub waiting: Vec<ContainerWaiting<'a>>,
}

/// The step a verdict is made for.
#[derive(Clone, Copy, Debug)]
pub struct Horizon<'a> {
    /// When RefreshTokens began: every API server signed with the new key
    /// before it.
    pub since: Timestamp,
    pub now: Timestamp,
    /// Clock skew allowed between this process and the kubelets.
    pub skew: Duration,
    /// The rotation's restart marker (`RotationState::refresh_marker`), as
    /// the restart annotation writes it.
    pub version: &'a str,
}

impl Pod<'_> {
    /// Succeeded or failed.
    pub fn phase_finished(&self) -> bool {
        self.phase.finished()
    }
}

impl Horizon<'_> {
    /// By when the kubelet has replaced a token of this lifetime that
    /// predates the step with one signed by the new key: at 80% of its
    /// lifetime or after 24 h, whichever is first, plus its slack and the
    /// clock skew.
    pub fn kubelet_refreshed_by(&self, token_seconds: u64) -> Timestamp {
        let refresh = kubelet_refresh_window(token_seconds, self.skew);
        i64::try_from(refresh.as_secs())
            .ok()
            .and_then(|s| self.since.as_second().checked_add(s))
            .and_then(|s| Timestamp::from_second(s).ok())
            .unwrap_or(Timestamp::MAX)
    }

    /// Whether `at` is in a whole second after the step began (creation
    /// times have one-second precision, so the same second may be before).
    fn after_since(&self, at: Timestamp, margin: Duration) -> bool {
        let margin = i64::try_from(margin.as_secs()).unwrap_or(i64::MAX);
        at.as_second() > self.since.as_second().saturating_add(margin)
    }
}

/// Why a pod holds no bound token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotAHolder {
    /// A static pod's mirror: the API server lets it hold no token.
    StaticPod,
    /// Its spec projects no service-account token.
    NoToken,
    /// Not scheduled: no kubelet has requested its token yet.
    Unscheduled,
    /// Succeeded or failed: nothing runs that could present it.
    Finished,
}

/// Why a pod's token is signed with the new key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// Created after the step began.
    CreatedSince,
    /// Created in the second the step began, from a template restarted for
    /// this rotation.
    FromRestartedTemplate,
    /// Started by its kubelet after the step began.
    StartedSince,
    /// Its kubelet has refreshed its token since the step began.
    RefreshedByKubelet,
}

/// How a stale pod is refreshed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refresh<'a> {
    /// Restart its workload's pod template.
    RestartTemplate(&'a Workload),
    /// Evict it, paced by `pace`.
    Evict(Pace<'a>),
    /// Nothing to do: wait, for the reason given.
    Wait(HolderReason),
}

impl Refresh<'_> {
    /// What the status says of a pod refreshed so.
    pub fn reason(&self) -> HolderReason {
        match self {
            Refresh::RestartTemplate(workload) => HolderReason::TemplateToRestart {
                kind: workload.kind,
                workload: workload.name.clone(),
            },
            Refresh::Evict(_) => HolderReason::ToEvict,
            Refresh::Wait(reason) => reason.clone(),
        }
    }
}

/// Whose pods an eviction is paced with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace<'a> {
    /// Nothing replaces it: no pacing.
    Alone,
    /// One pod at a time of the controller with this uid.
    Owner(&'a str),
}

/// The verdict on one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    NotAHolder(NotAHolder),
    Fresh(Fresh),
    Stale(Refresh<'a>),
}

/// The verdict on `pod` under `restart-pods`; `budgets` are the
/// PodDisruptionBudgets of its namespace.
pub fn assess<'a>(pod: &Pod<'a>, budgets: &[Budget], horizon: &Horizon<'_>) -> Verdict<'a> {
    let token_seconds = match holds_token(pod) {
        Ok(seconds) => seconds,
        Err(not) => return Verdict::NotAHolder(not),
    };
    if let Some(fresh) = fresh(pod, token_seconds, horizon) {
        return Verdict::Fresh(fresh);
    }
    if pod.deleting {
        let reason = match pod.controller {
            // Its controller replaces it as the restarted template rolls out.
            Controller::Workload(workload)
                if !pod.evicted && workload.restarted && workload.strategy == Strategy::Replace =>
            {
                HolderReason::RolloutInProgress {
                    kind: workload.kind,
                    workload: workload.name.clone(),
                }
            }
            _ => deleting(pod),
        };
        return Verdict::Stale(Refresh::Wait(reason));
    }
    let refresh = match pod.controller {
        Controller::None => Refresh::Evict(Pace::Alone),
        Controller::Job => Refresh::Wait(HolderReason::RunningJob {
            until: horizon.kubelet_refreshed_by(token_seconds),
        }),
        Controller::Other { uid, .. } => Refresh::Evict(Pace::Owner(uid)),
        Controller::Workload(workload) => {
            let replaced = match workload.strategy {
                Strategy::Replace => true,
                Strategy::OnDelete => false,
                Strategy::Partitioned { partition } => {
                    ordinal(pod.name, &workload.name).is_some_and(|o| o >= partition)
                }
            };
            if !replaced {
                Refresh::Evict(Pace::Owner(&workload.uid))
            } else if workload.paused {
                Refresh::Wait(HolderReason::DeploymentPaused {
                    deployment: workload.name.clone(),
                })
            } else if workload.restarted {
                Refresh::Wait(HolderReason::RolloutInProgress {
                    kind: workload.kind,
                    workload: workload.name.clone(),
                })
            } else {
                Refresh::RestartTemplate(workload)
            }
        }
    };
    if let Refresh::Evict(_) = refresh
        && let Some(blocked) = eviction_blocked(pod, budgets)
    {
        return Verdict::Stale(Refresh::Wait(blocked));
    }
    Verdict::Stale(refresh)
}

/// The lifetime of the longest token `pod` holds, or why it holds none.
fn holds_token(pod: &Pod<'_>) -> Result<u64, NotAHolder> {
    if pod.mirror {
        return Err(NotAHolder::StaticPod);
    }
    let seconds = pod.token_seconds.ok_or(NotAHolder::NoToken)?;
    if pod.phase.finished() {
        return Err(NotAHolder::Finished);
    }
    if !pod.scheduled {
        return Err(NotAHolder::Unscheduled);
    }
    Ok(seconds)
}

/// The lifetime of the token `pod` holds from before the step, which only
/// its kubelet will refresh (the `wait` policy); `None` when it holds none,
/// or a fresh one.
pub fn stale_token_seconds(pod: &Pod<'_>, horizon: &Horizon<'_>) -> Option<u64> {
    let seconds = holds_token(pod).ok()?;
    fresh(pod, seconds, horizon).is_none().then_some(seconds)
}

/// Why a token of this lifetime held by `pod` is fresh, if it is.
fn fresh(pod: &Pod<'_>, token_seconds: u64, horizon: &Horizon<'_>) -> Option<Fresh> {
    if let Some(fresh) = fresh_by_age(pod, horizon) {
        return Some(fresh);
    }
    if horizon.now >= horizon.kubelet_refreshed_by(token_seconds) {
        return Some(Fresh::RefreshedByKubelet);
    }
    None
}

/// Why the token `pod` holds is fresh by the pod's own age (created or
/// started since the step began), if it is; the kubelet's refresh aside.
fn fresh_by_age(pod: &Pod<'_>, horizon: &Horizon<'_>) -> Option<Fresh> {
    // A pod without a creation time is taken for old.
    if let Some(created) = pod.created {
        if horizon.after_since(created, Duration::ZERO) {
            return Some(Fresh::CreatedSince);
        }
        if created.as_second() == horizon.since.as_second()
            && pod.restarted_for == Some(horizon.version)
        {
            return Some(Fresh::FromRestartedTemplate);
        }
    }
    if pod
        .started
        .is_some_and(|started| horizon.after_since(started, horizon.skew))
    {
        return Some(Fresh::StartedSince);
    }
    None
}

pub(super) fn deleting(pod: &Pod<'_>) -> HolderReason {
    if pod.evicted {
        HolderReason::Evicted
    } else {
        HolderReason::Terminating
    }
}

/// The ordinal of a StatefulSet's pod, from its name (`NAME-ORDINAL`).
fn ordinal(pod: &str, statefulset: &str) -> Option<u32> {
    pod.strip_prefix(statefulset)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// Whether an eviction of `pod` may take it down now, for pacing: it is
/// running, ready and not being deleted. `None` for a finished pod, which
/// counts neither way.
pub fn available(pod: &Pod<'_>) -> Option<bool> {
    if pod.phase.finished() {
        return None;
    }
    Some(pod.phase == Phase::Running && pod.ready && !pod.deleting)
}

/// The owner whose pods `pod`'s eviction is paced with: a controller whose
/// pods ksa evicts rather than restarts.
pub fn pace_owner<'a>(pod: &Pod<'a>) -> Option<&'a str> {
    match pod.controller {
        Controller::Other { uid, .. } => Some(uid),
        Controller::Workload(workload) if workload.strategy != Strategy::Replace => {
            Some(workload.uid.as_str())
        }
        _ => None,
    }
}

/// The longest a kubelet waits before refreshing a projected token.
pub const KUBELET_MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// What the kubelet may take beyond 80% of a token's lifetime to have a
/// refreshed token in the pod: its jitter (up to 10 s) and the period in
/// which it remounts a pod's volumes (about a minute), with room to spare.
pub const KUBELET_SLACK: Duration = Duration::from_secs(120);

/// How long after a projected token of `token_seconds` was issued its
/// kubelet has replaced it in the pod: at 80% of its lifetime or after
/// [`KUBELET_MAX_REFRESH`], whichever is first, plus [`KUBELET_SLACK`] and
/// the clock `skew` allowed between ksa and the kubelets.
///
/// Architecture invariant: the one kubelet refresh window, for the `wait`
/// policy's hold ([`super::BoundTokenRefresh::wait_window`]) and for the
/// pods `restart-pods` and `recreate-nodes` leave to their kubelet
/// ([`Horizon::kubelet_refreshed_by`]). It saturates: a skew too large to
/// add is a window that never closes, never a panic.
pub fn kubelet_refresh_window(token_seconds: u64, skew: Duration) -> Duration {
    Duration::from_secs(token_seconds.saturating_mul(8) / 10)
        .min(KUBELET_MAX_REFRESH)
        .saturating_add(KUBELET_SLACK)
        .saturating_add(skew)
}

#[cfg(test)]
mod tests {
    use super::fixtures::{at, budget, horizon, labels, pod, workload};
    use super::*;

    fn verdict<'a>(pod: &Pod<'a>) -> Verdict<'a> {
        assess(pod, &[], &horizon(10))
    }

    #[test]
    fn pods_that_hold_no_token_are_never_refreshed() {
        let mirror = Pod {
            mirror: true,
            controller: Controller::Other {
                kind: "Node",
                uid: "node-uid",
            },
            ..pod("kube-apiserver-node-0")
        };
        assert_eq!(verdict(&mirror), Verdict::NotAHolder(NotAHolder::StaticPod));
        let no_token = Pod {
            token_seconds: None,
            ..pod("no-token")
        };
        assert_eq!(verdict(&no_token), Verdict::NotAHolder(NotAHolder::NoToken));
        for phase in [Phase::Succeeded, Phase::Failed] {
            let done = Pod {
                phase,
                ready: false,
                controller: Controller::Job,
                ..pod("job-x")
            };
            assert_eq!(verdict(&done), Verdict::NotAHolder(NotAHolder::Finished));
        }
        let pending = Pod {
            phase: Phase::Pending,
            scheduled: false,
            ready: false,
            started: None,
            ..pod("pending")
        };
        assert_eq!(
            verdict(&pending),
            Verdict::NotAHolder(NotAHolder::Unscheduled)
        );
        // Scheduled but not started: the kubelet may have its token.
        let scheduled = Pod {
            phase: Phase::Pending,
            ready: false,
            started: None,
            ..pod("scheduled")
        };
        assert_eq!(
            verdict(&scheduled),
            Verdict::Stale(Refresh::Evict(Pace::Alone))
        );
        // Unknown phases count as running.
        assert_eq!(Phase::parse(Some("Weird")), Phase::Unknown);
        let unknown = Pod {
            phase: Phase::parse(Some("Weird")),
            ..pod("unknown")
        };
        assert_eq!(
            verdict(&unknown),
            Verdict::Stale(Refresh::Evict(Pace::Alone))
        );
    }

    #[test]
    fn tokens_issued_after_the_step_began_are_fresh() {
        let created = Pod {
            created: Some(at(1)),
            started: None,
            ..pod("new")
        };
        assert_eq!(verdict(&created), Verdict::Fresh(Fresh::CreatedSince));
        // The same second may be before: stale, unless from a template
        // restarted for this rotation.
        let same_second = Pod {
            created: Some(at(0)),
            started: None,
            ..pod("same")
        };
        assert!(matches!(verdict(&same_second), Verdict::Stale(_)));
        let restarted = Pod {
            restarted_for: Some("2"),
            ..same_second.clone()
        };
        assert_eq!(
            verdict(&restarted),
            Verdict::Fresh(Fresh::FromRestartedTemplate)
        );
        // An old pod claiming the annotation is still stale.
        let claims = Pod {
            restarted_for: Some("2"),
            ..pod("claims")
        };
        assert!(matches!(verdict(&claims), Verdict::Stale(_)));
        // Started by its kubelet after the step, beyond the clock skew.
        let started_late = Pod {
            started: Some(at(61)),
            ..pod("late")
        };
        assert_eq!(verdict(&started_late), Verdict::Fresh(Fresh::StartedSince));
        let within_skew = Pod {
            started: Some(at(60)),
            ..pod("skewed")
        };
        assert!(matches!(verdict(&within_skew), Verdict::Stale(_)));
        // No creation time: taken for old.
        let unknown = Pod {
            created: None,
            started: None,
            ..pod("unknown")
        };
        assert!(matches!(verdict(&unknown), Verdict::Stale(_)));
    }

    #[test]
    fn the_kubelet_refresh_ends_every_wait() {
        // 80% of 3607 s is 2885 s; plus 120 s slack and 60 s skew.
        let h = horizon(0);
        assert_eq!(h.kubelet_refreshed_by(3607), at(2885 + 180));
        assert_eq!(h.kubelet_refreshed_by(600), at(480 + 180));
        // Never beyond 24 h, whatever the volume says.
        assert_eq!(h.kubelet_refreshed_by(86_400), at(69_120 + 180));
        assert_eq!(h.kubelet_refreshed_by(u64::MAX), at(86_400 + 180));
        let blocked = Pod {
            controller: Controller::Job,
            ..pod("job")
        };
        assert!(matches!(
            assess(&blocked, &[], &horizon(3064)),
            Verdict::Stale(Refresh::Wait(HolderReason::RunningJob { .. }))
        ));
        assert_eq!(
            assess(&blocked, &[], &horizon(3065)),
            Verdict::Fresh(Fresh::RefreshedByKubelet)
        );
        // A token far in the future at the limit of time does not overflow.
        let end = Horizon {
            since: Timestamp::MAX,
            ..horizon(0)
        };
        assert_eq!(end.kubelet_refreshed_by(3600), Timestamp::MAX);
    }

    #[test]
    fn running_job_pods_are_waited_for_never_evicted() {
        let job = Pod {
            controller: Controller::Job,
            ..pod("batch-x")
        };
        assert_eq!(
            verdict(&job),
            Verdict::Stale(Refresh::Wait(HolderReason::RunningJob { until: at(3065) }))
        );
        // Its token's lifetime sets the wait: a 600 s token is refreshed
        // in 480 s.
        let short = Pod {
            token_seconds: Some(600),
            ..job.clone()
        };
        assert_eq!(
            verdict(&short),
            Verdict::Stale(Refresh::Wait(HolderReason::RunningJob { until: at(660) }))
        );
    }

    #[test]
    fn workloads_that_replace_pods_on_a_template_change_are_restarted() {
        for (kind, strategy) in [
            (WorkloadKind::Deployment, Strategy::Replace),
            (WorkloadKind::StatefulSet, Strategy::Replace),
            (WorkloadKind::DaemonSet, Strategy::Replace),
        ] {
            let mut web = workload(kind, strategy);
            let p = Pod {
                controller: Controller::Workload(&web),
                ..pod("web-1")
            };
            assert_eq!(
                assess(&p, &[], &horizon(10)),
                Verdict::Stale(Refresh::RestartTemplate(&web)),
                "{kind}"
            );
            assert_eq!(
                Refresh::RestartTemplate(&web).reason().to_string(),
                format!("{kind} web: template to be restarted")
            );
            web.restarted = true;
            let p = Pod {
                controller: Controller::Workload(&web),
                ..pod("web-1")
            };
            assert_eq!(
                assess(&p, &[], &horizon(10)),
                Verdict::Stale(Refresh::Wait(HolderReason::RolloutInProgress {
                    kind,
                    workload: "web".into()
                }))
            );
            // Template restarts go past PodDisruptionBudgets: the
            // controller's strategy paces them, not the Eviction API.
            assert_eq!(
                assess(&p, &[budget("web-pdb", "app", 0)], &horizon(10)),
                Verdict::Stale(Refresh::Wait(HolderReason::RolloutInProgress {
                    kind,
                    workload: "web".into()
                }))
            );
        }
    }

    #[test]
    fn a_paused_deployment_is_waited_for_not_restarted() {
        let web = Workload {
            paused: true,
            ..workload(WorkloadKind::Deployment, Strategy::Replace)
        };
        let p = Pod {
            controller: Controller::Workload(&web),
            ..pod("web-1")
        };
        let reason = HolderReason::DeploymentPaused {
            deployment: "web".into(),
        };
        assert!(reason.is_blocked());
        assert_eq!(verdict(&p), Verdict::Stale(Refresh::Wait(reason)));
    }

    #[test]
    fn workloads_a_template_restart_does_not_replace_are_evicted_by_owner() {
        for kind in [WorkloadKind::StatefulSet, WorkloadKind::DaemonSet] {
            let db = workload(kind, Strategy::OnDelete);
            let p = Pod {
                controller: Controller::Workload(&db),
                ..pod("web-0")
            };
            assert_eq!(
                assess(&p, &[], &horizon(10)),
                Verdict::Stale(Refresh::Evict(Pace::Owner("workload-uid")))
            );
            assert_eq!(pace_owner(&p), Some("workload-uid"));
        }
        // Below a StatefulSet's partition: evicted; at or above: restarted.
        let db = workload(
            WorkloadKind::StatefulSet,
            Strategy::Partitioned { partition: 2 },
        );
        for (name, evicted) in [
            ("web-0", true),
            ("web-1", true),
            ("web-2", false),
            ("web-10", false),
            ("web-x", true),
            ("other-5", true),
        ] {
            let p = Pod {
                controller: Controller::Workload(&db),
                ..pod(name)
            };
            assert_eq!(
                matches!(
                    assess(&p, &[], &horizon(10)),
                    Verdict::Stale(Refresh::Evict(_))
                ),
                evicted,
                "{name}"
            );
        }
        // Controllers ksa does not know, and bare pods.
        let other = Pod {
            controller: Controller::Other {
                kind: "Widget",
                uid: "widget-uid",
            },
            ..pod("widget-1")
        };
        assert_eq!(
            assess(&other, &[], &horizon(10)),
            Verdict::Stale(Refresh::Evict(Pace::Owner("widget-uid")))
        );
        assert_eq!(
            verdict(&pod("bare")),
            Verdict::Stale(Refresh::Evict(Pace::Alone))
        );
        assert_eq!(pace_owner(&pod("bare")), None);
        assert_eq!(Refresh::Evict(Pace::Alone).reason(), HolderReason::ToEvict);
    }

    #[test]
    fn pods_being_deleted_are_waited_for() {
        let evicted = Pod {
            deleting: true,
            evicted: true,
            ..pod("evicted")
        };
        assert_eq!(
            verdict(&evicted),
            Verdict::Stale(Refresh::Wait(HolderReason::Evicted))
        );
        let deleted = Pod {
            deleting: true,
            ..pod("deleted")
        };
        assert_eq!(
            verdict(&deleted),
            Verdict::Stale(Refresh::Wait(HolderReason::Terminating))
        );
        // Deleted by its controller's rollout.
        let agent = Workload {
            restarted: true,
            ..workload(WorkloadKind::DaemonSet, Strategy::Replace)
        };
        let rolled = Pod {
            deleting: true,
            controller: Controller::Workload(&agent),
            ..pod("agent-x")
        };
        assert_eq!(
            verdict(&rolled),
            Verdict::Stale(Refresh::Wait(HolderReason::RolloutInProgress {
                kind: WorkloadKind::DaemonSet,
                workload: "web".into()
            }))
        );
    }

    #[test]
    fn a_budget_that_allows_no_disruption_is_named_instead_of_evicting() {
        let guarded_labels = labels(&[("app", "guarded")]);
        let guarded = Pod {
            labels: &guarded_labels,
            controller: Controller::Other {
                kind: "ReplicaSet",
                uid: "rs-uid",
            },
            ..pod("guarded-x")
        };
        let h = horizon(10);
        assert_eq!(
            assess(&guarded, &[budget("guarded-pdb", "guarded", 0)], &h),
            Verdict::Stale(Refresh::Wait(HolderReason::DisruptionBudget {
                budget: "guarded-pdb".into(),
                allowed: 0
            }))
        );
        // A budget of other pods, or one that allows a disruption.
        assert_eq!(
            assess(&guarded, &[budget("web-pdb", "web", 0)], &h),
            Verdict::Stale(Refresh::Evict(Pace::Owner("rs-uid")))
        );
        assert_eq!(
            assess(&guarded, &[budget("guarded-pdb", "guarded", 1)], &h),
            Verdict::Stale(Refresh::Evict(Pace::Owner("rs-uid")))
        );
        // Two budgets: the Eviction API refuses it.
        assert_eq!(
            assess(
                &guarded,
                &[
                    budget("a", "guarded", 1),
                    budget("web-pdb", "web", 1),
                    budget("b", "guarded", 1)
                ],
                &h
            ),
            Verdict::Stale(Refresh::Wait(HolderReason::SeveralDisruptionBudgets {
                count: 2,
                first: "a".into()
            }))
        );
        // A budget the disruption controller has not caught up with.
        let unprocessed = Budget {
            processed: false,
            ..budget("guarded-pdb", "guarded", 1)
        };
        assert_eq!(
            eviction_blocked(&guarded, &[unprocessed]),
            Some(HolderReason::DisruptionBudgetPending {
                budget: "guarded-pdb".into()
            })
        );
        // A pending or terminating pod is evicted whatever its budget.
        let blocking = [budget("guarded-pdb", "guarded", 0)];
        for p in [
            Pod {
                phase: Phase::Pending,
                ..guarded.clone()
            },
            Pod {
                deleting: true,
                ..guarded.clone()
            },
        ] {
            assert_eq!(eviction_blocked(&p, &blocking), None);
        }
        // An unready pod: when its budget is met, or says AlwaysAllow.
        let unready = Pod {
            ready: false,
            ..guarded.clone()
        };
        assert_eq!(eviction_blocked(&unready, &blocking), None);
        let short = Budget {
            current_healthy: 0,
            ..budget("guarded-pdb", "guarded", 0)
        };
        assert!(eviction_blocked(&unready, std::slice::from_ref(&short)).is_some());
        let always = Budget {
            always_allow_unhealthy: true,
            ..short
        };
        assert_eq!(eviction_blocked(&unready, &[always]), None);
        // A bare pod behind a budget waits too.
        let bare = Pod {
            labels: &guarded_labels,
            ..pod("bare")
        };
        assert!(matches!(
            assess(&bare, &blocking, &h),
            Verdict::Stale(Refresh::Wait(HolderReason::DisruptionBudget { .. }))
        ));
    }

    #[test]
    fn availability_for_pacing() {
        assert_eq!(available(&pod("ready")), Some(true));
        let unready = Pod {
            ready: false,
            ..pod("unready")
        };
        assert_eq!(available(&unready), Some(false));
        let pending = Pod {
            phase: Phase::Pending,
            ..pod("pending")
        };
        assert_eq!(available(&pending), Some(false));
        let deleting = Pod {
            deleting: true,
            ..pod("deleting")
        };
        assert_eq!(available(&deleting), Some(false));
        let done = Pod {
            phase: Phase::Succeeded,
            ..pod("done")
        };
        assert_eq!(available(&done), None);
    }

    #[test]
    fn the_kubelet_window_is_80_percent_of_the_lifetime_at_most_a_day_and_saturates() {
        let skew = Duration::from_secs(60);
        // 80% of an hour, plus slack and skew.
        assert_eq!(
            kubelet_refresh_window(3600, skew),
            Duration::from_secs(2880 + 120 + 60)
        );
        // Never more than a day, however long the token lives.
        assert_eq!(
            kubelet_refresh_window(u64::MAX, skew),
            KUBELET_MAX_REFRESH + KUBELET_SLACK + skew
        );
        // A skew too large to add never panics.
        assert_eq!(kubelet_refresh_window(3600, Duration::MAX), Duration::MAX);
        assert_eq!(horizon(0).kubelet_refreshed_by(3600), at(2880 + 120 + 60));
    }
}

#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::rotation::WorkloadKind;
    use jiff::Timestamp;
    use proptest::prelude::*;

    use super::{
        Budget, Controller, Drain, Horizon, Phase, Pod, Refresh, Selector, Verdict, Workload,
        assess, drain, eviction_blocked,
    };

    fn phase() -> impl Strategy<Value = Phase> {
        prop_oneof![
            Just(Phase::Pending),
            Just(Phase::Running),
            Just(Phase::Succeeded),
            Just(Phase::Failed),
            Just(Phase::Unknown),
        ]
    }

    fn strategy() -> impl Strategy<Value = super::Strategy> {
        prop_oneof![
            Just(super::Strategy::Replace),
            Just(super::Strategy::OnDelete),
            (0..4u32).prop_map(|partition| super::Strategy::Partitioned { partition }),
        ]
    }

    fn kind() -> impl Strategy<Value = WorkloadKind> {
        prop_oneof![
            Just(WorkloadKind::Deployment),
            Just(WorkloadKind::StatefulSet),
            Just(WorkloadKind::DaemonSet),
        ]
    }

    /// Any pod: `(phase, scheduled, created, started, deleting, evicted,
    /// ready, mirror, restarted_for, token_seconds, controller)`, times in
    /// seconds from the step's start.
    #[allow(clippy::type_complexity, reason = "a proptest tuple")]
    fn facts() -> impl Strategy<
        Value = (
            (Phase, bool, Option<i64>, Option<i64>, bool, bool),
            (bool, bool, Option<bool>, Option<u64>, u8),
        ),
    > {
        (
            (
                phase(),
                any::<bool>(),
                prop::option::of(-100_000..100i64),
                prop::option::of(-100_000..100i64),
                any::<bool>(),
                any::<bool>(),
            ),
            (
                any::<bool>(),
                any::<bool>(),
                prop::option::of(any::<bool>()),
                prop::option::of(prop_oneof![Just(600u64), 0..200_000u64, Just(u64::MAX)]),
                0..5u8,
            ),
        )
    }

    proptest! {
        /// Whatever a pod says of itself, a pod that holds no token, or a
        /// fresh one, is never restarted or evicted; a running Job's pod
        /// and a pod of a workload whose template restart replaces it are
        /// never evicted; nothing is evicted past a budget that allows no
        /// disruption.
        #[test]
        fn nothing_that_holds_no_stale_token_is_touched(
            ((phase, scheduled, created, started, deleting, evicted),
             (ready, mirror, restarted, token_seconds, controller)) in facts(),
            (workload_kind, workload_strategy, workload_restarted, paused) in (kind(), strategy(), any::<bool>(), any::<bool>()),
            now in -10..200_000i64,
            blocking in any::<bool>(),
        ) {
            let labels = BTreeMap::from([("app".to_owned(), "a".to_owned())]);
            let since: Timestamp = "2026-05-01T12:00:00Z".parse().expect("time");
            let at = |offset: i64| Timestamp::from_second(since.as_second() + offset).expect("time");
            let workload = Workload {
                kind: workload_kind,
                uid: "w".into(),
                namespace: "ns".into(),
                name: "web".into(),
                strategy: workload_strategy,
                restarted: workload_restarted,
                paused,
                stall: None,
            };
            let controller = match controller {
                0 => Controller::None,
                1 => Controller::Job,
                2 => Controller::Workload(&workload),
                3 => Controller::Other { kind: "Widget", uid: "x" },
                _ => Controller::Other { kind: "DaemonSet", uid: "y" },
            };
            let pod = Pod {
                namespace: "ns",
                name: "web-1",
                uid: "p",
                labels: &labels,
                phase,
                scheduled,
                created: created.map(at),
                started: started.map(at),
                deleting,
                evicted,
                ready,
                mirror,
                restarted_for: restarted.map(|r| if r { "2" } else { "1" }),
                token_seconds,
                controller,
                pod_scheduled: None,
                waiting: Vec::new(),
            };
            let horizon = Horizon { since, now: at(now), skew: Duration::from_secs(60), version: "2" };
            let budget = Budget {
                name: "b".into(),
                selector: Selector::new(Some(Vec::new())),
                disruptions_allowed: i32::from(!blocking),
                processed: true,
                always_allow_unhealthy: false,
                current_healthy: 1,
                desired_healthy: 1,
            };
            let verdict = assess(&pod, std::slice::from_ref(&budget), &horizon);
            let holds = !mirror && token_seconds.is_some() && scheduled
                && !matches!(phase, Phase::Succeeded | Phase::Failed);
            let fresh = created.is_some_and(|c| c > 0)
                || started.is_some_and(|s| s > 60)
                || horizon.now >= horizon.kubelet_refreshed_by(token_seconds.unwrap_or(0));
            if let Verdict::Stale(refresh) = &verdict {
                prop_assert!(holds && !fresh, "{verdict:?} for {pod:?}");
                match refresh {
                    Refresh::Evict(_) => {
                        prop_assert!(!deleting);
                        prop_assert!(controller != Controller::Job);
                        if let Controller::Workload(w) = controller {
                            prop_assert!(w.strategy != super::Strategy::Replace);
                        }
                        prop_assert!(eviction_blocked(&pod, std::slice::from_ref(&budget)).is_none());
                    }
                    Refresh::RestartTemplate(w) => {
                        prop_assert!(!deleting && !w.restarted && !w.paused);
                    }
                    Refresh::Wait(reason) => {
                        // What it says is a sentence, whatever it is.
                        prop_assert!(!reason.to_string().is_empty());
                    }
                }
            }
            // Draining never leaves a node with a running Job's pod before
            // its kubelet refreshed it, and never evicts past a budget.
            if let Drain::Evict = drain(&pod, std::slice::from_ref(&budget), &horizon) {
                prop_assert!(!mirror && !deleting);
                prop_assert!(!matches!(phase, Phase::Succeeded | Phase::Failed));
                prop_assert!(eviction_blocked(&pod, std::slice::from_ref(&budget)).is_none());
            }
        }
    }
}
