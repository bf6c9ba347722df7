//! `restart-pods`: the cluster read into the values of
//! [`ksa_core::rotation::refresh`] (the rules),
//! and the verdicts carried out: workload templates restarted, pods
//! evicted, one pass at a time.

use std::collections::{BTreeMap, HashMap};

use futures::TryStreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use ksa_core::rotation::WorkloadKind;
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::{
    BoundTokens, CONCURRENCY, MAX_TRACKED, MIRROR_ANNOTATION, RESTART_ANNOTATION, each,
    metadata_pages, pages,
};
use crate::error::Result;
use ksa_core::rotation::Stall;
use ksa_core::rotation::refresh::{
    self as rules, Budget, Condition, ContainerWaiting, Controller, Horizon, Pacer, Phase, Refresh,
    Requirement, RolloutStatus, Selector, Strategy, Verdict, Workload,
};

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// The PodDisruptionBudgets of the cluster, by namespace.
#[derive(Debug, Default)]
pub(super) struct Budgets(HashMap<String, Vec<Budget>>);

impl Budgets {
    pub(super) async fn list(client: &kube::Client) -> Result<Budgets> {
        let mut budgets = Budgets::default();
        let mut all = std::pin::pin!(each(pages(
            Api::<PodDisruptionBudget>::all(client.clone()),
            ListParams::default(),
        )));
        while let Some(pdb) = all.try_next().await? {
            let namespace = pdb.metadata.namespace.clone().unwrap_or_default();
            budgets.0.entry(namespace).or_default().push(budget(&pdb));
        }
        Ok(budgets)
    }

    pub(super) fn of(&self, namespace: &str) -> &[Budget] {
        self.0.get(namespace).map(Vec::as_slice).unwrap_or_default()
    }
}

/// A PodDisruptionBudget's label selector as the plain requirements the
/// rules decide on: `matchLabels` entries, then `matchExpressions`. A
/// missing selector, or one with an expression the API would not accept,
/// selects nothing, as the Eviction API reads it.
fn selector(selector: Option<&LabelSelector>) -> Selector {
    let Some(selector) = selector else {
        return Selector::new(None);
    };
    let labels = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(key, value)| Some(Requirement::label(key, value)));
    let expressions = selector.match_expressions.iter().flatten().map(|e| {
        Requirement::expression(&e.key, &e.operator, e.values.clone().unwrap_or_default())
    });
    Selector::new(labels.chain(expressions).collect())
}

fn budget(pdb: &PodDisruptionBudget) -> Budget {
    let spec = pdb.spec.as_ref();
    let status = pdb.status.as_ref();
    Budget {
        name: pdb.metadata.name.clone().unwrap_or_default(),
        selector: selector(spec.and_then(|s| s.selector.as_ref())),
        disruptions_allowed: status.map_or(0, |s| s.disruptions_allowed),
        processed: status.and_then(|s| s.observed_generation).unwrap_or(-1)
            >= pdb.metadata.generation.unwrap_or(0),
        always_allow_unhealthy: spec.and_then(|s| s.unhealthy_pod_eviction_policy.as_deref())
            == Some("AlwaysAllow"),
        current_healthy: status.map_or(0, |s| s.current_healthy),
        desired_healthy: status.map_or(0, |s| s.desired_healthy),
    }
}

/// The workloads that pods name as their controllers, as the rules need
/// them: one small entry each, by uid.
#[derive(Debug, Default)]
struct Index {
    /// Deployments, StatefulSets and DaemonSets.
    workloads: HashMap<String, Workload>,
    /// ReplicaSets a Deployment controls: (namespace, the Deployment's uid).
    deployment_of: HashMap<String, (String, String)>,
    budgets: Budgets,
}

fn restarted(template: &PodTemplateSpec, version: &str) -> bool {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(RESTART_ANNOTATION))
        .is_some_and(|v| v == version)
}

