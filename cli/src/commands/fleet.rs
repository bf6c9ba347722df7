//! The fleet view: every `KSASigningKeyRotation` in the admin cluster at
//! once (`status -A`), and what rotating each would do (`plan -A`,
//! `rotate -A --dry-run`), changing nothing.

use std::time::Duration;

use futures::StreamExt as _;
use ksa_core::KeyVersion;
use ksa_core::issuer::Issuer;
use ksa_core::rotation::{self, Requested, StartRequest, Step};
use ksa_kube::api::{KSASigningKeyRotation, READY_CONDITION_TYPE, RotationStatus};
use ksa_kube::cluster::TargetCluster;
use ksa_kube::plan::RotationPlan;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::args::{KubeArgs, Output};
use crate::connection::Connection;
use crate::{Failure, Outcome, exit};

/// How long the plan of one rotation may take before it is reported as
/// not planned: an unreachable user cluster does not hold the others.
const PLAN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the whole fleet plan may take by default (`--timeout`): the
/// rotations not planned by then are reported as not planned.
pub const FLEET_TIMEOUT: Duration = Duration::from_secs(600);
/// How many user clusters are planned at once.
const PLANS_AT_ONCE: usize = 4;
/// How much of what a rotation waits for the table shows (-o wide: all).
const WAITING_WIDTH: usize = 72;

/// Where a rotation stands, as the summary counts it.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Standing {
    Completed,
    InProgress,
    /// Waits for an operator: a refusal, or holders only an operator can
    /// let proceed.
    Blocked,
    /// Its last pass failed; the controller retries.
    Failing,
}

/// One rotation of the fleet.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub standing: Standing,
    pub target_key_version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The Ready condition's status and reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it waits for, or what is refused and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refused>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub blocked_holders: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<jiff::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<jiff::Timestamp>,
}

/// A refusal by the controller: `status.refusal`, or for a status written
/// before it existed, the `refused: ` prefix of `waitingFor`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub message: String,
}

/// What the controller refuses for this status, if anything.
pub(crate) fn refusal(status: &RotationStatus) -> Option<Refused> {
    if let Some(refusal) = &status.refusal {
        return Some(Refused {
            reason: Some(refusal.reason.clone()),
            message: refusal.message.clone(),
        });
    }
    // A status of a controller before `status.refusal`.
    let waiting = status.waiting_for.as_deref()?;
    let message = waiting.strip_prefix("refused")?;
    Some(Refused {
        reason: None,
        message: message.trim_start_matches(':').trim().to_owned(),
    })
}

impl Refused {
    /// `refused (Reason): message`.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(reason) => format!("refused ({reason}): {}", self.message),
            None => format!("refused: {}", self.message),
        }
    }
}

/// The fleet row of `resource`.
pub fn row(resource: &KSASigningKeyRotation) -> Row {
    let namespace = resource.metadata.namespace.clone().unwrap_or_default();
    let name = resource.metadata.name.clone().unwrap_or_default();
    let target = resource.spec.key_version;
    let created_at = resource
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|time| time.0);
    let Some(status) = &resource.status else {
        return Row {
            namespace,
            name,
            standing: Standing::InProgress,
            target_key_version: target,
            key_version: None,
            step: None,
            ready: None,
            reason: None,
            waiting_for: Some(format!(
                "the controller to take up the rotation to key version {target}"
            )),
            refusal: None,
            blocked_holders: Vec::new(),
            signing_issuer: None,
            step_started_at: None,
            created_at,
        };
    };
    let ready = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == READY_CONDITION_TYPE);
    let refused = refusal(status);
    let reason = ready.map(|condition| condition.reason.clone());
    let completed = status.step == Step::Completed && status.key_version == target;
    let standing = if refused.is_some() || reason.as_deref() == Some("Blocked") {
        Standing::Blocked
    } else if reason.as_deref() == Some("Failing") {
        Standing::Failing
    } else if completed {
        Standing::Completed
    } else {
        Standing::InProgress
    };
    let waiting_for = match (&refused, status.waiting_for.as_deref()) {
        (Some(refused), _) => Some(refused.describe()),
        (None, Some(waiting)) if !waiting.is_empty() => Some(waiting.to_owned()),
        (None, _) if status.step == Step::Completed && !completed => Some(format!(
            "the controller to start the rotation to key version {target}"
        )),
        (None, _) => None,
    };
    Row {
        namespace,
        name,
        standing,
        target_key_version: target,
        key_version: Some(status.key_version),
        step: Some(status.step.to_string()),
        ready: ready.map(|condition| condition.status.clone()),
        reason,
        waiting_for,
        refusal: refused,
        blocked_holders: status.blocked_holders.clone(),
        signing_issuer: status
            .issuer
            .as_ref()
            .map(|issuer| issuer.signing_issuer.as_str().to_owned()),
        step_started_at: status.step_started_at,
        created_at,
    }
}

