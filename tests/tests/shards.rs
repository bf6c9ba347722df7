//! Beyond one controller (issue 34): two shards, each a `ksa-controller
//! run --shard NAME --namespace-selector ksa.dev/shard=NAME`, on the real
//! control plane, beside a namespace of no shard.
//!
//! - Each shard acts only on the rotations of its namespaces: the claim
//!   Lease names its replica, the Events its reporting instance; the
//!   rotation of no shard is never touched (no status, no claim, no lock).
//! - A namespace relabelled from shard a to shard b mid-rotation: b
//!   finishes the rotation, a never acts after it released it (every Event
//!   a reported is older than b's claim), and the two never hold it at once.
//!
//! Then the fleet view of those rotations (one completed, some in progress,
//! one blocked): `ksa status -A` (text, wide, json, jsonpath), `kubectl get
//! ksarot -A` and `ksa plan -A`.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use ksa_core::KeyVersion;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::KeyStore;
use ksa_tests::scenario::{CLUSTER, NAMESPACE, Scenario};
use ksa_tests::{FIRST_REPLICA, eventually, ksa_binary, loopback_addr};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

/// Shard b's namespace, its rotation waiting at Trust (no roll-out plays
/// its key Secret).
const B: &str = "fleet-b";
/// A namespace of no shard.
const NONE: &str = "fleet-none";
/// Shard b's, refused: its token refresh policy's role is not bound.
const REFUSED: &str = "fleet-refused";
const REPLICA_A: &str = "shard-a-0";
const REPLICA_B: &str = "shard-b-0";
const WITHIN: Duration = Duration::from_secs(90);

async fn label_shard(client: &kube::Client, namespace: &str, shard: Option<&str>) -> Result<()> {
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"labels": {"ksa.dev/shard": shard}}
            })),
        )
        .await?;
    Ok(())
}

/// A namespace that holds a rotation named as it, as an operator prepares
/// one: the controller's rotation role there, the label, and the cluster's
/// current key imported as version 1.
async fn rotation_namespace(scenario: &Scenario, namespace: &str) -> Result<()> {
    use ksa_controller::manifests::{ROTATION_ROLE, role_binding};
    let client = &scenario.client;
    ksa_tests::cluster::create_namespace(client, namespace).await?;
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch(
            ROTATION_ROLE,
            &PatchParams::apply("ksa-e2e").force(),
            &Patch::Apply(role_binding(
                ROTATION_ROLE,
                namespace,
                ksa_tests::install::controller_subject(),
            )),
        )
        .await?;
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"labels": {ksa_controller::admission::ROTATION_NAMESPACE_LABEL: "enabled"}}
            })),
        )
        .await?;
    let store = KeyStore::new(client.clone(), namespace, namespace);
    store.create(KeyVersion::FIRST, &scenario.first_key).await?;
    store
        .publish(
            &format!("{namespace}-apiserver-keys"),
            KeyVersion::FIRST,
            &[KeyVersion::FIRST],
        )
        .await?;
    Ok(())
}

/// Asks for the rotation to key version 2 in `namespace` (named as it).
async fn request(client: &kube::Client, namespace: &str, spec: serde_json::Value) -> Result<()> {
    let mut spec = spec;
    spec["keyVersion"] = 2.into();
    let resource: KSASigningKeyRotation = serde_json::from_value(serde_json::json!({
        "apiVersion": "ksa.dev/v1alpha1",
        "kind": "KSASigningKeyRotation",
        "metadata": {"name": namespace, "namespace": namespace},
        "spec": spec,
    }))?;
    Api::<KSASigningKeyRotation>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &resource)
        .await?;
    Ok(())
}

async fn rotation(client: &kube::Client, namespace: &str) -> Result<KSASigningKeyRotation> {
    Ok(
        Api::<KSASigningKeyRotation>::namespaced(client.clone(), namespace)
            .get(namespace)
            .await?,
    )
}

