//! Who a RefreshTokens step waits for, by name: the pods (or, under
//! `recreate-nodes`, the nodes) whose bound tokens are not refreshed yet,
//! and the legacy token Secrets ksa cannot re-mint, each with why it is
//! still waited for.
//!
//! [`super::step`] decides on counts only ([`super::Observed::stale_bound_tokens`]);
//! [`Holders`] says who those counts are, for the status, Events and the
//! CLI: how many wait for each kind of reason, and the first few by name,
//! the ones an operator can act on first. Its size is bounded whatever the
//! cluster holds ([`MAX_NAMED`] names, each cut at [`MAX_NAME_BYTES`]), and
//! its text escapes control characters: names come from objects a tenant
//! wrote.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How many holders are named; the rest are counted.
pub const MAX_NAMED: usize = 5;
/// The longest name kept, in bytes (a DNS-1123 subdomain's limit).
pub const MAX_NAME_BYTES: usize = 253;
/// The longest message of the cluster kept (a scheduler's, a ReplicaSet's),
/// in bytes.
pub const MAX_MESSAGE_BYTES: usize = 400;

/// The kind of workload whose pod template ksa restarts (a tenant's, to
/// refresh its tokens, or the API servers' own, to roll out a key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    /// Every kind, in the order messages list them.
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];

    /// The kind as the API names it (`Deployment`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// The kind an object or a spec names, exactly as the API spells it;
    /// `None` for any other.
    pub fn parse(kind: &str) -> Option<WorkloadKind> {
        WorkloadKind::ALL
            .into_iter()
            .find(|known| known.as_str() == kind)
    }

    /// The resource, as `kubectl` spells it (`deployment`).
    pub fn resource(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token holder is still waited for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "reason"
)]
#[non_exhaustive]
pub enum HolderReason {
    /// Its workload's pod template is to be restarted (on the next pass).
    TemplateToRestart {
        kind: WorkloadKind,
        workload: String,
    },
    /// Its workload's pod template was restarted; the rollout replaces it.
    RolloutInProgress {
        kind: WorkloadKind,
        workload: String,
    },
    /// Its workload's pod template was restarted, and the rollout cannot
    /// progress: `stall` says why, as the cluster does. It goes on by
    /// itself once an operator has fixed what the cluster names.
    RolloutBlocked {
        kind: WorkloadKind,
        workload: String,
        stall: Stall,
    },
    /// Its Deployment is paused, so a template restart would not replace
    /// it: the rotation waits until the Deployment is resumed.
    DeploymentPaused { deployment: String },
    /// It is to be evicted (its controller replaces it), one pod of its
    /// workload at a time.
    ToEvict,
    /// It was evicted and is terminating; its controller replaces it.
    Evicted,
    /// It is being deleted (not by ksa).
    Terminating,
    /// A PodDisruptionBudget allows no disruption now: the Eviction API
    /// refuses to evict it.
    DisruptionBudget { budget: String, allowed: i32 },
    /// The PodDisruptionBudget selecting it has changed and the disruption
    /// controller has not caught up: the Eviction API refuses until it has.
    DisruptionBudgetPending { budget: String },
    /// `count` PodDisruptionBudgets select it (`first` among them): the
    /// Eviction API evicts no pod with more than one.
    SeveralDisruptionBudgets { count: u32, first: String },
    /// A running Job's pod: evicting it could fail the Job, so the rotation
    /// waits for it to finish, or until its kubelet has refreshed its token
    /// (`until`, from the step's start and its token lifetime).
    RunningJob { until: Timestamp },
    /// `recreate-nodes`: a node that predates the step, to be cordoned,
    /// drained and deleted for the infrastructure to replace, one node at a
    /// time.
    NodeToRecreate,
    /// `recreate-nodes`: the node being recreated: cordoned, `pods` pods
    /// still to evict or to go, then deleted.
    NodeDraining { pods: u64 },
    /// A legacy token Secret that is `immutable`: the API server refuses
    /// ksa's re-mint.
    LegacyTokenImmutable,
    /// A legacy token Secret whose token `by` (a field manager, as its
    /// `managedFields` say) replaced at `at`, after RefreshTokens began:
    /// ksa's re-mint does not hold.
    LegacyTokenReplaced { by: String, at: Timestamp },
    /// A legacy token Secret ksa has not re-minted yet (named only once
    /// given up on).
    LegacyTokenStale,
}

