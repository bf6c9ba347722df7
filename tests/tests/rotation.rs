//! Full rotations on a real control plane of three kube-apiserver
//! instances, driven by `ksa-controller` and the `ksa` CLI, with a prober
//! reviewing tokens on every instance throughout.

use std::time::Instant;

use anyhow::{Context, Result};
use base64::Engine as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use ksa_core::key::PrivateKey;
use ksa_core::rotation::{RotationState, Step};
use ksa_core::{KeyVersion, token};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::KeyStore;
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{APPS, CLUSTER, NAMESPACE, Scenario};
use ksa_tests::zoo::Zoo;
use kube::api::{Api, ListParams};

/// Pieces of each (RSA) private key as they would appear if leaked: a line
/// of its PEM body and its DER in base64 and base64url at every alignment,
/// all from the end of the key, where the private CRT values are (the
/// start holds the modulus, which the JWKS publishes).
fn key_fragments(keys: &[PrivateKey]) -> Vec<String> {
    let mut fragments = Vec::new();
    for key in keys {
        assert_eq!(key.algorithm(), ksa_core::key::Algorithm::RS256);
        let pem = key.to_pem();
        let lines: Vec<&str> = pem.lines().collect();
        fragments.push(lines[lines.len() - 3].to_owned());
        let der = key.secret_der();
        let end = der.len() - 40;
        for start in [end, end + 1, end + 2] {
            let chunk = &der[start..start + 30];
            for encoded in [
                base64::engine::general_purpose::STANDARD.encode(chunk),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(chunk),
            ] {
                fragments.push(encoded[4..32].to_owned());
            }
        }
    }
    fragments
}

/// What in `text` looks like private key material, described.
fn leaks(text: &str, fragments: &[String]) -> Vec<String> {
    let mut found: Vec<String> = [
        "PRIVATE KEY",
        "\"d\":",
        "\"p\":",
        "\"q\":",
        "\"dp\":",
        "\"dq\":",
        "\"qi\":",
    ]
    .iter()
    .filter(|marker| text.contains(*marker))
    .map(|marker| format!("marker {marker}"))
    .collect();
    found.extend(
        fragments
            .iter()
            .filter(|fragment| text.contains(fragment.as_str()))
            .map(|fragment| format!("key bytes {fragment}")),
    );
    found
}

fn stdout_lines(output: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn expected_lines(from: u64, to: u64) -> Vec<String> {
    let prefix = format!(
        "State of KSASigningKeyRotation with KSASigningKeyVersion {to} is - status: False, reason: KSASigningKeyRotationProcessedReason, message:"
    );
    let done = format!(
        "State of KSASigningKeyRotation with KSASigningKeyVersion {to} is - status: True, reason: KSASigningKeyRotationCompleted, message:"
    );
    vec![
        format!(
            r#"{prefix}{{"tokenVersion":{from},"privateKeyVersion":{from},"publicKeyVersions":[{from}]}}"#
        ),
        format!(
            r#"{prefix}{{"tokenVersion":{from},"privateKeyVersion":{from},"publicKeyVersions":[{from},{to}]}}"#
        ),
        format!(
            r#"{prefix}{{"tokenVersion":{from},"privateKeyVersion":{to},"publicKeyVersions":[{from},{to}]}}"#
        ),
        format!(
            r#"{prefix}{{"tokenVersion":{to},"privateKeyVersion":{to},"publicKeyVersions":[{from},{to}]}}"#
        ),
        format!(
            r#"{done}{{"tokenVersion":{to},"privateKeyVersion":{to},"publicKeyVersions":[{to}]}}"#
        ),
    ]
}

/// The status lines the core produces for each step of the rotation to
/// `to`, in order, a line shared by consecutive steps (Generate and Trust)
/// once: what `rotate --wait` must print, each exactly once.
fn core_lines(to: u64) -> Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    for step in Step::ROTATION.into_iter().chain([Step::Completed]) {
        let state = RotationState::at(KeyVersion::new(to), step)
            .with_context(|| format!("no state at {step} of a rotation to {to}"))?;
        let line = state.status_line().to_string();
        if lines.last() != Some(&line) {
            lines.push(line);
        }
    }
    Ok(lines)
}

