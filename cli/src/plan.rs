//! The plan of a rotation as `rotate --dry-run` prints it, and the short
//! form `rotate` shows before it asks for confirmation. The data is
//! `ksa_kube::plan`'s; only the wording is here.

use std::fmt::Write as _;

use ksa_kube::plan::RotationPlan;

use crate::args::Output;
use crate::{Failure, Outcome};

/// How many names the text form lists of each kind before "and N more".
const NAMES: usize = 10;

/// Prints `plan` (`--dry-run`).
pub fn print(plan: &RotationPlan, output: &Output) -> Outcome {
    let text = crate::output::render(output, plan, || Ok(full(plan)))?;
    crate::output::finish(&text)
}

/// The whole plan, for a terminal.
pub fn full(plan: &RotationPlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Plan (dry run: nothing was changed)");
    if let Some(version) = plan.key_version {
        let _ = writeln!(out, "  rotate the signing key to version {version}");
    }
    if let (Some(from), Some(to)) = (&plan.issuer_from, &plan.issuer_to) {
        let _ = writeln!(out, "  change the issuer from {from} to {to}");
    }
    let _ = writeln!(out, "\nAPI server instances: {}", plan.api_servers.len());
    for server in &plan.api_servers {
        if !server.answered {
            let _ = writeln!(out, "  {}: did not answer", server.name);
            continue;
        }
        let _ = writeln!(
            out,
            "  {}: accepts keys {}; signs with {}; issuer {}",
            server.name,
            server.accepts.join(", "),
            server.signs_with.as_deref().unwrap_or("(not asked)"),
            server
                .issuer
                .as_deref()
                .or(server.discovery_issuer.as_deref())
                .unwrap_or("(unknown)"),
        );
    }
    out.push('\n');
    out.push_str(&short(plan));
    let bound = &plan.bound_tokens;
    if !bound.workloads_to_restart.is_empty() {
        let _ = writeln!(out, "\nWorkloads to restart:");
        for workload in bound.workloads_to_restart.iter().take(NAMES) {
            let _ = writeln!(
                out,
                "  {} {}/{}",
                workload.kind, workload.namespace, workload.name
            );
        }
        more(&mut out, bound.workloads_to_restart.len());
    }
    let evict: Vec<_> = bound.pods.iter().filter(|p| p.action == "evict").collect();
    if !evict.is_empty() {
        let _ = writeln!(out, "\nPods to evict:");
        for pod in evict.iter().take(NAMES) {
            let _ = writeln!(out, "  {}/{} ({})", pod.namespace, pod.name, pod.reason);
        }
        more(&mut out, evict.len());
    }
    let waiting: Vec<_> = bound
        .pods
        .iter()
        .filter(|p| p.action == "wait" && !p.blocked)
        .collect();
    if !waiting.is_empty() {
        let _ = writeln!(out, "\nPods waited for:");
        for pod in waiting.iter().take(NAMES) {
            let _ = writeln!(out, "  {}/{} ({})", pod.namespace, pod.name, pod.reason);
        }
        more(&mut out, waiting.len());
    }
    if !bound.projected_tokens.is_empty() {
        let _ = writeln!(out, "\nProjected tokens (longest lifetime, audiences):");
        let mut tokens: Vec<_> = bound.projected_tokens.iter().collect();
        tokens.sort_by_key(|t| std::cmp::Reverse(t.longest_seconds));
        for token in tokens.iter().take(NAMES) {
            let _ = writeln!(
                out,
                "  {} in {}: {} pod(s), {}, {}",
                token.owner,
                token.namespace,
                token.pods,
                seconds(token.longest_seconds),
                token.audiences.join(", ")
            );
        }
        more(&mut out, tokens.len());
    }
    let _ = writeln!(out, "\nSteps:");
    for step in &plan.steps {
        let _ = writeln!(out, "  {}: {}", step.step, step.waits_for);
    }
    out.trim_end().to_owned()
}

/// What the prompt shows: who the rotation affects and who it could break.
pub fn short(plan: &RotationPlan) -> String {
    let mut out = String::new();
    let legacy = &plan.legacy_tokens;
    if plan.key_version.is_some() {
        let _ = writeln!(
            out,
            "Legacy token Secrets: {} ({} mounted by pods), re-minted at RefreshTokens",
            legacy.secrets, legacy.mounted
        );
    } else {
        let _ = writeln!(
            out,
            "Legacy token Secrets: {} (unaffected: they carry kubernetes/serviceaccount)",
            legacy.secrets
        );
    }
    let outside = plan.outside_legacy_tokens();
    if !outside.is_empty() {
        let _ = writeln!(
            out,
            "  used in the last 30 days though no pod mounts them (held outside the cluster; the re-mint cuts their holders off):"
        );
        for token in outside.iter().take(NAMES) {
            let _ = writeln!(out, "    {token}");
        }
        more(&mut out, outside.len());
    }
    let bound = &plan.bound_tokens;
    let evict = bound.pods.iter().filter(|p| p.action == "evict").count();
    let _ = writeln!(
        out,
        "Bound-token holders: {} pod(s) ({}): {} workload(s) to restart, {} pod(s) to evict",
        bound.holders,
        plan.token_refresh_policy,
        bound.workloads_to_restart.len(),
        evict
    );
    let blocked: Vec<_> = bound.pods.iter().filter(|p| p.blocked).collect();
    for pod in blocked.iter().take(NAMES) {
        let _ = writeln!(
            out,
            "  blocked until an operator lets it: {}/{} ({})",
            pod.namespace, pod.name, pod.reason
        );
    }
    more(&mut out, blocked.len());
    let _ = writeln!(
        out,
        "Refresh window: {} (80% of the longest projected token a pod holds, {}, at most 24 h, plus slack and skew)",
        seconds(plan.refresh_window_seconds),
        seconds(bound.longest_token_seconds)
    );
    out
}

/// Seconds, and the same in hours and minutes when that reads better.
fn seconds(seconds: u64) -> String {
    let friendly = jiff::SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
    if seconds < 60 {
        format!("{seconds} s")
    } else {
        format!("{seconds} s ({friendly:#})")
    }
}

fn more(out: &mut String, total: usize) {
    if total > NAMES {
        let _ = writeln!(out, "  and {} more (-o json lists them)", total - NAMES);
    }
}

/// Refuses to go on without a prompt when the rotation would cut off
/// legacy tokens held outside the cluster, unless the operator accepted
/// that (`--accept-outside-legacy-tokens`). Exit 2, nothing changed.
pub fn check_outside_holders(
    plan: &RotationPlan,
    skip_prompt: bool,
    accepted: bool,
) -> Result<(), Failure> {
    let outside = plan.outside_legacy_tokens();
    if outside.is_empty() || accepted || !skip_prompt {
        return Ok(());
    }
    let names: Vec<String> = outside
        .iter()
        .take(NAMES)
        .map(ToString::to_string)
        .collect();
    Err(Failure::bad_input(anyhow::anyhow!(
        "{} legacy token Secret(s) were used in the last 30 days though no pod mounts them: {}{}; \
         the re-mint at RefreshTokens cuts their holders off. Hand each holder the re-minted token \
         after the rotation (README, \"Before you rotate\"), then pass --accept-outside-legacy-tokens; \
         nothing was changed",
        outside.len(),
        names.join("; "),
        if outside.len() > NAMES {
            " and more"
        } else {
            ""
        }
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_in_hours_and_minutes() {
        assert_eq!(super::seconds(30), "30 s");
        assert_eq!(super::seconds(69_300), "69300 s (19h 15m)");
        assert_eq!(super::seconds(5760), "5760 s (1h 36m)");
    }
}
