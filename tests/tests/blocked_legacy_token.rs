//! A tenant's legacy token Secret that ksa cannot re-mint (issue 29,
//! finding 3): made `immutable`, every re-mint is refused. The rotation
//! must not stop for good: RefreshTokens names the Secret as blocked (in
//! `status.blockedHolders`, `status.waitingFor` and a `RefreshBlocked`
//! Event), keeps refreshing every other token, and goes on once the
//! operator gives up on it (`spec.tokenRefresh.giveUpLegacyTokens`), with
//! a `LegacyTokensCutOff` Event saying its holder is cut off at Retire,
//! which it then is.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Event, Secret};
use ksa_core::rotation::Step;
use ksa_core::token;
use ksa_kube::api::{KSASigningKeyRotation, RotationStatus};
use ksa_tests::cluster::review_token;
use ksa_tests::scenario::{CLUSTER, NAMESPACE, Scenario, create_fleet};
use kube::api::{Api, ListParams, Patch, PatchParams};

/// The tenant's namespace and its immutable legacy token Secret.
const TENANT: &str = "tenant";
const FROZEN: &str = "frozen-token";

/// Polls `probe` every 250 ms until it returns `Some`, for at most
/// `within`; the error says what was awaited and what was seen last. An
/// error counts as not yet: the hosted roll-out restarts the API server
/// at Trust and Retire.
async fn until<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(Option<T>, String)>>,
{
    let started = Instant::now();
    loop {
        let seen = match probe().await {
            Ok((Some(found), _)) => return Ok(found),
            Ok((None, seen)) => seen,
            Err(error) => format!("error: {error:#}"),
        };
        if started.elapsed() > within {
            bail!("{what}: not within {within:?}; last seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The rotation's status; a default one (step Generate) before the
/// controller wrote any.
async fn status(api: &Api<KSASigningKeyRotation>) -> Result<RotationStatus> {
    let resource = api.get(CLUSTER).await?;
    Ok(match resource.status {
        Some(status) => status,
        None => RotationStatus::of(&resource.state()?, None, None, None, jiff::Timestamp::now()),
    })
}

/// The messages of the Events with `reason` about the rotation.
async fn notes(client: &kube::Client, reason: &str) -> Result<Vec<String>> {
    Ok(Api::<Event>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.message)
        .collect())
}

fn token_of(secret: &Secret) -> Result<String> {
    let token = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .context("no token")?;
    Ok(String::from_utf8(token.0.clone())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_legacy_token_is_named_and_the_operator_lets_the_rotation_go_on() -> Result<()> {
    let scenario = Scenario::start().await?;
    let client = scenario.client.clone();
    let log = || scenario.installation.controller_log();

    // A tenant's legacy token Secret, filled by kube-controller-manager,
    // then made immutable: the API server refuses every re-mint.
    create_fleet(&client, TENANT, "robot", &[FROZEN], &[], 1).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), TENANT);
    secrets
        .patch(
            FROZEN,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"immutable": true})),
        )
        .await?;
    let frozen_token = token_of(&secrets.get(FROZEN).await?)?;
    assert!(
        review_token(&client, &frozen_token).await?.is_some(),
        "the tenant's legacy token authenticates before the rotation"
    );

    let rotate = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--accept-outside-legacy-tokens",
    ])?;
    assert_eq!(
        rotate.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rotate.stderr)
    );

    // RefreshTokens names the Secret as blocked, and why.
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    let named =
        format!("{TENANT}/{FROZEN} (legacy token Secret is immutable: ksa cannot re-mint it)");
    let started = Instant::now();
    let blocked = until(
        "the status names the immutable Secret as blocked",
        Duration::from_secs(300),
        || async {
            let status = status(&rotations).await?;
            let seen = format!("{status:?}");
            Ok((
                (status.step == Step::RefreshTokens && status.blocked_holders.contains(&named))
                    .then_some(status),
                seen,
            ))
        },
    )
    .await
    .with_context(log)?;
    eprintln!("named blocked after {:.1?}", started.elapsed());
    let waiting = blocked.waiting_for.clone().unwrap_or_default();
    assert!(
        waiting.contains("legacy tokens ksa cannot re-mint: 1 blocked: ")
            && waiting.contains(&named)
            && waiting.contains("then cut off at Retire"),
        "{waiting}"
    );
    let warned = until(
        "a RefreshBlocked Event names the Secret",
        Duration::from_secs(60),
        || async {
            let found = notes(&client, "RefreshBlocked").await?;
            let seen = format!("{found:?}");
            Ok((found.into_iter().find(|n| n.contains(&named)), seen))
        },
    )
    .await?;
    eprintln!("RefreshBlocked: {warned}");

    // It waits (a delay), and nothing else is held up: the workload's
    // legacy token is re-minted with the new key meanwhile.
    let old_kid = scenario.first_key.kid().to_string();
    until(
        "the workload's legacy token is re-minted",
        Duration::from_secs(60),
        || async {
            let token = scenario.legacy_token().await?;
            let kid = token::decode(&token)?.header.kid;
            let reminted = kid.as_ref().is_some_and(|kid| *kid != old_kid);
            Ok((reminted.then_some(()), format!("{kid:?}")))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = status(&rotations).await?;
    assert_eq!(still.step, Step::RefreshTokens, "{still:?}");
    assert!(still.blocked_holders.contains(&named), "{still:?}");

    // The operator gives up on it: the rotation completes.
    rotations
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "spec": {"tokenRefresh": {"giveUpLegacyTokens": [format!("{TENANT}/{FROZEN}")]}}
            })),
        )
        .await?;
    let done = until(
        "the rotation completes once the operator gave up on the Secret",
        Duration::from_secs(300),
        || async {
            let status = status(&rotations).await?;
            let seen = format!("{:?} {:?}", status.step, status.waiting_for);
            Ok(((status.step == Step::Completed).then_some(status), seen))
        },
    )
    .await
    .with_context(log)?;
    assert!(done.blocked_holders.is_empty(), "{done:?}");
    let cut_off = notes(&client, "LegacyTokensCutOff").await?;
    assert!(
        cut_off
            .iter()
            .any(|note| note.contains("given up by the operator")
                && note.contains(&format!(
                    "{TENANT}/{FROZEN} (legacy token Secret is immutable"
                ))
                && note.contains("Retire cuts their holders off when key 1 stops verifying")),
        "{cut_off:?}"
    );
    assert!(
        !notes(&client, "RefreshUnblocked").await?.is_empty(),
        "no RefreshUnblocked Event once nothing was blocked"
    );

    // As the Event said: the Secret's holder is cut off; the workload's
    // re-minted token still authenticates.
    assert_eq!(token_of(&secrets.get(FROZEN).await?)?, frozen_token);
    assert!(
        review_token(&client, &frozen_token).await?.is_none(),
        "the cut-off legacy token still authenticates after Retire"
    );
    assert!(
        review_token(&client, &scenario.legacy_token().await?)
            .await?
            .is_some(),
        "the workload's re-minted legacy token is rejected"
    );
    // Nothing of a token reached the status or an Event.
    let everything = format!("{done:?} {cut_off:?} {warned}");
    let signature = &frozen_token[frozen_token.len() - 40..];
    assert!(!everything.contains(signature), "{everything}");
    Ok(())
}
