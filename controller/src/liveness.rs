//! Whether the controller is alive, for `/livez`: not merely that the
//! process answers HTTP, but that, while this replica leads, its watch of
//! rotations and its reconcile loop make progress. A replica that stands
//! by has nothing to make progress on, and is live.
//!
//! While it leads, `/livez` fails when:
//! - the watch has not listed the rotations [`SYNC_BOUND`] after this
//!   replica began to lead;
//! - a reconcile has run longer than [`RECONCILE_BOUND`] (stuck);
//! - no reconcile has started or ended for [`LOOP_BOUND`] though rotations
//!   are watched (each is reconciled again within 5 minutes, whatever its
//!   outcome: the loop stopped);
//! - a status the controller wrote has not come back through its watch
//!   within [`ECHO_BOUND`] (the watch is stuck: it would act on what it
//!   last saw).
//!
//! The kubelet then restarts the container, and another replica takes the
//! lead. An API server that does not answer is no reason to restart: the
//! replica loses the lead (its Lease is not renewed) and `/readyz` fails.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ksa_kube::api::KSASigningKeyRotation;
use kube::ResourceExt as _;
use kube::runtime::reflector::{ObjectRef, Store};

/// How long the watch may take to list the rotations.
pub const SYNC_BOUND: Duration = Duration::from_secs(5 * 60);
/// How long one reconcile may run.
pub const RECONCILE_BOUND: Duration = Duration::from_secs(10 * 60);
/// How long the loop may be idle while rotations are watched: twice the
/// longest a rotation waits to be reconciled again (5 minutes).
pub const LOOP_BOUND: Duration = Duration::from_secs(10 * 60);
/// How long a status write may take to come back through the watch.
pub const ECHO_BOUND: Duration = Duration::from_secs(2 * 60);

type Rotation = ObjectRef<KSASigningKeyRotation>;

/// What `/livez` checks; shared by the HTTP server and the controller.
#[derive(Default)]
pub struct Liveness(Mutex<State>);

#[derive(Default)]
struct State {
    /// The last term this replica led.
    term: u64,
    /// The current term, while this replica leads.
    leading: Option<Leading>,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Liveness(..)")
    }
}

/// The progress of one term as leader.
struct Leading {
    since: Instant,
    /// The controller's view of the rotations.
    store: Store<KSASigningKeyRotation>,
    /// When the watch first listed them.
    synced: Option<Instant>,
    /// Reconciles running, and since when.
    running: HashMap<Rotation, Instant>,
    /// When a reconcile last started or ended.
    last_activity: Option<Instant>,
    /// Status writes not yet seen through the watch: the resourceVersion
    /// the write replaced, and when it was made.
    unechoed: HashMap<Rotation, (String, Instant)>,
}

/// A reconcile in progress: ends it in [`Liveness`] when dropped (a
/// reconcile future dropped midway ends too).
#[derive(Debug)]
pub struct Running<'a> {
    liveness: &'a Liveness,
    rotation: Rotation,
    started: Instant,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let now = Instant::now().max(self.started);
        self.liveness.with(|leading| {
            leading.running.remove(&self.rotation);
            leading.last_activity = Some(now);
        });
    }
}

impl Liveness {
    fn with(&self, f: impl FnOnce(&mut Leading)) {
        if let Some(leading) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leading
            .as_mut()
        {
            f(leading);
        }
    }

    /// This replica leads from `now`, with the controller's `store`;
    /// returns the term, for [`Liveness::synced`].
    pub fn lead(&self, store: Store<KSASigningKeyRotation>, now: Instant) -> u64 {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.term += 1;
        state.leading = Some(Leading {
            since: now,
            store,
            synced: None,
            running: HashMap::new(),
            last_activity: None,
            unechoed: HashMap::new(),
        });
        state.term
    }

