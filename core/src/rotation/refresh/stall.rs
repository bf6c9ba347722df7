//! Rollouts that cannot progress. Once ksa has restarted a workload's pod
//! template, its old pods wait for the rollout to replace them
//! ([`HolderReason::RolloutInProgress`]). When the cluster says the rollout
//! cannot progress, they wait for an operator instead, and are named
//! blocked ([`HolderReason::RolloutBlocked`]) with the reason and message
//! the cluster gives, rather than "rolling out" until their kubelet
//! refreshes their tokens.
//!
//! The signals, and why each:
//!
//! - The Deployment's `ReplicaFailure` condition is true: its ReplicaSet
//!   cannot create (or delete) pods. The deployment controller copies the
//!   condition from the new ReplicaSet, with the API server's refusal as
//!   its message (`pods "web-x" is forbidden: exceeded quota: ...`), and
//!   removes it once a create succeeds.
//! - The Deployment's `Progressing` condition is false with reason
//!   `ProgressDeadlineExceeded`: no progress within its
//!   `progressDeadlineSeconds`.
//!
//!   Both are read only once the deployment controller has observed the
//!   Deployment's current generation: until then they may describe the
//!   template before ksa restarted it.
//! - A replacement pod (made from the template restarted for this
//!   rotation: it carries the restart annotation, and is neither being
//!   deleted nor finished) that cannot be scheduled (`PodScheduled=False`,
//!   reason `Unschedulable`, with the scheduler's message), or with a
//!   container (or init container) waiting because it keeps crashing
//!   (`CrashLoopBackOff`), cannot get its image (`ErrImagePull`,
//!   `ImagePullBackOff`, `InvalidImageName`, `ErrImageNeverPull`) or cannot
//!   be created from its spec (`CreateContainerConfigError`). The pods that
//!   predate the restart are not asked: an old pod that crash-loops does
//!   not stop its replacement.
//!
//! Nothing is remembered from one pass to the next: a holder is blocked
//! exactly while a signal is there, so once the operator has fixed what
//! the cluster named, the next pass says "rolling out" again and the
//! rotation goes on by itself. When there are several signals, the one
//! named is the first by [`StallKind`] (a cause before the deadline it
//! makes the Deployment miss), then by pod and container name, so the text
//! does not depend on the order pods are listed in.

use std::collections::BTreeMap;

use super::{Controller, Horizon, Pod, Verdict, Workload};
use crate::rotation::{HolderReason, Holders, MAX_NAMED, NamedHolder, Stall, StallKind};

/// A condition of an object's status, as the API reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Condition<'a> {
    /// `True`, `False` or `Unknown`.
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

/// A container (or init container) of a pod that is waiting, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContainerWaiting<'a> {
    pub container: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

/// What a Deployment's status says of its rollout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RolloutStatus<'a> {
    /// `status.observedGeneration` has reached `metadata.generation`: its
    /// conditions are about the current template.
    pub observed: bool,
    /// Its `ReplicaFailure` condition.
    pub replica_failure: Option<Condition<'a>>,
    /// Its `Progressing` condition.
    pub progressing: Option<Condition<'a>>,
}

/// What a workload's own status says stops its rollout, if anything.
pub fn workload_stall(status: &RolloutStatus<'_>) -> Option<Stall> {
    if !status.observed {
        return None;
    }
    let failure = status
        .replica_failure
        .filter(|c| c.status == "True")
        .map(|c| {
            let reason = if c.reason.is_empty() {
                "ReplicaFailure"
            } else {
                c.reason
            };
            Stall::new(StallKind::ReplicaFailure, reason, c.message, "", "")
        });
    let deadline = status
        .progressing
        .filter(|c| c.status == "False" && c.reason == "ProgressDeadlineExceeded")
        .map(|c| Stall::new(StallKind::ProgressDeadline, c.reason, c.message, "", ""));
    [failure, deadline].into_iter().flatten().reduce(first)
}

/// The kind of stall a waiting container's reason is, if it is one.
fn waiting_kind(reason: &str) -> Option<StallKind> {
    match reason {
        "CrashLoopBackOff" => Some(StallKind::CrashLoop),
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
            Some(StallKind::ImagePull)
        }
        "CreateContainerConfigError" => Some(StallKind::ContainerConfig),
        _ => None,
    }
}