/// How many rotations stand where.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub total: usize,
    pub completed: usize,
    pub in_progress: usize,
    pub blocked: usize,
    pub failing: usize,
}

impl Summary {
    pub fn of(rows: &[Row]) -> Summary {
        let count = |standing| rows.iter().filter(|r| r.standing == standing).count();
        Summary {
            total: rows.len(),
            completed: count(Standing::Completed),
            in_progress: count(Standing::InProgress),
            blocked: count(Standing::Blocked),
            failing: count(Standing::Failing),
        }
    }
}

impl std::fmt::Display for Summary {
    /// `12 rotations: 9 completed, 2 in progress, 1 blocked`, and how many
    /// fail when any does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rotation{}: {} completed, {} in progress, {} blocked",
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.completed,
            self.in_progress,
            self.blocked
        )?;
        if self.failing > 0 {
            write!(f, ", {} failing", self.failing)?;
        }
        Ok(())
    }
}

fn or_dash(text: Option<&str>) -> String {
    match text {
        Some(text) if !text.is_empty() => text.to_owned(),
        _ => "-".to_owned(),
    }
}

/// At most `width` characters, the cut marked.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

fn ago(at: Option<jiff::Timestamp>, now: jiff::Timestamp) -> String {
    at.map_or("-".to_owned(), |at| {
        crate::output::age(
            now.as_second()
                .saturating_sub(at.as_second())
                .unsigned_abs(),
        )
    })
}

/// The fleet as a kubectl table (every cell escaped by
/// [`crate::output::table`]); `wide` adds the key versions, the step's
/// age and the issuer, and does not cut what a rotation waits for.
pub fn table(rows: &[Row], wide: bool, now: jiff::Timestamp) -> String {
    let mut headers = vec!["namespace", "name", "step", "ready", "reason"];
    if wide {
        headers.extend(["target", "key", "step age", "issuer"]);
    }
    headers.extend(["waiting for", "age"]);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![
                row.namespace.clone(),
                row.name.clone(),
                or_dash(row.step.as_deref()),
                or_dash(row.ready.as_deref()),
                or_dash(row.reason.as_deref()),
            ];
            let waiting = or_dash(row.waiting_for.as_deref());
            if wide {
                cells.extend([
                    row.target_key_version.to_string(),
                    row.key_version.map_or("-".to_owned(), |v| v.to_string()),
                    ago(row.step_started_at, now),
                    or_dash(row.signing_issuer.as_deref()),
                    waiting,
                ]);
            } else {
                // Escaped before it is cut, so that a cut never splits an
                // escape.
                cells.push(cut(&crate::output::shown(&waiting), WAITING_WIDTH));
            }
            cells.push(ago(row.created_at, now));
            cells
        })
        .collect();
    crate::output::table(&headers, &cells)
}

/// The admin cluster, with the CRD installed.
async fn admin(kube: &KubeArgs) -> Result<Connection, Failure> {
    let connection = Connection::open(kube).await?;
    connection.check().await?;
    super::preflight::crd_installed(&connection).await?;
    Ok(connection)
}

/// Every rotation, by namespace and name.
async fn rotations(connection: &Connection) -> Result<Vec<KSASigningKeyRotation>, Failure> {
    let api: Api<KSASigningKeyRotation> = Api::all(connection.client.clone());
    let mut items = api
        .list(&ListParams::default())
        .await
        .map_err(|error| match &error {
            kube::Error::Api(status) if status.code == 403 => Failure::from(anyhow::anyhow!(
                "listing KSASigningKeyRotations in every namespace is forbidden ({}): ask for a \
                 ClusterRole that grants list on ksasigningkeyrotations.ksa.dev, or look at one \
                 namespace's rotation with --config (or -n)",
                status.message
            )),
            _ => connection.unreachable(error),
        })?
        .items;
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(items)
}