impl Index {
    async fn build(client: &kube::Client, version: &str) -> Result<Index> {
        let mut index = Index::default();
        let mut deployments = std::pin::pin!(each(pages(
            Api::<Deployment>::all(client.clone()),
            ListParams::default()
        )));
        while let Some(d) = deployments.try_next().await? {
            let Some(spec) = &d.spec else { continue };
            index.add(
                WorkloadKind::Deployment,
                &d.metadata,
                Strategy::Replace,
                restarted(&spec.template, version),
                spec.paused == Some(true),
            );
            index.stalled(&d.metadata, rules::workload_stall(&rollout_status(&d)));
        }
        let mut statefulsets = std::pin::pin!(each(pages(
            Api::<StatefulSet>::all(client.clone()),
            ListParams::default()
        )));
        while let Some(s) = statefulsets.try_next().await? {
            let Some(spec) = &s.spec else { continue };
            let update = spec.update_strategy.as_ref();
            let strategy = if update.and_then(|u| u.type_.as_deref()) == Some("OnDelete") {
                Strategy::OnDelete
            } else {
                let partition = update
                    .and_then(|u| u.rolling_update.as_ref())
                    .and_then(|r| r.partition)
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(0);
                if partition > 0 {
                    Strategy::Partitioned { partition }
                } else {
                    Strategy::Replace
                }
            };
            index.add(
                WorkloadKind::StatefulSet,
                &s.metadata,
                strategy,
                restarted(&spec.template, version),
                false,
            );
        }
        let mut daemonsets = std::pin::pin!(each(pages(
            Api::<DaemonSet>::all(client.clone()),
            ListParams::default()
        )));
        while let Some(d) = daemonsets.try_next().await? {
            let Some(spec) = &d.spec else { continue };
            let on_delete = spec
                .update_strategy
                .as_ref()
                .and_then(|u| u.type_.as_deref())
                == Some("OnDelete");
            index.add(
                WorkloadKind::DaemonSet,
                &d.metadata,
                if on_delete {
                    Strategy::OnDelete
                } else {
                    Strategy::Replace
                },
                restarted(&spec.template, version),
                false,
            );
        }
        let mut replicasets =
            std::pin::pin!(each(metadata_pages(Api::<ReplicaSet>::all(client.clone()))));
        while let Some(rs) = replicasets.try_next().await? {
            let owner = controller_ref(&rs.metadata);
            if let (Some(owner), Some(uid)) = (owner, &rs.metadata.uid)
                && owner.kind == "Deployment"
                && group(&owner.api_version) == "apps"
            {
                index.deployment_of.insert(
                    uid.clone(),
                    (
                        rs.metadata.namespace.clone().unwrap_or_default(),
                        owner.uid.clone(),
                    ),
                );
            }
        }
        index.budgets = Budgets::list(client).await?;
        Ok(index)
    }

    fn add(
        &mut self,
        kind: WorkloadKind,
        meta: &kube::api::ObjectMeta,
        strategy: Strategy,
        restarted: bool,
        paused: bool,
    ) {
        let Some(uid) = &meta.uid else { return };
        self.workloads.insert(
            uid.clone(),
            Workload {
                kind,
                uid: uid.clone(),
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                strategy,
                restarted,
                paused,
                stall: None,
            },
        );
    }

    /// Records what a listed workload's own status says stops its rollout.
    fn stalled(&mut self, meta: &kube::api::ObjectMeta, stall: Option<Stall>) {
        if let Some(workload) = meta
            .uid
            .as_ref()
            .and_then(|uid| self.workloads.get_mut(uid))
        {
            workload.stall = stall;
        }
    }

    /// The workload of `kind` with `uid` in `namespace`, if listed. An
    /// owner reference names an object of the pod's own namespace; one
    /// that points elsewhere names nothing.
    fn workload(&self, uid: &str, namespace: &str, kind: WorkloadKind) -> Option<&Workload> {
        self.workloads
            .get(uid)
            .filter(|w| w.kind == kind && w.namespace == namespace)
    }

