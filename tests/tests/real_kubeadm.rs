//! kubeadm mode on a real node (issue 31): a control plane whose
//! kube-apiserver and kube-controller-manager are static pods that the
//! real kubelet runs from its manifests directory (`staticPodPath`), from
//! the control plane's own binaries ([`user_cluster::APISERVER_IMAGE`],
//! [`user_cluster::CONTROLLER_MANAGER_IMAGE`]), on the node's network,
//! reading their keys from the pki directory they mount, as `kubeadm init`
//! lays them out. The node's kubelet is a node of that very cluster: it
//! registers with the API server it runs. The cluster's etcd is the
//! harness's.
//!
//! `ksa ... rotate --pki-dir --manifests-dir` edits the manifests and the
//! kubelet restarts the pods at each step; the CLI is run with `--wait`,
//! raced by a second run, SIGKILLed once it has begun Sign, and run again
//! without `--wait` until done, as in `tests/tests/kubeadm.rs` (where a
//! first run without `--wait` stops mid-rotation: with one API server,
//! which answers nothing while the kubelet restarts it, such a run waits
//! the restart out and may go on to the end, so it is not asserted here),
//! while the prober
//! presents tokens (bound ones, taken before and during the rotation, and
//! the legacy token kube-controller-manager's token controller fills) to
//! the API server throughout.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::{KeySpec, parse_pem};
use ksa_core::rotation::Step;
use ksa_tests::cluster::request_token;
use ksa_tests::kubeadm;
use ksa_tests::netns::{self, Netns};
use ksa_tests::node::user_cluster::{
    APISERVER_IMAGE, APISERVER_PORT, CONTROLLER_MANAGER_IMAGE, UserCluster,
};
use ksa_tests::node::{self, Cluster, RealNode};
use ksa_tests::scenario::{APPS, create_fleet};
use ksa_tests::{
    ISSUER, InstanceClient, ProbeTarget, Prober, RotationSource, eventually, write_private,
};
use kube::api::{Api, PostParams};

/// How long the control plane's static pods may take to start on a loaded
/// machine.
const PODS_WITHIN: Duration = Duration::from_secs(240);

/// The control plane: its etcd and certificates, the kubeadm layout
/// (`DIR/etc-kubernetes/pki`, kube-controller-manager's kubeconfig beside
/// it) and the address its API server serves at: its node's.
struct Kubeadm {
    dir: tempfile::TempDir,
    user: UserCluster,
    address: std::net::Ipv4Addr,
}

impl Kubeadm {
    fn server(&self) -> String {
        format!("https://{}:{APISERVER_PORT}", self.address)
    }

    /// kubeadm's `/etc/kubernetes`, which the static pods mount at the same
    /// path.
    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc-kubernetes")
    }

    fn pki(&self) -> PathBuf {
        self.etc().join("pki")
    }

    fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }
}

impl Cluster for Kubeadm {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn ca_cert_pem(&self) -> &str {
        &self.user.pki.ca_cert
    }

    fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        self.user.pki.client_cert(user, groups)
    }

    fn kubeconfig_for(&self, cert: &str, key: &str) -> String {
        self.user.kubeconfig_with(&self.server(), cert, key)
    }

    async fn client(&self) -> Result<kube::Client> {
        self.user.client(&self.server()).await
    }
}