/// `status -A`: one line a rotation, and the summary (on stderr with the
/// table; in the document with -o json, yaml or jsonpath).
pub async fn status(kube: &KubeArgs, output: &Output) -> Outcome {
    let connection = admin(kube).await?;
    let rows: Vec<Row> = rotations(&connection).await?.iter().map(row).collect();
    let summary = Summary::of(&rows);
    let now = jiff::Timestamp::now();
    let text = match output {
        Output::Text | Output::Wide if rows.is_empty() => {
            eprintln!(
                "No KSASigningKeyRotations in {}: no rotation has been started there",
                connection.describe()
            );
            return Ok(exit::DONE);
        }
        Output::Text | Output::Wide => {
            let table = table(&rows, *output == Output::Wide, now);
            crate::output::print(&table)?;
            eprintln!("{summary}");
            return Ok(exit::DONE);
        }
        output => crate::output::render(
            output,
            &serde_json::json!({ "items": rows, "summary": summary }),
            || Ok(String::new()),
        )?,
    };
    crate::output::finish(&text)
}

/// What rotating one rotation would do.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    pub namespace: String,
    pub name: String,
    pub key_version: u64,
    pub outcome: PlanOutcome,
    /// The key version it would rotate to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// Why it would be refused, or why it could not be planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<RotationPlan>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum PlanOutcome {
    /// Would start.
    WouldRotate,
    /// Would be refused: in progress, the lock held by another operation.
    Refused,
    /// Its user cluster could not be read.
    NotPlanned,
}

/// The plan of one rotation: refused by the core's own decision (the one
/// `rotate` and the controller make), else planned from its user cluster.
async fn plan_one(
    connection: &Connection,
    resource: &KSASigningKeyRotation,
    now: jiff::Timestamp,
    deadline: &Deadline,
) -> Planned {
    let namespace = resource.metadata.namespace.clone().unwrap_or_default();
    let name = resource.metadata.name.clone().unwrap_or_default();
    let mut planned = Planned {
        namespace: namespace.clone(),
        name: name.clone(),
        key_version: resource
            .status
            .as_ref()
            .map_or(KeyVersion::FIRST.get(), |status| status.key_version),
        outcome: PlanOutcome::NotPlanned,
        to: None,
        message: None,
        plan: None,
    };
    let result = async {
        let state = resource
            .state()
            .map_err(|error| anyhow::anyhow!("its status cannot be read: {error}"))?;
        let current = state.key_version();
        let request = StartRequest {
            target: current.next().unwrap_or(current),
            issuer: None,
            // Not known without the user cluster's config: `rotate
            // --config` checks it.
            advanced_cluster: false,
            lock: ksa_kube::lock::observe(&connection.client, &namespace, &name).await?,
        };
        let requested = Requested {
            key_version: Some(KeyVersion::new(resource.spec.key_version)),
            issuer: resource
                .spec
                .issuer
                .as_deref()
                .and_then(|text| Issuer::new(text).ok()),
            signing_issuer: resource
                .status
                .as_ref()
                .and_then(|status| status.issuer.as_ref())
                .map(|issuer| issuer.signing_issuer.clone()),
        };
        let started = match rotation::start_new(&state, &requested, &request, now) {
            Ok(started) => started,
            Err(refusal) => return Ok::<_, anyhow::Error>(Err(refusal.to_string())),
        };
        let own = TargetCluster::new(connection.client.clone(), connection.config.clone());
        let cluster = TargetCluster::connect(
            &own,
            &connection.client,
            &namespace,
            resource.spec.cluster.as_ref(),
        )
        .await
        .map_err(|error| anyhow::anyhow!("its user cluster cannot be reached: {error}"))?;
        let plan = ksa_kube::plan::plan(&cluster, &started, &resource.spec.policy(), now)
            .await
            .map_err(|error| {
                anyhow::anyhow!("its user cluster {} cannot be read: {error}", cluster.url())
            })?;
        Ok(Ok((started.key_version().get(), plan)))
    };
    // Within its own time, and within what is left of the fleet's.
    let left = deadline
        .at
        .saturating_duration_since(tokio::time::Instant::now());
    if left.is_zero() {
        planned.message = Some(deadline.passed());
        return planned;
    }
    let limit = left.min(PLAN_TIMEOUT);
    match tokio::time::timeout(limit, result).await {
        Ok(Ok(Ok((to, plan)))) => {
            planned.outcome = PlanOutcome::WouldRotate;
            planned.to = Some(to);
            planned.plan = Some(plan);
        }
        Ok(Ok(Err(refusal))) => {
            planned.outcome = PlanOutcome::Refused;
            planned.message = Some(refusal);
        }
        Ok(Err(error)) => planned.message = Some(crate::output::chain(&error)),
        Err(_) if limit < PLAN_TIMEOUT => planned.message = Some(deadline.passed()),
        Err(_) => {
            planned.message = Some(format!(
                "its user cluster did not answer within {} s",
                PLAN_TIMEOUT.as_secs()
            ));
        }
    }
    planned
}