/// GET on loopback; returns the Cache-Control header and the body.
fn get(url: &str) -> Result<(String, String)> {
    let mut response = ureq::get(url).call()?;
    let cache = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((cache, response.body_mut().read_to_string()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_rotations_through_the_cli_log_nobody_out() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let scenario = Scenario::start_ha().await?;
    // Every kind of pod a cluster runs, on simulated nodes; the harness
    // plays the operator (relaxes the blocking budget once the status
    // names its pod, finishes the running Job once named).
    let mut zoo = Zoo::create(&scenario.plane, &scenario.client).await?;
    zoo.operate(NAMESPACE, CLUSTER);
    let before_legacy = scenario.legacy_token().await?;
    assert_eq!(
        token::decode(&before_legacy)?.header.kid.as_deref(),
        Some(scenario.first_key.kid().as_str())
    );

    // Refusals that need no controller: advanced clusters, bad configs.
    let advanced = scenario.config_with(
        "advanced.yaml",
        "name: user-cluster-1\nenableAdvancedCluster: true\n",
    )?;
    let refused = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--config",
        advanced.to_str().context("path")?,
    ])?;
    assert_eq!(
        refused.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("enableAdvancedCluster"));
    let no_prompt = scenario.ksa(&["update", "credentials", "ksa-signing-key", "rotate"])?;
    assert_eq!(
        no_prompt.status.code(),
        Some(2),
        "no terminal and no --skip-prompt fails at once"
    );

    // The plan before the first rotation: it names who the rotation will
    // restart, evict, wait for and cut off, and changes nothing.
    let outside = present_a_legacy_token_from_outside(&scenario.client).await?;
    let before = Snapshot::take(&scenario.client).await?;
    let dry_run = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--dry-run",
        "-o",
        "json",
    ])?;
    assert_eq!(
        dry_run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dry_run.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&dry_run.stdout)?;
    Snapshot::take(&scenario.client)
        .await?
        .assert_unchanged_since(&before)?;
    check_plan(&plan, &outside)?;
    eprintln!(
        "the plan, as text:\n{}",
        String::from_utf8_lossy(
            &scenario
                .ksa(&[
                    "update",
                    "credentials",
                    "ksa-signing-key",
                    "rotate",
                    "--dry-run"
                ])?
                .stdout
        )
    );
    // Without a prompt, a rotation that would cut an outside holder off is
    // refused, naming it, and changes nothing; accepted with the flag.
    let refused = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
    ])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{APPS}/{outside}"))
            && stderr.contains("--accept-outside-legacy-tokens"),
        "{stderr}"
    );
    Snapshot::take(&scenario.client)
        .await?
        .assert_unchanged_since(&before)?;

    // Every private key the rotations handle, for the key-hygiene check.
    let store = KeyStore::new(scenario.client.clone(), NAMESPACE, CLUSTER);
    let mut keys = vec![scenario.first_key.clone()];
    for (from, to) in [(1, 2), (2, 3)] {
        let started = Instant::now();
        let old_token = scenario.bound_token().await?;
        let rotate = scenario.ksa(&[
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--skip-prompt",
            "--accept-outside-legacy-tokens",
            "--wait",
            "--timeout",
            "10m",
        ])?;
        let stderr = String::from_utf8_lossy(&rotate.stderr);
        assert_eq!(
            rotate.status.code(),
            Some(0),
            "rotate {from}->{to} failed: {stderr}\n{}",
            scenario.installation.controller_log()
        );
        eprintln!("rotation {from} -> {to} took {:.1?}", started.elapsed());
        let lines = stdout_lines(&rotate);
        // The status line of every step of the rotation, exactly once and in
        // order, though the hosted roll-out restarted the API server at
        // Trust and at Retire (the watch re-lists after each): a step the
        // watch missed is printed from the step, and stderr says so.
        let expected = expected_lines(from, to);
        assert_eq!(core_lines(to)?, expected, "the core's lines are the SPEC's");
        assert_eq!(
            lines, expected,
            "rotate {from}->{to} --wait printed other status lines than one per step, in order\nstderr: {stderr}"
        );
        let reconstructed = stderr
            .lines()
            .filter(|l| l.starts_with("(not observed:"))
            .count();
        eprintln!("rotation {from} -> {to}: {reconstructed} of the status lines reconstructed");
        assert!(
            reconstructed < lines.len(),
            "the completed line was observed"
        );

        keys.push(store.private_key(KeyVersion::new(to)).await?);
        let status = scenario.ksa(&["update", "credentials", "ksa-signing-key", "status"])?;
        assert_eq!(stdout_lines(&status), [expected[4].clone()]);
        let json = scenario.ksa(&[
            "update",
            "credentials",
            "ksa-signing-key",
            "status",
            "-o",
            "json",
        ])?;
        let json: serde_json::Value = serde_json::from_slice(&json.stdout)?;
        assert_eq!(json["step"], "Completed");
        assert_eq!(json["publicKeyVersions"], serde_json::json!([to]));
        assert_eq!(
            json["condition"]["reason"],
            "KSASigningKeyRotationCompleted"
        );

        // The legacy token was re-minted with the new key and still works.
        let legacy = scenario.legacy_token().await?;
        let jwks = scenario
            .client
            .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
            .await?;
        let served = ksa_core::jwk::parse_jwks(&jwks)?;
        assert_eq!(served.len(), 1, "after Retire only the new key is served");
        assert_eq!(
            token::decode(&legacy)?.header.kid.as_deref(),
            Some(served[0].kid.as_str())
        );
        // A token of the retired key, held by no pod and so not refreshed,
        // is rejected once the rotation says completed.
        assert!(
            !scenario.accepted(&old_token).await?,
            "a token of retired key {from} still authenticates"
        );
        assert!(scenario.accepted(&scenario.bound_token().await?).await?);
        // The Deployment was restarted for this key version.
        let web = Api::<Deployment>::namespaced(scenario.client.clone(), APPS)
            .get("web")
            .await?;
        let annotation = web
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("ksa.dev/restarted-for-key-version").cloned());
        assert_eq!(annotation, Some(to.to_string()));
        // The pods the plan said the first rotation would restart or
        // evict were replaced.
        if from == 1 {
            let now: Vec<String> = Api::<Pod>::all(scenario.client.clone())
                .list(&ListParams::default())
                .await?
                .iter()
                .filter_map(|p| p.metadata.uid.clone())
                .collect();
            let planned = plan["boundTokens"]["pods"]
                .as_array()
                .context("planned pods")?;
            let mut replaced = 0;
            for pod in planned {
                if matches!(pod["action"].as_str(), Some("restart-template" | "evict")) {
                    assert!(
                        !now.iter()
                            .any(|uid| Some(uid.as_str()) == pod["uid"].as_str()),
                        "the plan said {}/{} would be refreshed ({}), and it is still there",
                        pod["namespace"],
                        pod["name"],
                        pod["action"]
                    );
                    replaced += 1;
                }
            }
            assert!(replaced >= 10, "only {replaced} planned pods were checked");
        }
        // On the zoo: what held a stale token was refreshed, nothing else
        // was touched, no Job failed, and the status named who it waited
        // for.
        zoo.check(to)
            .await
            .with_context(|| scenario.installation.controller_log())?;
        // Before the next rotation (3 is the last).
        if to < 3 {
            zoo.ready_for_next(to).await?;
        }
    }
    eprintln!(
        "waiting for, as the status said it: {:#?}",
        zoo.seen().waiting
    );
    // The pod the budget blocked was named in a Warning Event, and its
    // release in a Normal one, for each rotation.
    let events = Api::<Event>::namespaced(scenario.client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await?;
    let notes = |reason: &str| -> Vec<String> {
        events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.message.clone())
            .collect()
    };
    let held = notes("LegacyTokensHeldOutside");
    assert!(
        held.iter()
            .any(|note| note.contains(&format!("{APPS}/{outside}"))),
        "no LegacyTokensHeldOutside Event named {outside}: {held:?}"
    );
    let status = Api::<KSASigningKeyRotation>::namespaced(scenario.client.clone(), NAMESPACE)
        .get(CLUSTER)
        .await?
        .status
        .context("a status")?;
    // `kubectl wait --for=condition=Ready` has its condition.
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True" && c.reason == "Completed"),
        "{:?}",
        status.conditions
    );
    assert!(
        status
            .outside_legacy_tokens
            .iter()
            .any(|t| t.starts_with(&format!("{APPS}/{outside} "))),
        "{:?}",
        status.outside_legacy_tokens
    );
    let blocked = notes("RefreshBlocked");
    assert!(
        blocked.iter().any(|note| note.contains("zoo/guarded-")
            && note.contains("PDB guarded-pdb allows 0 disruptions")),
        "no RefreshBlocked Event named the pod its budget blocks: {blocked:?}"
    );
    assert!(
        !notes("RefreshUnblocked").is_empty(),
        "no RefreshUnblocked Event once the budget was relaxed"
    );

    // The controller serves the JWKS for outside verifiers, with cache
    // headers, and its metrics.
    let http = format!("http://{}", scenario.installation.http_addr);
    let (jwks_headers, jwks) = get(&format!("{http}/jwks/user-cluster-1/user-cluster-1"))
        .unwrap_or_else(|e| {
            panic!(
                "GET the JWKS from the controller: {e}\n{}",
                scenario.installation.controller_log()
            )
        });
    assert_eq!(jwks_headers, "public, max-age=60");
    let published = ksa_core::jwk::parse_jwks(&jwks)?;
    assert_eq!(published.len(), 1);
    let (_, metrics) = get(&format!("{http}/metrics"))?;
    assert!(
        metrics
            .contains(r#"ksa_rotation_step{namespace="user-cluster-1",name="user-cluster-1",step="Completed"} 1"#),
        "{metrics}"
    );
    assert!(
        // Two legacy token Secrets (the workload's and the one held
        // outside), re-minted in each of the two rotations.
        metrics.contains("ksa_legacy_secrets_refreshed_total 4"),
        "{metrics}"
    );
    assert!(!metrics.contains("PRIVATE KEY"));

    // Two rotates started at the same moment: exactly one proceeds, the
    // other is refused with exit 3; a third while it runs is refused too.
    let racers: Vec<std::process::Child> = (0..2)
        .map(|_| {
            scenario.ksa_process(&[
                "update",
                "credentials",
                "ksa-signing-key",
                "rotate",
                "--skip-prompt",
                "--accept-outside-legacy-tokens",
            ])
        })
        .collect::<Result<_>>()?;
    let mut codes: Vec<Option<i32>> = Vec::new();
    for racer in racers {
        codes.push(racer.wait_with_output()?.status.code());
    }
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(3)],
        "one rotate proceeds, the other exits 3"
    );
    let second = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
    ])?;
    assert_eq!(
        second.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("already in progress"));
    let finish = scenario.ksa(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "status",
        "--watch",
    ])?;
    assert_eq!(finish.status.code(), Some(0));
    // It joined the rotation to 4 somewhere: from the first state it saw
    // on, every line once and in order, ending completed.
    let joined = stdout_lines(&finish);
    let all = core_lines(4)?;
    assert!(
        !joined.is_empty() && all.ends_with(&joined),
        "status --watch printed {joined:?}, not a tail of {all:?}"
    );

    // Key hygiene: no private key material in the controller's log, the
    // Events, the resource and its status, the ConfigMaps or the metrics.
    keys.push(store.private_key(KeyVersion::new(4)).await?);
    let fragments = key_fragments(&keys);
    let events = Api::<Event>::all(scenario.client.clone())
        .list(&ListParams::default())
        .await?;
    let resource = Api::<KSASigningKeyRotation>::namespaced(scenario.client.clone(), NAMESPACE)
        .get(CLUSTER)
        .await?;
    let config_maps = Api::<ConfigMap>::namespaced(scenario.client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await?;
    let (_, metrics) = get(&format!("{http}/metrics"))?;
    for (place, text) in [
        ("the controller log", scenario.installation.controller_log()),
        ("Events", serde_json::to_string(&events.items)?),
        ("the rotation resource", serde_json::to_string(&resource)?),
        ("ConfigMaps", serde_json::to_string(&config_maps.items)?),
        ("metrics", metrics),
    ] {
        assert!(!text.is_empty(), "{place} is empty: nothing was checked");
        let found = leaks(&text, &fragments);
        assert!(
            found.is_empty(),
            "private key material in {place}: {found:?}"
        );
    }
    // The check can fail: the key Secret itself holds what it looks for.
    let secret = store.private_key(KeyVersion::new(4)).await?.to_pem();
    assert!(!leaks(&secret, &fragments).is_empty());

    // Three rotations, each rolling out three key sets to three instances.
    let asks = scenario.check_roll_outs().await?;
    assert!(asks >= 27, "only {asks} roll-out steps were checked");
    let stats = scenario.prober.stats().await;
    eprintln!("prober: {stats:?}");
    assert!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {:?}",
        stats.wrongly_rejected
    );
    assert!(
        stats.reviews > 50,
        "the prober reviewed too little to mean anything: {stats:?}"
    );
    Ok(())
}