    /// What controls `pod`, resolved through the listed workloads.
    fn controller<'a>(&'a self, pod: &'a Pod) -> Controller<'a> {
        let Some(owner) = controller_ref(&pod.metadata) else {
            return Controller::None;
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let other = Controller::Other {
            kind: &owner.kind,
            uid: &owner.uid,
        };
        let workload = match (group(&owner.api_version), owner.kind.as_str()) {
            ("batch", "Job") => return Controller::Job,
            ("apps", "ReplicaSet") => self
                .deployment_of
                .get(&owner.uid)
                .filter(|(ns, _)| ns == namespace)
                .and_then(|(_, uid)| self.workload(uid, namespace, WorkloadKind::Deployment)),
            ("apps", "StatefulSet") => {
                self.workload(&owner.uid, namespace, WorkloadKind::StatefulSet)
            }
            ("apps", "DaemonSet") => self.workload(&owner.uid, namespace, WorkloadKind::DaemonSet),
            _ => None,
        };
        workload.map_or(other, Controller::Workload)
    }
}

/// What a Deployment's status says of its rollout, as the rules read it.
fn rollout_status(deployment: &Deployment) -> RolloutStatus<'_> {
    let status = deployment.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == type_))
            .map(|c| Condition {
                status: &c.status,
                reason: c.reason.as_deref().unwrap_or_default(),
                message: c.message.as_deref().unwrap_or_default(),
            })
    };
    RolloutStatus {
        observed: status.and_then(|s| s.observed_generation).unwrap_or(-1)
            >= deployment.metadata.generation.unwrap_or(0),
        replica_failure: condition("ReplicaFailure"),
        progressing: condition("Progressing"),
    }
}

/// The API group of an `apiVersion` (`apps/v1` is `apps`, `v1` the core
/// group, ``).
fn group(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(group, _)| group)
}

/// The owner reference marked as controller, if any.
fn controller_ref(
    meta: &kube::api::ObjectMeta,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// The service-account tokens `spec` projects.
fn service_account_tokens(
    spec: &PodSpec,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::ServiceAccountTokenProjection> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.service_account_token.as_ref())
}

/// The longest lifetime of the service-account tokens `spec` projects.
pub(super) fn token_seconds(spec: &PodSpec) -> Option<u64> {
    service_account_tokens(spec)
        .map(|t| {
            t.expiration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(rules::DEFAULT_TOKEN_SECONDS)
        })
        .max()
}

fn condition(pod: &Pod, type_: &str) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// The pod's `PodScheduled` condition.
fn pod_scheduled(pod: &Pod) -> Option<Condition<'_>> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .map(|c| Condition {
            status: &c.status,
            reason: c.reason.as_deref().unwrap_or_default(),
            message: c.message.as_deref().unwrap_or_default(),
        })
}

/// The pod's containers and init containers that are waiting, and why.
fn waiting(pod: &Pod) -> Vec<ContainerWaiting<'_>> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            Some(ContainerWaiting {
                container: &c.name,
                reason: waiting.reason.as_deref().unwrap_or_default(),
                message: waiting.message.as_deref().unwrap_or_default(),
            })
        })
        .collect()
}

/// `pod` as the rules see it, controlled by `controller`.
pub(super) fn facts<'a>(pod: &'a Pod, controller: Controller<'a>) -> rules::Pod<'a> {
    let meta = &pod.metadata;
    let annotations = meta.annotations.as_ref();
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    rules::Pod {
        namespace: meta.namespace.as_deref().unwrap_or_default(),
        name: meta.name.as_deref().unwrap_or_default(),
        uid: meta.uid.as_deref().unwrap_or_default(),
        labels: meta.labels.as_ref().unwrap_or(&NO_LABELS),
        phase: Phase::parse(status.and_then(|s| s.phase.as_deref())),
        scheduled: spec
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty()),
        created: meta.creation_timestamp.as_ref().map(|t| t.0),
        started: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        deleting: meta.deletion_timestamp.is_some(),
        evicted: condition(pod, "DisruptionTarget"),
        ready: condition(pod, "Ready"),
        mirror: annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)),
        restarted_for: annotations
            .and_then(|a| a.get(RESTART_ANNOTATION))
            .map(String::as_str),
        token_seconds: spec.and_then(token_seconds),
        controller,
        pod_scheduled: pod_scheduled(pod),
        waiting: waiting(pod),
    }
}