/// When the whole fleet plan ends (`--timeout`).
struct Deadline {
    at: tokio::time::Instant,
    timeout: Duration,
}

impl Deadline {
    /// Why a rotation the deadline cut off is not planned.
    fn passed(&self) -> String {
        format!(
            "not planned within the fleet plan's --timeout of {:#}: pass a longer --timeout \
             to plan it, or plan it alone with `plan --config`",
            jiff::SignedDuration::try_from(self.timeout).unwrap_or(jiff::SignedDuration::MAX)
        )
    }
}

/// The fleet plan's `--timeout`: a duration of more than 0, else
/// [`FLEET_TIMEOUT`].
pub fn fleet_timeout(text: Option<&str>) -> Result<Duration, Failure> {
    let Some(text) = text else {
        return Ok(FLEET_TIMEOUT);
    };
    let timeout = crate::input::duration(text, "--timeout")?;
    if timeout.is_zero() {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--timeout: {text:?} leaves no time to plan anything: give a duration such as 10m"
        )));
    }
    Ok(timeout)
}

/// The rotations in the order they are planned (`resources` sorted by
/// namespace): one of each namespace in turn, so that the rotations of
/// one namespace, however many and however slow their user clusters,
/// cannot use up the fleet's `--timeout` before the other namespaces'
/// rotations are planned.
fn fair_order(resources: &[KSASigningKeyRotation]) -> Vec<&KSASigningKeyRotation> {
    let mut namespaces: Vec<Vec<&KSASigningKeyRotation>> = Vec::new();
    for resource in resources {
        match namespaces.last_mut() {
            Some(last) if last[0].metadata.namespace == resource.metadata.namespace => {
                last.push(resource);
            }
            _ => namespaces.push(vec![resource]),
        }
    }
    let rounds = namespaces.iter().map(Vec::len).max().unwrap_or(0);
    (0..rounds)
        .flat_map(|round| {
            namespaces
                .iter()
                .filter_map(move |namespace| namespace.get(round).copied())
        })
        .collect()
}

/// One line of what a plan would do.
fn plan_line(plan: &RotationPlan) -> String {
    let bound = &plan.bound_tokens;
    let evict = bound.pods.iter().filter(|p| p.action == "evict").count();
    let blocked = bound.pods.iter().filter(|p| p.blocked).count();
    let outside = plan.outside_legacy_tokens().len();
    let mut line = format!(
        "{} API server(s); {} legacy token Secret(s) re-minted; {} workload(s) restarted, {} pod(s) evicted ({})",
        plan.api_servers.len(),
        plan.legacy_tokens.secrets,
        bound.workloads_to_restart.len(),
        evict,
        plan.token_refresh_policy
    );
    if blocked > 0 {
        line.push_str(&format!("; {blocked} blocked until an operator lets them"));
    }
    if outside > 0 {
        line.push_str(&format!(
            "; {outside} legacy token(s) held outside the cluster cut off"
        ));
    }
    line
}

/// How many rotations would start, be refused or could not be planned.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub total: usize,
    pub would_rotate: usize,
    pub refused: usize,
    pub not_planned: usize,
}

impl PlanSummary {
    pub fn of(planned: &[Planned]) -> PlanSummary {
        let count = |outcome| planned.iter().filter(|p| p.outcome == outcome).count();
        PlanSummary {
            total: planned.len(),
            would_rotate: count(PlanOutcome::WouldRotate),
            refused: count(PlanOutcome::Refused),
            not_planned: count(PlanOutcome::NotPlanned),
        }
    }

