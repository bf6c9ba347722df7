//! What RefreshTokens would do, found before a rotation starts and changing
//! nothing (`rotate --dry-run`): the pods whose bound tokens it would
//! refresh and how, the projected tokens pods hold, and the legacy token
//! Secrets, with those used recently though no pod mounts them (held
//! outside the cluster: the re-mint cuts their holder off).
//!
//! Every list is cut at [`MAX_LISTED`] entries (`truncated` says so), so a
//! plan stays small whatever the cluster holds.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret};
use ksa_core::rotation::{HolderCategory, WorkloadKind};
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::{each, legacy, pages, pods};
use crate::error::Result;
use ksa_core::rotation::refresh::{self as rules, Horizon, Refresh};

/// The most entries of any one list a plan carries.
pub const MAX_LISTED: usize = 1000;

/// The label kube-apiserver keeps on a legacy token Secret: the day
/// (`YYYY-MM-DD`) its token last authenticated a request.
pub const LAST_USED_LABEL: &str = "kubernetes.io/legacy-token-last-used";

/// How recent a use counts: a token used in the last 30 days is in use.
pub const RECENT_DAYS: i32 = 30;

/// One pod RefreshTokens would refresh, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `restart-template`, `evict` or `wait`.
    pub action: &'static str,
    /// Why, as the status would say it.
    pub reason: String,
    /// Only an operator lets it proceed (its PodDisruptionBudget, a paused
    /// Deployment).
    pub blocked: bool,
}

impl PlannedPod {
    pub(super) fn new(pod: &rules::Pod<'_>, refresh: &Refresh<'_>) -> PlannedPod {
        let action = match refresh {
            Refresh::RestartTemplate(_) => "restart-template",
            Refresh::Evict(_) => "evict",
            Refresh::Wait(_) => "wait",
        };
        let reason = refresh.reason();
        PlannedPod {
            namespace: pod.namespace.to_owned(),
            name: pod.name.to_owned(),
            uid: pod.uid.to_owned(),
            action,
            blocked: reason.category() == HolderCategory::Blocked,
            reason: reason.to_string(),
        }
    }
}

/// The projected service-account tokens of one workload's pods (or one
/// bare pod).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectedTokens {
    pub namespace: String,
    /// `Deployment web`, `Job`, `Pod x`, ...
    pub owner: String,
    pub pods: u64,
    /// The longest `expirationSeconds` among them.
    pub longest_seconds: u64,
    pub audiences: Vec<String>,
}

/// A workload whose template RefreshTokens would restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadToRestart {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

/// What RefreshTokens would do to bound tokens under `restart-pods`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundTokenPlan {
    /// Pods holding a bound token that predates the step.
    pub holders: u64,
    /// The longest lifetime among their tokens.
    pub longest_token_seconds: u64,
    pub workloads_to_restart: Vec<WorkloadToRestart>,
    pub pods: Vec<PlannedPod>,
    pub projected_tokens: Vec<ProjectedTokens>,
    pub truncated: bool,
}

/// A legacy token Secret whose token was used recently though no pod
/// mounts it: someone outside the cluster holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutsideLegacyToken {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    /// The day kube-apiserver last saw it used.
    pub last_used: String,
}

impl std::fmt::Display for OutsideLegacyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} (service account {}, last used {})",
            self.namespace, self.name, self.service_account, self.last_used
        )
    }
}

/// The legacy token Secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyTokenPlan {
    pub secrets: u64,
    /// Mounted by a pod (volume, projected volume or environment).
    pub mounted: u64,
    pub held_outside: Vec<OutsideLegacyToken>,
    pub truncated: bool,
}

/// The bound-token side of the plan, as if RefreshTokens began at
/// `horizon.since`.
pub async fn bound_tokens(client: &kube::Client, horizon: &Horizon<'_>) -> Result<BoundTokenPlan> {
    let found = pods::plan(client, horizon).await?;
    Ok(BoundTokenPlan {
        holders: found.stale,
        longest_token_seconds: found.longest_stale_seconds,
        workloads_to_restart: found
            .workloads
            .into_values()
            .map(|(kind, namespace, name)| WorkloadToRestart {
                kind,
                namespace,
                name,
            })
            .collect(),
        pods: found.pods,
        projected_tokens: found.projected,
        truncated: found.truncated,
    })
}