/// The static pod manifests of kube-apiserver and kube-controller-manager,
/// laid out as `kubeadm init` writes them (the flags one `- --flag=value`
/// line each), trimmed to what this control plane needs.
fn manifests(cluster: &Kubeadm) -> (String, String) {
    let etc = cluster.etc().display().to_string();
    let pki = cluster.pki().display().to_string();
    let address = cluster.address;
    let flags = |args: Vec<String>| -> String {
        args.iter()
            .map(|arg| format!("    - {arg}\n"))
            .collect::<String>()
    };
    let mut apiserver_args = vec![
        "kube-apiserver".to_owned(),
        format!("--advertise-address={address}"),
        format!("--bind-address={address}"),
    ];
    apiserver_args.extend(cluster.user.apiserver_args(&pki));
    apiserver_args.extend([
        format!("--service-account-issuer={ISSUER}"),
        format!("--service-account-key-file={pki}/sa.pub"),
        format!("--service-account-signing-key-file={pki}/sa.key"),
    ]);
    let apiserver = format!(
        "apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-apiserver
    tier: control-plane
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
{command}    image: {APISERVER_IMAGE}
    imagePullPolicy: Never
    name: kube-apiserver
    readinessProbe:
      httpGet:
        host: {address}
        path: /readyz
        port: {APISERVER_PORT}
        scheme: HTTPS
      periodSeconds: 1
    securityContext:
      runAsUser: 0
      runAsGroup: 0
    volumeMounts:
    - mountPath: {etc}
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  terminationGracePeriodSeconds: 30
  volumes:
  - hostPath:
      path: {etc}
      type: Directory
    name: k8s-certs
",
        command = flags(apiserver_args),
    );
    let controller_manager_args = vec![
        "kube-controller-manager".to_owned(),
        format!("--kubeconfig={etc}/controller-manager.conf"),
        "--bind-address=127.0.0.1".to_owned(),
        "--secure-port=0".to_owned(),
        "--leader-elect=false".to_owned(),
        "--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle".to_owned(),
        format!("--root-ca-file={pki}/ca.crt"),
        format!("--service-account-private-key-file={pki}/sa.key"),
        "--use-service-account-credentials=true".to_owned(),
        "--v=1".to_owned(),
    ];
    let controller_manager = format!(
        "apiVersion: v1
kind: Pod
metadata:
  labels:
    component: kube-controller-manager
    tier: control-plane
  name: kube-controller-manager
  namespace: kube-system
spec:
  containers:
  - command:
{command}    image: {CONTROLLER_MANAGER_IMAGE}
    imagePullPolicy: Never
    name: kube-controller-manager
    securityContext:
      runAsUser: 0
      runAsGroup: 0
    volumeMounts:
    - mountPath: {etc}
      name: k8s-certs
      readOnly: true
  hostNetwork: true
  terminationGracePeriodSeconds: 30
  volumes:
  - hostPath:
      path: {etc}
      type: Directory
    name: k8s-certs
",
        command = flags(controller_manager_args),
    );
    (apiserver, controller_manager)
}

fn ksa(args: &[&str], pki: &Path, manifests: &Path, kubeconfig: &Path) -> Result<Command> {
    let mut command = kubeadm::command("ksa-signing-key", args, pki, manifests, kubeconfig)?;
    if args.first() == Some(&"rotate") {
        // The prober holds the legacy token with no pod mounting it, and
        // reads it again once re-minted.
        command.arg("--accept-outside-legacy-tokens");
    }
    Ok(command)
}