    /// The exit code of the fleet plan, once it is made: 0, whatever the
    /// rotations' outcomes (they are the tenants' doing, and the table
    /// and the summary say them); with `--detailed-exit-code`, 0 when
    /// every rotation would start, 4 when one could not be planned (its
    /// user cluster unreachable or unreadable, or the `--timeout`
    /// passed), else 3 when one would be refused (as `rotate` exits when
    /// another rotation or operation is in progress).
    pub fn exit_code(&self, detailed: bool) -> u8 {
        if !detailed {
            exit::DONE
        } else if self.not_planned > 0 {
            exit::CANNOT_CHECK
        } else if self.refused > 0 {
            exit::BUSY
        } else {
            exit::DONE
        }
    }
}

impl std::fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rotation{}: {} would rotate, {} refused, {} could not be planned; nothing was changed",
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.would_rotate,
            self.refused,
            self.not_planned
        )
    }
}

/// The fleet plan as a table (cells escaped).
pub fn plan_table(planned: &[Planned]) -> String {
    let rows: Vec<Vec<String>> = planned
        .iter()
        .map(|p| {
            vec![
                p.namespace.clone(),
                p.name.clone(),
                p.key_version.to_string(),
                p.to.map_or("-".to_owned(), |v| v.to_string()),
                match p.outcome {
                    PlanOutcome::WouldRotate => "would rotate",
                    PlanOutcome::Refused => "refused",
                    PlanOutcome::NotPlanned => "not planned",
                }
                .to_owned(),
                match (&p.plan, &p.message) {
                    (Some(plan), _) => plan_line(plan),
                    (None, Some(message)) => message.clone(),
                    (None, None) => "-".to_owned(),
                },
            ]
        })
        .collect();
    crate::output::table(
        &["namespace", "name", "key", "to", "outcome", "detail"],
        &rows,
    )
}

/// The plans of `resources` (sorted by namespace and name), at most
/// [`PLANS_AT_ONCE`] at a time, all within `timeout`.
async fn plan_all(
    connection: &Connection,
    resources: &[KSASigningKeyRotation],
    now: jiff::Timestamp,
    timeout: Duration,
) -> Vec<Planned> {
    let start = tokio::time::Instant::now();
    let deadline = Deadline {
        // Past any plan when the --timeout given is beyond what a clock
        // holds.
        at: start
            .checked_add(timeout)
            .unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 24 * 3600)),
        timeout,
    };
    let mut planned: Vec<Planned> = futures::stream::iter(fair_order(resources))
        .map(|resource| plan_one(connection, resource, now, &deadline))
        .buffer_unordered(PLANS_AT_ONCE)
        .collect()
        .await;
    planned.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    planned
}

/// The fleet plan's own flags.
#[derive(Debug, Clone, Copy)]
pub struct PlanFlags {
    /// `--detailed-exit-code`: exit with what the fleet's outcomes say
    /// ([`PlanSummary::exit_code`]).
    pub detailed_exit_code: bool,
    /// `--timeout`: how long the whole plan may take.
    pub timeout: Duration,
}