    /// This replica stands by: nothing to check.
    pub fn stand_by(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).leading = None;
    }

    /// The watch of `term` listed the rotations at `now`.
    pub fn synced(&self, term: u64, now: Instant) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.term == term
            && let Some(leading) = state.leading.as_mut()
            && leading.synced.is_none()
        {
            leading.synced = Some(now);
        }
    }

    /// A reconcile of `resource` starts at `now`; it ends when the result
    /// is dropped.
    pub fn reconciling(&self, resource: &KSASigningKeyRotation, now: Instant) -> Running<'_> {
        let rotation = ObjectRef::from_obj(resource);
        self.with(|leading| {
            leading.running.insert(rotation.clone(), now);
            leading.last_activity = Some(now);
        });
        Running {
            liveness: self,
            rotation,
            started: now,
        }
    }

    /// The controller wrote `before`'s status at `now`, and the API server
    /// answered with `after`: unless nothing changed, the watch must
    /// deliver the change.
    pub fn wrote(
        &self,
        before: &KSASigningKeyRotation,
        after: &KSASigningKeyRotation,
        now: Instant,
    ) {
        let (Some(replaced), Some(written)) = (before.resource_version(), after.resource_version())
        else {
            return;
        };
        if replaced == written {
            return;
        }
        let rotation = ObjectRef::from_obj(before);
        self.with(|leading| {
            leading.unechoed.entry(rotation).or_insert((replaced, now));
        });
    }

    /// What keeps the controller from making progress as of `now`; empty
    /// when it is live.
    pub fn problems(&self, now: Instant) -> Vec<String> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(leading) = state.leading.as_mut() else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let Some(synced) = leading.synced else {
            if now.saturating_duration_since(leading.since) > SYNC_BOUND {
                problems.push(format!(
                    "the watch of KSASigningKeyRotations has not listed them in {}s since this replica began to lead",
                    SYNC_BOUND.as_secs()
                ));
            }
            return problems;
        };
        let mut stuck: Vec<String> = leading
            .running
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) > RECONCILE_BOUND)
            .map(|(rotation, since)| {
                format!(
                    "the reconcile of {} has run for {}s (more than {}s)",
                    named(rotation),
                    now.saturating_duration_since(*since).as_secs(),
                    RECONCILE_BOUND.as_secs()
                )
            })
            .collect();
        stuck.sort();
        problems.extend(stuck);
        let last = leading.last_activity.unwrap_or(synced).max(synced);
        let watched = leading.store.len();
        if leading.running.is_empty()
            && watched > 0
            && now.saturating_duration_since(last) > LOOP_BOUND
        {
            problems.push(format!(
                "no reconcile for {}s though {watched} rotation(s) are watched (each is reconciled at least every 5 minutes)",
                now.saturating_duration_since(last).as_secs()
            ));
        }
        // A write is seen once the watched object is another than the one
        // the write replaced (or is gone).
        let store = leading.store.clone();
        leading.unechoed.retain(|rotation, (replaced, _)| {
            store
                .get(rotation)
                .is_some_and(|seen| seen.resource_version().as_deref() == Some(replaced.as_str()))
        });
        let mut unseen: Vec<String> = leading
            .unechoed
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) > ECHO_BOUND)
            .map(|(rotation, (_, at))| {
                format!(
                    "the watch has not delivered the status written to {} {}s ago",
                    named(rotation),
                    now.saturating_duration_since(*at).as_secs()
                )
            })
            .collect();
        unseen.sort();
        problems.extend(unseen);
        problems
    }
}

/// Waits until the watch behind `store` has listed the rotations; false
/// when it never will (its stream is gone).
///
/// Asked again each second: a `Store::wait_until_ready` that began before
/// the controller's stream was first polled is not always woken
/// (kube-runtime 5.0; `tests/store_listed.rs`), so each wait is short and
/// the next one finds the store ready.
pub async fn listed(store: &Store<KSASigningKeyRotation>) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
            Ok(ready) => return ready.is_ok(),
            Err(_) => continue,
        }
    }
}

