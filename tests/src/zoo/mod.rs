//! The workload zoo: one of each kind of pod a cluster runs, on nodes kwok
//! simulates, for the suites that rotate (rotation, faults,
//! recreate-nodes) to refresh tokens on.
//!
//! In namespace [`ZOO`]: Deployments (RollingUpdate, Recreate), StatefulSets
//! and DaemonSets (RollingUpdate, OnDelete), a bare ReplicaSet, a
//! ReplicationController, a completed, a running and a failed Job, a Job
//! made from a CronJob, pods of a custom resource (the CRD is installed
//! here and the harness plays its controller), a bare pod, a static pod's
//! mirror, a Deployment whose pods hold no token, one whose pods project
//! tokens of 600, 3600, 7200 and 86400 seconds for other audiences, and a
//! ReplicaSet behind a PodDisruptionBudget that allows no disruption.
//!
//! kwok completes a Job's pod as soon as it runs. The harness decides how
//! the zoo's Job pods end instead, as their kubelet would: a
//! ValidatingAdmissionPolicy ([`KUBELET_POLICY`]) refuses to mark one
//! succeeded until the harness has annotated it to finish, and the harness
//! fails the one labelled to fail. So one Job runs until the operator
//! finishes it, and one fails.
//!
//! [`Zoo::operate`] plays the operator during rotations: it relaxes the
//! PodDisruptionBudget once the status has named the pod it blocks for a
//! while, finishes the running Job once the status names it, creates a pod
//! after RefreshTokens began (it must be left alone), and records what it
//! saw for [`Zoo::check`].
//!
//! The parts: `build` creates the zoo and waits until it settles;
//! `players` plays the components kwok does not (the kubelet's end of
//! Job pods, the custom resource's controller, a cloud's machine
//! controller); `operator` plays the operator during rotations; [`mix`]
//! is the zoo's mix at scale, for the benchmarks. What the zoo checks
//! after a rotation is here.

mod build;
pub mod mix;
mod operator;
mod players;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tokio::task::JoinHandle;

pub use build::{add_kwok_node, kwok_node};
pub use players::replace_deleted_nodes;

/// The zoo's namespace, and the service account its pods run as.
pub const ZOO: &str = "zoo";
/// The ValidatingAdmissionPolicy by which the harness, not kwok, decides
/// how the zoo's Job pods end.
pub const KUBELET_POLICY: &str = "zoo-job-pods-end-as-the-harness-says";
/// How many nodes kwok simulates.
pub const KWOK_NODES: usize = 3;
/// The PodDisruptionBudget that blocks the `guarded` ReplicaSet's pod.
pub const GUARDED_PDB: &str = "guarded-pdb";
/// How long the operator leaves the guarded pod blocked, once named.
/// How a Job pod of the zoo ends: `run` (until annotated [`FINISH`]) or
/// `fail`.
const OUTCOME: &str = "zoo.ksa.dev/outcome";
/// The annotation that lets a running pod of the zoo succeed.
const FINISH: &str = "zoo.ksa.dev/finish";
const WIDGET_LABEL: &str = "zoo.ksa.dev/widget";
const WIDGET_PODS: usize = 2;
const TICK: Duration = Duration::from_millis(250);

/// What the operator saw of each rotation, by key version.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// When RefreshTokens began.
    pub refresh_began: BTreeMap<u64, Timestamp>,
    /// How many statuses named the guarded pod as blocked by its budget
    /// before the budget was relaxed.
    pub guarded_named: BTreeMap<u64, u32>,
    /// Statuses at RefreshTokens, after the guarded pod was first named and
    /// before its budget was relaxed, that did not name it.
    pub unnamed: Vec<String>,
    /// Rotations in which the budget was relaxed.
    pub relaxed: BTreeSet<u64>,
    /// Rotations whose status named the running Job's pod.
    pub running_job_named: BTreeSet<u64>,
    /// The fewest available pods of Deployment `rolling` (two replicas, no
    /// unavailable allowed) seen during RefreshTokens.
    pub rolling_available_min: Option<i32>,
    /// Every distinct "waiting for" text at RefreshTokens (the first 50).
    pub waiting: Vec<String>,
}

/// A pod that must never be touched: by name, its UID, and until which
/// rotation (none: for good).
#[derive(Clone, Debug)]
struct Untouchable {
    name: String,
    uid: String,
    until: Option<u64>,
}