/// What controls `pod`, from its owner reference alone (no workload
/// listed): what `recreate-nodes` needs.
pub(super) fn owner_only(pod: &Pod) -> Controller<'_> {
    match controller_ref(&pod.metadata) {
        None => Controller::None,
        Some(owner) if owner.kind == "Job" && group(&owner.api_version) == "batch" => {
            Controller::Job
        }
        Some(owner) => Controller::Other {
            kind: &owner.kind,
            uid: &owner.uid,
        },
    }
}

fn all_pods(client: &kube::Client) -> impl futures::Stream<Item = Result<Pod>> + use<> {
    each(pages(
        Api::<Pod>::all(client.clone()),
        ListParams::default(),
    ))
}

/// The longest lifetime of a token a pod holds from before the step,
/// which only its kubelet will refresh (0: none): what the `wait` policy
/// waits out. Only the pods themselves are read; no owner matters.
pub(super) async fn longest_stale_token(
    client: &kube::Client,
    horizon: &Horizon<'_>,
) -> Result<u64> {
    let mut longest = 0;
    let mut pods = std::pin::pin!(all_pods(client));
    while let Some(pod) = pods.try_next().await? {
        let facts = facts(&pod, Controller::None);
        if let Some(seconds) = rules::stale_token_seconds(&facts, horizon) {
            longest = longest.max(seconds);
        }
    }
    Ok(longest)
}

/// The `wait` policy's refreshes, observed: the pods from before the step
/// and which of them a TokenRequest bound to their uid (`requests`, the
/// latest received for each, from the audit stream) shows refreshed
/// ([`rules::tally`]). Only the pods themselves are read.
pub(super) async fn kubelet_refreshes(
    client: &kube::Client,
    horizon: &Horizon<'_>,
    requests: &BTreeMap<String, jiff::Timestamp>,
) -> Result<rules::KubeletRefreshes> {
    let mut refreshes = rules::KubeletRefreshes::default();
    let mut pods = std::pin::pin!(all_pods(client));
    while let Some(pod) = pods.try_next().await? {
        let facts = facts(&pod, Controller::None);
        rules::tally([&facts], requests, horizon, &mut refreshes);
    }
    Ok(refreshes)
}

/// What the refresh would do to each pod if RefreshTokens began at
/// `horizon.since` (a dry run), and the projected tokens pods hold, each
/// list cut at [`super::plan::MAX_LISTED`]. Reads only.
pub(super) async fn plan(client: &kube::Client, horizon: &Horizon<'_>) -> Result<PodPlan> {
    use super::plan::{MAX_LISTED, PlannedPod, ProjectedTokens};
    let index = Index::build(client, horizon.version).await?;
    let mut plan = PodPlan::default();
    let mut projected: BTreeMap<(String, String), ProjectedTokens> = BTreeMap::new();
    let mut pods = std::pin::pin!(all_pods(client));
    while let Some(pod) = pods.try_next().await? {
        let controller = index.controller(&pod);
        let facts = facts(&pod, controller);
        if let (Some(seconds), Some(spec)) = (facts.token_seconds, pod.spec.as_ref())
            && !facts.mirror
            && !facts.phase_finished()
        {
            let owner = match &controller {
                Controller::Workload(workload) => format!("{} {}", workload.kind, workload.name),
                Controller::Job => "Job".to_owned(),
                Controller::Other { kind, .. } => format!("{kind} (not restarted by ksa)"),
                Controller::None => format!("Pod {}", facts.name),
            };
            let key = (facts.namespace.to_owned(), owner.clone());
            if projected.contains_key(&key) || projected.len() < MAX_LISTED {
                let entry = projected.entry(key).or_insert_with(|| ProjectedTokens {
                    namespace: facts.namespace.to_owned(),
                    owner,
                    ..ProjectedTokens::default()
                });
                entry.pods += 1;
                entry.longest_seconds = entry.longest_seconds.max(seconds);
                for audience in token_audiences(spec) {
                    if !entry.audiences.contains(&audience) && entry.audiences.len() < 16 {
                        entry.audiences.push(audience);
                    }
                }
            } else {
                plan.truncated = true;
            }
        }
        let Verdict::Stale(refresh) =
            rules::assess(&facts, index.budgets.of(facts.namespace), horizon)
        else {
            continue;
        };
        plan.stale += 1;
        plan.longest_stale_seconds = plan
            .longest_stale_seconds
            .max(facts.token_seconds.unwrap_or_default());
        if let Refresh::RestartTemplate(workload) = &refresh {
            plan.workloads.insert(
                workload.uid.clone(),
                (
                    workload.kind,
                    workload.namespace.clone(),
                    workload.name.clone(),
                ),
            );
        }
        if plan.pods.len() < MAX_LISTED {
            plan.pods.push(PlannedPod::new(&facts, &refresh));
        } else {
            plan.truncated = true;
        }
    }
    plan.projected = projected.into_values().collect();
    Ok(plan)
}

