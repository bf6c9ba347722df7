//! The pods, workloads and budgets the rules' tests start from.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::{Budget, Controller, Horizon, Phase, Pod, Requirement, Selector, Strategy, Workload};
use crate::rotation::WorkloadKind;

const SINCE: &str = "2026-05-01T12:00:00Z";

pub(super) fn at(offset: i64) -> Timestamp {
    let since: Timestamp = SINCE.parse().expect("time");
    Timestamp::from_second(since.as_second() + offset).expect("time")
}

pub(super) fn horizon(now: i64) -> Horizon<'static> {
    Horizon {
        since: at(0),
        now: at(now),
        skew: Duration::from_secs(60),
        version: "2",
    }
}

pub(super) fn no_labels() -> &'static BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    &EMPTY
}

/// A running, ready, scheduled pod with the default token, created an
/// hour before the step, with no controller.
pub(super) fn pod(name: &'static str) -> Pod<'static> {
    Pod {
        namespace: "apps",
        name,
        uid: "pod-uid",
        labels: no_labels(),
        phase: Phase::Running,
        scheduled: true,
        created: Some(at(-3600)),
        started: Some(at(-3590)),
        deleting: false,
        evicted: false,
        ready: true,
        mirror: false,
        restarted_for: None,
        token_seconds: Some(3607),
        controller: Controller::None,
        pod_scheduled: None,
        waiting: Vec::new(),
    }
}

pub(super) fn workload(kind: WorkloadKind, strategy: Strategy) -> Workload {
    Workload {
        kind,
        uid: "workload-uid".into(),
        namespace: "apps".into(),
        name: "web".into(),
        strategy,
        restarted: false,
        paused: false,
        stall: None,
    }
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn budget(name: &str, app: &str, allowed: i32) -> Budget {
    Budget {
        name: name.into(),
        selector: Selector::new(Some(vec![Requirement::label("app", app)])),
        disruptions_allowed: allowed,
        processed: true,
        always_allow_unhealthy: false,
        current_healthy: 1,
        desired_healthy: 1,
    }
}
