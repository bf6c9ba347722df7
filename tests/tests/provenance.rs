//! Provenance, on a real control plane with the real controller: ksa acts
//! only on what it made (`ksa_kube::provenance`). Whoever may create a
//! Secret in a rotation's namespace, or write a rotation's status, can name
//! and label an object as ksa does; each such object ends in a refusal that
//! names it, never in the cluster signing with, or publishing, a key ksa
//! did not make, and never in a key deleted early.
//!
//! - A planted next key (`NAME-signing-key-v2`, labelled) is refused by
//!   name; the API servers never receive it; once it is deleted the
//!   rotation goes on with a key ksa makes.
//! - An imported key no API server signs with is never sealed or used.
//! - An API server key Secret that carries another's annotation (a
//!   replicator's, which would copy `sa.key` elsewhere) is never written.
//! - A hand-edited status (Trust moved to Retire) is refused, and no key is
//!   deleted.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey, parse_pem};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::{LABEL_KEY_VERSION, LABEL_MANAGED_BY, LABEL_ROTATION, MANAGED_BY};
use ksa_tests::scenario::Scenario;
use ksa_tests::scenario::{CLUSTER, NAMESPACE};
use ksa_tests::wait::eventually;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

/// How long the controller may take to act on, or refuse, what it sees.
const WITHIN: std::time::Duration = std::time::Duration::from_secs(90);

fn rotations(scenario: &Scenario) -> Api<KSASigningKeyRotation> {
    Api::namespaced(scenario.client.clone(), NAMESPACE)
}

fn secrets(scenario: &Scenario) -> Api<Secret> {
    Api::namespaced(scenario.client.clone(), NAMESPACE)
}

/// Requests the rotation to key version 2 with this `spec` besides.
async fn request_rotation(scenario: &Scenario, spec: serde_json::Value) -> Result<()> {
    let mut spec = spec;
    spec["keyVersion"] = 2.into();
    let resource: KSASigningKeyRotation = serde_json::from_value(serde_json::json!({
        "apiVersion": "ksa.dev/v1alpha1",
        "kind": "KSASigningKeyRotation",
        "metadata": {"name": CLUSTER, "namespace": NAMESPACE},
        "spec": spec,
    }))?;
    rotations(scenario)
        .create(&PostParams::default(), &resource)
        .await?;
    Ok(())
}

/// Waits until the rotation's `status.waitingFor` contains `text`.
async fn wait_for_refusal(scenario: &Scenario, text: &str) -> Result<String> {
    let found = eventually(
        &format!("status.waitingFor says {text:?}"),
        WITHIN,
        || async {
            let resource = rotations(scenario).get(CLUSTER).await?;
            let waiting = resource
                .status
                .and_then(|s| s.waiting_for)
                .unwrap_or_default();
            ensure!(waiting.contains(text), "status.waitingFor is {waiting:?}");
            Ok(waiting)
        },
    )
    .await;
    found.with_context(|| {
        format!(
            "controller log:\n{}",
            scenario.installation.controller_log()
        )
    })
}

