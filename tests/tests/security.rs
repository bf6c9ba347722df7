//! The controller's trust boundaries, on a real control plane: what a
//! rotation resource, a Secret it names, or an unauthenticated HTTP client
//! can make the controller do with its own cluster-wide powers.
//!
//! - A kubeconfig Secret is a description of a cluster, never a program:
//!   an `exec` plugin in it is refused by name and never runs, and nothing
//!   of the Secret's content appears in status, Events or the log.
//! - `/jwks/{namespace}/{name}` takes names only, and serves only the
//!   ConfigMaps ksa published.
//! - `spec.rollout.keySecret` and `spec.rollout.workload` reach only
//!   objects labelled for the rotation; anything else is refused with
//!   nothing changed.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::LABEL_ROTATION;
use ksa_tests::{ApiServerKeys, ControlPlane, Installation, workload};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

/// The namespace of every rotation here.
const NAMESPACE: &str = "user-cluster-1";
/// The rotation the installer imports the cluster's key for.
const ROTATION: &str = "user-cluster-1";
/// A recognisable string planted in Secrets: it must never show up where
/// the Secret's readers are not the only readers.
const CANARY: &str = "ksa-canary-7f3a9c1e";

/// A control plane with ksa installed and its controller running.
struct Admin {
    plane: ControlPlane,
    client: kube::Client,
    key: PrivateKey,
    installation: Installation,
}

impl Admin {
    async fn start() -> Result<Admin> {
        let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
        let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
        let client = plane.client().await?;
        let mut installation =
            Installation::install(&client, NAMESPACE, ROTATION, &key, plane.dir()).await?;
        installation.start_controller(&plane.controller_kubeconfig_path())?;
        Ok(Admin {
            plane,
            client,
            key,
            installation,
        })
    }

    /// Imports the cluster's key as version 1 of another rotation in
    /// [`NAMESPACE`], as the operator does before its first rotation.
    async fn import_key(&self, rotation: &str) -> Result<()> {
        Installation::install(
            &self.client,
            NAMESPACE,
            rotation,
            &self.key,
            self.plane.dir(),
        )
        .await?;
        Ok(())
    }

    /// Creates a rotation to key version 2 with this `spec` besides.
    async fn rotate(&self, name: &str, spec: serde_json::Value) -> Result<()> {
        self.rotate_to(name, 2, spec).await
    }

    /// Creates a rotation resource asking for key version `version`.
    async fn rotate_to(&self, name: &str, version: u64, spec: serde_json::Value) -> Result<()> {
        let mut spec = spec;
        spec["keyVersion"] = version.into();
        let resource: KSASigningKeyRotation = serde_json::from_value(serde_json::json!({
            "apiVersion": "ksa.dev/v1alpha1",
            "kind": "KSASigningKeyRotation",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": spec,
        }))?;
        self.rotations()
            .create(&PostParams::default(), &resource)
            .await?;
        Ok(())
    }