async fn claim(client: &kube::Client, namespace: &str, name: &str) -> Result<Option<Lease>> {
    Ok(Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(&ksa_controller::shard::claim_name(name))
        .await?)
}

fn holder(lease: &Option<Lease>) -> Option<String> {
    lease
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.holder_identity.clone())
}

/// The controller's Events about the rotation `name`: who reported each,
/// its reason, and when it was last observed.
async fn events(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<(String, String, jiff::Timestamp)>> {
    let events = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| e.reporting_component.as_deref() == Some("ksa-controller"))
        .map(|e| {
            let last = e
                .series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_ref())
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .unwrap_or_default();
            (
                e.reporting_instance.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                last,
            )
        })
        .collect())
}

fn step(resource: &KSASigningKeyRotation) -> Option<String> {
    resource.status.as_ref().map(|s| s.step.to_string())
}

#[tokio::test]
async fn two_shards_never_act_on_one_rotation_and_the_fleet_shows_where_each_stands() -> Result<()>
{
    let mut scenario = Scenario::start().await?;
    let client = scenario.client.clone();
    // The scenario's unsharded controller gives way to two shards.
    scenario.installation.kill_replica(FIRST_REPLICA)?;
    for namespace in [B, NONE, REFUSED] {
        rotation_namespace(&scenario, namespace).await?;
    }
    label_shard(&client, NAMESPACE, Some("a")).await?;
    label_shard(&client, B, Some("b")).await?;
    label_shard(&client, REFUSED, Some("b")).await?;
    for (shard, replica) in [("a", REPLICA_A), ("b", REPLICA_B)] {
        scenario.installation.extra_args = vec![
            format!("--shard={shard}"),
            format!("--namespace-selector=ksa.dev/shard={shard}"),
        ];
        scenario
            .installation
            .start_replica(replica, loopback_addr()?)?;
    }
    // A bad selector is refused at startup, naming the flag.
    let refused = std::process::Command::new(ksa_binary("ksa-controller")?)
        .args([
            "run",
            "--shard=c",
            "--namespace-selector=ksa.dev/shard in a",
        ])
        .env("KUBECONFIG", &scenario.kubeconfig)
        .output()?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success()
            && stderr.contains("--namespace-selector")
            && stderr.contains("parentheses"),
        "a bad selector: {:?} {stderr}",
        refused.status.code()
    );

    request(&client, NAMESPACE, serde_json::json!({})).await?;
    request(&client, B, serde_json::json!({})).await?;
    request(&client, NONE, serde_json::json!({})).await?;
    request(
        &client,
        REFUSED,
        serde_json::json!({"tokenRefresh": {"policy": "recreate-nodes"}}),
    )
    .await?;

    // Each shard takes up its own.
    let log = || scenario.installation.controller_log();
    eventually("shard b started its rotation", WITHIN, || async {
        let resource = rotation(&client, B).await?;
        ensure!(
            step(&resource).is_some_and(|s| s != "Completed"),
            "step {:?}",
            step(&resource)
        );
        ensure!(
            holder(&claim(&client, B, B).await?).as_deref() == Some("b/shard-b-0"),
            "claim {:?}",
            holder(&claim(&client, B, B).await?)
        );
        Ok(())
    })
    .await
    .with_context(log)?;
    eventually("shard b refused its refused one", WITHIN, || async {
        let resource = rotation(&client, REFUSED).await?;
        let refusal = resource.status.and_then(|s| s.refusal);
        ensure!(
            refusal.as_ref().is_some_and(|r| r.reason == "MissingGrant"),
            "{refusal:?}"
        );
        Ok(())
    })
    .await
    .with_context(log)?;
    // Shard a's, mid-rotation: past Generate, not completed.
    eventually("shard a's rotation is under way", WITHIN, || async {
        let resource = rotation(&client, NAMESPACE).await?;
        let step = step(&resource).unwrap_or_default();
        ensure!(matches!(step.as_str(), "Trust" | "Sign"), "step {step:?}");
        ensure!(
            holder(&claim(&client, NAMESPACE, CLUSTER).await?).as_deref() == Some("a/shard-a-0"),
            "claim {:?}",
            holder(&claim(&client, NAMESPACE, CLUSTER).await?)
        );
        Ok(())
    })
    .await
    .with_context(log)?;
    let before = events(&client, NAMESPACE, CLUSTER).await?;
    ensure!(
        before
            .iter()
            .any(|(by, reason, _)| by == REPLICA_A && reason == "RotationStarted"),
        "shard a started it: {before:?}"
    );
    ensure!(
        before.iter().all(|(by, _, _)| by == REPLICA_A),
        "only shard a acted so far: {before:?}"
    );
    for (by, _, _) in events(&client, B, B).await? {
        ensure!(by == REPLICA_B, "shard b's rotation reported by {by}");
    }

    // Relabelled to shard b mid-rotation: b finishes it.
    label_shard(&client, NAMESPACE, Some("b")).await?;
    eventually(
        "shard b completed the relabelled rotation",
        Duration::from_secs(150),
        || async {
            let resource = rotation(&client, NAMESPACE).await?;
            let status = resource.status.context("no status")?;
            ensure!(
                status.step.to_string() == "Completed" && status.key_version == 2,
                "step {} of key {}: {:?}",
                status.step,
                status.key_version,
                status.waiting_for
            );
            Ok(())
        },
    )
    .await
    .with_context(log)?;
    let lease = claim(&client, NAMESPACE, CLUSTER).await?;
    ensure!(
        holder(&lease).as_deref() == Some("b/shard-b-0"),
        "claim {:?}",
        holder(&lease)
    );
    let lease = lease.context("a claim")?;
    ensure!(
        lease
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|owners| owners
                .iter()
                .any(|o| o.kind == "KSASigningKeyRotation" && o.name == CLUSTER)),
        "the claim is deleted with its rotation: {:?}",
        lease.metadata.owner_references
    );
    let spec = lease.spec.context("a claim's spec")?;
    let taken = spec.acquire_time.clone().context("acquired")?.0;
    ensure!(
        spec.lease_transitions.unwrap_or(0) >= 1,
        "b took it over: {spec:?}"
    );
    let log_text = log();
    ensure!(
        log_text.contains("the namespace left this shard: released the rotation"),
        "shard a released it"
    );
    let after = events(&client, NAMESPACE, CLUSTER).await?;
    for (by, reason, at) in &after {
        if by == REPLICA_A {
            ensure!(
                *at < taken,
                "shard a reported {reason} at {at}, after shard b took the rotation at {taken}"
            );
        } else {
            ensure!(by == REPLICA_B, "{reason} reported by {by}");
        }
    }
    ensure!(
        after
            .iter()
            .any(|(by, reason, _)| by == REPLICA_B && reason == "StepCompleted"),
        "shard b completed it: {after:?}"
    );
    // Tokens stayed valid throughout.
    let stats = scenario.prober.stats().await;
    ensure!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens rejected: {:?}",
        stats.wrongly_rejected
    );

    // The namespace of no shard: never touched.
    let untouched = rotation(&client, NONE).await?;
    ensure!(untouched.status.is_none(), "{:?}", untouched.status);
    ensure!(claim(&client, NONE, NONE).await?.is_none(), "claimed");
    ensure!(
        Api::<Lease>::namespaced(client.clone(), NONE)
            .get_opt(&ksa_kube::lock::lease_name(NONE))
            .await?
            .is_none(),
        "locked"
    );

    fleet_view(&scenario).await
}