/// The Events about the rotation with this reason.
async fn events(scenario: &Scenario, reason: &str) -> Result<Vec<Event>> {
    let events = Api::<Event>::namespaced(scenario.client.clone(), NAMESPACE)
        .list(&ListParams::default().fields(&format!("involvedObject.name={CLUSTER}")))
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

/// The kids of the keys the API server key Secret holds (`sa.key`, then
/// every key of `sa.pub`).
async fn api_server_key_kids(scenario: &Scenario) -> Result<(String, Vec<String>)> {
    let secret = secrets(scenario)
        .get(&format!("{CLUSTER}-apiserver-keys"))
        .await?;
    let data = secret.data.context("API server key Secret has no data")?;
    let sa_key = parse_pem(&data.get("sa.key").context("no sa.key")?.0)?;
    let signing = sa_key
        .private_keys()
        .next()
        .context("sa.key holds no private key")?
        .kid()
        .to_string();
    let public = parse_pem(&data.get("sa.pub").context("no sa.pub")?.0)?
        .public_keys()
        .map(|k| k.kid().to_string())
        .collect();
    Ok((signing, public))
}

/// A key Secret of `version` as ksa's own would look, holding `key`, with
/// no seal: what a tenant who may create Secrets can plant.
fn key_secret(version: u64, key: &PrivateKey) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("{CLUSTER}-signing-key-v{version}")),
            labels: Some(BTreeMap::from([
                (LABEL_ROTATION.to_owned(), CLUSTER.to_owned()),
                (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
                (LABEL_KEY_VERSION.to_owned(), version.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "key.pem".to_owned(),
            ByteString(key.to_pem().as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[tokio::test]
async fn a_planted_next_key_is_refused_by_name_and_never_reaches_the_api_servers() -> Result<()> {
    let scenario = Scenario::start().await?;
    let planted = AwsLc::new().generate(KeySpec::Rsa2048)?;
    secrets(&scenario)
        .create(&PostParams::default(), &key_secret(2, &planted))
        .await?;
    // Labelled as a key, under a name no key has: not a key of the store,
    // ignored, and no reason to stop (it stays throughout).
    let mut junk = key_secret(2, &planted);
    junk.metadata.name = Some("junk".into());
    secrets(&scenario)
        .create(&PostParams::default(), &junk)
        .await?;
    request_rotation(&scenario, serde_json::json!({})).await?;

    let waiting = wait_for_refusal(
        &scenario,
        &format!("Secret {NAMESPACE}/{CLUSTER}-signing-key-v2 is not ksa's (it has no seal)"),
    )
    .await?;
    eprintln!("refused: {waiting}");
    eventually("a NotKsas Event", WITHIN, || async {
        ensure!(!events(&scenario, "NotKsas").await?.is_empty(), "none yet");
        Ok(())
    })
    .await?;
    let (signing, public) = api_server_key_kids(&scenario).await?;
    let first = scenario.first_key.kid().to_string();
    ensure!(
        signing == first && public == [first.clone()],
        "the API server key Secret changed: signing {signing}, public {public:?}"
    );

    // Deleting it lets the rotation go on, with a key ksa makes: a tenant
    // delays a rotation, never steers it.
    secrets(&scenario)
        .delete(
            &format!("{CLUSTER}-signing-key-v2"),
            &DeleteParams::default(),
        )
        .await?;
    let attacker = planted.kid().to_string();
    eventually("the API servers trust a key ksa made", WITHIN, || async {
        let (_, public) = api_server_key_kids(&scenario).await?;
        ensure!(public.len() == 2, "sa.pub holds {public:?}");
        ensure!(!public.contains(&attacker), "sa.pub holds the planted key");
        Ok(())
    })
    .await
    .with_context(|| scenario.installation.controller_log())?;
    let stats = scenario.prober.stats().await;
    ensure!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {stats:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_imported_key_the_cluster_does_not_sign_with_is_never_used() -> Result<()> {
    let scenario = Scenario::start().await?;
    // Another rotation in the namespace, whose "current" key is one no API
    // server knows.
    let stranger = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let name = "imported-elsewhere";
    let store = ksa_kube::keystore::KeyStore::new(scenario.client.clone(), NAMESPACE, name);
    store.create(ksa_core::KeyVersion::FIRST, &stranger).await?;
    let resource: KSASigningKeyRotation = serde_json::from_value(serde_json::json!({
        "apiVersion": "ksa.dev/v1alpha1",
        "kind": "KSASigningKeyRotation",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"keyVersion": 2},
    }))?;
    rotations(&scenario)
        .create(&PostParams::default(), &resource)
        .await?;
    eventually("the import refused", WITHIN, || async {
        let waiting = rotations(&scenario)
            .get(name)
            .await?
            .status
            .and_then(|s| s.waiting_for)
            .unwrap_or_default();
        ensure!(
            waiting.contains(&format!(
                "the key imported into Secret {NAMESPACE}/{name}-signing-key-v1 (kid {})",
                stranger.kid()
            )) && waiting.contains("is not the key the cluster signs with"),
            "status.waitingFor is {waiting:?}"
        );
        Ok(())
    })
    .await
    .with_context(|| scenario.installation.controller_log())?;
    // Never sealed, never generated past.
    let secret = secrets(&scenario)
        .get(&format!("{name}-signing-key-v1"))
        .await?;
    ensure!(
        !secret
            .annotations()
            .contains_key(ksa_kube::provenance::ANNOTATION),
        "the stranger's key was sealed"
    );
    ensure!(
        secrets(&scenario)
            .get_opt(&format!("{name}-signing-key-v2"))
            .await?
            .is_none(),
        "a rotation started on a key the cluster does not use"
    );
    Ok(())
}

#[tokio::test]
async fn an_api_server_key_secret_with_another_writers_annotation_is_never_written() -> Result<()> {
    let scenario = Scenario::start().await?;
    // What a replicator follows: ksa's write would copy sa.key wherever it
    // points.
    let replicate = "replicator.v1.mittwald.de/replicate-to";
    secrets(&scenario)
        .patch(
            &format!("{CLUSTER}-apiserver-keys"),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {replicate: "tenant-namespace"}}
            })),
        )
        .await?;
    request_rotation(&scenario, serde_json::json!({})).await?;
    let waiting = wait_for_refusal(
        &scenario,
        &format!(
            "Secret {NAMESPACE}/{CLUSTER}-apiserver-keys is not ksa's (it carries annotations, \
             labels, owners or finalizers ksa does not write)"
        ),
    )
    .await?;
    eprintln!("refused: {waiting}");
    let (signing, public) = api_server_key_kids(&scenario).await?;
    let first = scenario.first_key.kid().to_string();
    ensure!(
        signing == first && public == [first.clone()],
        "the API server key Secret was written: signing {signing}, public {public:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_hand_edited_status_is_refused_and_no_key_is_deleted() -> Result<()> {
    let scenario = Scenario::start().await?;
    // Trust holds an hour after the API servers accept key 2.
    request_rotation(&scenario, serde_json::json!({"trustLeadTimeSeconds": 3600})).await?;
    eventually("the rotation holding in Trust", WITHIN, || async {
        let status = rotations(&scenario).get(CLUSTER).await?.status;
        let step = status.as_ref().map(|s| s.step.to_string());
        let waiting = status.and_then(|s| s.waiting_for).unwrap_or_default();
        ensure!(
            step.as_deref() == Some("Trust") && waiting.contains("lead time"),
            "step {step:?}, waiting for {waiting:?}"
        );
        Ok(())
    })
    .await
    .with_context(|| scenario.installation.controller_log())?;

    // Someone granted ksasigningkeyrotations/status skips RefreshTokens.
    for (what, seal) in [
        ("its status's seal does not match its state", None),
        ("its status has no seal", Some(serde_json::Value::Null)),
    ] {
        let mut status = serde_json::json!({
            "step": "Retire", "tokenVersion": 2, "privateKeyVersion": 2,
            "publicKeyVersions": [1, 2],
        });
        if let Some(seal) = seal {
            status["seal"] = seal;
        }
        rotations(&scenario)
            .patch_status(
                CLUSTER,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"status": status})),
            )
            .await?;
        wait_for_refusal(
            &scenario,
            &format!("KSASigningKeyRotation {NAMESPACE}/{CLUSTER} is not ksa's ({what})"),
        )
        .await?;
    }
    // The status a resource has before its first rotation, put back in
    // the middle of it: older than key 2, which ksa has made since.
    rotations(&scenario)
        .patch_status(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {
                "keyVersion": 1, "step": "Completed", "tokenVersion": 1,
                "privateKeyVersion": 1, "publicKeyVersions": [1],
                "startedAt": null, "stepStartedAt": null, "confirmedAt": null, "seal": null,
            }})),
        )
        .await?;
    wait_for_refusal(
        &scenario,
        &format!(
            "KSASigningKeyRotation {NAMESPACE}/{CLUSTER} is not ksa's (its state is older than a \
             key ksa has made since)"
        ),
    )
    .await?;
    // Key 1 is still stored and still trusted: nothing acted on the edit.
    ensure!(
        secrets(&scenario)
            .get_opt(&format!("{CLUSTER}-signing-key-v1"))
            .await?
            .is_some(),
        "key 1 was deleted"
    );
    let (signing, public) = api_server_key_kids(&scenario).await?;
    let first = scenario.first_key.kid().to_string();
    if signing != first || !public.contains(&first) {
        bail!("the API servers were moved on: signing {signing}, public {public:?}");
    }
    let stats = scenario.prober.stats().await;
    ensure!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {stats:?}"
    );
    Ok(())
}
