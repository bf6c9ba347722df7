//! The Helm chart `charts/ksa`, with `helm` built from its Go module (`cargo
//! xtask helm`, found through `KSA_HELM_DIR`).
//!
//! Rendered, it is `deploy/`: with the default values `helm template`
//! gives the objects of `deploy/` that every installation applies, and with
//! the other values the rest, compared as parsed objects. Installed with
//! `helm install` into the real control plane by the README's Install
//! section itself (its blocks run in a shell with kubectl and helm), in a
//! namespace that enforces the `restricted` Pod Security level, its
//! controller pods are admitted and run on kwok's nodes; then the README's
//! `ksa keys import` and `rotate` drive a key rotation through that
//! installation: kwok runs no containers, so the controller runs here
//! as a process with the chart's identity (a token of the chart's
//! ServiceAccount) and the args of the chart's Deployment, and what the
//! chart grants is all it has.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Secret};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, public_keys_to_pem};
use ksa_core::rotation::Step;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::refresh::RESTART_ANNOTATION;
use ksa_tests::cluster::{create_namespace, request_token};
use ksa_tests::scenario::{CLUSTER, NAMESPACE, create_workload};
use ksa_tests::{ApiServerKeys, ControlPlane, HostedApiServer, ksa_binary, loopback_addr};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde_json::Value;
use tokio::sync::Mutex;

/// The namespace the chart is installed in, as `deploy/` names it.
const RELEASE_NAMESPACE: &str = "ksa-system";
const CONTROLLER: &str = "ksa-controller";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn chart() -> PathBuf {
    workspace().join("charts").join("ksa")
}

/// `helm`, or an error that says how to build it.
fn helm() -> Result<PathBuf> {
    let dir = std::env::var_os("KSA_HELM_DIR")
        .map(PathBuf::from)
        .context(
            "KSA_HELM_DIR is not set: the chart tests need helm. Run them with `cargo xtask e2e`, \
         which builds it from the Go module pinned in xtask/helm/ and sets it (or `cargo xtask \
         helm`, which prints the directory)",
        )?;
    let helm = dir.join("helm");
    ensure!(
        helm.is_file(),
        "{} has no helm; run `cargo xtask helm` to build it",
        dir.display()
    );
    Ok(helm)
}

/// Runs helm and returns its standard output, or fails with its standard
/// error.
fn run_helm(args: &[&str]) -> Result<String> {
    let out = Command::new(helm()?)
        .args(args)
        // No user's repositories or cache.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("ksa-helm-config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("ksa-helm-cache"),
        )
        .env("HELM_DATA_HOME", std::env::temp_dir().join("ksa-helm-data"))
        .output()
        .context("running helm")?;
    ensure!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// Every object of a multi-document YAML stream.
fn parse_objects(yaml: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value: Value = serde::Deserialize::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// `helm template` of the chart into [`RELEASE_NAMESPACE`], CRDs included,
/// with these `--set` values.
fn render(values: &[&str]) -> Result<Vec<Value>> {
    let chart = chart();
    let mut args = vec![
        "template",
        "ksa",
        chart.to_str().context("a non-UTF-8 path")?,
        "--namespace",
        RELEASE_NAMESPACE,
        "--include-crds",
    ];
    for value in values {
        args.extend(["--set", value]);
    }
    parse_objects(&run_helm(&args)?)
}

/// The objects of these files of `deploy/`.
fn deploy(files: &[&str]) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for file in files {
        let path = workspace().join("deploy").join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        objects.extend(parse_objects(&text)?);
    }
    Ok(objects)
}

/// Objects by kind, namespace and name.
fn by_identity(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|object| {
            let key = format!(
                "{} {}/{}",
                object["kind"].as_str().unwrap_or_default(),
                object["metadata"]["namespace"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, object)
        })
        .collect()
}

