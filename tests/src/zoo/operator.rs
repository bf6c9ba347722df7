//! The operator the zoo plays during rotations (see the zoo's
//! documentation): it relaxes the PodDisruptionBudget once the status has
//! named the pod it blocks for a while, finishes the running Job once the
//! status names it, creates a pod after RefreshTokens began, re-arms the
//! zoo when a rotation completes, and records what it saw.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use ksa_core::rotation::Step;
use ksa_kube::api::KSASigningKeyRotation;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::build::{create, job, template};
use super::players::finished;
use super::{FINISH, GUARDED_PDB, OUTCOME, Seen, TICK, Untouchable, ZOO, Zoo, poisoned};

/// How long the operator leaves the guarded pod blocked, once named.
const BLOCKED_FOR: Duration = Duration::from_secs(6);

impl Zoo {
    /// Plays the operator during the rotations of `rotation` (namespace,
    /// name), until the zoo is dropped: see the module's documentation.
    pub fn operate(&mut self, namespace: &str, name: &str) {
        let operator = Operator {
            client: self.client.clone(),
            rotations: Api::namespaced(self.client.clone(), namespace),
            name: name.to_owned(),
            untouchable: self.untouchable.clone(),
            seen: self.seen.clone(),
        };
        self.tasks.push(tokio::spawn(operator.run()));
    }
}

struct Operator {
    client: kube::Client,
    rotations: Api<KSASigningKeyRotation>,
    name: String,
    untouchable: Arc<Mutex<Vec<Untouchable>>>,
    seen: Arc<Mutex<Seen>>,
}

/// What the operator keeps between looks, per rotation.
#[derive(Default)]
struct Progress {
    guarded_first_named: Option<Instant>,
    latecomer: bool,
    armed_for: u64,
}

impl Operator {
    async fn run(self) {
        let mut progress: BTreeMap<u64, Progress> = BTreeMap::new();
        loop {
            tokio::time::sleep(TICK).await;
            let Ok(rotation) = self.rotations.get(&self.name).await else {
                continue;
            };
            let Some(status) = rotation.status else {
                continue;
            };
            let Ok(state) = status.state() else { continue };
            let version = state.key_version().get();
            let here = progress.entry(version).or_default();
            match state.step() {
                Step::RefreshTokens => {
                    let waiting = status.waiting_for.clone().unwrap_or_default();
                    let began = state.step_started_at();
                    let _ = self.at_refresh(version, &waiting, began, here).await;
                }
                // Ready for the next rotation: the budget blocks again, and
                // another Job runs.
                Step::Completed
                    if here.armed_for < version
                        && state.completed_at().is_some()
                        && self.arm(version).await.is_ok() =>
                {
                    here.armed_for = version;
                }
                _ => {}
            }
        }
    }

    fn note(&self, update: impl FnOnce(&mut Seen)) {
        if let Ok(mut seen) = self.seen.lock() {
            update(&mut seen);
        }
    }

    async fn at_refresh(
        &self,
        version: u64,
        waiting: &str,
        began: Option<Timestamp>,
        progress: &mut Progress,
    ) -> Result<()> {
        let relaxed = self
            .seen
            .lock()
            .map_err(poisoned)?
            .relaxed
            .contains(&version);
        self.note(|seen| {
            if let Some(began) = began {
                seen.refresh_began.insert(version, began);
            }
            if !waiting.is_empty()
                && seen.waiting.len() < 50
                && !seen.waiting.iter().any(|w| w == waiting)
            {
                seen.waiting.push(waiting.to_owned());
            }
        });
        let counted = waiting.contains("bound-token holders to refresh:");
        let names_guarded = waiting.contains(&format!("{ZOO}/guarded-"))
            && waiting.contains(&format!("PDB {GUARDED_PDB} allows 0 disruptions"));
        if !relaxed && counted {
            if names_guarded {
                progress
                    .guarded_first_named
                    .get_or_insert_with(Instant::now);
                self.note(|seen| *seen.guarded_named.entry(version).or_insert(0) += 1);
            } else if progress.guarded_first_named.is_some() {
                self.note(|seen| seen.unnamed.push(waiting.to_owned()));
            }
            if progress
                .guarded_first_named
                .is_some_and(|at| at.elapsed() >= BLOCKED_FOR)
            {
                self.set_budget(0).await?;
                self.note(|seen| {
                    seen.relaxed.insert(version);
                });
            }
        }
        if waiting.contains(&format!("{ZOO}/running-")) && waiting.contains("running Job pod") {
            self.finish_running_jobs().await?;
            self.note(|seen| {
                seen.running_job_named.insert(version);
            });
        }
        if !progress.latecomer
            && let Some(began) = began
            && Timestamp::now().as_second() >= began.as_second() + 2
        {
            let name = format!("latecomer-{version}");
            let pod: Pod = create(
                &self.client,
                json!({"metadata": {"name": name, "labels": {"app": "latecomer"}}, "spec": template("latecomer", json!({}))["spec"]}),
            )
            .await?;
            progress.latecomer = true;
            self.untouchable
                .lock()
                .map_err(poisoned)?
                .push(Untouchable {
                    name,
                    uid: pod.metadata.uid.unwrap_or_default(),
                    until: Some(version),
                });
        }
        let rolling = Api::<Deployment>::namespaced(self.client.clone(), ZOO)
            .get("rolling")
            .await?;
        let available = rolling
            .status
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        self.note(|seen| {
            seen.rolling_available_min = Some(
                seen.rolling_available_min
                    .map_or(available, |m| m.min(available)),
            );
        });
        Ok(())
    }

    async fn set_budget(&self, min_available: i32) -> Result<()> {
        Api::<PodDisruptionBudget>::namespaced(self.client.clone(), ZOO)
            .patch(
                GUARDED_PDB,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"minAvailable": min_available}})),
            )
            .await?;
        Ok(())
    }

    /// Finishes (succeeds) every running Job pod of the zoo labelled to
    /// run: annotated to finish, then marked succeeded, as its kubelet
    /// would once its containers exit 0.
    async fn finish_running_jobs(&self) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ZOO);
        let running = ListParams::default().labels(&format!("{OUTCOME}=run"));
        for pod in pods.list(&running).await? {
            if pod.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running") {
                continue;
            }
            let name = pod.metadata.name.clone().unwrap_or_default();
            pods.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {FINISH: "true"}}})),
            )
            .await?;
            pods.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&finished("Succeeded", 0)),
            )
            .await?;
        }
        Ok(())
    }

    /// After the rotation to `version`: the budget allows no disruption
    /// again, and a new Job runs.
    async fn arm(&self, version: u64) -> Result<()> {
        self.set_budget(1).await?;
        let name = format!("running-{}", version + 1);
        match create::<Job>(&self.client, job(&name, Some("run"), 0)).await {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .downcast_ref::<kube::Error>()
                    .is_some_and(|e| matches!(e, kube::Error::Api(s) if s.code == 409)) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}