/// Creates a legacy token Secret of the workload's service account that
/// no pod mounts, and presents its token to the API server as an outside
/// holder would, until kube-apiserver labels the Secret as used. Returns
/// its name.
async fn present_a_legacy_token_from_outside(client: &kube::Client) -> Result<String> {
    let name = "outside-token";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), APPS);
    let account = Api::<ServiceAccount>::namespaced(client.clone(), APPS)
        .get("app")
        .await?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": {
            "kubernetes.io/service-account.name": "app",
            "kubernetes.io/service-account.uid": account.metadata.uid,
        }},
        "type": "kubernetes.io/service-account-token",
    }))?;
    secrets.create(&Default::default(), &secret).await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let secret = secrets.get(name).await?;
        let labelled = secret
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("kubernetes.io/legacy-token-last-used"));
        if labelled {
            return Ok(name.to_owned());
        }
        if let Some(token) = secret.data.as_ref().and_then(|d| d.get("token")) {
            let token = String::from_utf8(token.0.clone())?;
            ksa_tests::cluster::review_token(client, &token).await?;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "kube-apiserver did not label {APPS}/{name} as used within 120 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Every object `api` lists, as `KIND namespace/name`, with `field` of
/// its metadata, into `into`.
async fn listed<K, V>(
    api: Api<K>,
    kind: &str,
    field: impl Fn(&kube::api::ObjectMeta) -> V,
    into: &mut std::collections::BTreeMap<String, V>,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for object in api.list(&ListParams::default()).await? {
        let m = object.meta();
        into.insert(
            format!(
                "{kind} {}/{}",
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default()
            ),
            field(m),
        );
    }
    Ok(())
}

/// What the dry run must leave as it was: every object a rotation writes
/// or could write.
#[derive(Debug, PartialEq)]
struct Snapshot {
    /// Secrets, ConfigMaps, ServiceAccounts and Leases by
    /// namespace/name: resourceVersion.
    versions: std::collections::BTreeMap<String, String>,
    /// Workloads and PodDisruptionBudgets: generation (their status moves
    /// with kwok's pods; their spec must not).
    generations: std::collections::BTreeMap<String, i64>,
    rotations: usize,
    /// Every pod from before is still there.
    pods: std::collections::BTreeSet<String>,
}

impl Snapshot {
    async fn take(client: &kube::Client) -> Result<Snapshot> {
        use std::collections::{BTreeMap, BTreeSet};
        let params = ListParams::default();
        let c = client;
        let mut versions = BTreeMap::new();
        let version = |m: &kube::api::ObjectMeta| m.resource_version.clone().unwrap_or_default();
        let v = &mut versions;
        listed(Api::<Secret>::all(c.clone()), "Secret", version, v).await?;
        listed(Api::<ConfigMap>::all(c.clone()), "ConfigMap", version, v).await?;
        listed(
            Api::<ServiceAccount>::all(c.clone()),
            "ServiceAccount",
            version,
            v,
        )
        .await?;
        let leases = Api::<Lease>::namespaced(c.clone(), NAMESPACE);
        listed(leases, "Lease", |_| String::new(), v).await?;
        let mut generations = BTreeMap::new();
        let generation = |m: &kube::api::ObjectMeta| m.generation.unwrap_or_default();
        let g = &mut generations;
        listed(
            Api::<Deployment>::all(c.clone()),
            "Deployment",
            generation,
            g,
        )
        .await?;
        listed(
            Api::<StatefulSet>::all(c.clone()),
            "StatefulSet",
            generation,
            g,
        )
        .await?;
        listed(Api::<DaemonSet>::all(c.clone()), "DaemonSet", generation, g).await?;
        let budgets = Api::<PodDisruptionBudget>::all(c.clone());
        listed(budgets, "PodDisruptionBudget", generation, g).await?;
        let rotations = Api::<KSASigningKeyRotation>::all(client.clone())
            .list(&params)
            .await?
            .items
            .len();
        let pods: BTreeSet<String> = Api::<Pod>::all(client.clone())
            .list(&params)
            .await?
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        Ok(Snapshot {
            versions,
            generations,
            rotations,
            pods,
        })
    }

    /// Nothing the dry run could have written changed (pods may come, as
    /// a CronJob makes them; none may go).
    fn assert_unchanged_since(&self, before: &Snapshot) -> Result<()> {
        for (what, version) in &before.versions {
            let now = self.versions.get(what);
            anyhow::ensure!(now == Some(version), "{what} changed: {version} -> {now:?}");
        }
        for what in self.versions.keys() {
            anyhow::ensure!(before.versions.contains_key(what), "{what} was created");
        }
        anyhow::ensure!(
            self.generations == before.generations,
            "a workload or budget spec changed: {:?} -> {:?}",
            before.generations,
            self.generations
        );
        anyhow::ensure!(
            self.rotations == before.rotations,
            "a rotation resource was created"
        );
        let gone: Vec<_> = before.pods.difference(&self.pods).collect();
        anyhow::ensure!(gone.is_empty(), "pods went away: {gone:?}");
        Ok(())
    }
}

/// The plan names exactly the outside holder, the pod its budget blocks,
/// and a window for the 86400- and 7200-second tokens the zoo's pods hold.
fn check_plan(plan: &serde_json::Value, outside: &str) -> Result<()> {
    let held: Vec<String> = plan["legacyTokens"]["heldOutside"]
        .as_array()
        .context("heldOutside")?
        .iter()
        .map(|h| {
            format!(
                "{}/{}",
                h["namespace"].as_str().unwrap_or_default(),
                h["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    anyhow::ensure!(
        held == [format!("{APPS}/{outside}")],
        "held outside: {held:?}"
    );
    anyhow::ensure!(plan["keyVersion"] == 2, "{plan}");
    anyhow::ensure!(
        plan["apiServers"]
            .as_array()
            .is_some_and(|s| s.len() == ksa_tests::HA_INSTANCES),
        "{}",
        plan["apiServers"]
    );
    let pods = plan["boundTokens"]["pods"].as_array().context("pods")?;
    let blocked: Vec<&serde_json::Value> = pods.iter().filter(|p| p["blocked"] == true).collect();
    anyhow::ensure!(
        blocked.iter().any(|p| p["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("guarded-"))
            && p["reason"]
                .as_str()
                .is_some_and(|r| r.contains("PDB guarded-pdb allows 0 disruptions"))),
        "the PDB-blocked pod is not in the plan: {blocked:?}"
    );
    anyhow::ensure!(
        pods.iter().any(|p| p["action"] == "restart-template")
            && pods.iter().any(|p| p["action"] == "evict"),
        "{pods:?}"
    );
    let window = plan["refreshWindowSeconds"].as_u64().context("window")?;
    anyhow::ensure!(window >= 7200 * 8 / 10, "refresh window {window} s");
    let longest = plan["boundTokens"]["longestTokenSeconds"]
        .as_u64()
        .context("longest")?;
    anyhow::ensure!(longest >= 7200, "longest token {longest} s");
    anyhow::ensure!(
        plan["steps"].as_array().is_some_and(|s| s.len() == 5),
        "{}",
        plan["steps"]
    );
    Ok(())
}
