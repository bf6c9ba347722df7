//! What operators see of the controller, against the real API server: a
//! refused rotation is Ready `False` with the reason `Blocked` and the
//! refusal in `status.refusal`, and `Progressing` once the refusal is
//! fixed; `/livez` answers once the watch has listed the rotations; the
//! metrics count reconciles by rotation and drop its series once it is
//! deleted; the JSON log lines of a reconcile carry the rotation's
//! namespace and name at the top level.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;
use ksa_kube::api::{
    KSASigningKeyRotation, READY_CONDITION_TYPE, RotationSpec, RotationStatus, TokenRefreshPolicy,
    TokenRefreshSpec,
};
use ksa_tests::{ApiServerKeys, ControlPlane, Installation, eventually};
use kube::api::{Api, DeleteParams, PostParams};

const ROTATIONS: &str = "user-cluster-1";

/// The Ready condition's status, reason and message.
fn ready(status: &RotationStatus) -> Option<(String, String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == READY_CONDITION_TYPE)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn get(url: &str) -> Result<(u16, String)> {
    let response = reqwest::get(url).await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

#[tokio::test]
async fn ready_says_blocked_livez_and_metrics_follow_the_rotation() -> Result<()> {
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let client = plane.client().await?;
    let mut installation =
        Installation::install(&client, ROTATIONS, ROTATIONS, &key, plane.dir()).await?;
    installation.extra_args.push("--log-format=json".to_owned());
    installation.start_controller(&plane.controller_kubeconfig_path())?;
    let http = format!("http://{}", installation.http_addr);

    // Leading, with its watch listed: live.
    eventually("/livez answers 200", Duration::from_secs(60), || async {
        let (status, body) = get(&format!("{http}/livez")).await?;
        ensure!(status == 200, "{status}: {body}");
        Ok(())
    })
    .await?;

    // Its token refresh policy's role is not bound: refused.
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), ROTATIONS);
    let rotation = KSASigningKeyRotation::new(
        ROTATIONS,
        RotationSpec {
            key_version: 2,
            issuer: None,
            cluster: None,
            key: Default::default(),
            rollout: Default::default(),
            token_refresh: TokenRefreshSpec {
                policy: TokenRefreshPolicy::RecreateNodes,
                max_token_seconds: 3600,
                ..TokenRefreshSpec::default()
            },
            trust_lead_time_seconds: 0,
            publish: Default::default(),
        },
    );
    rotations.create(&PostParams::default(), &rotation).await?;
    let status = || async {
        rotations
            .get(ROTATIONS)
            .await?
            .status
            .context("no status yet")
    };
    let refused = eventually(
        "the rotation is refused",
        Duration::from_secs(60),
        || async {
            let status = status().await?;
            match &status.refusal {
                Some(_) => Ok(status),
                None => bail!("not refused; waiting for {:?}", status.waiting_for),
            }
        },
    )
    .await?;
    let refusal = refused.refusal.clone().context("a refusal")?;
    assert_eq!(refusal.reason, "MissingGrant");
    assert_eq!(
        refusal.message,
        "ClusterRole ksa-controller-recreate-nodes is not bound to the controller \
         (kubectl apply -f deploy/refresh-recreate-nodes.yaml)"
    );
    assert_eq!(
        refused.waiting_for.as_deref(),
        Some(format!("refused: {}", refusal.message).as_str())
    );
    assert_eq!(
        ready(&refused),
        Some((
            "False".to_owned(),
            "Blocked".to_owned(),
            format!("settled on key version 1: refused: {}", refusal.message)
        ))
    );

    // Bound: the rotation starts, and moves on by itself.
    ksa_tests::install::grant_recreate_nodes(&client).await?;
    let started = eventually("the rotation starts", Duration::from_secs(90), || async {
        let status = status().await?;
        let (ready_status, reason, _) = ready(&status).context("no Ready")?;
        ensure!(
            status.refusal.is_none() && reason == "Progressing",
            "Ready {ready_status} {reason}; refusal {:?}",
            status.refusal
        );
        Ok(status)
    })
    .await?;
    assert_eq!(ready(&started).map(|r| r.0).as_deref(), Some("False"));

    // Counted by rotation; the signing key's age is known.
    let series = format!(r#"{{namespace="{ROTATIONS}",name="{ROTATIONS}"}}"#);
    let metrics = eventually(
        "the rotation's metrics",
        Duration::from_secs(60),
        || async {
            let (_, metrics) = get(&format!("{http}/metrics")).await?;
            for metric in [
                "ksa_reconcile_total",
                "ksa_reconcile_duration_seconds_count",
                "ksa_rotation_signing_key_age_seconds",
            ] {
                ensure!(
                    metrics.contains(&format!("{metric}{series}")),
                    "no {metric}{series}"
                );
            }
            Ok(metrics)
        },
    )
    .await?;
    let steps: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ksa_rotation_step{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(steps.len(), 1, "one step at a time: {steps:?}");

    // Each line of a reconcile carries the rotation at the top level.
    // The controller writes its log as it goes: read until the line is there.
    let line = eventually(
        "a reconcile's log line",
        Duration::from_secs(60),
        || async {
            let log = installation.controller_log();
            let reconcile_line = log
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|line| {
                    line["message"] == "step confirmed" || line["message"] == "generated key"
                });
            reconcile_line.with_context(|| format!("no reconcile line in the log:\n{log}"))
        },
    )
    .await?;
    assert_eq!(line["namespace"], ROTATIONS, "{line}");
    assert_eq!(line["name"], ROTATIONS, "{line}");

    // Deleted: its series go.
    rotations
        .delete(ROTATIONS, &DeleteParams::default())
        .await?;
    eventually(
        "the deleted rotation's series are removed",
        Duration::from_secs(90),
        || async {
            let (_, metrics) = get(&format!("{http}/metrics")).await?;
            let left: Vec<&str> = metrics
                .lines()
                .filter(|l| l.contains(&format!(r#"name="{ROTATIONS}""#)))
                .collect();
            ensure!(left.is_empty(), "still {left:?}");
            Ok(())
        },
    )
    .await
    .with_context(|| installation.controller_log())?;
    let (status, body) = get(&format!("{http}/livez")).await?;
    assert_eq!((status, body.as_str()), (200, "ok"));
    Ok(())
}