    fn rotations(&self) -> Api<KSASigningKeyRotation> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Waits until the rotation's `status.waitingFor` says something, and
    /// returns it.
    async fn waiting_for(&self, name: &str) -> Result<String> {
        let started = Instant::now();
        loop {
            let resource = self.rotations().get(name).await?;
            if let Some(waiting) = resource.status.and_then(|s| s.waiting_for) {
                eprintln!("rotation {name}: status.waitingFor: {waiting}");
                return Ok(waiting);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "rotation {name} shows nothing in status.waitingFor after 60 s\ncontroller log:\n{}",
                    self.installation.controller_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The Events about one rotation, as JSON.
    async fn events_of(&self, name: &str) -> Result<Vec<Event>> {
        let events = Api::<Event>::namespaced(self.client.clone(), NAMESPACE)
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await?;
        Ok(events.items)
    }

    async fn create_secret(&self, name: &str, data: &[(&str, &[u8])]) -> Result<Secret> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        Ok(Api::<Secret>::namespaced(self.client.clone(), NAMESPACE)
            .create(&PostParams::default(), &secret)
            .await?)
    }
}

/// Waits until some Event about the rotation has this reason, and returns
/// its note.
async fn event_note(admin: &Admin, name: &str, reason: &str) -> Result<String> {
    let started = Instant::now();
    loop {
        if let Some(event) = admin
            .events_of(name)
            .await?
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
        {
            return Ok(event.message.unwrap_or_default());
        }
        if started.elapsed() > Duration::from_secs(30) {
            let reasons: Vec<Option<String>> = admin
                .events_of(name)
                .await?
                .into_iter()
                .map(|e| e.reason)
                .collect();
            bail!("no Event {reason} about rotation {name} after 30 s; there are {reasons:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Where the canary must never appear: the rotations (and their status),
/// the Events of the namespace, and the controller's log.
async fn assert_no_canary(admin: &Admin) -> Result<()> {
    let rotations = admin.rotations().list(&ListParams::default()).await?;
    let events = Api::<Event>::namespaced(admin.client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await?;
    for (place, text) in [
        (
            "the rotation resources",
            serde_json::to_string(&rotations.items)?,
        ),
        ("the Events", serde_json::to_string(&events.items)?),
        ("the controller log", admin.installation.controller_log()),
    ] {
        assert!(
            !text.contains(CANARY),
            "the kubeconfig Secret's content appears in {place}:\n{text}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_that_runs_a_command_is_refused_and_never_run() -> Result<()> {
    let admin = Admin::start().await?;
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("plugin-ran");
    let plugin = dir.path().join("plugin.sh");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\ntouch '{}'\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{CANARY}\"}}}}'\n",
            marker.display()
        ),
    )?;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755))?;
    let ca = base64::engine::general_purpose::STANDARD.encode(admin.plane.ca_cert_pem());
    let kubeconfig = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: user
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {CANARY}
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: {plugin}
      args: [{CANARY}]
      interactiveMode: Never
contexts:
- name: user
  context: {{cluster: user, user: {CANARY}}}
current-context: user
",
        server = admin.plane.server_url(),
        plugin = plugin.display(),
    );
    admin
        .create_secret("exec-kubeconfig", &[("value", kubeconfig.as_bytes())])
        .await?;
    admin
        .rotate(
            "exec-plugin",
            serde_json::json!({"cluster": {"kubeconfigSecret": {"name": "exec-kubeconfig"}}}),
        )
        .await?;
    // A Secret that is not a kubeconfig at all: its text must not be
    // quoted back by a parse error.
    admin
        .create_secret(
            "garbage-kubeconfig",
            &[("value", format!("just a note, {CANARY}").as_bytes())],
        )
        .await?;
    admin
        .rotate(
            "garbage",
            serde_json::json!({"cluster": {"kubeconfigSecret": {"name": "garbage-kubeconfig"}}}),
        )
        .await?;

    let waiting = admin.waiting_for("exec-plugin").await?;
    // Several reconciles, each of which would have run the plugin.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        !marker.exists(),
        "the kubeconfig's exec plugin ran inside the controller"
    );
    assert!(
        waiting.contains("`exec`"),
        "status.waitingFor names the refused field: {waiting}"
    );
    let note = event_note(&admin, "exec-plugin", "KubeconfigRefused").await?;
    assert!(note.contains("`exec`"), "the Event names the field: {note}");
    let waiting = admin.waiting_for("garbage").await?;
    assert!(
        waiting.contains("not a kubeconfig"),
        "status.waitingFor says what is wrong: {waiting}"
    );
    assert_no_canary(&admin).await?;
    assert!(!marker.exists());
    Ok(())
}

/// `GET url` from the controller: status code and body, whatever the code.
fn get(url: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call()?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_endpoint_takes_names_only_and_serves_only_what_ksa_published() -> Result<()> {
    let admin = Admin::start().await?;
    let http = format!("http://{}", admin.installation.http_addr);
    let started = Instant::now();
    while get(&format!("{http}/readyz")).map(|r| r.0).ok() != Some(200) {
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the controller does not serve /readyz");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The set-up's JWKS is the operator's until the controller has checked
    // the imported key against the API server and sealed both: a rotation
    // resource that asks for no change has it do just that.
    let (status, body) = get(&format!("{http}/jwks/{NAMESPACE}/{ROTATION}"))?;
    assert_eq!(status, 404, "an unsealed JWKS is not served: {body}");
    admin.rotate_to(ROTATION, 1, serde_json::json!({})).await?;
    let body = ksa_tests::eventually(
        "the JWKS ksa sealed served",
        Duration::from_secs(60),
        || async {
            let (status, body) = get(&format!("{http}/jwks/{NAMESPACE}/{ROTATION}"))?;
            anyhow::ensure!(status == 200, "/jwks answers {status}: {body}");
            Ok(body)
        },
    )
    .await?;
    ksa_core::jwk::parse_jwks(&body)?;

    // A ConfigMap with the right name ksa did not publish.
    let decoy = ConfigMap {
        metadata: ObjectMeta {
            name: Some("decoy-jwks".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("jwks.json".into(), CANARY.into())])),
        ..ConfigMap::default()
    };
    Api::<ConfigMap>::namespaced(admin.client.clone(), NAMESPACE)
        .create(&PostParams::default(), &decoy)
        .await?;
    let (status, body) = get(&format!("{http}/jwks/{NAMESPACE}/decoy"))?;
    assert_eq!(status, 404, "an unlabelled ConfigMap is not served: {body}");
    assert!(!body.contains(CANARY));

    let long_label = "a".repeat(64);
    let long_name = "a".repeat(249);
    for path in [
        format!("{NAMESPACE}/x%2F..%2F..%2Fsecrets%2F{ROTATION}-signing-key-v1"),
        format!("{NAMESPACE}/{ROTATION}%3Fwatch=true"),
        format!("{NAMESPACE}%2Fconfigmaps%2F{ROTATION}-jwks/x"),
        format!("{NAMESPACE}/%2E%2E"),
        format!("{NAMESPACE}/a..b"),
        format!("%2E%2E/{ROTATION}"),
        format!("{NAMESPACE}/User-Cluster-1"),
        format!("User-Cluster-1/{ROTATION}"),
        format!("{NAMESPACE}/-x"),
        format!("{NAMESPACE}/x%00"),
        format!("{long_label}/{ROTATION}"),
        format!("{NAMESPACE}/{long_name}"),
        format!("{NAMESPACE}.x/{ROTATION}"),
    ] {
        let (status, body) = get(&format!("{http}/jwks/{path}"))?;
        assert_eq!(status, 400, "GET /jwks/{path}: {body}");
    }
    // `..` as a whole segment may be resolved by the client or the router;
    // either way nothing is served.
    for path in [format!("{NAMESPACE}/.."), format!("../{ROTATION}")] {
        let (status, body) = get(&format!("{http}/jwks/{path}"))?;
        assert!(
            status == 400 || status == 404,
            "GET /jwks/{path}: {status} {body}"
        );
    }
    Ok(())
}

/// A Deployment ksa has no business restarting, unless labelled for it.
async fn create_deployment(
    admin: &Admin,
    name: &str,
    rotation: Option<&str>,
) -> Result<Deployment> {
    let mut deployment = workload::deployment(name, "default", 1, None);
    if let Some(rotation) = rotation {
        deployment
            .metadata
            .labels
            .get_or_insert_default()
            .insert(LABEL_ROTATION.into(), rotation.into());
    }
    Ok(
        Api::<Deployment>::namespaced(admin.client.clone(), NAMESPACE)
            .create(&PostParams::default(), &deployment)
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_writes_only_the_secret_and_workload_labelled_for_it() -> Result<()> {
    let admin = Admin::start().await?;
    let secrets: Api<Secret> = Api::namespaced(admin.client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(admin.client.clone(), NAMESPACE);
    let victim = admin
        .create_secret("victim", &[("password", b"hunter2")])
        .await?;
    let bystander = create_deployment(&admin, "bystander", None).await?;
    let restarted = create_deployment(&admin, "api-server", Some("restarts")).await?;
    for rotation in ["steals-key", "restarts-bystander", "odd-kind", "restarts"] {
        admin.import_key(rotation).await?;
    }
    admin
        .rotate(
            "steals-key",
            serde_json::json!({"rollout": {"keySecret": "victim"}}),
        )
        .await?;
    admin
        .rotate(
            "restarts-bystander",
            serde_json::json!({"rollout": {"workload": {"kind": "Deployment", "name": "bystander"}}}),
        )
        .await?;
    admin
        .rotate(
            "odd-kind",
            serde_json::json!({"rollout": {"workload": {"kind": "CronJob", "name": "bystander"}}}),
        )
        .await?;
    admin
        .rotate(
            "restarts",
            serde_json::json!({"rollout": {"workload": {"kind": "Deployment", "name": "api-server"}}}),
        )
        .await?;

    let waiting = admin.waiting_for("steals-key").await?;
    assert!(
        waiting.contains("victim") && waiting.contains("ksa.dev/rotation=steals-key"),
        "the refusal names the Secret and the label to add: {waiting}"
    );
    event_note(&admin, "steals-key", "KeySecretNotLabelled").await?;
    let waiting = admin.waiting_for("restarts-bystander").await?;
    assert!(
        waiting.contains("bystander") && waiting.contains("ksa.dev/rotation=restarts-bystander"),
        "the refusal names the Deployment and the label to add: {waiting}"
    );
    event_note(&admin, "restarts-bystander", "WorkloadNotLabelled").await?;
    let waiting = admin.waiting_for("odd-kind").await?;
    assert!(
        waiting.contains("CronJob"),
        "the refusal names the kind: {waiting}"
    );
    event_note(&admin, "odd-kind", "UnknownWorkloadKind").await?;

    // The labelled workload is restarted for the new key set.
    let started = Instant::now();
    loop {
        let current = deployments.get("api-server").await?;
        let annotations = current
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        if annotations.contains_key("ksa.dev/key-set") {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "the labelled Deployment was not restarted; {:?}\ncontroller log:\n{}",
                restarted.metadata.resource_version,
                admin.installation.controller_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Time for the refused rotations to have done harm, had they not been
    // refused.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let after = secrets.get("victim").await?;
    assert_eq!(
        after.metadata.resource_version, victim.metadata.resource_version,
        "the unlabelled Secret was written"
    );
    assert_eq!(after.data, victim.data);
    let after = deployments.get("bystander").await?;
    assert_eq!(
        after.metadata.resource_version, bystander.metadata.resource_version,
        "the unlabelled Deployment was patched"
    );
    for rotation in ["steals-key", "restarts-bystander", "odd-kind"] {
        // Refused before it started: no key generated, no lock taken.
        assert!(
            secrets
                .get_opt(&format!("{rotation}-signing-key-v2"))
                .await?
                .is_none(),
            "rotation {rotation} generated a key although refused"
        );
        let status = admin
            .rotations()
            .get(rotation)
            .await?
            .status
            .context("a status")?;
        assert_eq!(
            status.step,
            ksa_core::rotation::Step::Completed,
            "rotation {rotation} did not start"
        );
    }
    Ok(())
}