fn named(rotation: &Rotation) -> String {
    match &rotation.namespace {
        Some(namespace) => format!("{namespace}/{}", rotation.name),
        None => rotation.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher;

    fn rotation(name: &str, resource_version: &str) -> KSASigningKeyRotation {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ksa.dev/v1alpha1",
            "kind": "KSASigningKeyRotation",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": resource_version},
            "spec": {"keyVersion": 2},
        }))
        .expect("a rotation")
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_replica_that_stands_by_is_live() {
        let liveness = Liveness::default();
        let start = Instant::now();
        assert!(liveness.problems(start + 60 * MINUTE).is_empty());
        let (reader, _writer) = store();
        liveness.lead(reader, start);
        liveness.stand_by();
        assert!(liveness.problems(start + 60 * MINUTE).is_empty());
    }

    #[test]
    fn a_watch_that_never_lists_is_not_live() {
        let liveness = Liveness::default();
        let start = Instant::now();
        let (reader, _writer) = store();
        let term = liveness.lead(reader, start);
        assert!(liveness.problems(start + 4 * MINUTE).is_empty());
        let problems = liveness.problems(start + 6 * MINUTE);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("has not listed"), "{problems:?}");
        // A synced watch of an earlier term counts for nothing.
        liveness.synced(term + 1, start);
        assert_eq!(liveness.problems(start + 6 * MINUTE).len(), 1);
        liveness.synced(term, start + 5 * MINUTE);
        assert!(liveness.problems(start + 6 * MINUTE).is_empty());
    }

    #[test]
    fn a_stuck_reconcile_is_not_live() {
        let liveness = Liveness::default();
        let start = Instant::now();
        let (reader, _writer) = store();
        let term = liveness.lead(reader, start);
        liveness.synced(term, start);
        let resource = rotation("r", "1");
        let running = liveness.reconciling(&resource, start);
        assert!(liveness.problems(start + 9 * MINUTE).is_empty());
        let problems = liveness.problems(start + 11 * MINUTE);
        assert_eq!(
            problems,
            ["the reconcile of ns/r has run for 660s (more than 600s)"]
        );
        drop(running);
        assert!(liveness.problems(start + 11 * MINUTE).is_empty());
    }

    #[test]
    fn a_loop_that_stopped_is_not_live_while_rotations_are_watched() {
        let liveness = Liveness::default();
        let start = Instant::now();
        let (reader, mut writer) = store();
        let term = liveness.lead(reader, start);
        liveness.synced(term, start);
        // Nothing watched: nothing to reconcile.
        assert!(liveness.problems(start + 60 * MINUTE).is_empty());
        writer.apply_watcher_event(&watcher::Event::Apply(rotation("r", "1")));
        assert!(liveness.problems(start + 9 * MINUTE).is_empty());
        let problems = liveness.problems(start + 11 * MINUTE);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("no reconcile for 660s"),
            "{problems:?}"
        );
        // A reconcile that ended starts the bound again.
        drop(liveness.reconciling(&rotation("r", "1"), start + 11 * MINUTE));
        assert!(liveness.problems(start + 12 * MINUTE).is_empty());
    }

    #[test]
    fn a_write_the_watch_never_delivers_is_not_live() {
        let liveness = Liveness::default();
        let start = Instant::now();
        let (reader, mut writer) = store();
        let term = liveness.lead(reader, start);
        liveness.synced(term, start);
        let before = rotation("r", "1");
        writer.apply_watcher_event(&watcher::Event::Apply(before.clone()));
        // A write that changed nothing is not waited for.
        liveness.wrote(&before, &rotation("r", "1"), start);
        assert!(liveness.problems(start + 3 * MINUTE).is_empty());
        liveness.wrote(&before, &rotation("r", "2"), start);
        assert!(liveness.problems(start + MINUTE).is_empty());
        assert_eq!(
            liveness.problems(start + 3 * MINUTE),
            ["the watch has not delivered the status written to ns/r 180s ago"]
        );
        // Delivered: live again, and not waited for any more.
        writer.apply_watcher_event(&watcher::Event::Apply(rotation("r", "2")));
        assert!(liveness.problems(start + 3 * MINUTE).is_empty());
        writer.apply_watcher_event(&watcher::Event::Apply(rotation("r", "1")));
        assert!(liveness.problems(start + 3 * MINUTE).is_empty());
    }

    #[test]
    fn a_deleted_rotation_is_not_waited_for() {
        let liveness = Liveness::default();
        let start = Instant::now();
        let (reader, mut writer) = store();
        let term = liveness.lead(reader, start);
        liveness.synced(term, start);
        let before = rotation("r", "1");
        writer.apply_watcher_event(&watcher::Event::Apply(before.clone()));
        liveness.wrote(&before, &rotation("r", "2"), start);
        writer.apply_watcher_event(&watcher::Event::Delete(before));
        assert!(liveness.problems(start + 3 * MINUTE).is_empty());
    }
}