/// Fails unless the chart rendered exactly the expected objects, naming
/// each one missing, extra or different (with both versions).
fn same_objects(rendered: Vec<Value>, expected: Vec<Value>) -> Result<()> {
    let rendered = by_identity(rendered);
    let expected = by_identity(expected);
    let mut differences = Vec::new();
    for (key, object) in &expected {
        match rendered.get(key) {
            None => differences.push(format!("the chart does not render {key}")),
            Some(actual) if actual != object => differences.push(format!(
                "the chart renders {key} differently:\n--- deploy/\n{}--- chart\n{}",
                serde_yaml::to_string(object)?,
                serde_yaml::to_string(actual)?
            )),
            Some(_) => {}
        }
    }
    for key in rendered.keys().filter(|k| !expected.contains_key(*k)) {
        differences.push(format!(
            "the chart renders {key}, which deploy/ does not have"
        ));
    }
    ensure!(
        differences.is_empty(),
        "charts/ksa is not deploy/ (change the chart with controller/src/manifests.rs; run \
         `cargo xtask manifests`, which also copies the CRD into charts/ksa/crds/):\n{}",
        differences.join("\n")
    );
    Ok(())
}

/// With its defaults the chart is what every installation applies from
/// `deploy/` but the Namespace, which `helm install --create-namespace`
/// (or the operator) makes.
#[test]
fn default_values_render_the_objects_of_deploy() -> Result<()> {
    let expected: Vec<Value> = deploy(&[
        "crd.yaml",
        "controller.yaml",
        "refresh-restart-pods.yaml",
        "admission-policies.yaml",
    ])?
    .into_iter()
    .filter(|object| object["kind"] != "Namespace")
    .collect();
    same_objects(render(&[])?, expected)
}

/// The optional files of `deploy/`: the rotation role bound in a rotation
/// namespace, the recreate-nodes policy's role, the signer's role in a
/// signer namespace (with its identity there); and the
/// admission policies and restart-pods role left out when asked.
#[test]
fn other_values_render_the_rest_of_deploy() -> Result<()> {
    let mut expected: Vec<Value> = deploy(&["crd.yaml", "controller.yaml"])?
        .into_iter()
        .filter(|object| object["kind"] != "Namespace")
        .collect();
    expected.extend(deploy(&["refresh-recreate-nodes.yaml"])?);
    for mut binding in deploy(&["rotation-rbac.yaml"])? {
        binding["metadata"]["namespace"] = Value::from(NAMESPACE);
        expected.push(binding);
    }
    // The signer's Role, in its namespace and naming that namespace's key
    // Secret, and the identity the chart binds it to there.
    for mut role in deploy(&["signer-rbac.yaml"])? {
        role["metadata"]["namespace"] = Value::from(NAMESPACE);
        role["rules"][0]["resourceNames"] =
            serde_json::json!([format!("{NAMESPACE}-apiserver-keys")]);
        expected.push(role);
    }
    let labels = serde_json::json!({"app.kubernetes.io/name": CONTROLLER});
    let signer = ksa_controller::manifests::SIGNER;
    expected.push(serde_json::json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"labels": labels, "name": signer, "namespace": NAMESPACE},
    }));
    expected.push(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"labels": labels, "name": signer, "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": signer},
        "subjects": [{"kind": "ServiceAccount", "name": signer, "namespace": NAMESPACE}],
    }));
    let rendered = render(&[
        &format!("rotationNamespaces={{{NAMESPACE}}}"),
        "tokenRefresh.restartPods=false",
        "tokenRefresh.recreateNodes=true",
        "admissionPolicies.enabled=false",
        "signer.enabled=true",
        &format!("signer.namespaces={{{NAMESPACE}}}"),
    ])?;
    same_objects(rendered, expected)
}