/// What [`plan`] found.
#[derive(Debug, Default)]
pub(super) struct PodPlan {
    pub stale: u64,
    pub longest_stale_seconds: u64,
    /// Workloads whose template would be restarted, by uid.
    pub workloads: BTreeMap<String, Restart>,
    pub pods: Vec<super::plan::PlannedPod>,
    pub projected: Vec<super::plan::ProjectedTokens>,
    pub truncated: bool,
}

/// The audiences of the service-account tokens `spec` projects (none
/// given: the API server's default audiences, shown as `(default)`).
fn token_audiences(spec: &PodSpec) -> Vec<String> {
    service_account_tokens(spec)
        .map(|t| {
            t.audience
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| "(default)".to_owned())
        })
        .collect()
}

/// How many pods hold a stale bound token, and who: the holders of a
/// rollout the cluster says cannot progress named blocked, with why
/// ([`rules::Tally`]).
pub(super) async fn observe(client: &kube::Client, horizon: &Horizon<'_>) -> Result<BoundTokens> {
    let index = Index::build(client, horizon.version).await?;
    let mut tally = rules::Tally::new(MAX_TRACKED);
    let mut pods = std::pin::pin!(all_pods(client));
    while let Some(pod) = pods.try_next().await? {
        let facts = facts(&pod, index.controller(&pod));
        let verdict = rules::assess(&facts, index.budgets.of(facts.namespace), horizon);
        tally.see(&facts, &verdict, horizon);
    }
    let (stale, holders) = tally.finish();
    Ok(BoundTokens {
        stale,
        holders,
        ..BoundTokens::default()
    })
}

/// A workload to restart: its kind, namespace and name.
pub(super) type Restart = (WorkloadKind, String, String);

/// One pass: restart the template of every workload with a stale pod that
/// a restart replaces, and evict what the rules say to evict, paced.
pub(super) async fn refresh(client: &kube::Client, horizon: &Horizon<'_>) -> Result<()> {
    let index = Index::build(client, horizon.version).await?;
    let mut restarts: BTreeMap<String, Restart> = BTreeMap::new();
    let mut pacer: Pacer<(String, String)> = Pacer::new(MAX_TRACKED);
    let mut pods = std::pin::pin!(all_pods(client));
    while let Some(pod) = pods.try_next().await? {
        let facts = facts(&pod, index.controller(&pod));
        if let (Some(owner), Some(available)) =
            (rules::pace_owner(&facts), rules::available(&facts))
        {
            pacer.see(&paced(facts.namespace, owner), available);
        }
        match rules::assess(&facts, index.budgets.of(facts.namespace), horizon) {
            Verdict::Stale(Refresh::RestartTemplate(workload)) => {
                restarts.entry(workload.uid.clone()).or_insert_with(|| {
                    (
                        workload.kind,
                        workload.namespace.clone(),
                        workload.name.clone(),
                    )
                });
            }
            Verdict::Stale(Refresh::Evict(pace)) => {
                let pod = (facts.namespace.to_owned(), facts.name.to_owned());
                match pace {
                    rules::Pace::Alone => pacer.offer(rules::Pace::Alone, pod),
                    rules::Pace::Owner(owner) => {
                        let key = paced(facts.namespace, owner);
                        pacer.offer(rules::Pace::Owner(&key), pod);
                    }
                }
            }
            _ => {}
        }
    }
    restart_all(client, restarts.into_values().collect(), horizon.version).await?;
    super::evict_all(client, pacer.evictions()).await?;
    Ok(())
}