/// The kind of reason, by which holders are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum HolderCategory {
    /// Waits for an operator: a PodDisruptionBudget, a paused Deployment.
    Blocked,
    /// A node to recreate.
    Node,
    /// A running Job's pod.
    RunningJob,
    /// To be evicted, or evicted and terminating.
    Eviction,
    /// Its workload's template restart replaces it.
    Rollout,
    /// A legacy token Secret ksa re-mints.
    LegacyToken,
}

impl HolderCategory {
    fn describe(self, count: u64) -> String {
        let plural = |one: &str, many: &str| if count == 1 { one } else { many }.to_owned();
        let what = match self {
            HolderCategory::Blocked => "blocked".to_owned(),
            HolderCategory::Node => plural("node to recreate", "nodes to recreate"),
            HolderCategory::RunningJob => plural("running Job pod", "running Job pods"),
            HolderCategory::Eviction => "being evicted".to_owned(),
            HolderCategory::Rollout => "rolling out".to_owned(),
            HolderCategory::LegacyToken => {
                plural("legacy token to re-mint", "legacy tokens to re-mint")
            }
        };
        format!("{count} {what}")
    }
}

impl HolderReason {
    pub fn category(&self) -> HolderCategory {
        match self {
            HolderReason::DeploymentPaused { .. }
            | HolderReason::RolloutBlocked { .. }
            | HolderReason::DisruptionBudget { .. }
            | HolderReason::DisruptionBudgetPending { .. }
            | HolderReason::SeveralDisruptionBudgets { .. }
            | HolderReason::LegacyTokenImmutable
            | HolderReason::LegacyTokenReplaced { .. } => HolderCategory::Blocked,
            HolderReason::LegacyTokenStale => HolderCategory::LegacyToken,
            HolderReason::NodeToRecreate | HolderReason::NodeDraining { .. } => {
                HolderCategory::Node
            }
            HolderReason::RunningJob { .. } => HolderCategory::RunningJob,
            HolderReason::ToEvict | HolderReason::Evicted | HolderReason::Terminating => {
                HolderCategory::Eviction
            }
            HolderReason::TemplateToRestart { .. } | HolderReason::RolloutInProgress { .. } => {
                HolderCategory::Rollout
            }
        }
    }

    /// Whether only an operator (or the kubelet's own token refresh, much
    /// later) lets it proceed: what an Event should warn about.
    pub fn is_blocked(&self) -> bool {
        self.category() == HolderCategory::Blocked
    }
}

