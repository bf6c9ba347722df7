//! What `recreate-nodes` does with each pod of the node it drains.

use super::{Budget, Controller, DEFAULT_TOKEN_SECONDS, Horizon, Pod, deleting, eviction_blocked};
use crate::rotation::{HolderReason, WorkloadKind};

/// What `recreate-nodes` does with a pod on the node it drains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Nothing: it goes with the node (a DaemonSet's pod, a static pod's
    /// mirror, a finished pod, or one past its kubelet refresh whose
    /// deletion is stuck).
    Leave,
    /// Evict it before the node is deleted.
    Evict,
    /// The node waits for it, for the reason given.
    Wait(HolderReason),
}

/// What draining does with `pod`: everything but a DaemonSet's pods and
/// static pods is evicted (through the Eviction API, so PodDisruptionBudgets
/// hold), as `kubectl drain --ignore-daemonsets --force` does, except that a
/// running Job's pod is waited for until it finishes or its kubelet has
/// refreshed its token: only then is it evicted.
pub fn drain(pod: &Pod<'_>, budgets: &[Budget], horizon: &Horizon<'_>) -> Drain {
    if pod.mirror || pod.phase.finished() {
        return Drain::Leave;
    }
    let daemon = match pod.controller {
        Controller::Workload(workload) => workload.kind == WorkloadKind::DaemonSet,
        Controller::Other { kind, .. } => kind == "DaemonSet",
        Controller::None | Controller::Job => false,
    };
    if daemon {
        return Drain::Leave;
    }
    let refreshed_by =
        horizon.kubelet_refreshed_by(pod.token_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS));
    if pod.deleting {
        // A deletion stuck past the kubelet's refresh (a node that is
        // gone) holds nothing up: the node's deletion ends it.
        return if horizon.now >= refreshed_by {
            Drain::Leave
        } else {
            Drain::Wait(deleting(pod))
        };
    }
    if pod.controller == Controller::Job && horizon.now < refreshed_by {
        return Drain::Wait(HolderReason::RunningJob {
            until: refreshed_by,
        });
    }
    match eviction_blocked(pod, budgets) {
        Some(blocked) => Drain::Wait(blocked),
        None => Drain::Evict,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{at, budget, horizon, labels, pod, workload};
    use super::super::{Phase, Strategy};
    use super::*;

    #[test]
    fn draining_a_node_evicts_all_but_daemons_static_pods_and_running_jobs() {
        let h = horizon(10);
        assert_eq!(drain(&pod("bare"), &[], &h), Drain::Evict);
        let no_token = Pod {
            token_seconds: None,
            ..pod("no-token")
        };
        assert_eq!(drain(&no_token, &[], &h), Drain::Evict);
        let mirror = Pod {
            mirror: true,
            ..pod("etcd-node-0")
        };
        assert_eq!(drain(&mirror, &[], &h), Drain::Leave);
        let daemon = Pod {
            controller: Controller::Other {
                kind: "DaemonSet",
                uid: "ds",
            },
            ..pod("agent-x")
        };
        assert_eq!(drain(&daemon, &[], &h), Drain::Leave);
        let ds = workload(WorkloadKind::DaemonSet, Strategy::Replace);
        let daemon = Pod {
            controller: Controller::Workload(&ds),
            ..pod("agent-y")
        };
        assert_eq!(drain(&daemon, &[], &h), Drain::Leave);
        let done = Pod {
            phase: Phase::Succeeded,
            controller: Controller::Job,
            ..pod("job-done")
        };
        assert_eq!(drain(&done, &[], &h), Drain::Leave);
        let job = Pod {
            controller: Controller::Job,
            ..pod("job-running")
        };
        assert_eq!(
            drain(&job, &[], &h),
            Drain::Wait(HolderReason::RunningJob { until: at(3065) })
        );
        assert_eq!(drain(&job, &[], &horizon(3065)), Drain::Evict);
        let guarded_labels = labels(&[("app", "guarded")]);
        let guarded = Pod {
            labels: &guarded_labels,
            ..pod("guarded")
        };
        assert!(matches!(
            drain(&guarded, &[budget("guarded-pdb", "guarded", 0)], &h),
            Drain::Wait(HolderReason::DisruptionBudget { .. })
        ));
        let going = Pod {
            deleting: true,
            ..pod("going")
        };
        assert_eq!(
            drain(&going, &[], &h),
            Drain::Wait(HolderReason::Terminating)
        );
        assert_eq!(drain(&going, &[], &horizon(3065)), Drain::Leave);
    }
}