/// The fleet of four: user-cluster-1 completed, fleet-b in progress (at
/// Trust), fleet-none asked for and not taken up, fleet-refused blocked.
async fn fleet_view(scenario: &Scenario) -> Result<()> {
    let kubeconfig = scenario.kubeconfig.to_string_lossy().into_owned();
    let ksa = |args: &[&str]| -> Result<(Option<i32>, String, String)> {
        let output = std::process::Command::new(ksa_binary("ksa")?)
            .args(args)
            .args(["--kubeconfig", &kubeconfig])
            .output()?;
        Ok((
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    };
    let (code, table, summary) = ksa(&["status", "-A"])?;
    eprintln!("{table}{summary}");
    ensure!(code == Some(0), "status -A exits {code:?}: {summary}");
    let lines: Vec<&str> = table.lines().collect();
    ensure!(
        lines.first().is_some_and(|h| h.starts_with("NAMESPACE")
            && h.contains("WAITING FOR")
            && h.ends_with("AGE")),
        "{table}"
    );
    let row = |namespace: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{namespace} ")))
            .copied()
            .unwrap_or_default()
    };
    ensure!(lines.len() == 5, "one line each: {table}");
    ensure!(
        row(B).contains("Trust") && row(B).contains("Progressing"),
        "{table}"
    );
    ensure!(row(NONE).contains("the controller to take up"), "{table}");
    ensure!(
        row(REFUSED).contains("Blocked") && row(REFUSED).contains("refused (MissingGrant)"),
        "{table}"
    );
    ensure!(row(NAMESPACE).contains("Completed   True"), "{table}");
    let order: Vec<&str> = lines[1..]
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ensure!(order == [B, NONE, REFUSED, NAMESPACE], "sorted: {order:?}");
    ensure!(
        summary.contains("4 rotations: 1 completed, 2 in progress, 1 blocked"),
        "{summary}"
    );
    // The gkectl-shaped path, wide.
    let (code, wide, _) = ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "status",
        "--all-namespaces",
        "-o",
        "wide",
    ])?;
    ensure!(
        code == Some(0) && wide.lines().next().is_some_and(|h| h.contains("STEP AGE")),
        "{wide}"
    );
    let (_, json, _) = ksa(&["status", "-A", "-o", "json"])?;
    let json: serde_json::Value = serde_json::from_str(&json)?;
    ensure!(
        json["summary"]["blocked"] == 1 && json["items"].as_array().map(Vec::len) == Some(4),
        "{json}"
    );
    let (_, names, _) = ksa(&["status", "-A", "-o", "jsonpath={.items[*].standing}"])?;
    ensure!(
        names.trim() == "inProgress inProgress blocked completed",
        "{names}"
    );

    // kubectl's own view: the Ready reason by default.
    let kubectl = ksa_tests::control_plane_binaries()?.join("kubectl");
    let output = std::process::Command::new(kubectl)
        .args(["get", "ksarot", "-A", "--kubeconfig", &kubeconfig])
        .output()?;
    let table = String::from_utf8_lossy(&output.stdout);
    eprintln!("{table}");
    ensure!(
        table
            .lines()
            .next()
            .is_some_and(|h| h.contains("REASON") && !h.contains("ISSUER")),
        "{table}"
    );
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with(REFUSED) && l.contains("Blocked")),
        "{table}"
    );

    // The fleet's dry run: only the completed one would start; nothing
    // changes. The rotations' outcomes are the tenants' doing: the plan
    // exits 0 once made, and says what each would do; with
    // --detailed-exit-code, 3 (some would be refused, none unplanned).
    let before = rotation(&scenario.client, NAMESPACE).await?;
    let (code, plan, summary) = ksa(&["plan", "-A"])?;
    eprintln!("{plan}{summary}");
    ensure!(code == Some(0), "plan -A exits {code:?}: {summary}");
    ensure!(
        summary.contains(
            "4 rotations: 1 would rotate, 3 refused, 0 could not be planned; nothing was changed"
        ),
        "{summary}"
    );
    ensure!(
        plan.lines().any(|l| l.starts_with(NAMESPACE)
            && l.contains("would rotate")
            && l.contains("API server")),
        "{plan}"
    );
    let (code, _, detailed) = ksa(&["plan", "-A", "--detailed-exit-code", "--timeout", "5m"])?;
    ensure!(
        code == Some(3) && detailed.contains("1 would rotate, 3 refused, 0 could not be planned"),
        "plan -A --detailed-exit-code exits {code:?}: {detailed}"
    );
    let (code, json, _) = ksa(&["rotate", "-A", "--dry-run", "-o", "json"])?;
    ensure!(code == Some(0), "rotate -A --dry-run exits {code:?}");
    let json: serde_json::Value = serde_json::from_str(&json)?;
    ensure!(json["summary"]["wouldRotate"] == 1, "{json}");
    let (code, _, _) = ksa(&["rotate", "-A", "--dry-run", "--detailed-exit-code"])?;
    ensure!(
        code == Some(3),
        "rotate -A --dry-run --detailed-exit-code exits {code:?}"
    );
    let after = rotation(&scenario.client, NAMESPACE).await?;
    ensure!(
        before.metadata.resource_version == after.metadata.resource_version,
        "the dry run changed the rotation"
    );
    let (code, _, stderr) = ksa(&["rotate", "-A"])?;
    ensure!(
        code == Some(2) && stderr.contains("--dry-run"),
        "rotate -A without --dry-run: {code:?} {stderr}"
    );
    Ok(())
}