/// Runs `ksa` to its end without blocking the runtime (the prober and the
/// mirror pods' watch run on it meanwhile).
async fn run(command: Command) -> Result<Output> {
    Ok(tokio::process::Command::from(command).output().await?)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A key set an API server serves: the kid of a token it issues, and the
/// kids of its `/openid/v1/jwks` (sorted).
type KeySet = (String, Vec<String>);

/// What the API server serves.
async fn served(client: &kube::Client) -> Result<KeySet> {
    let token = request_token(client, APPS, "app", Vec::new(), 600).await?;
    let signs = ksa_core::token::decode(&token)?
        .header
        .kid
        .unwrap_or_default();
    let jwks = client
        .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
        .await?;
    let mut accepts: Vec<String> = parse_jwks(&jwks)?
        .into_iter()
        .map(|k| k.kid.as_str().to_owned())
        .collect();
    accepts.sort();
    Ok((signs, accepts))
}

/// Each key set the API server was seen to serve (signs, accepts), in
/// order, asked every 300 ms until stopped: kube-apiserver reads its key
/// files only when it starts, so each change is a restart by the kubelet.
fn follow_served(client: kube::Client) -> (Arc<Mutex<Vec<KeySet>>>, tokio::task::JoinHandle<()>) {
    let seen: Arc<Mutex<Vec<KeySet>>> = Arc::default();
    let shared = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok(now) = served(&client).await
                && let Ok(mut seen) = shared.lock()
                && seen.last() != Some(&now)
            {
                seen.push(now);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    (seen, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kubelet_restarts_a_kubeadm_control_planes_static_pods_through_a_rotation_killed_and_resumed()
-> Result<()> {
    if let Netns::Ran(outcome) = node::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    let keep = std::env::var_os("KSA_E2E_KEEP").is_some_and(|v| v == "1");
    let dir = tempfile::Builder::new()
        .prefix("ksa-e2e-")
        .disable_cleanup(keep)
        .tempdir()?;
    let address = netns::new_address()?;
    let cluster = Kubeadm {
        user: UserCluster::start(dir.path(), &[address.into()])?,
        dir,
        address,
    };
    // kubeadm's files: the CA, the API server's certificate, the service
    // account key pair, kube-controller-manager's kubeconfig.
    let pki = cluster.pki();
    std::fs::create_dir_all(&pki)?;
    for (name, pem) in cluster.user.certificate_files() {
        write_private(&pki.join(name), pem.as_bytes())?;
    }
    let first = AwsLc::new().generate(KeySpec::Rsa2048)?;
    write_private(&pki.join("sa.key"), first.to_pem().as_bytes())?;
    std::fs::write(
        pki.join("sa.pub"),
        ksa_core::key::public_keys_to_pem([first.public_key()]),
    )?;
    let (cert, key) = cluster
        .user
        .pki
        .client_cert("system:kube-controller-manager", &[])?;
    write_private(
        &cluster.etc().join("controller-manager.conf"),
        cluster.kubeconfig_for(&cert, &key).as_bytes(),
    )?;
    write_private(
        &cluster.kubeconfig_path(),
        cluster.user.kubeconfig(&cluster.server()).as_bytes(),
    )?;
    let (apiserver, controller_manager) = manifests(&cluster);

    // The node runs them: its kubelet starts the static pods, then
    // registers with the API server they are.
    let node = RealNode::join(&cluster, 0, address, |node| {
        node.import_control_plane_image("kube-apiserver")?;
        node.import_control_plane_image("kube-controller-manager")?;
        std::fs::write(node.manifests_dir().join("kube-apiserver.yaml"), &apiserver)?;
        std::fs::write(
            node.manifests_dir().join("kube-controller-manager.yaml"),
            &controller_manager,
        )?;
        Ok(())
    })
    .await?;
    let manifests_dir = node.manifests_dir();
    let client = cluster.client().await?;
    // A workload's service account and its legacy token, which
    // kube-controller-manager's token controller fills.
    create_fleet(&client, APPS, "app", &["app-token"], &[], 1).await?;
    let (served_sets, follower) = follow_served(client.clone());
    let server = cluster.server();
    let prober = Prober::spawn(
        client.clone(),
        vec![InstanceClient {
            url: server.clone(),
            client: client.clone(),
        }],
        ProbeTarget {
            namespace: APPS.into(),
            service_account: "app".into(),
            legacy_secret: "app-token".into(),
            rotation: RotationSource::StateFile {
                pki_dir: pki.clone(),
            },
        },
    );
    eprintln!(
        "the kubeadm control plane's static pods run on {} at {server}; ready in {:.1?}",
        node.name,
        clock.elapsed()
    );
    let kubeconfig = cluster.kubeconfig_path();
    let rotation = Instant::now();

    // With --wait; a second run meanwhile is refused; SIGKILLed once it
    // has begun Sign (the kubelet restarting the API server for it, or
    // about to).
    let mut running = ksa(&["rotate", "--wait"], &pki, &manifests_dir, &kubeconfig)?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut raced = None;
    let started = Instant::now();
    // Before it starts, the state file (once written) holds key 1's
    // completed rotation.
    let at = |step: Step| {
        kubeadm::state(&pki).is_some_and(|s| s.key_version().get() == 2 && s.step() >= step)
    };
    while !at(Step::Sign) {
        if started.elapsed() > Duration::from_secs(300) || running.try_wait()?.is_some() {
            let _ = running.kill();
            let output = running.wait_with_output()?;
            bail!(
                "the rotation did not reach Sign; state {:?}; ksa said:\n{}",
                kubeadm::state(&pki),
                text(&output)
            );
        }
        if raced.is_none() && at(Step::Trust) {
            raced = Some(
                run(ksa(
                    &["rotate", "--wait"],
                    &pki,
                    &manifests_dir,
                    &kubeconfig,
                )?)
                .await?,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGKILL.
    running.kill()?;
    let killed = running.wait_with_output()?;
    let killed_at = kubeadm::state(&pki).map(|s| s.step());
    eprintln!(
        "ksa SIGKILLed at {killed_at:?}; it had said: {:?}",
        text(&killed)
    );
    let raced = raced.context("no second run was made while the first ran")?;
    ensure!(raced.status.code() == Some(3), "{}", text(&raced));
    ensure!(
        text(&raced).contains("another ksa holds"),
        "{}",
        text(&raced)
    );

    // Run again, without --wait, as often as it says: it resumes and
    // completes.
    let mut resumed_text = String::new();
    let started = Instant::now();
    while !kubeadm::state(&pki).is_some_and(|s| s.is_completed()) {
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the rotation did not complete in 5 minutes: {resumed_text}"
        );
        let resumed = run(ksa(&["rotate"], &pki, &manifests_dir, &kubeconfig)?).await?;
        resumed_text.push_str(&text(&resumed));
        ensure!(resumed.status.success(), "{resumed_text}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rotation_took = rotation.elapsed();
    eprintln!("{resumed_text}");
    ensure!(
        resumed_text.contains("resuming the rotation (key version 2)"),
        "{resumed_text}"
    );
    let completed = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#;
    ensure!(resumed_text.contains(completed), "{resumed_text}");

    // The manifests changed in the key flags only.
    let second = parse_pem(&std::fs::read(pki.join("sa-v2.key"))?)?
        .private_keys()
        .next()
        .cloned()
        .context("key 2")?;
    let p = pki.display();
    let edited = std::fs::read_to_string(manifests_dir.join("kube-apiserver.yaml"))?;
    ensure!(
        edited
            == apiserver
                .replace(&format!("{p}/sa.pub"), &format!("{p}/sa-v2.pub"))
                .replace(&format!("{p}/sa.key"), &format!("{p}/sa-v2.key")),
        "kube-apiserver.yaml changed in more than its key flags:\n{edited}"
    );
    let edited = std::fs::read_to_string(manifests_dir.join("kube-controller-manager.yaml"))?;
    ensure!(
        edited == controller_manager.replace(&format!("{p}/sa.key"), &format!("{p}/sa-v2.key")),
        "kube-controller-manager.yaml changed in more than its key flag:\n{edited}"
    );

    // The API server the kubelet runs now serves key 2 alone, and ran with
    // each key set the manifests named in turn: the kubelet restarted it
    // at each step.
    let (first_kid, second_kid) = (
        first.kid().as_str().to_owned(),
        second.kid().as_str().to_owned(),
    );
    let both = {
        let mut both = vec![first_kid.clone(), second_kid.clone()];
        both.sort();
        both
    };
    let steps = [
        (first_kid.clone(), vec![first_kid.clone()]),
        (first_kid.clone(), both.clone()),
        (second_kid.clone(), both.clone()),
        (second_kid.clone(), vec![second_kid.clone()]),
    ];
    let sets = eventually("the API server serves key 2 alone", PODS_WITHIN, || async {
        let sets = served_sets
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        ensure!(sets.last() == steps.last(), "{sets:?}");
        Ok(sets)
    })
    .await?;
    follower.abort();
    ensure!(
        sets == steps,
        "the API server served {sets:?}, not the key sets of before, Trust, Sign and Retire in \
         turn ({steps:?})"
    );

    // kube-controller-manager was restarted with key 2 too: its token
    // controller fills a new legacy token Secret with a token of key 2.
    let account = Api::<ServiceAccount>::namespaced(client.clone(), APPS)
        .get("app")
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), APPS);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": "late-token",
                    "annotations": {
                        "kubernetes.io/service-account.name": "app",
                        "kubernetes.io/service-account.uid": account.metadata.uid,
                    },
                },
                "type": "kubernetes.io/service-account-token",
            }))?,
        )
        .await?;
    let legacy_kid = eventually(
        "kube-controller-manager fills a new legacy token",
        PODS_WITHIN,
        || async {
            let token = secrets
                .get("late-token")
                .await?
                .data
                .and_then(|d| d.get("token").cloned())
                .context("not filled yet")?;
            Ok(ksa_core::token::decode(&String::from_utf8(token.0)?)?
                .header
                .kid
                .unwrap_or_default())
        },
    )
    .await?;
    ensure!(
        legacy_kid == second_kid,
        "kube-controller-manager signed a legacy token with {legacy_kid}, not key 2"
    );

    let stats = prober.stats().await;
    eprintln!(
        "prober: {} tokens issued, {} reviews, {} unavailable (the one API server restarting), {} \
         wrongly rejected; key sets served in turn: {}; the rotation took {rotation_took:.1?}, \
         {:.1?} in all",
        stats.tokens_issued,
        stats.reviews,
        stats.unavailable,
        stats.wrongly_rejected.len(),
        sets.len(),
        clock.elapsed()
    );
    ensure!(stats.reviews > 0, "the prober reviewed nothing");
    ensure!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {:#?}",
        stats.wrongly_rejected
    );
    drop(node);
    Ok(())
}