#[allow(missing_debug_implementations, reason = "holds tasks")]
pub struct Zoo {
    client: kube::Client,
    untouchable: Arc<Mutex<Vec<Untouchable>>>,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Zoo {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Zoo {
    /// What the operator saw so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// After the rotation to `version` completed under `restart-pods`:
    /// every pod that held no live token or a fresh one is the same pod
    /// (UID) as before, and Deployment `no-token` was not restarted; no
    /// pod of the zoo still holds a token from before RefreshTokens;
    /// Deployment `rolling` never lost a pod; and [`Zoo::check_named`].
    pub async fn check(&self, version: u64) -> Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ZOO)
            .list(&ListParams::default())
            .await?;
        let uids: BTreeMap<String, String> = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.uid.clone().unwrap_or_default(),
                )
            })
            .collect();
        {
            let mut untouchable = self.untouchable.lock().map_err(poisoned)?;
            let touched: Vec<String> = untouchable
                .iter()
                .filter(|u| uids.get(&u.name) != Some(&u.uid))
                .map(|u| u.name.clone())
                .collect();
            ensure!(
                touched.is_empty(),
                "pods that held no stale token were replaced or deleted: {touched:?}"
            );
            ensure!(
                untouchable.iter().any(|u| u.until == Some(version)),
                "no pod was created after RefreshTokens of {version} began"
            );
            // A pod fresh in this rotation is stale in the next.
            untouchable.retain(|u| u.until.is_none_or(|until| until > version));
        }
        self.check_named(version).await?;
        let seen = self.seen();
        ensure!(
            seen.rolling_available_min.is_none_or(|n| n >= 2),
            "Deployment rolling dropped to {:?} available pods",
            seen.rolling_available_min
        );
        let since = seen.refresh_began[&version];
        // Creation times have one-second precision: a pod created in the
        // second the step began is new if its template was restarted for
        // this rotation.
        let restarted_now = |p: &Pod| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ksa_kube::refresh::RESTART_ANNOTATION))
                == Some(&version.to_string())
        };
        let stale: Vec<String> = pods
            .iter()
            .filter(|p| holds_token(p))
            .filter(|p| {
                p.metadata.creation_timestamp.as_ref().is_none_or(|t| {
                    t.0.as_second() < since.as_second()
                        || (t.0.as_second() == since.as_second() && !restarted_now(p))
                })
            })
            .map(|p| {
                format!(
                    "{} (created {:?}, restarted for {:?})",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ksa_kube::refresh::RESTART_ANNOTATION)),
                )
            })
            .collect();
        ensure!(
            stale.is_empty(),
            "pods still hold tokens from before RefreshTokens of {version} (began {since}): {stale:?}"
        );
        let no_token = Api::<Deployment>::namespaced(self.client.clone(), ZOO)
            .get("no-token")
            .await?;
        let restarted = no_token
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key(ksa_kube::refresh::RESTART_ANNOTATION));
        ensure!(
            !restarted,
            "Deployment no-token was restarted; it holds no token"
        );
        Ok(())
    }

    /// After the rotation to `version`, before the next one starts: waits
    /// until the operator has armed the zoo again (it does on completion:
    /// the budget allows no disruption, a new Job runs) and that Job's pod
    /// is running, so the next rotation finds it holding a stale token. (A
    /// pod created after the next rotation's Sign would hold a fresh token
    /// and never be named.)
    pub async fn ready_for_next(&self, version: u64) -> Result<()> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), ZOO);
        let job = ListParams::default().labels(&format!("job-name=running-{}", version + 1));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let running =
                pods.list(&job).await?.items.iter().any(|pod| {
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                });
            if running {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the pod of Job running-{} is not running after 90 s",
                version + 1
            );
            tokio::time::sleep(TICK).await;
        }
    }

    /// After the rotation to `version` completed, under either policy: no
    /// Job failed but the one made to fail; the status named the pod the
    /// budget blocks in every look until the budget was relaxed, and named
    /// the running Job's pod.
    pub async fn check_named(&self, version: u64) -> Result<()> {
        let failed = self.failed_jobs().await?;
        ensure!(failed == ["failed"], "Jobs failed: {failed:?}");
        let seen = self.seen();
        ensure!(
            seen.refresh_began.contains_key(&version),
            "RefreshTokens of {version} was not seen"
        );
        ensure!(
            seen.unnamed.is_empty(),
            "statuses did not name the blocked pod before its budget was relaxed: {:?}",
            seen.unnamed
        );
        ensure!(
            seen.guarded_named.get(&version).copied().unwrap_or(0) >= 2
                && seen.relaxed.contains(&version),
            "the pod {GUARDED_PDB} blocks was not named while blocked in rotation {version}: {seen:#?}"
        );
        ensure!(
            seen.running_job_named.contains(&version),
            "the running Job's pod was not named in rotation {version}: {seen:#?}"
        );
        Ok(())
    }

    /// The Jobs of the zoo that failed.
    pub async fn failed_jobs(&self) -> Result<Vec<String>> {
        Ok(Api::<Job>::namespaced(self.client.clone(), ZOO)
            .list(&ListParams::default())
            .await?
            .iter()
            .filter(|j| job_condition(j, "Failed"))
            .filter_map(|j| j.metadata.name.clone())
            .collect())
    }
}

fn poisoned<T>(_: std::sync::PoisonError<T>) -> anyhow::Error {
    anyhow::anyhow!("a zoo task panicked")
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

fn job_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether a pod runs and projects a service-account token.
fn holds_token(pod: &Pod) -> bool {
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    running && projects_token(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Whether a pod projects a service-account token.
fn projects_token(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| {
            v.iter().any(|v| {
                v.projected.as_ref().is_some_and(|p| {
                    p.sources
                        .iter()
                        .flatten()
                        .any(|s| s.service_account_token.is_some())
                })
            })
        })
}