/// The values a user sets reach the Deployment, and the pod stays within
/// the `restricted` level whatever they are.
#[test]
fn values_reach_the_controller_deployment() -> Result<()> {
    let objects = by_identity(render(&[
        "image.repository=registry.example/ksa/ksa-controller",
        "image.tag=9.9.9",
        "image.pullPolicy=Always",
        "replicas=3",
        "extraArgs={--lease-seconds=30}",
        "nodeSelector.pool=system",
        "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
        "resources.limits.memory=512Mi",
        "podDisruptionBudget.enabled=false",
        "podLabels.team=platform",
        "priorityClassName=system-cluster-critical",
        "signer.enabled=true",
        "signer.namespaces={user-cluster-2}",
    ])?);
    let deployment: Deployment = serde_json::from_value(
        objects
            .get("Deployment ksa-system/ksa-controller")
            .context("no Deployment")?
            .clone(),
    )?;
    let spec = deployment.spec.context("no spec")?;
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.context("no pod spec")?;
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/ksa/ksa-controller:9.9.9")
    );
    assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(
        container.args.as_deref().unwrap_or_default().last(),
        Some(&"--lease-seconds=30".to_owned())
    );
    assert_eq!(
        pod.node_selector.unwrap_or_default().get("pool"),
        Some(&"system".to_owned())
    );
    assert_eq!(
        pod.tolerations.unwrap_or_default()[0].key.as_deref(),
        Some("dedicated")
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    let limits = container
        .resources
        .clone()
        .and_then(|r| r.limits)
        .unwrap_or_default();
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("512Mi"));
    let template_labels = spec.template.metadata.and_then(|m| m.labels);
    assert_eq!(
        template_labels.unwrap_or_default().get("team"),
        Some(&"platform".to_owned())
    );
    // The selector stays the one label a user cannot change.
    assert_eq!(
        serde_json::to_value(&spec.selector)?,
        serde_json::json!({"matchLabels": {"app.kubernetes.io/name": CONTROLLER}})
    );
    let security = pod.security_context.context("no pod securityContext")?;
    assert_eq!(security.run_as_user, Some(65532));
    assert_eq!(security.run_as_non_root, Some(true));
    assert!(!objects.contains_key("PodDisruptionBudget ksa-system/ksa-controller"));
    assert!(objects.contains_key("ServiceAccount user-cluster-2/ksa-signer"));
    assert!(objects.contains_key("RoleBinding user-cluster-2/ksa-signer"));
    Ok(())
}

/// A misspelt or ill-typed value is refused (values.schema.json), never
/// silently left at its default.
#[test]
fn a_misspelt_value_is_refused() -> Result<()> {
    for (value, named) in [
        ("replica=3", "replica"),
        ("signer.enable=true", "enable"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("rotationNamespaces={User_Cluster}", "rotationNamespaces"),
    ] {
        let error = render(&[value]).expect_err(value);
        assert!(
            format!("{error:#}").contains(named),
            "--set {value}: {error:#}"
        );
    }
    Ok(())
}

/// The chart is released with the workspace: its version and appVersion
/// (the image tag it installs) are the crates'.
#[test]
fn the_chart_version_is_the_workspace_version() -> Result<()> {
    let text = std::fs::read_to_string(chart().join("Chart.yaml"))?;
    let chart: Value = serde_yaml::from_str(&text)?;
    assert_eq!(chart["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    Ok(())
}

/// The shell blocks of the README's Install section, in order.
fn readme_install_blocks() -> Result<Vec<String>> {
    let readme = std::fs::read_to_string(workspace().join("README.md"))?;
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Install\n"))
        .context("README.md has no Install section")?;
    Ok(section
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.split_once("\n```").map(|(code, _)| code.to_owned()))
        .collect())
}

/// The one Install block that holds `marker`.
fn install_block<'a>(blocks: &'a [String], marker: &str) -> Result<&'a str> {
    let mut found = blocks.iter().filter(|b| b.contains(marker));
    match (found.next(), found.next()) {
        (Some(block), None) => Ok(block),
        _ => bail!("the README's Install section must have exactly one block with `{marker}`"),
    }
}