impl fmt::Display for HolderReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HolderReason::TemplateToRestart { kind, workload } => {
                write!(f, "{kind} {}: template to be restarted", Clean(workload))
            }
            HolderReason::RolloutInProgress { kind, workload } => write!(
                f,
                "{kind} {}: template restarted, rollout in progress",
                Clean(workload)
            ),
            HolderReason::RolloutBlocked {
                kind,
                workload,
                stall,
            } => write!(f, "{kind} {}: rollout blocked, {stall}", Clean(workload)),
            HolderReason::DeploymentPaused { deployment } => write!(
                f,
                "Deployment {} is paused: its rollout waits for `kubectl rollout resume`",
                Clean(deployment)
            ),
            HolderReason::ToEvict => {
                f.write_str("to be evicted, one pod of its workload at a time")
            }
            HolderReason::Evicted => f.write_str("evicted, waiting for its replacement"),
            HolderReason::Terminating => f.write_str("being deleted, waiting for it to go"),
            HolderReason::DisruptionBudget { budget, allowed } => {
                let unit = if *allowed == 1 {
                    "disruption"
                } else {
                    "disruptions"
                };
                write!(f, "PDB {} allows {allowed} {unit}", Clean(budget))
            }
            HolderReason::DisruptionBudgetPending { budget } => write!(
                f,
                "PDB {} is not yet processed by the disruption controller",
                Clean(budget)
            ),
            HolderReason::SeveralDisruptionBudgets { count, first } => write!(
                f,
                "{count} PDBs select it ({} among them); the Eviction API evicts no pod with more than one",
                Clean(first)
            ),
            HolderReason::RunningJob { until } => write!(
                f,
                "running Job pod: waiting for it to finish, or for the kubelet to refresh its token (by {until})"
            ),
            HolderReason::NodeToRecreate => f.write_str(
                "node to be cordoned, drained, deleted and replaced, one node at a time",
            ),
            HolderReason::NodeDraining { pods: 0 } => {
                f.write_str("cordoned and drained, to be deleted and replaced")
            }
            HolderReason::NodeDraining { pods } => {
                let unit = if *pods == 1 { "pod" } else { "pods" };
                write!(
                    f,
                    "cordoned, draining: {pods} {unit} to evict or to go, then deleted and replaced"
                )
            }
            HolderReason::LegacyTokenImmutable => {
                f.write_str("legacy token Secret is immutable: ksa cannot re-mint it")
            }
            // Not the time: a loop that keeps replacing it would change the
            // blocked list, and raise an Event, on every pass.
            HolderReason::LegacyTokenReplaced { by, .. } => write!(
                f,
                "legacy token Secret: its token was replaced by {} after RefreshTokens began; ksa's re-mint does not hold",
                Clean(by)
            ),
            HolderReason::LegacyTokenStale => f.write_str("legacy token Secret not re-minted yet"),
        }
    }
}

/// What stops a restarted workload's rollout, by kind, in the order an
/// operator should look at them: a cause before what it leads to (pods
/// that cannot be created or scheduled before the progress deadline they
/// make the Deployment miss).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum StallKind {
    /// Its ReplicaSet cannot create (or delete) pods: the Deployment's
    /// `ReplicaFailure` condition (a ResourceQuota that is full, a
    /// LimitRange or an admission webhook refusing the pod).
    ReplicaFailure,
    /// A replacement pod cannot be scheduled: `PodScheduled=False`, reason
    /// `Unschedulable`.
    Unschedulable,
    /// A container of a replacement pod cannot get its image
    /// (`ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`,
    /// `ErrImageNeverPull`).
    ImagePull,
    /// A container of a replacement pod cannot be created from its spec
    /// (`CreateContainerConfigError`: a Secret or ConfigMap it names is
    /// missing).
    ContainerConfig,
    /// A container of a replacement pod keeps crashing
    /// (`CrashLoopBackOff`).
    CrashLoop,
    /// The Deployment made no progress within its
    /// `progressDeadlineSeconds`: `Progressing=False`, reason
    /// `ProgressDeadlineExceeded`.
    ProgressDeadline,
}

/// Why a restarted workload's rollout cannot progress, as the cluster says
/// it: the reason and message of the condition or container state that
/// says so, and which replacement pod (and container) when a pod's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stall {
    pub kind: StallKind,
    /// The cluster's reason (`FailedCreate`, `Unschedulable`,
    /// `ImagePullBackOff`, ...), cut at [`MAX_NAME_BYTES`].
    pub reason: String,
    /// The cluster's message, cut at [`MAX_MESSAGE_BYTES`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The replacement pod it was seen on; empty when the workload says it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// The container of that pod; empty when the pod or the workload says
    /// it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
}

impl Stall {
    /// A stall, its texts cut.
    pub fn new(kind: StallKind, reason: &str, message: &str, pod: &str, container: &str) -> Stall {
        Stall {
            kind,
            reason: cut(reason, MAX_NAME_BYTES).to_owned(),
            message: cut(message, MAX_MESSAGE_BYTES).to_owned(),
            pod: cut(pod, MAX_NAME_BYTES).to_owned(),
            container: cut(container, MAX_NAME_BYTES).to_owned(),
        }
    }
}