/// Whether `pod` was made from its workload's template restarted for this
/// rotation, and is still meant to run.
fn replacement(pod: &Pod<'_>, horizon: &Horizon<'_>) -> bool {
    matches!(pod.controller, Controller::Workload(w) if w.restarted)
        && pod.restarted_for == Some(horizon.version)
        && !pod.deleting
        && !pod.phase.finished()
}

/// What `pod` says stops its workload's rollout: only a replacement pod
/// is asked.
pub fn pod_stall(pod: &Pod<'_>, horizon: &Horizon<'_>) -> Option<Stall> {
    if !replacement(pod, horizon) {
        return None;
    }
    let unschedulable = pod
        .pod_scheduled
        .filter(|c| c.status == "False" && c.reason == "Unschedulable")
        .map(|c| Stall::new(StallKind::Unschedulable, c.reason, c.message, pod.name, ""));
    let containers = pod.waiting.iter().filter_map(|w| {
        waiting_kind(w.reason)
            .map(|kind| Stall::new(kind, w.reason, w.message, pod.name, w.container))
    });
    unschedulable.into_iter().chain(containers).reduce(first)
}

/// Of two stalls, the one to name: the first by kind, then by pod,
/// container, reason and message.
fn first(a: Stall, b: Stall) -> Stall {
    let key = |s: &Stall| {
        (
            s.kind,
            s.pod.clone(),
            s.container.clone(),
            s.reason.clone(),
            s.message.clone(),
        )
    };
    if key(&b) < key(&a) { b } else { a }
}

/// A restarted workload some of whose pods wait for its rollout.
#[derive(Debug)]
struct Rollout {
    reason: HolderReason,
    stall: Option<Stall>,
    /// How many of its pods wait for it.
    waiting: u64,
    /// The first few of them by name (namespace, name).
    named: Vec<(String, String)>,
}

/// The stale bound-token holders of one pass, gathered pod by pod: how
/// many, and who, each with why. A holder that waits for its workload's
/// rollout is named blocked when the rollout is stalled, whether the
/// workload says so or one of its replacement pods, listed before or
/// after it: those are recorded once every pod was seen
/// ([`Tally::finish`]).
#[derive(Debug)]
pub struct Tally {
    stale: u64,
    holders: Holders,
    /// By workload uid.
    rollouts: BTreeMap<String, Rollout>,
    max_tracked: usize,
}

impl Tally {
    /// A tally that follows at most `max_tracked` rollouts; the holders of
    /// any more are named rolling out, whatever stops their rollout.
    pub fn new(max_tracked: usize) -> Tally {
        Tally {
            stale: 0,
            holders: Holders::default(),
            rollouts: BTreeMap::new(),
            max_tracked,
        }
    }

    /// The rollout of `workload`, followed from now on if there is room.
    fn rollout(&mut self, workload: &Workload) -> Option<&mut Rollout> {
        if !self.rollouts.contains_key(&workload.uid) && self.rollouts.len() >= self.max_tracked {
            return None;
        }
        Some(
            self.rollouts
                .entry(workload.uid.clone())
                .or_insert_with(|| Rollout {
                    reason: HolderReason::RolloutInProgress {
                        kind: workload.kind,
                        workload: workload.name.clone(),
                    },
                    stall: workload.stall.clone(),
                    waiting: 0,
                    named: Vec::new(),
                }),
        )
    }

    /// Takes in `pod` and its verdict ([`super::assess`]).
    pub fn see(&mut self, pod: &Pod<'_>, verdict: &Verdict<'_>, horizon: &Horizon<'_>) {
        if let Controller::Workload(workload) = pod.controller
            && let Some(stall) = pod_stall(pod, horizon)
            && let Some(rollout) = self.rollout(workload)
        {
            rollout.stall = Some(match rollout.stall.take() {
                Some(seen) => first(seen, stall),
                None => stall,
            });
        }
        let Verdict::Stale(refresh) = verdict else {
            return;
        };
        self.stale = self.stale.saturating_add(1);
        let reason = refresh.reason();
        if let (HolderReason::RolloutInProgress { .. }, Controller::Workload(workload)) =
            (&reason, pod.controller)
            && let Some(rollout) = self.rollout(workload)
        {
            rollout.waiting = rollout.waiting.saturating_add(1);
            if rollout.named.len() < MAX_NAMED {
                rollout
                    .named
                    .push((pod.namespace.to_owned(), pod.name.to_owned()));
            }
            return;
        }
        self.holders
            .record(NamedHolder::new(pod.namespace, pod.name, reason));
    }