/// Runs a block of the README in a shell, as an operator would paste it:
/// in `dir`, with kubectl (1.36.3, built with the control plane), helm
/// and this workspace's `ksa` and `kubectl-ksa` first on the PATH, and
/// `KUBECONFIG` the admin kubeconfig. `HOME` is `dir`, so that no
/// user's kubectl or helm configuration is read. With `answer`, the
/// block runs on a terminal (`script`) that is given `answer` as typed
/// input, for a command that asks.
fn run_readme_block(dir: &Path, block: &str, answer: Option<&str>) -> Result<String> {
    let ksa_dir = ksa_binary("ksa")?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let kubectl_dir = ksa_tests::control_plane_binaries()?;
    let helm_dir = helm()?.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = std::env::join_paths([kubectl_dir, helm_dir, ksa_dir].into_iter().chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let script = format!("set -euo pipefail\nset -x\n{block}");
    let mut command = match answer {
        None => {
            let mut bash = Command::new("bash");
            bash.args(["-c", &script]).stdin(Stdio::null());
            bash
        }
        Some(_) => {
            let file = dir.join("block.sh");
            std::fs::write(&file, &script)?;
            let mut on_terminal = Command::new("script");
            on_terminal
                .args(["--quiet", "--return", "--command"])
                .arg(format!("bash {}", file.display()))
                .arg("/dev/null")
                .stdin(Stdio::piped());
            on_terminal
        }
    };
    let mut child = command
        .current_dir(dir)
        .env("PATH", path)
        .env("HOME", dir)
        .env("KUBECONFIG", dir.join("admin.kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting bash")?;
    if let (Some(answer), Some(mut stdin)) = (answer, child.stdin.take()) {
        use std::io::Write as _;
        stdin.write_all(answer.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{printed}");
    ensure!(
        out.status.success(),
        "the README block failed ({}):\n{block}\n---\n{printed}",
        out.status
    );
    Ok(printed)
}

fn pod_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Waits until `count` pods of the chart's Deployment run on kwok's nodes,
/// from a template restarted for `restarted_for` when given; returns
/// them. Fails with why the ReplicaSets could not create pods (Pod
/// Security admission refusing them, say).
async fn controller_pods(
    client: &kube::Client,
    count: usize,
    restarted_for: Option<&str>,
) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let selector = ListParams::default().labels("app.kubernetes.io/name=ksa-controller");
    let started = Instant::now();
    loop {
        let running: Vec<Pod> = pods
            .list(&selector)
            .await?
            .items
            .into_iter()
            .filter(pod_running)
            .filter(|p| {
                restarted_for.is_none_or(|version| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(RESTART_ANNOTATION))
                        .map(String::as_str)
                        == Some(version)
                })
            })
            .collect();
        if running.len() == count {
            return Ok(running);
        }
        if started.elapsed() > Duration::from_secs(90) {
            let failures: Vec<String> =
                Api::<ReplicaSet>::namespaced(client.clone(), RELEASE_NAMESPACE)
                    .list(&selector)
                    .await?
                    .items
                    .iter()
                    .flat_map(|rs| rs.status.iter().flat_map(|s| s.conditions.iter().flatten()))
                    .map(|c| c.message.clone().unwrap_or_default())
                    .collect();
            bail!(
                "{} of {count} controller pods running after 90 s; ReplicaSet conditions: {failures:?}",
                running.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The controller run as the chart's pod would run it: its args and
/// `POD_NAME`, and the token of its ServiceAccount in a kubeconfig (the
/// credentials the pod would have mounted). Only the listen address is
/// changed, to a free loopback port. Stopped with SIGTERM, as a deleted
/// pod is, when dropped.
struct ChartController {
    child: Child,
}

impl ChartController {
    async fn start(
        client: &kube::Client,
        server: &str,
        ca_pem: &str,
        pod: &str,
        dir: &Path,
    ) -> Result<ChartController> {
        let deployment = Api::<Deployment>::namespaced(client.clone(), RELEASE_NAMESPACE)
            .get(CONTROLLER)
            .await?;
        let container: Container = deployment
            .spec
            .and_then(|s| s.template.spec)
            .map(|s: PodSpec| s.containers)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == CONTROLLER)
            .context("the chart's Deployment has no ksa-controller container")?;
        let http = format!("--http-addr={}", loopback_addr()?);
        let args: Vec<String> = container
            .args
            .unwrap_or_default()
            .into_iter()
            .map(|arg| {
                if arg.starts_with("--http-addr=") {
                    http.clone()
                } else {
                    arg
                }
            })
            .collect();
        ensure!(
            args.contains(&format!("--leader-namespace={RELEASE_NAMESPACE}")),
            "the chart's args are {args:?}"
        );
        let token = request_token(client, RELEASE_NAMESPACE, CONTROLLER, Vec::new(), 3600).await?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let kubeconfig = dir.join(format!("{pod}.kubeconfig"));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {CONTROLLER}
  user:
    token: {token}
contexts:
- name: e2e
  context: {{cluster: e2e, user: {CONTROLLER}}}
current-context: e2e
",
                ca = b64(ca_pem),
            ),
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("chart-controller.log"))?;
        let child = Command::new(ksa_binary("ksa-controller")?)
            .args(&args)
            .env("POD_NAME", pod)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ksa-controller")?;
        Ok(ChartController { child })
    }

    /// Whether the process has exited by itself, and how.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChartController {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("chart-controller.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The README's Install section, followed as written on the real control
/// plane: its CLI, chart and key blocks run in a shell, word for word (the
/// image block builds an image that kwok's nodes would not run, and
/// `cargo install` is this workspace's build). Between the chart and the
/// key blocks, the controller starts as the chart's pod would run it,
/// since kwok runs no containers.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_install_section_installs_the_chart_and_rotates_a_key() -> Result<()> {
    let started = Instant::now();
    helm()?;
    let blocks = readme_install_blocks()?;
    let cli_block = install_block(&blocks, "cargo install")?;
    let chart_block = install_block(&blocks, "helm install")?;
    let key_block = install_block(&blocks, "ksa keys import")?;
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let mut plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    plane.start_controller_manager()?;
    plane.simulate_nodes(2, &[]).await?;
    let client = plane.client().await?;
    let (server, ca_pem) = (plane.server_url(), plane.ca_cert_pem().to_owned());
    let dir = plane.dir().to_owned();

    // What the README takes as there: the admin kubeconfig, the user
    // cluster's config, its namespace in the admin cluster and its API
    // servers' key files; the chart at `charts/ksa`.
    let work = dir.join("operator");
    std::fs::create_dir_all(&work)?;
    std::fs::copy(plane.kubeconfig_path(), work.join("admin.kubeconfig"))?;
    std::fs::write(work.join("user-cluster.yaml"), format!("name: {CLUSTER}\n"))?;
    std::fs::write(work.join("sa.key"), key.to_pem().as_bytes())?;
    std::fs::write(
        work.join("sa.pub"),
        public_keys_to_pem(&[key.public_key().clone()]),
    )?;
    std::os::unix::fs::symlink(workspace().join("charts"), work.join("charts"))?;
    create_namespace(&client, NAMESPACE).await?;

    let cli_lines: String = cli_block
        .lines()
        .filter(|line| !line.starts_with("cargo install"))
        .map(|line| format!("{line}\n"))
        .collect();
    let printed = tokio::task::block_in_place(|| run_readme_block(&work, &cli_lines, None))?;
    ensure!(
        printed.contains(env!("CARGO_PKG_VERSION")),
        "`ksa --version` does not print the version:\n{printed}"
    );

    let chart_block = chart_block.replace("REGISTRY", "registry.example");
    let printed = tokio::task::block_in_place(|| run_readme_block(&work, &chart_block, None))?;
    ensure!(
        !printed.contains("Warning:"),
        "installing the chart drew a warning from the API server:\n{printed}"
    );
    let installed_at = started.elapsed();

    // The namespace the README made enforces `restricted`: a pod that is
    // not is refused there. Pod Security admission reads the namespace's
    // labels through an informer: asked (a dry run, which admission
    // judges alike) until it refuses.
    let unrestricted = Pod {
        metadata: ObjectMeta {
            name: Some("unrestricted".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let release_pods = Api::<Pod>::namespaced(client.clone(), RELEASE_NAMESPACE);
    ksa_tests::eventually(
        "Pod Security admission enforcing restricted",
        ksa_tests::OBSERVED_WITHIN,
        || async {
            let refused = release_pods.create(&dry_run, &unrestricted).await;
            ensure!(
                matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("restricted")),
                "Pod Security admission does not enforce restricted in {RELEASE_NAMESPACE}: {refused:?}"
            );
            Ok(())
        },
    )
    .await?;
    // Admitted by Pod Security, placed on kwok's nodes, running.
    let pods = controller_pods(&client, 2, None).await?;
    for pod in &pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        ensure!(
            node.as_deref().is_some_and(|n| n.starts_with("kwok-node-")),
            "controller pod on {node:?}"
        );
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone());
        ensure!(
            image
                .as_deref()
                .is_some_and(|i| i.starts_with("registry.example/ksa/ksa-controller:")),
            "controller pod runs {image:?}, not the image the README pushed"
        );
    }
    let first_pod = pods[0].metadata.name.clone().unwrap_or_default();

    create_workload(&client).await?;
    let plane = Arc::new(Mutex::new(plane));
    let _hosted = HostedApiServer::spawn(
        plane.clone(),
        client.clone(),
        NAMESPACE,
        &format!("{CLUSTER}-apiserver-keys"),
        None,
    );
    let mut controller =
        ChartController::start(&client, &server, &ca_pem, &first_pod, &dir).await?;
    // `rotate` asks before it starts; the operator answers yes.
    let printed = tokio::task::block_in_place(|| run_readme_block(&work, key_block, Some("y\n")))?;
    ensure!(
        printed.contains("Proceed?"),
        "rotate did not ask for confirmation:\n{printed}"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let imported = secrets.get(&format!("{CLUSTER}-signing-key-v1")).await?;
    let kid = imported
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ksa.dev/kid").cloned());
    ensure!(
        kid.as_deref() == Some(key.kid().to_string().as_str()),
        "keys import annotated kid {kid:?}, the key's is {}",
        key.kid()
    );

    // The rotation restarts the chart's Deployment too (its pods hold
    // bound tokens of key 1): kwok replaces the pods, and the process here
    // is replaced as the leader pod would be, with a token of the new key,
    // before key 1 is retired.
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let mut replaced = false;
    loop {
        if let Ok(rotation) = rotations.get(CLUSTER).await
            && let Ok(state) = rotation.state()
            && state.step() == Step::Completed
            && state.key_version().get() == 2
        {
            break;
        }
        if !replaced
            && let Ok(deployment) = deployments.get(CONTROLLER).await
            && deployment
                .spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.annotations)
                .and_then(|a| a.get(RESTART_ANNOTATION).cloned())
                .as_deref()
                == Some("2")
        {
            let new_pods = controller_pods(&client, 2, Some("2")).await?;
            let pod = new_pods[0].metadata.name.clone().unwrap_or_default();
            if let Some(status) = controller.exited() {
                bail!("the controller exited ({status}):\n{}", log_tail(&dir));
            }
            controller.stop();
            controller = ChartController::start(&client, &server, &ca_pem, &pod, &dir).await?;
            replaced = true;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "the rotation through the chart's installation did not complete in 5 minutes; \
                 the controller's log:\n{}",
                log_tail(&dir)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ensure!(
        replaced,
        "the rotation completed without restarting the chart's Deployment"
    );
    // The leader is the process with the chart's identity, on the Lease in
    // the chart's namespace.
    let lease = Api::<Lease>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .get(ksa_controller::run::LEADER_LEASE)
        .await?;
    let holder = lease.spec.and_then(|s| s.holder_identity);
    ensure!(
        holder
            .as_deref()
            .is_some_and(|h| h.starts_with("ksa-controller-")),
        "the leader Lease in {RELEASE_NAMESPACE} is held by {holder:?}"
    );
    drop(controller);
    eprintln!(
        "helm install took {installed_at:.1?} from the start; the rotation completed {:.1?} from the start",
        started.elapsed()
    );
    Ok(())
}