/// The pacing key of an owner: its namespace and uid (a uid a tenant wrote
/// is cut, so it cannot make the key large).
fn paced(namespace: &str, owner: &str) -> String {
    let mut end = owner.len().min(64);
    while !owner.is_char_boundary(end) {
        end -= 1;
    }
    format!("{namespace}/{}", &owner[..end])
}

/// Sets the restart annotation to `version` on each workload's pod
/// template, [`CONCURRENCY`] at a time.
async fn restart_all(client: &kube::Client, workloads: Vec<Restart>, version: &str) -> Result<()> {
    use futures::StreamExt as _;
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: version}}}}});
    let patch = &patch;
    futures::stream::iter(workloads)
        .map(|(kind, namespace, name)| async move {
            let params = PatchParams::default();
            let patch = Patch::Merge(patch);
            let client = client.clone();
            let outcome = match kind {
                WorkloadKind::Deployment => Api::<Deployment>::namespaced(client, &namespace)
                    .patch(&name, &params, &patch)
                    .await
                    .map(drop),
                WorkloadKind::StatefulSet => Api::<StatefulSet>::namespaced(client, &namespace)
                    .patch(&name, &params, &patch)
                    .await
                    .map(drop),
                WorkloadKind::DaemonSet => Api::<DaemonSet>::namespaced(client, &namespace)
                    .patch(&name, &params, &patch)
                    .await
                    .map(drop),
            };
            match outcome {
                // Deleted meanwhile: nothing left to restart.
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                other => other,
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        PodStatus, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelectorRequirement, OwnerReference,
    };
    use kube::api::ObjectMeta;

    use super::*;

    #[test]
    fn a_label_selector_becomes_the_requirements_the_eviction_api_reads() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let pod_labels = labels(&[("app", "web"), ("tier", "front")]);
        let expression = |key: &str, operator: &str, values: Option<&[&str]>| {
            selector(Some(&LabelSelector {
                match_labels: Some(labels(&[("tier", "front")])),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: key.into(),
                    operator: operator.into(),
                    values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
                }]),
            }))
        };
        assert!(expression("app", "In", Some(&["web", "db"])).matches(&pod_labels));
        assert!(!expression("app", "In", Some(&["db"])).matches(&pod_labels));
        assert!(expression("zone", "DoesNotExist", None).matches(&pod_labels));
        // One invalid expression: the selector matches nothing.
        assert!(!expression("app", "Near", Some(&["web"])).matches(&pod_labels));
        assert!(!expression("app", "Exists", Some(&["web"])).matches(&pod_labels));
        // matchLabels count as well as the expressions.
        let other = labels(&[("app", "web"), ("tier", "back")]);
        assert!(!expression("app", "In", Some(&["web"])).matches(&other));
        // No selector matches nothing; an empty one everything.
        assert!(!selector(None).matches(&pod_labels));
        assert!(selector(Some(&LabelSelector::default())).matches(&pod_labels));
    }

    fn owner(api_version: &str, kind: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: "owner".into(),
            uid: uid.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }
    }

    fn pod_owned_by(namespace: &str, owners: Vec<OwnerReference>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some("p".into()),
                owner_references: Some(owners),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn index() -> Index {
        let mut index = Index::default();
        for (kind, uid) in [
            (WorkloadKind::Deployment, "deploy"),
            (WorkloadKind::StatefulSet, "sts"),
            (WorkloadKind::DaemonSet, "ds"),
        ] {
            index.add(
                kind,
                &ObjectMeta {
                    uid: Some(uid.into()),
                    namespace: Some("apps".into()),
                    name: Some(uid.into()),
                    ..ObjectMeta::default()
                },
                Strategy::Replace,
                false,
                false,
            );
        }
        index
            .deployment_of
            .insert("rs".into(), ("apps".into(), "deploy".into()));
        index
    }

    #[test]
    fn owners_resolve_through_listed_workloads_in_the_pods_namespace() {
        let index = index();
        let resolved = |namespace: &str, owners: Vec<OwnerReference>| {
            let pod = pod_owned_by(namespace, owners);
            match index.controller(&pod) {
                Controller::None => "none".to_owned(),
                Controller::Job => "job".to_owned(),
                Controller::Workload(w) => format!("{} {}", w.kind, w.uid),
                Controller::Other { kind, uid } => format!("other {kind} {uid}"),
            }
        };
        assert_eq!(
            resolved("apps", vec![owner("apps/v1", "ReplicaSet", "rs")]),
            "Deployment deploy"
        );
        assert_eq!(
            resolved("apps", vec![owner("apps/v1", "StatefulSet", "sts")]),
            "StatefulSet sts"
        );
        assert_eq!(
            resolved("apps", vec![owner("apps/v1", "DaemonSet", "ds")]),
            "DaemonSet ds"
        );
        assert_eq!(resolved("apps", vec![owner("batch/v1", "Job", "j")]), "job");
        // A bare ReplicaSet, a ReplicationController, a custom resource.
        assert_eq!(
            resolved("apps", vec![owner("apps/v1", "ReplicaSet", "bare-rs")]),
            "other ReplicaSet bare-rs"
        );
        assert_eq!(
            resolved("apps", vec![owner("v1", "ReplicationController", "rc")]),
            "other ReplicationController rc"
        );
        assert_eq!(
            resolved("apps", vec![owner("zoo.ksa.dev/v1", "Widget", "w")]),
            "other Widget w"
        );
        // Owners in another namespace, of another kind or group, or not
        // controllers, are not what they claim.
        assert_eq!(
            resolved("tenant", vec![owner("apps/v1", "ReplicaSet", "rs")]),
            "other ReplicaSet rs"
        );
        assert_eq!(
            resolved("apps", vec![owner("apps/v1", "StatefulSet", "ds")]),
            "other StatefulSet ds"
        );
        assert_eq!(
            resolved("apps", vec![owner("evil.example/v1", "Job", "j")]),
            "other Job j"
        );
        let mut not_controller = owner("batch/v1", "Job", "j");
        not_controller.controller = None;
        assert_eq!(resolved("apps", vec![not_controller]), "none");
        assert_eq!(resolved("apps", vec![]), "none");
    }

    fn token_volume(seconds: Option<i64>) -> Volume {
        Volume {
            name: "token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: seconds,
                        path: "token".into(),
                        audience: Some("vault".into()),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        }
    }

    #[test]
    fn the_longest_projected_token_counts() {
        let spec = |volumes: Vec<Volume>| PodSpec {
            volumes: Some(volumes),
            ..PodSpec::default()
        };
        assert_eq!(token_seconds(&spec(vec![])), None);
        assert_eq!(
            token_seconds(&spec(vec![Volume {
                name: "config".into(),
                ..Volume::default()
            }])),
            None
        );
        assert_eq!(
            token_seconds(&spec(vec![token_volume(None)])),
            Some(rules::DEFAULT_TOKEN_SECONDS)
        );
        assert_eq!(
            token_seconds(&spec(vec![
                token_volume(Some(600)),
                token_volume(Some(86_400)),
                token_volume(Some(7200)),
            ])),
            Some(86_400)
        );
        // A negative lifetime (which validation refuses) is the default.
        assert_eq!(
            token_seconds(&spec(vec![token_volume(Some(-5))])),
            Some(rules::DEFAULT_TOKEN_SECONDS)
        );
    }

    #[test]
    fn a_pod_reads_into_the_rules_values() {
        let mut pod = pod_owned_by("apps", vec![]);
        pod.metadata.annotations = Some(BTreeMap::from([
            (MIRROR_ANNOTATION.to_owned(), "hash".to_owned()),
            (RESTART_ANNOTATION.to_owned(), "2".to_owned()),
        ]));
        pod.spec = Some(PodSpec {
            node_name: Some("node-0".into()),
            volumes: Some(vec![token_volume(Some(600))]),
            ..PodSpec::default()
        });
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![
                k8s_openapi::api::core::v1::PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                },
                k8s_openapi::api::core::v1::PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "False".into(),
                    ..Default::default()
                },
            ]),
            ..PodStatus::default()
        });
        let facts = facts(&pod, Controller::None);
        assert!(facts.mirror && facts.scheduled && facts.ready && !facts.evicted);
        assert_eq!(facts.phase, Phase::Running);
        assert_eq!(facts.restarted_for, Some("2"));
        assert_eq!(facts.token_seconds, Some(600));
        // An empty node name is not a node.
        pod.spec = Some(PodSpec {
            node_name: Some(String::new()),
            ..PodSpec::default()
        });
        assert!(!super::facts(&pod, Controller::None).scheduled);
        // Nothing at all: no panic, and no token.
        let empty = Pod::default();
        let facts = super::facts(&empty, owner_only(&empty));
        assert_eq!(facts.token_seconds, None);
        assert_eq!(facts.controller, Controller::None);
    }

    #[test]
    fn what_stops_a_rollout_reads_into_the_rules_values() {
        use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition,
        };
        let quota = r#"pods "web-5d9f8-x7k2p" is forbidden: exceeded quota: pods"#;
        let mut deployment = Deployment {
            metadata: ObjectMeta {
                generation: Some(3),
                ..ObjectMeta::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(3),
                conditions: Some(vec![
                    DeploymentCondition {
                        type_: "Progressing".into(),
                        status: "True".into(),
                        reason: Some("ReplicaSetUpdated".into()),
                        ..DeploymentCondition::default()
                    },
                    DeploymentCondition {
                        type_: "ReplicaFailure".into(),
                        status: "True".into(),
                        reason: Some("FailedCreate".into()),
                        message: Some(quota.into()),
                        ..DeploymentCondition::default()
                    },
                ]),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        };
        let stall = rules::workload_stall(&rollout_status(&deployment)).expect("a stall");
        assert_eq!(
            stall.to_string(),
            format!("its ReplicaSet cannot create pods (FailedCreate): {quota}")
        );
        // The restart not yet observed by the deployment controller.
        deployment.metadata.generation = Some(4);
        assert_eq!(rules::workload_stall(&rollout_status(&deployment)), None);
        // No status at all: nothing observed.
        assert_eq!(
            rules::workload_stall(&rollout_status(&Deployment::default())),
            None
        );

        let mut pod = pod_owned_by("apps", vec![]);
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/2 nodes are available".into()),
                ..PodCondition::default()
            }]),
            init_container_statuses: Some(vec![ContainerStatus {
                name: "init".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ImagePullBackOff".into()),
                        message: Some("Back-off pulling image".into()),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "app".into(),
                state: Some(ContainerState::default()),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        let facts = facts(&pod, Controller::None);
        assert_eq!(
            facts.pod_scheduled,
            Some(Condition {
                status: "False",
                reason: "Unschedulable",
                message: "0/2 nodes are available",
            })
        );
        assert_eq!(
            facts.waiting,
            vec![ContainerWaiting {
                container: "init",
                reason: "ImagePullBackOff",
                message: "Back-off pulling image",
            }]
        );
    }

    #[test]
    fn pacing_keys_are_bounded() {
        let long = "u".repeat(10_000);
        assert!(paced("apps", &long).len() < 100);
        // Cut on a character boundary.
        let wide = "é".repeat(100);
        assert_eq!(paced("apps", &wide), format!("apps/{}", "é".repeat(32)));
    }
}