    /// How many holders are stale, and who.
    pub fn finish(self) -> (u64, Holders) {
        let mut holders = self.holders;
        for rollout in self.rollouts.into_values() {
            let reason = match (rollout.reason, rollout.stall) {
                (HolderReason::RolloutInProgress { kind, workload }, Some(stall)) => {
                    HolderReason::RolloutBlocked {
                        kind,
                        workload,
                        stall,
                    }
                }
                (reason, _) => reason,
            };
            for (namespace, name) in &rollout.named {
                holders.record(NamedHolder::new(namespace, name, reason.clone()));
            }
            let named = rollout.named.len() as u64;
            holders.count(reason.category(), rollout.waiting.saturating_sub(named));
        }
        (self.stale, holders)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{horizon, pod, workload};
    use super::super::{Strategy, assess};
    use super::*;
    use crate::rotation::{HolderCategory, WorkloadKind};

    fn restarted(stall: Option<Stall>) -> Workload {
        Workload {
            restarted: true,
            stall,
            ..workload(WorkloadKind::Deployment, Strategy::Replace)
        }
    }

    /// What the tally says of `pods`, seen in this order.
    fn tally(pods: &[Pod<'_>]) -> (u64, Holders) {
        let h = horizon(10);
        let mut tally = Tally::new(100);
        for p in pods {
            tally.see(p, &assess(p, &[], &h), &h);
        }
        tally.finish()
    }

    fn old<'a>(name: &'static str, web: &'a Workload) -> Pod<'a> {
        Pod {
            controller: Controller::Workload(web),
            ..pod(name)
        }
    }

    /// A replacement pod: created after the step, from the restarted
    /// template, not scheduled yet.
    fn new<'a>(name: &'static str, web: &'a Workload) -> Pod<'a> {
        Pod {
            created: Some(super::super::fixtures::at(5)),
            started: None,
            scheduled: false,
            ready: false,
            phase: super::super::Phase::Pending,
            restarted_for: Some("2"),
            controller: Controller::Workload(web),
            ..pod(name)
        }
    }

    const QUOTA: &str = r#"pods "web-5d9f8-x7k2p" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1"#;
    const SCHEDULER: &str = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.";

    #[test]
    fn a_full_quota_names_the_holders_blocked_with_the_replicasets_message() {
        let status = RolloutStatus {
            observed: true,
            replica_failure: Some(Condition {
                status: "True",
                reason: "FailedCreate",
                message: QUOTA,
            }),
            progressing: Some(Condition {
                status: "True",
                reason: "ReplicaSetUpdated",
                message: "ReplicaSet \"web-5d9f8\" is progressing.",
            }),
        };
        let web = restarted(workload_stall(&status));
        let (stale, holders) = tally(&[old("web-a", &web), old("web-b", &web)]);
        assert_eq!(stale, 2);
        assert_eq!(
            holders.counts,
            BTreeMap::from([(HolderCategory::Blocked, 2)])
        );
        assert_eq!(
            holders.named[0].to_string(),
            format!(
                "apps/web-a (Deployment web: rollout blocked, its ReplicaSet cannot create pods (FailedCreate): {QUOTA})"
            )
        );
        assert_eq!(holders.blocked().count(), 2);
        // Before the deployment controller has seen the restarted
        // template, its conditions say nothing of it.
        let stale_status = RolloutStatus {
            observed: false,
            ..status
        };
        assert_eq!(workload_stall(&stale_status), None);
        // Once a create succeeds, the condition goes, and so does the
        // block.
        let cleared = RolloutStatus {
            replica_failure: None,
            ..status
        };
        let web = restarted(workload_stall(&cleared));
        let (_, holders) = tally(&[old("web-a", &web)]);
        assert_eq!(holders.blocked().count(), 0);
        assert_eq!(
            holders.named[0].reason,
            HolderReason::RolloutInProgress {
                kind: WorkloadKind::Deployment,
                workload: "web".into()
            }
        );
    }

    #[test]
    fn an_unschedulable_replacement_blocks_its_workloads_holders_whatever_the_order() {
        let web = restarted(None);
        let mut stuck = new("web-new", &web);
        stuck.pod_scheduled = Some(Condition {
            status: "False",
            reason: "Unschedulable",
            message: SCHEDULER,
        });
        let expected = format!(
            "apps/web-a (Deployment web: rollout blocked, replacement pod web-new cannot be scheduled (Unschedulable): {SCHEDULER})"
        );
        for pods in [
            [old("web-a", &web), stuck.clone()],
            [stuck.clone(), old("web-a", &web)],
        ] {
            let (stale, holders) = tally(&pods);
            assert_eq!(stale, 1);
            assert_eq!(holders.named.len(), 1);
            assert_eq!(holders.named[0].to_string(), expected);
        }
        // An old pod that cannot be scheduled says nothing of the rollout;
        // nor does a pod of another workload, or one being deleted.
        let mut old_stuck = stuck.clone();
        old_stuck.restarted_for = Some("1");
        let other = restarted(None);
        let other = Workload {
            uid: "other-uid".into(),
            name: "other".into(),
            ..other
        };
        let mut elsewhere = stuck.clone();
        elsewhere.controller = Controller::Workload(&other);
        let mut going = stuck.clone();
        going.deleting = true;
        for quiet in [old_stuck, elsewhere, going] {
            let (_, holders) = tally(&[old("web-a", &web), quiet]);
            assert_eq!(holders.blocked().count(), 0, "{holders}");
        }
        // Still pending for another reason (gated): not a stall.
        let mut gated = stuck.clone();
        gated.pod_scheduled = Some(Condition {
            status: "False",
            reason: "SchedulingGated",
            message: "",
        });
        assert_eq!(pod_stall(&gated, &horizon(10)), None);
    }

    #[test]
    fn crash_loops_image_pulls_bad_configs_and_deadlines_are_named_as_the_cluster_says() {
        let web = restarted(None);
        let waiting = |reason: &'static str, message: &'static str| {
            let mut p = new("web-new", &web);
            p.scheduled = true;
            p.waiting = vec![
                ContainerWaiting {
                    container: "sidecar",
                    reason: "ContainerCreating",
                    message: "",
                },
                ContainerWaiting {
                    container: "app",
                    reason,
                    message,
                },
            ];
            pod_stall(&p, &horizon(10)).map(|s| s.to_string())
        };
        assert_eq!(
            waiting(
                "CrashLoopBackOff",
                "back-off 40s restarting failed container=app pod=web-new_apps(uid)"
            )
            .as_deref(),
            Some(
                "container app of replacement pod web-new keeps crashing (CrashLoopBackOff): back-off 40s restarting failed container=app pod=web-new_apps(uid)"
            )
        );
        for reason in [
            "ErrImagePull",
            "ImagePullBackOff",
            "InvalidImageName",
            "ErrImageNeverPull",
        ] {
            assert_eq!(
                waiting(reason, "").as_deref(),
                Some(
                    format!(
                        "container app of replacement pod web-new cannot pull its image ({reason})"
                    )
                    .as_str()
                )
            );
        }
        assert_eq!(
            waiting("CreateContainerConfigError", "secret \"db\" not found").as_deref(),
            Some(
                "container app of replacement pod web-new cannot be created from its spec (CreateContainerConfigError): secret \"db\" not found"
            )
        );
        assert_eq!(waiting("ContainerCreating", ""), None);
        let deadline = RolloutStatus {
            observed: true,
            replica_failure: None,
            progressing: Some(Condition {
                status: "False",
                reason: "ProgressDeadlineExceeded",
                message: "ReplicaSet \"web-5d9f8\" has timed out progressing.",
            }),
        };
        assert_eq!(
            workload_stall(&deadline).map(|s| s.to_string()).as_deref(),
            Some(
                "no progress within its progress deadline (ProgressDeadlineExceeded): ReplicaSet \"web-5d9f8\" has timed out progressing."
            )
        );
        // Progressing, or complete: no stall.
        for (status, reason) in [
            ("True", "NewReplicaSetAvailable"),
            ("Unknown", "ProgressDeadlineExceeded"),
        ] {
            let fine = RolloutStatus {
                progressing: Some(Condition {
                    status,
                    reason,
                    message: "",
                }),
                ..deadline
            };
            assert_eq!(workload_stall(&fine), None);
        }
    }

    #[test]
    fn the_cause_is_named_before_the_deadline_it_makes_the_deployment_miss() {
        let both = RolloutStatus {
            observed: true,
            replica_failure: Some(Condition {
                status: "True",
                reason: "FailedCreate",
                message: QUOTA,
            }),
            progressing: Some(Condition {
                status: "False",
                reason: "ProgressDeadlineExceeded",
                message: "timed out",
            }),
        };
        assert_eq!(
            workload_stall(&both).map(|s| s.kind),
            Some(StallKind::ReplicaFailure)
        );
        // A deadline on the Deployment, an unschedulable pod: the pod.
        let web = restarted(Some(Stall::new(
            StallKind::ProgressDeadline,
            "ProgressDeadlineExceeded",
            "timed out",
            "",
            "",
        )));
        let mut stuck = new("web-new", &web);
        stuck.pod_scheduled = Some(Condition {
            status: "False",
            reason: "Unschedulable",
            message: SCHEDULER,
        });
        let (_, holders) = tally(&[old("web-a", &web), stuck]);
        assert!(
            matches!(
                &holders.named[0].reason,
                HolderReason::RolloutBlocked { stall, .. } if stall.kind == StallKind::Unschedulable
            ),
            "{holders}"
        );
    }

    #[test]
    fn many_holders_are_counted_and_a_few_named_and_other_holders_pass_through() {
        let web = restarted(Some(Stall::new(
            StallKind::ReplicaFailure,
            "FailedCreate",
            QUOTA,
            "",
            "",
        )));
        let names = [
            "web-0", "web-1", "web-2", "web-3", "web-4", "web-5", "web-6", "web-7",
        ];
        let mut pods: Vec<Pod<'_>> = names.iter().map(|n| old(n, &web)).collect();
        pods.push(pod("bare"));
        let (stale, holders) = tally(&pods);
        assert_eq!(stale, 9);
        assert_eq!(holders.total(), 9);
        assert_eq!(holders.counts[&HolderCategory::Blocked], 8);
        assert_eq!(holders.counts[&HolderCategory::Eviction], 1);
        assert_eq!(holders.named.len(), MAX_NAMED);
        assert!(holders.to_string().ends_with(" and 4 more"), "{holders}");
        // Past the rollouts it follows, a tally names holders rolling out.
        let h = horizon(10);
        let mut small = Tally::new(0);
        for p in &pods {
            small.see(p, &assess(p, &[], &h), &h);
        }
        let (stale, holders) = small.finish();
        assert_eq!(stale, 9);
        assert_eq!(holders.counts[&HolderCategory::Rollout], 8);
        assert_eq!(holders.blocked().count(), 0);
    }

    #[test]
    fn messages_are_bounded_and_cannot_forge_lines() {
        let long = format!("evil\nline {}", "m".repeat(10_000));
        let stall = Stall::new(StallKind::CrashLoop, "CrashLoopBackOff", &long, "p", "c\r");
        assert_eq!(stall.message.len(), crate::rotation::MAX_MESSAGE_BYTES);
        let text = stall.to_string();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        assert!(text.contains("evil\\nline"), "{text}");
        assert!(text.len() < 600, "{}", text.len());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::super::fixtures::{at, horizon, pod, workload};
    use super::super::{Phase, Strategy as Update, assess};
    use super::*;
    use crate::rotation::WorkloadKind;

    const WAITING: [&str; 8] = [
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "ContainerCreating",
        "PodInitializing",
    ];

    /// A condition's status and reason: the stalling ones and the ones
    /// that are not.
    fn condition() -> impl Strategy<Value = Option<(&'static str, &'static str)>> {
        prop::option::of((
            prop::sample::select(vec!["True", "False", "Unknown"]),
            prop::sample::select(vec![
                "FailedCreate",
                "Unschedulable",
                "ProgressDeadlineExceeded",
                "NewReplicaSetAvailable",
                "SchedulingGated",
                "",
            ]),
        ))
    }

    /// A replacement pod: its PodScheduled condition, its containers'
    /// waiting reasons, and whether it is from this rotation's template.
    fn replacement() -> impl Strategy<
        Value = (
            Option<(&'static str, &'static str)>,
            Vec<&'static str>,
            bool,
        ),
    > {
        (
            condition(),
            prop::collection::vec(prop::sample::select(WAITING.to_vec()), 0..3),
            any::<bool>(),
        )
    }

    proptest! {
        /// A holder waiting for its workload's rollout is named blocked
        /// exactly when a stall signal is there (on the Deployment once it
        /// observed the restart, or on one of its replacement pods), with
        /// the same reason whatever the order the pods are seen in; once
        /// the signals clear, it is named rolling out again.
        #[test]
        fn a_holder_is_blocked_exactly_while_a_stall_signal_is_there(
            observed in any::<bool>(),
            failure in condition(),
            progressing in condition(),
            replacements in prop::collection::vec(replacement(), 0..4),
            olds in 1..4usize,
            rotate in 0..8usize,
        ) {
            let cond = |c: Option<(&'static str, &'static str)>| c.map(|(status, reason)| Condition { status, reason, message: "m" });
            let status = RolloutStatus { observed, replica_failure: cond(failure), progressing: cond(progressing) };
            let expected_workload = observed
                && (failure.is_some_and(|(s, _)| s == "True")
                    || progressing == Some(("False", "ProgressDeadlineExceeded")));
            let expected_pods = replacements.iter().any(|(scheduled, waiting, current)| {
                *current
                    && (*scheduled == Some(("False", "Unschedulable"))
                        || waiting.iter().any(|w| !matches!(*w, "ContainerCreating" | "PodInitializing")))
            });
            let web = Workload {
                restarted: true,
                stall: workload_stall(&status),
                ..workload(WorkloadKind::Deployment, Update::Replace)
            };
            let names = ["web-n0", "web-n1", "web-n2", "web-n3"];
            let mut pods: Vec<Pod<'_>> = (0..olds)
                .map(|i| Pod { controller: Controller::Workload(&web), ..pod(["web-o0", "web-o1", "web-o2"][i]) })
                .collect();
            for (i, (scheduled, waiting, current)) in replacements.iter().enumerate() {
                pods.push(Pod {
                    created: Some(at(5)),
                    started: None,
                    phase: Phase::Pending,
                    restarted_for: Some(if *current { "2" } else { "1" }),
                    pod_scheduled: cond(*scheduled),
                    waiting: waiting
                        .iter()
                        .map(|reason| ContainerWaiting { container: "app", reason, message: "m" })
                        .collect(),
                    controller: Controller::Workload(&web),
                    ..pod(names[i])
                });
            }
            let h = horizon(10);
            let run = |pods: &[Pod<'_>]| {
                let mut tally = Tally::new(10);
                for p in pods {
                    tally.see(p, &assess(p, &[], &h), &h);
                }
                tally.finish()
            };
            let (stale, holders) = run(&pods);
            prop_assert_eq!(stale, olds as u64);
            prop_assert_eq!(holders.total(), olds as u64);
            let blocked = expected_workload || expected_pods;
            for named in &holders.named {
                prop_assert_eq!(named.reason.is_blocked(), blocked, "{}", named);
            }
            prop_assert_eq!(holders.blocked().count(), if blocked { olds } else { 0 });
            // Whatever the order.
            let len = pods.len();
            pods.rotate_left(rotate % len);
            pods.reverse();
            let (_, again) = run(&pods);
            prop_assert_eq!(
                again.named.iter().map(|n| n.reason.clone()).collect::<Vec<_>>(),
                holders.named.iter().map(|n| n.reason.clone()).collect::<Vec<_>>()
            );
            // Once the operator has fixed it: rolling out.
            let fixed = Workload { stall: None, ..web.clone() };
            let healthy: Vec<Pod<'_>> = pods
                .iter()
                .map(|p| Pod {
                    pod_scheduled: None,
                    waiting: Vec::new(),
                    controller: Controller::Workload(&fixed),
                    ..p.clone()
                })
                .collect();
            let (_, after) = run(&healthy);
            prop_assert_eq!(after.blocked().count(), 0);
            prop_assert_eq!(after.total(), olds as u64);
        }
    }
}