/// The legacy token Secrets, and those used in the last [`RECENT_DAYS`]
/// days though no pod mounts them.
pub async fn legacy_tokens(client: &kube::Client, now: Timestamp) -> Result<LegacyTokenPlan> {
    let mut plan = LegacyTokenPlan::default();
    // The Secrets, by namespace and name, with the day each was last used.
    let mut secrets: BTreeMap<(String, String), (String, Option<String>)> = BTreeMap::new();
    let mut listed = std::pin::pin!(each(legacy::legacy_secret_pages(client)));
    while let Some(secret) = listed.try_next().await? {
        plan.secrets += 1;
        if secrets.len() >= 10 * MAX_LISTED {
            plan.truncated = true;
            continue;
        }
        let (namespace, name) = names(&secret);
        let account = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("kubernetes.io/service-account.name"))
            .cloned()
            .unwrap_or_default();
        let last_used = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LAST_USED_LABEL))
            .cloned();
        secrets.insert((namespace, name), (account, last_used));
    }
    let mut mounted: BTreeSet<(String, String)> = BTreeSet::new();
    let mut pods = std::pin::pin!(each(pages(
        Api::<Pod>::all(client.clone()),
        ListParams::default()
    )));
    while let Some(pod) = pods.try_next().await? {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        for name in pod.spec.as_ref().map(secrets_used).unwrap_or_default() {
            let key = (namespace.clone(), name);
            if secrets.contains_key(&key) {
                mounted.insert(key);
            }
        }
    }
    plan.mounted = mounted.len() as u64;
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    for ((namespace, name), (account, last_used)) in secrets {
        let Some(day) = last_used else { continue };
        let recent = day
            .parse::<jiff::civil::Date>()
            .is_ok_and(|used| (today - used).get_days() <= RECENT_DAYS);
        if !recent || mounted.contains(&(namespace.clone(), name.clone())) {
            continue;
        }
        if plan.held_outside.len() < MAX_LISTED {
            plan.held_outside.push(OutsideLegacyToken {
                namespace,
                name,
                service_account: account,
                last_used: day,
            });
        } else {
            plan.truncated = true;
        }
    }
    Ok(plan)
}

fn names(secret: &Secret) -> (String, String) {
    (
        secret.metadata.namespace.clone().unwrap_or_default(),
        secret.metadata.name.clone().unwrap_or_default(),
    )
}

/// The names of the Secrets a pod spec uses: volumes, projected volumes,
/// and the environment of every container.
fn secrets_used(spec: &PodSpec) -> Vec<String> {
    let mut names = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            names.push(name);
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(secret) = &source.secret {
                names.push(secret.name.clone());
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    for container in containers {
        for env in container.env.iter().flatten() {
            if let Some(key) = env
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                names.push(key.name.clone());
            }
        }
        for from in container.env_from.iter().flatten() {
            if let Some(secret) = &from.secret_ref {
                names.push(secret.name.clone());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_place_a_pod_names_a_secret_counts_as_a_mount() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "volumes": [
                {"name": "a", "secret": {"secretName": "volume"}},
                {"name": "b", "projected": {"sources": [{"secret": {"name": "projected"}}]}},
            ],
            "containers": [{
                "name": "c",
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "env", "key": "token"}}}],
                "envFrom": [{"secretRef": {"name": "env-from"}}],
            }],
            "initContainers": [{
                "name": "i",
                "envFrom": [{"secretRef": {"name": "init"}}],
            }],
        }))
        .expect("a pod spec");
        let mut used = secrets_used(&spec);
        used.sort();
        assert_eq!(used, ["env", "env-from", "init", "projected", "volume"]);
    }
}