impl fmt::Display for Stall {
    /// `replacement pod web-7d9f8-x2k4q cannot be scheduled
    /// (Unschedulable): 0/3 nodes are available: ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pod = Clean(&self.pod);
        let container = Clean(&self.container);
        let of = |f: &mut fmt::Formatter<'_>| {
            if self.container.is_empty() {
                write!(f, "replacement pod {pod}")
            } else {
                write!(f, "container {container} of replacement pod {pod}")
            }
        };
        match self.kind {
            StallKind::ReplicaFailure => f.write_str("its ReplicaSet cannot create pods")?,
            StallKind::ProgressDeadline => {
                f.write_str("no progress within its progress deadline")?;
            }
            StallKind::Unschedulable => {
                of(f)?;
                f.write_str(" cannot be scheduled")?;
            }
            StallKind::ImagePull => {
                of(f)?;
                f.write_str(" cannot pull its image")?;
            }
            StallKind::ContainerConfig => {
                of(f)?;
                f.write_str(" cannot be created from its spec")?;
            }
            StallKind::CrashLoop => {
                of(f)?;
                f.write_str(" keeps crashing")?;
            }
        }
        write!(f, " ({})", Clean(&self.reason))?;
        if !self.message.is_empty() {
            write!(f, ": {}", Message(&self.message))?;
        }
        Ok(())
    }
}

/// One holder named in the status: a pod (`namespace/name`) or a node
/// (no namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedHolder {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    #[serde(flatten)]
    pub reason: HolderReason,
}

impl NamedHolder {
    /// A holder, its names cut at [`MAX_NAME_BYTES`].
    pub fn new(namespace: &str, name: &str, reason: HolderReason) -> NamedHolder {
        NamedHolder {
            namespace: cut(namespace, MAX_NAME_BYTES).to_owned(),
            name: cut(name, MAX_NAME_BYTES).to_owned(),
            reason,
        }
    }
}

impl fmt::Display for NamedHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} ({})", Clean(&self.name), self.reason)
        } else {
            write!(
                f,
                "{}/{} ({})",
                Clean(&self.namespace),
                Clean(&self.name),
                self.reason
            )
        }
    }
}

/// Who the bound-token refresh waits for: counts by kind of reason, and the
/// first few holders by name, those that wait for an operator first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holders {
    /// How many holders wait, by kind of reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<HolderCategory, u64>,
    /// At most [`MAX_NAMED`], ordered by category (blocked first), then as
    /// recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named: Vec<NamedHolder>,
}

impl Holders {
    /// Counts `holder`, and names it if it is among the first few.
    pub fn record(&mut self, holder: NamedHolder) {
        let category = holder.reason.category();
        let count = self.counts.entry(category).or_insert(0);
        *count = count.saturating_add(1);
        // After every holder of the same or a more urgent category.
        let at = self
            .named
            .iter()
            .position(|named| named.reason.category() > category)
            .unwrap_or(self.named.len());
        if at < MAX_NAMED {
            self.named.insert(at, holder);
            self.named.truncate(MAX_NAMED);
        }
    }

    /// Counts `n` more holders of `category` without naming them (those
    /// past the first few of a kind, when they are recorded in bulk).
    pub fn count(&mut self, category: HolderCategory, n: u64) {
        if n == 0 {
            return;
        }
        let count = self.counts.entry(category).or_insert(0);
        *count = count.saturating_add(n);
    }

    /// How many holders were counted.
    pub fn total(&self) -> u64 {
        self.counts
            .values()
            .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.named.is_empty()
    }

    /// The named holders that wait for an operator.
    pub fn blocked(&self) -> impl Iterator<Item = &NamedHolder> {
        self.named.iter().filter(|h| h.reason.is_blocked())
    }
}