/// `plan -A` (`rotate -A --dry-run`): what rotating every rotation's key
/// would do, and refuse; nothing changes. Exits non-zero when the plan
/// cannot be made (the admin cluster unreachable, the CRD missing, listing
/// the rotations forbidden); what the rotations' user clusters answer, or
/// not, changes the exit code only with `--detailed-exit-code`.
pub async fn plan(kube: &KubeArgs, output: &Output, flags: PlanFlags) -> Outcome {
    let connection = admin(kube).await?;
    let resources = rotations(&connection).await?;
    let now = jiff::Timestamp::now();
    let planned = plan_all(&connection, &resources, now, flags.timeout).await;
    let summary = PlanSummary::of(&planned);
    match output {
        Output::Text | Output::Wide => {
            if planned.is_empty() {
                eprintln!(
                    "No KSASigningKeyRotations in {}: nothing to plan",
                    connection.describe()
                );
            } else {
                crate::output::print(&plan_table(&planned))?;
                eprintln!("Plan (dry run): {summary}");
            }
        }
        output => {
            let text = crate::output::render(
                output,
                &serde_json::json!({ "items": planned, "summary": summary }),
                || Ok(String::new()),
            )?;
            crate::output::print(&text)?;
        }
    }
    Ok(summary.exit_code(flags.detailed_exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(
        namespace: &str,
        name: &str,
        spec: u64,
        status: serde_json::Value,
    ) -> KSASigningKeyRotation {
        let mut value = serde_json::json!({
            "apiVersion": "ksa.dev/v1alpha1",
            "kind": "KSASigningKeyRotation",
            "metadata": {"namespace": namespace, "name": name, "creationTimestamp": "2026-11-30T09:00:00Z"},
            "spec": {"keyVersion": spec},
        });
        if !status.is_null() {
            value["status"] = status;
        }
        serde_json::from_value(value).expect("a rotation")
    }

    fn status(key: u64, step: &str, reason: &str, waiting: Option<&str>) -> serde_json::Value {
        let mut status = serde_json::json!({
            "keyVersion": key, "step": step, "tokenVersion": key, "privateKeyVersion": key,
            "publicKeyVersions": [key], "stepStartedAt": "2026-11-30T10:00:00Z",
            "conditions": [{"type": "Ready", "status": if reason == "Completed" {"True"} else {"False"},
                "reason": reason, "message": "m", "lastTransitionTime": "2026-11-30T10:00:00Z"}],
        });
        if let Some(waiting) = waiting {
            status["waitingFor"] = waiting.into();
        }
        status
    }

    fn now() -> jiff::Timestamp {
        "2026-11-30T10:05:00Z".parse().expect("a time")
    }

    #[test]
    fn the_fleet_says_which_are_done_which_wait_and_on_what() {
        let mut blocked = status(
            2,
            "Trust",
            "Blocked",
            Some("refused: ClusterRole x is not bound"),
        );
        blocked["refusal"] =
            serde_json::json!({"reason": "MissingGrant", "message": "ClusterRole x is not bound"});
        let rows: Vec<Row> = [
            resource("a", "a", 2, status(2, "Completed", "Completed", None)),
            resource(
                "b",
                "b",
                3,
                status(
                    3,
                    "Sign",
                    "Progressing",
                    Some("API servers signing with key 3: 1/2"),
                ),
            ),
            resource("c", "c", 2, blocked),
            resource("d", "d", 2, status(1, "Completed", "Completed", None)),
            resource("e", "e", 2, serde_json::Value::Null),
            resource(
                "f",
                "f",
                2,
                status(2, "Retire", "Failing", Some("connection refused")),
            ),
        ]
        .iter()
        .map(row)
        .collect();
        let standings: Vec<Standing> = rows.iter().map(|r| r.standing).collect();
        assert_eq!(
            standings,
            [
                Standing::Completed,
                Standing::InProgress,
                Standing::Blocked,
                Standing::InProgress,
                Standing::InProgress,
                Standing::Failing
            ]
        );
        assert_eq!(
            rows[2].waiting_for.as_deref(),
            Some("refused (MissingGrant): ClusterRole x is not bound"),
            "read from status.refusal"
        );
        assert_eq!(
            rows[3].waiting_for.as_deref(),
            Some("the controller to start the rotation to key version 2")
        );
        assert_eq!(
            Summary::of(&rows).to_string(),
            "6 rotations: 1 completed, 3 in progress, 1 blocked, 1 failing"
        );
        assert_eq!(
            Summary::of(&rows[..1]).to_string(),
            "1 rotation: 1 completed, 0 in progress, 0 blocked"
        );
        let table = table(&rows, false, now());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 7);
        assert!(
            lines[0]
                .starts_with("NAMESPACE   NAME   STEP        READY   REASON        WAITING FOR"),
            "{table}"
        );
        assert!(lines[0].ends_with("AGE"), "{table}");
        assert!(
            lines[2].contains("Sign")
                && lines[2].contains("API servers signing with key 3: 1/2")
                && lines[2].ends_with("1h5m"),
            "{table}"
        );
        assert!(lines[5].contains("e      -"), "no status yet: {table}");
        let wide = super::table(&rows, true, now());
        assert!(
            wide.lines().next().is_some_and(|h| h.contains("TARGET")
                && h.contains("STEP AGE")
                && h.contains("ISSUER")),
            "{wide}"
        );
        assert!(
            wide.lines().nth(2).is_some_and(|l| l.contains("5m")),
            "step age: {wide}"
        );
    }

    #[test]
    fn an_old_status_refusal_is_read_from_its_waiting_for() {
        let rows = row(&resource(
            "a",
            "a",
            2,
            status(
                1,
                "Completed",
                "Blocked",
                Some("refused: another operation holds the lock"),
            ),
        ));
        assert_eq!(rows.standing, Standing::Blocked);
        assert_eq!(
            rows.refusal,
            Some(Refused {
                reason: None,
                message: "another operation holds the lock".into()
            })
        );
    }

    #[test]
    fn cluster_strings_are_escaped_and_long_waits_cut() {
        let waiting = format!("\u{1b}[31mred\u{7} {}", "x".repeat(200));
        let rows = vec![row(&resource(
            "a",
            "a",
            2,
            status(2, "Trust", "Progressing", Some(&waiting)),
        ))];
        for wide in [false, true] {
            let table = table(&rows, wide, now());
            assert!(
                !table.contains('\u{1b}') && !table.contains('\u{7}'),
                "{table:?}"
            );
            assert!(table.contains("\\u{1b}[31mred"), "{table}");
        }
        let narrow = table(&rows, false, now());
        assert!(
            narrow.contains("...") && !narrow.contains(&"x".repeat(100)),
            "{narrow}"
        );
        assert!(super::table(&rows, true, now()).contains(&"x".repeat(200)));
    }

    #[test]
    fn all_namespaces_takes_no_single_clusters_flags() {
        use clap::Parser as _;
        let parse = |args: &[&str]| crate::args::Cli::try_parse_from(args);
        for fine in [
            &["ksa", "status", "-A"][..],
            &["ksa", "status", "--all-namespaces", "-o", "wide"],
            &[
                "ksa",
                "update",
                "credentials",
                "ksa-signing-key",
                "status",
                "-A",
                "-o",
                "json",
            ],
            &["ksa", "plan", "-A", "-o", "json"],
            &["ksa", "rotate", "-A", "--dry-run"],
        ] {
            assert!(parse(fine).is_ok(), "{fine:?}");
        }
        for (bad, says) in [
            (&["ksa", "status", "-A", "--watch"][..], "--watch"),
            (&["ksa", "status", "-A", "-n", "x"], "--namespace"),
            (&["ksa", "status", "-A", "--config", "c.yaml"], "--config"),
            (&["ksa", "plan", "-A", "--issuer", "https://i"], "--issuer"),
            (&["ksa", "rotate", "-A"], "--dry-run"),
            (&["ksa", "rotate", "-A", "--dry-run", "--wait"], "--wait"),
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?}")).to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    fn planned(outcome: PlanOutcome) -> Planned {
        Planned {
            namespace: "n".into(),
            name: "n".into(),
            key_version: 1,
            outcome,
            to: None,
            message: Some("rotation to key version 2 in progress\u{1b}".into()),
            plan: None,
        }
    }

    /// The rotations' outcomes are the tenants' doing: they set the exit
    /// code only when asked to (`--detailed-exit-code`).
    #[test]
    fn the_fleet_plan_exits_0_unless_asked_for_the_detailed_code() {
        let p = planned;
        let all = [p(PlanOutcome::WouldRotate)];
        let refused = [p(PlanOutcome::WouldRotate), p(PlanOutcome::Refused)];
        let unreachable = [p(PlanOutcome::Refused), p(PlanOutcome::NotPlanned)];
        for outcomes in [&all[..], &refused, &unreachable, &[]] {
            assert_eq!(PlanSummary::of(outcomes).exit_code(false), exit::DONE);
        }
        assert_eq!(PlanSummary::of(&all).exit_code(true), exit::DONE);
        assert_eq!(PlanSummary::of(&[]).exit_code(true), exit::DONE);
        assert_eq!(PlanSummary::of(&refused).exit_code(true), exit::BUSY);
        assert_eq!(
            PlanSummary::of(&unreachable).exit_code(true),
            exit::CANNOT_CHECK
        );
        assert_eq!(
            PlanSummary::of(&refused).to_string(),
            "2 rotations: 1 would rotate, 1 refused, 0 could not be planned; nothing was changed"
        );
        let table = plan_table(&unreachable);
        assert!(
            table.starts_with("NAMESPACE   NAME   KEY   TO   OUTCOME"),
            "{table}"
        );
        assert!(
            table.contains("refused") && table.contains("not planned"),
            "{table}"
        );
        assert!(!table.contains('\u{1b}'), "escaped: {table:?}");
    }

    #[test]
    fn the_fleet_flags_parse_and_need_all_namespaces() {
        use clap::Parser as _;
        let parse = |args: &[&str]| crate::args::Cli::try_parse_from(args);
        for fine in [
            &["ksa", "plan", "-A", "--detailed-exit-code"][..],
            &["ksa", "plan", "-A", "--timeout", "30m"],
            &[
                "ksa",
                "rotate",
                "-A",
                "--dry-run",
                "--detailed-exit-code",
                "--timeout",
                "1h",
            ],
        ] {
            assert!(parse(fine).is_ok(), "{fine:?}");
        }
        for (bad, says) in [
            (
                &["ksa", "plan", "--detailed-exit-code"][..],
                "--all-namespaces",
            ),
            (&["ksa", "plan", "--timeout", "1m"], "--all-namespaces"),
            (
                &["ksa", "plan", "--config", "c.yaml", "--detailed-exit-code"],
                "--config",
            ),
            (
                &["ksa", "plan", "--pki-dir", "p", "--timeout", "1m"],
                "--pki-dir",
            ),
            (
                &["ksa", "rotate", "--dry-run", "--detailed-exit-code"],
                "--all-namespaces",
            ),
            (
                &[
                    "ksa",
                    "rotate",
                    "--config",
                    "c",
                    "--dry-run",
                    "--detailed-exit-code",
                ],
                "--config",
            ),
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?}")).to_string();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
        assert_eq!(fleet_timeout(None).expect("default"), FLEET_TIMEOUT);
        assert_eq!(
            fleet_timeout(Some("90s")).expect("90 s"),
            Duration::from_secs(90)
        );
        for bad in ["0s", "soon", "-1m"] {
            let error = fleet_timeout(Some(bad)).expect_err(bad);
            assert_eq!(error.code, exit::BAD_INPUT, "{bad}");
            assert!(error.error.to_string().contains("--timeout"), "{bad}");
        }
    }

    #[test]
    fn each_namespace_is_planned_in_turn() {
        let resources: Vec<KSASigningKeyRotation> = [
            ("a", "1"),
            ("a", "2"),
            ("a", "3"),
            ("b", "1"),
            ("c", "1"),
            ("c", "2"),
        ]
        .iter()
        .map(|(namespace, name)| resource(namespace, name, 2, serde_json::Value::Null))
        .collect();
        let order: Vec<String> = fair_order(&resources)
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.metadata.namespace.as_deref().unwrap_or_default(),
                    r.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(order, ["a/1", "b/1", "c/1", "a/2", "c/2", "a/3"]);
        assert!(fair_order(&[]).is_empty());
    }

    /// An admin cluster (and user clusters) that accept connections and
    /// never answer: the fleet plan ends at its deadline, each rotation
    /// reported as not planned, saying why.
    #[tokio::test]
    async fn the_fleet_plan_ends_at_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let config = kube::Config::new(url.parse().expect("a URL"));
        let connection = Connection {
            client: kube::Client::try_from(config.clone()).expect("a client"),
            config,
            context: None,
            source: crate::connection::KubeconfigSource::InCluster,
        };
        let resources: Vec<KSASigningKeyRotation> = (0..PLANS_AT_ONCE + 3)
            .map(|i| {
                resource(
                    &format!("tenant-{i}"),
                    "r",
                    2,
                    status(2, "Completed", "Completed", None),
                )
            })
            .collect();
        let planned = plan_all(&connection, &resources, now(), Duration::from_millis(200)).await;
        assert_eq!(planned.len(), resources.len());
        for p in &planned {
            assert_eq!(p.outcome, PlanOutcome::NotPlanned, "{p:?}");
            let message = p.message.as_deref().unwrap_or_default();
            assert!(
                message.starts_with("not planned within the fleet plan's --timeout of 200ms"),
                "{message}"
            );
        }
        let summary = PlanSummary::of(&planned);
        assert_eq!(summary.not_planned, resources.len());
        assert_eq!(summary.exit_code(false), exit::DONE);
        assert_eq!(summary.exit_code(true), exit::CANNOT_CHECK);
        drop(listener);
    }
}