/// `helm template` of the chart with these `--set` values: its output, or
/// helm's error.
fn helm_template(values: &[&str]) -> Result<std::result::Result<String, String>> {
    let chart = ksa_tests::readme::workspace().join("charts").join("ksa");
    let mut command = ksa_tests::readme::helm_command()?;
    command
        .args(["template", "ksa-a"])
        .arg(chart)
        .args(["--namespace", "ksa-system"]);
    for value in values {
        command.args(["--set", value]);
    }
    let output = command.output()?;
    Ok(if output.status.success() {
        Ok(String::from_utf8(output.stdout)?)
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    })
}

/// One release per shard: the chart passes the shard's flags, labels its
/// pods, and refuses values that cannot work, saying what to do.
#[test]
fn the_chart_runs_one_shard_per_release() -> Result<()> {
    let rendered = helm_template(&[
        "shard.name=a",
        "shard.namespaceSelector=!ksa.dev/shard",
        "serviceMonitor.enabled=true",
    ])?
    .map_err(anyhow::Error::msg)?;
    for needed in [
        "- --shard=a",
        "- \"--namespace-selector=!ksa.dev/shard\"",
        "ksa.dev/shard: \"a\"",
        "podTargetLabels:\n  - ksa.dev/shard",
        "  - namespaces\n  verbs:\n  - list\n  - watch",
    ] {
        ensure!(rendered.contains(needed), "no {needed:?} in\n{rendered}");
    }
    let unsharded = helm_template(&[])?.map_err(anyhow::Error::msg)?;
    ensure!(!unsharded.contains("--shard") && !unsharded.contains("ksa.dev/shard"));
    for (values, says) in [
        (
            vec!["shard.namespaceSelector=ksa.dev/shard=a"],
            "shard.namespaceSelector needs shard.name",
        ),
        (
            vec![
                "shard.name=a",
                "shard.namespaceSelector=ksa.dev/shard=a",
                "watchNamespace=user-cluster-1",
            ],
            "exclude each other",
        ),
        (vec!["shard.name=Shard_A"], "/shard/name"),
        (
            vec!["shard.namespaceSelector=a;b"],
            "/shard/namespaceSelector",
        ),
        (vec!["shard.zone=x"], "zone"),
    ] {
        match helm_template(&values)? {
            Ok(_) => anyhow::bail!("{values:?} rendered"),
            Err(error) => ensure!(error.contains(says), "{values:?}: {error}"),
        }
    }
    Ok(())
}