impl fmt::Display for Holders {
    /// `2 blocked, 3 rolling out: ns/a (why), ns/b (why) and 3 more`; empty
    /// when nothing was recorded.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return Ok(());
        }
        let counts: Vec<String> = self
            .counts
            .iter()
            .map(|(category, n)| category.describe(*n))
            .collect();
        f.write_str(&counts.join(", "))?;
        for (i, holder) in self.named.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { ", " })?;
            write!(f, "{holder}")?;
        }
        let more = self.total().saturating_sub(self.named.len() as u64);
        if more > 0 && !self.named.is_empty() {
            write!(f, " and {more} more")?;
        }
        Ok(())
    }
}

/// `text` cut at `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A name as text: cut at [`MAX_NAME_BYTES`], with control characters
/// escaped, so a name cannot forge lines of a log or the CLI's output.
struct Clean<'a>(&'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escaped(f, cut(self.0, MAX_NAME_BYTES))
    }
}

/// A message of the cluster as text (it may quote a name a tenant wrote):
/// cut at [`MAX_MESSAGE_BYTES`], with control characters escaped.
struct Message<'a>(&'a str);

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escaped(f, cut(self.0, MAX_MESSAGE_BYTES))
    }
}

fn escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            fmt::Write::write_char(f, c)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, reason: HolderReason) -> NamedHolder {
        NamedHolder::new("apps", name, reason)
    }

    fn rollout() -> HolderReason {
        HolderReason::RolloutInProgress {
            kind: WorkloadKind::Deployment,
            workload: "web".into(),
        }
    }

    fn budget() -> HolderReason {
        HolderReason::DisruptionBudget {
            budget: "web-pdb".into(),
            allowed: 0,
        }
    }

    #[test]
    fn holders_are_counted_by_kind_and_the_blocked_named_first() {
        let mut holders = Holders::default();
        for i in 0..7 {
            holders.record(pod(&format!("web-{i}"), rollout()));
        }
        holders.record(pod("guarded-0", budget()));
        holders.record(pod("evicted-0", HolderReason::Evicted));
        assert_eq!(holders.total(), 9);
        assert_eq!(holders.named.len(), MAX_NAMED);
        assert_eq!(holders.named[0].name, "guarded-0");
        assert_eq!(holders.named[1].name, "evicted-0");
        assert_eq!(holders.named[2].name, "web-0");
        assert_eq!(
            holders.to_string(),
            "1 blocked, 1 being evicted, 7 rolling out: \
             apps/guarded-0 (PDB web-pdb allows 0 disruptions), \
             apps/evicted-0 (evicted, waiting for its replacement), \
             apps/web-0 (Deployment web: template restarted, rollout in progress), \
             apps/web-1 (Deployment web: template restarted, rollout in progress), \
             apps/web-2 (Deployment web: template restarted, rollout in progress) and 4 more"
        );
        assert_eq!(holders.blocked().count(), 1);
    }

    #[test]
    fn names_are_cut_and_control_characters_escaped() {
        let long = "a".repeat(1000);
        let holder = NamedHolder::new(&long, "evil\nState of KSASigningKeyRotation", budget());
        assert_eq!(holder.namespace.len(), MAX_NAME_BYTES);
        let text = holder.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("evil\\nState"), "{text}");
        // Cut on a character boundary.
        let wide = "é".repeat(200);
        assert!(NamedHolder::new("ns", &wide, budget()).name.len() <= MAX_NAME_BYTES);
        // Fields set directly are cut when shown.
        let mut direct = Holders::default();
        direct.named.push(NamedHolder {
            namespace: String::new(),
            name: "b".repeat(10_000),
            reason: HolderReason::NodeDraining { pods: 2 },
        });
        assert!(direct.to_string().len() < 400);
    }

    #[test]
    fn the_serialized_form_is_tagged_and_round_trips() {
        let mut holders = Holders::default();
        holders.record(pod("guarded-0", budget()));
        holders.record(NamedHolder::new(
            "",
            "kwok-node-0",
            HolderReason::NodeDraining { pods: 3 },
        ));
        let json = serde_json::to_value(&holders).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "counts": {"blocked": 1, "node": 1},
                "named": [
                    {"namespace": "apps", "name": "guarded-0", "reason": "disruptionBudget", "budget": "web-pdb", "allowed": 0},
                    {"name": "kwok-node-0", "reason": "nodeDraining", "pods": 3},
                ],
            })
        );
        let back: Holders = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, holders);
        let blocked = HolderReason::RolloutBlocked {
            kind: WorkloadKind::Deployment,
            workload: "web".into(),
            stall: Stall::new(
                StallKind::ReplicaFailure,
                "FailedCreate",
                "exceeded quota",
                "",
                "",
            ),
        };
        let json = serde_json::to_value(pod("web-0", blocked.clone())).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "namespace": "apps", "name": "web-0", "reason": "rolloutBlocked",
                "kind": "Deployment", "workload": "web",
                "stall": {"kind": "replicaFailure", "reason": "FailedCreate", "message": "exceeded quota"},
            })
        );
        let back: NamedHolder = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back.reason, blocked);
        assert!(blocked.is_blocked());
        assert_eq!(Holders::default().to_string(), "");
    }

    #[test]
    fn every_reason_reads_as_a_sentence() {
        let until: Timestamp = "2026-01-01T00:48:00Z".parse().expect("time");
        let cases = [
            (
                HolderReason::TemplateToRestart {
                    kind: WorkloadKind::StatefulSet,
                    workload: "db".into(),
                },
                "StatefulSet db: template to be restarted",
            ),
            (
                HolderReason::RolloutBlocked {
                    kind: WorkloadKind::Deployment,
                    workload: "web".into(),
                    stall: Stall::new(
                        StallKind::Unschedulable,
                        "Unschedulable",
                        "0/3 nodes are available",
                        "web-7d9f8-x2k4q",
                        "",
                    ),
                },
                "Deployment web: rollout blocked, replacement pod web-7d9f8-x2k4q cannot be scheduled (Unschedulable): 0/3 nodes are available",
            ),
            (
                HolderReason::DeploymentPaused {
                    deployment: "web".into(),
                },
                "Deployment web is paused: its rollout waits for `kubectl rollout resume`",
            ),
            (
                HolderReason::ToEvict,
                "to be evicted, one pod of its workload at a time",
            ),
            (
                HolderReason::Terminating,
                "being deleted, waiting for it to go",
            ),
            (
                HolderReason::DisruptionBudget {
                    budget: "b".into(),
                    allowed: 1,
                },
                "PDB b allows 1 disruption",
            ),
            (
                HolderReason::DisruptionBudgetPending { budget: "b".into() },
                "PDB b is not yet processed by the disruption controller",
            ),
            (
                HolderReason::SeveralDisruptionBudgets {
                    count: 2,
                    first: "a".into(),
                },
                "2 PDBs select it (a among them); the Eviction API evicts no pod with more than one",
            ),
            (
                HolderReason::RunningJob { until },
                "running Job pod: waiting for it to finish, or for the kubelet to refresh its token (by 2026-01-01T00:48:00Z)",
            ),
            (
                HolderReason::NodeToRecreate,
                "node to be cordoned, drained, deleted and replaced, one node at a time",
            ),
            (
                HolderReason::NodeDraining { pods: 1 },
                "cordoned, draining: 1 pod to evict or to go, then deleted and replaced",
            ),
            (
                HolderReason::LegacyTokenImmutable,
                "legacy token Secret is immutable: ksa cannot re-mint it",
            ),
            (
                HolderReason::LegacyTokenReplaced {
                    by: "loop\nx".into(),
                    at: until,
                },
                "legacy token Secret: its token was replaced by loop\\nx after RefreshTokens began; ksa's re-mint does not hold",
            ),
            (
                HolderReason::LegacyTokenStale,
                "legacy token Secret not re-minted yet",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }
}
