//! The Helm chart `charts/ksa`, with `helm` built from its Go module (`cargo
//! xtask helm`, found through `KSA_HELM_DIR`).
//!
//! Rendered, it is `deploy/`: with the default values `helm template` of
//! release `ksa` gives the objects of `deploy/` that every installation
//! applies, with the standard labels of a Helm release added, and with the
//! other values the rest, compared as parsed objects. Every other value is
//! rendered and checked here: the names of a release (two releases share no
//! object, and each refers only to its own), the labels, the OIDC endpoint
//! and the directory sink (their args parsed by the controller's own
//! parser), extra volumes, the ServiceMonitor, the image digest, the
//! refusals. Installed with `helm install` into the real control plane by
//! the README's Install section itself (its blocks run in a shell with
//! kubectl and helm), in a namespace that enforces the `restricted` Pod
//! Security level, its controller pods are admitted and run on kwok's
//! nodes; then the README's `ksa keys import` and `rotate` drive a key
//! rotation through that installation: kwok runs no containers, so the
//! controller runs here as a process with the chart's identity (a token of
//! the chart's ServiceAccount) and the args of the chart's Deployment, and
//! what the chart grants is all it has. A second release, with the new
//! values set, then installs beside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use clap::Parser as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, Secret, Volume};
use k8s_openapi::api::rbac::v1::ClusterRole;
use ksa_controller::run::RunArgs;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, public_keys_to_pem};
use ksa_core::rotation::Step;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::refresh::RESTART_ANNOTATION;
use ksa_tests::cluster::{create_namespace, request_token};
use ksa_tests::readme::{helm, install_block, readme_install_blocks, run_readme_block, workspace};
use ksa_tests::scenario::{CLUSTER, NAMESPACE, create_workload};
use ksa_tests::{ApiServerKeys, ControlPlane, HostedApiServer, ksa_binary, loopback_addr};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The release the README installs, and the namespace it installs it in,
/// as `deploy/` names them: its objects are named as `deploy/`'s.
const RELEASE: &str = "ksa";
const RELEASE_NAMESPACE: &str = "ksa-system";
const CONTROLLER: &str = "ksa-controller";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The labels a Helm release puts on each of its objects besides
/// `deploy/`'s `app.kubernetes.io/name`.
const RELEASE_LABELS: [&str; 6] = [
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
];

/// Values under which every template of the chart renders an object.
const EVERY_OBJECT: &[&str] = &[
    "rotationNamespaces={user-cluster-1}",
    "tokenRefresh.recreateNodes=true",
    "signer.enabled=true",
    "signer.namespaces={user-cluster-1}",
    "oidc.enabled=true",
    "oidc.publicUrl=https://oidc.example/prod",
    "oidc.tls.secretName=oidc-serving",
    "serviceMonitor.enabled=true",
];

fn chart() -> PathBuf {
    workspace().join("charts").join("ksa")
}

/// Runs helm and returns its standard output, or fails with its standard
/// error.
fn run_helm(args: &[&str]) -> Result<String> {
    let out = ksa_tests::readme::helm_command()?
        .args(args)
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
    for value in serde_saphyr::from_multiple::<Value>(yaml)? {
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// `helm template` of the chart as `release` into `namespace`, CRDs
/// included, with these helm flags and `--set` values.
fn template(release: &str, namespace: &str, flags: &[&str], values: &[&str]) -> Result<String> {
    let chart = chart();
    let mut args = vec![
        "template",
        release,
        chart.to_str().context("a non-UTF-8 path")?,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    args.extend(flags);
    for value in values {
        args.extend(["--set", value]);
    }
    run_helm(&args)
}

/// The objects of release `release` in `namespace`, with these values.
fn render_release(release: &str, namespace: &str, values: &[&str]) -> Result<Vec<Value>> {
    parse_objects(&template(release, namespace, &[], values)?)
}

/// The objects of the README's release, with these values.
fn render(values: &[&str]) -> Result<Vec<Value>> {
    render_release(RELEASE, RELEASE_NAMESPACE, values)
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

fn identity(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or_default(),
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Objects by kind, namespace and name.
fn by_identity(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .map(|object| (identity(&object), object))
        .collect()
}

/// The object as `deploy/` has it: without [`RELEASE_LABELS`] in its
/// labels, its pod template's and its selector.
fn without_release_labels(mut object: Value) -> Value {
    let service = object["kind"] == "Service";
    let label_maps = [
        "/metadata/labels",
        "/spec/selector/matchLabels",
        "/spec/template/metadata/labels",
    ]
    .into_iter()
    // A Service's selector is a map of labels itself.
    .chain(service.then_some("/spec/selector"));
    for pointer in label_maps {
        if let Some(Value::Object(labels)) = object.pointer_mut(pointer) {
            for label in RELEASE_LABELS {
                labels.remove(label);
            }
        }
    }
    object
}

/// Fails unless the chart rendered exactly the expected objects, naming
/// each one missing, extra or different (with both versions).
fn same_objects(rendered: Vec<Value>, expected: Vec<Value>) -> Result<()> {
    let rendered = by_identity(rendered.into_iter().map(without_release_labels).collect());
    let expected = by_identity(expected);
    let mut differences = Vec::new();
    for (key, object) in &expected {
        match rendered.get(key) {
            None => differences.push(format!("the chart does not render {key}")),
            Some(actual) if actual != object => differences.push(format!(
                "the chart renders {key} differently:\n--- deploy/\n{}--- chart\n{}",
                serde_saphyr::to_string(object)?,
                serde_saphyr::to_string(actual)?
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

/// With its defaults the chart, installed as the README's release `ksa`,
/// is what every installation applies from `deploy/` but the Namespace,
/// which `helm install --create-namespace` (or the operator) makes, and the
/// standard labels of a Helm release, which
/// [`every_object_carries_the_standard_labels`] checks.
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
        role["rules"][0]["resourceNames"] = json!([format!("{NAMESPACE}-apiserver-keys")]);
        expected.push(role);
    }
    let labels = json!({"app.kubernetes.io/name": CONTROLLER});
    let signer = ksa_controller::manifests::SIGNER;
    expected.push(json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"labels": labels, "name": signer, "namespace": NAMESPACE},
    }));
    expected.push(json!({
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

/// Every object the chart templates (all but the CRD, which Helm installs
/// from `crds/` untemplated) carries the standard labels, with
/// commonLabels; a pod template carries them too; and every selector is
/// the two labels that never change on upgrade, name and instance.
#[test]
fn every_object_carries_the_standard_labels() -> Result<()> {
    let mut values = EVERY_OBJECT.to_vec();
    values.push("commonLabels.team=platform");
    let objects = render(&values)?;
    let standard = json!({
        "app.kubernetes.io/name": CONTROLLER,
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": VERSION,
        "app.kubernetes.io/managed-by": "Helm",
        "app.kubernetes.io/part-of": "ksa",
        "helm.sh/chart": format!("ksa-{VERSION}"),
        "team": "platform",
    });
    let selector = json!({
        "app.kubernetes.io/name": CONTROLLER,
        "app.kubernetes.io/instance": RELEASE,
    });
    let mut kinds = BTreeSet::new();
    for object in objects
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
    {
        let id = identity(object);
        let kind = object["kind"].as_str().unwrap_or_default();
        kinds.insert(kind.to_owned());
        let labels = &object["metadata"]["labels"];
        for (label, value) in standard.as_object().into_iter().flatten() {
            ensure!(
                &labels[label] == value,
                "{id}: {label} is {}",
                labels[label]
            );
        }
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let component = if kind.starts_with("ValidatingAdmissionPolicy") {
            "admission-policy"
        } else if name == "ksa-signer" {
            "signer"
        } else if name == "ksa-controller-oidc" {
            "oidc-endpoint"
        } else {
            "controller"
        };
        ensure!(
            labels["app.kubernetes.io/component"] == component,
            "{id}: component {}",
            labels["app.kubernetes.io/component"]
        );
        let selects = match kind {
            "Deployment" => {
                let template = &object["spec"]["template"]["metadata"]["labels"];
                for (label, value) in standard.as_object().into_iter().flatten() {
                    ensure!(&template[label] == value, "{id}: pod template {label}");
                }
                Some(&object["spec"]["selector"]["matchLabels"])
            }
            "PodDisruptionBudget" => Some(&object["spec"]["selector"]["matchLabels"]),
            "Service" => Some(&object["spec"]["selector"]),
            _ => None,
        };
        if let Some(selects) = selects {
            ensure!(selects == &selector, "{id} selects {selects}");
        }
    }
    let every_kind = [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    ensure!(
        kinds == every_kind.iter().map(|k| (*k).to_owned()).collect(),
        "rendered kinds {kinds:?}"
    );
    Ok(())
}

/// Kind, namespace and name of each object but the CRD (one per cluster,
/// shared by every release: Helm installs it only where it is absent).
fn release_identities(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(identity)
        .collect()
}

/// Whether every label of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

/// Fails unless every name the objects of release `fullname` in
/// `namespace` refer to is one of theirs: each binding's role and
/// subjects, each policy binding's policy, the user the admission
/// policies match, the Deployment's ServiceAccount and leader namespace,
/// and the pods each selector selects.
fn references_resolve(namespace: &str, fullname: &str, objects: &[Value]) -> Result<()> {
    let ids = release_identities(objects);
    let has = |kind: &str, ns: &str, name: &str| ids.contains(&format!("{kind} {ns}/{name}"));
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .context("no Deployment")?;
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    ensure!(
        deployment["metadata"]["name"] == fullname,
        "the Deployment is {}",
        deployment["metadata"]["name"]
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"].as_str().unwrap_or_default();
    ensure!(
        account == fullname && has("ServiceAccount", namespace, account),
        "the pods run as {account}"
    );
    ensure!(
        pod["containers"][0]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a == &json!(format!("--leader-namespace={namespace}"))),
        "the controller's args: {}",
        pod["containers"][0]["args"]
    );
    let user =
        format!("request.userInfo.username == 'system:serviceaccount:{namespace}:{fullname}'");
    let mut user_conditions = 0;
    for object in objects {
        let id = identity(object);
        let object_ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
        match object["kind"].as_str().unwrap_or_default() {
            "ClusterRoleBinding" | "RoleBinding" => {
                let role = &object["roleRef"];
                let role_ns = if role["kind"] == "Role" {
                    object_ns
                } else {
                    ""
                };
                let role_kind = role["kind"].as_str().unwrap_or_default();
                let role_name = role["name"].as_str().unwrap_or_default();
                ensure!(
                    has(role_kind, role_ns, role_name),
                    "{id} binds {role_kind} {role_name}, which the release does not have"
                );
                for subject in object["subjects"].as_array().into_iter().flatten() {
                    let (ns, name) = (
                        subject["namespace"].as_str().unwrap_or_default(),
                        subject["name"].as_str().unwrap_or_default(),
                    );
                    ensure!(
                        subject["kind"] == "ServiceAccount" && has("ServiceAccount", ns, name),
                        "{id} binds {subject}, which the release does not have"
                    );
                }
            }
            "ValidatingAdmissionPolicyBinding" => {
                let policy = object["spec"]["policyName"].as_str().unwrap_or_default();
                ensure!(
                    has("ValidatingAdmissionPolicy", "", policy),
                    "{id} binds policy {policy}, which the release does not have"
                );
            }
            "ValidatingAdmissionPolicy" => {
                for condition in object["spec"]["matchConditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if condition["name"] == "ksa-controller" {
                        ensure!(
                            condition["expression"] == user,
                            "{id} matches {}",
                            condition["expression"]
                        );
                        user_conditions += 1;
                    }
                }
            }
            "Service" | "PodDisruptionBudget" => {
                let selector = if object["kind"] == "Service" {
                    &object["spec"]["selector"]
                } else {
                    &object["spec"]["selector"]["matchLabels"]
                };
                ensure!(
                    selects(selector, pod_labels),
                    "{id} does not select the release's pods"
                );
            }
            _ => {}
        }
    }
    // The Secret, workload and Node guards each match the controller.
    ensure!(
        user_conditions == 5,
        "{user_conditions} policies match the controller's user"
    );
    Ok(())
}

/// Two releases, named otherwise and in two namespaces, with the same
/// rotation and signer namespace, have no object in common: no
/// cluster-scoped one (ClusterRoles and their bindings, admission policies
/// and their bindings) and none in a shared namespace (kube-system, the
/// rotation namespace); and each refers to its own objects only. Their
/// Services select their own pods only.
#[test]
fn two_releases_share_no_object_and_each_refers_to_its_own() -> Result<()> {
    let first = render_release(RELEASE, RELEASE_NAMESPACE, EVERY_OBJECT)?;
    let second = render_release("ksa-staging", "ksa-staging", EVERY_OBJECT)?;
    let cluster_scoped = second
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition" && o["metadata"]["namespace"].is_null())
        .count();
    ensure!(
        cluster_scoped == 23,
        "{cluster_scoped} cluster-scoped objects"
    );
    let common: Vec<String> = release_identities(&first)
        .intersection(&release_identities(&second))
        .cloned()
        .collect();
    ensure!(common.is_empty(), "both releases have {common:?}");
    references_resolve(RELEASE_NAMESPACE, CONTROLLER, &first)?;
    references_resolve("ksa-staging", "ksa-staging-controller", &second)?;
    let pods = |objects: &[Value]| -> Result<Value> {
        Ok(objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .context("no Deployment")?["spec"]["template"]["metadata"]["labels"]
            .clone())
    };
    for service in second.iter().filter(|o| o["kind"] == "Service") {
        ensure!(
            !selects(&service["spec"]["selector"], &pods(&first)?),
            "{} selects the other release's pods",
            identity(service)
        );
    }
    Ok(())
}

/// The release's name, nameOverride and fullnameOverride name the objects
/// (`deploy/`'s names for release `ksa`) and the app.kubernetes.io/name
/// label; the signer's objects follow.
#[test]
fn names_follow_the_release_and_the_overrides() -> Result<()> {
    for (release, value, fullname, signer, app) in [
        (RELEASE, None, CONTROLLER, "ksa-signer", CONTROLLER),
        (
            "ksa-staging",
            None,
            "ksa-staging-controller",
            "ksa-staging-signer",
            CONTROLLER,
        ),
        (
            "prod",
            None,
            "prod-ksa-controller",
            "prod-ksa-signer",
            CONTROLLER,
        ),
        (CONTROLLER, None, CONTROLLER, "ksa-signer", CONTROLLER),
        (
            "prod",
            Some("nameOverride=rotator"),
            "prod-rotator-controller",
            "prod-rotator-signer",
            "rotator-controller",
        ),
        (
            "prod",
            Some("fullnameOverride=keys"),
            "keys",
            "keys-signer",
            CONTROLLER,
        ),
    ] {
        let mut values = vec!["signer.enabled=true", "signer.namespaces={user-cluster-1}"];
        values.extend(value);
        let objects = render_release(release, "ns", &values)?;
        let ids = release_identities(&objects);
        for expected in [
            format!("Deployment ns/{fullname}"),
            format!("ServiceAccount ns/{fullname}"),
            format!("Service ns/{fullname}"),
            format!("ClusterRole /{fullname}"),
            format!("ClusterRole /{fullname}-leases"),
            format!("RoleBinding kube-system/{fullname}-probe"),
            format!("ValidatingAdmissionPolicy /{fullname}-secret-writes"),
            format!("ServiceAccount user-cluster-1/{signer}"),
            format!("Role user-cluster-1/{signer}"),
        ] {
            ensure!(
                ids.contains(&expected),
                "release {release} {value:?}: no {expected} in {ids:?}"
            );
        }
        for object in objects
            .iter()
            .filter(|o| o["kind"] != "CustomResourceDefinition")
        {
            ensure!(
                object["metadata"]["labels"]["app.kubernetes.io/name"] == app,
                "release {release} {value:?}: {} is labelled {}",
                identity(object),
                object["metadata"]["labels"]["app.kubernetes.io/name"]
            );
        }
        references_resolve("ns", fullname, &objects)?;
    }
    Ok(())
}

/// The one Deployment of these objects.
fn deployment_of(objects: &BTreeMap<String, Value>) -> Result<Deployment> {
    Ok(serde_json::from_value(
        objects
            .get(&format!("Deployment {RELEASE_NAMESPACE}/{CONTROLLER}"))
            .context("no Deployment")?
            .clone(),
    )?)
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
        "watchNamespace=user-cluster-2",
        "extraVolumes[0].name=scratch,extraVolumes[0].emptyDir.sizeLimit=64Mi",
        "extraVolumeMounts[0].name=scratch,extraVolumeMounts[0].mountPath=/scratch",
    ])?);
    let deployment = deployment_of(&objects)?;
    let spec = deployment.spec.context("no spec")?;
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.context("no pod spec")?;
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/ksa/ksa-controller:9.9.9")
    );
    assert_eq!(container.image_pull_policy.as_deref(), Some("Always"));
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(args.last(), Some(&"--lease-seconds=30".to_owned()));
    let parsed = RunArgs::try_parse_from(&args)?;
    assert_eq!(parsed.namespace.as_deref(), Some("user-cluster-2"));
    assert_eq!(parsed.lease_seconds, 30);
    assert_eq!(
        pod.node_selector.clone().unwrap_or_default().get("pool"),
        Some(&"system".to_owned())
    );
    assert_eq!(
        pod.tolerations.clone().unwrap_or_default()[0]
            .key
            .as_deref(),
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
    // The extra volume, mounted where asked.
    let scratch = mounted(&pod, Path::new("/scratch/file")).context("/scratch is not mounted")?;
    assert_eq!(
        scratch.empty_dir.and_then(|e| e.size_limit).map(|q| q.0),
        Some("64Mi".to_owned())
    );
    // The selector stays the two labels a user cannot change.
    assert_eq!(
        serde_json::to_value(&spec.selector)?,
        json!({"matchLabels": {"app.kubernetes.io/name": CONTROLLER, "app.kubernetes.io/instance": RELEASE}})
    );
    let security = pod.security_context.context("no pod securityContext")?;
    assert_eq!(security.run_as_user, Some(65532));
    assert_eq!(security.run_as_non_root, Some(true));
    assert!(!objects.contains_key("PodDisruptionBudget ksa-system/ksa-controller"));
    assert!(objects.contains_key("ServiceAccount user-cluster-2/ksa-signer"));
    assert!(objects.contains_key("RoleBinding user-cluster-2/ksa-signer"));
    Ok(())
}

/// `image.digest` pulls the image by digest, whatever the tag.
#[test]
fn an_image_digest_wins_over_the_tag() -> Result<()> {
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let objects = by_identity(render(&[
        "image.repository=registry.example/ksa/ksa-controller",
        "image.tag=9.9.9",
        &format!("image.digest={digest}"),
    ])?);
    let pod = deployment_of(&objects)?
        .spec
        .and_then(|s| s.template.spec)
        .context("no pod spec")?;
    assert_eq!(
        pod.containers[0].image,
        Some(format!("registry.example/ksa/ksa-controller@{digest}"))
    );
    Ok(())
}

/// The volume of `pod` mounted where `path` lies, if any.
fn mounted(pod: &PodSpec, path: &Path) -> Option<Volume> {
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())?;
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .cloned()
}

/// The OIDC endpoint and the directory sink run from values: the args the
/// chart gives are ones the controller's own parser accepts, with the
/// endpoint's address, public URL, certificate and CA, the publish root,
/// hosts and max-age; each file they name is on a volume of what the
/// values name; the endpoint has a port and a Service of its own, and the
/// directory's volume is writable by the controller's group.
#[test]
fn the_oidc_endpoint_and_the_directory_sink_run_from_values() -> Result<()> {
    let objects = by_identity(render(&[
        "oidc.enabled=true",
        "oidc.publicUrl=https://oidc.example/prod",
        "oidc.port=9443",
        "oidc.tls.secretName=oidc-serving",
        "oidc.caBundle.configMapName=oidc-ca-bundle",
        "oidc.caBundle.key=bundle.pem",
        "oidc.service.type=LoadBalancer",
        "oidc.service.nodePort=30443",
        "oidc.service.annotations.lb\\.example/scheme=internal",
        "publish.hosts={s3.example:9000,static.example}",
        "publish.maxAgeSeconds=20",
        "publish.directory.enabled=true",
        "publish.directory.mountPath=/srv/oidc",
        "publish.directory.volume.persistentVolumeClaim.claimName=oidc-documents",
    ])?);
    let pod = deployment_of(&objects)?
        .spec
        .and_then(|s| s.template.spec)
        .context("no pod spec")?;
    let container = &pod.containers[0];
    let args = RunArgs::try_parse_from(container.args.clone().unwrap_or_default())?;
    let oidc = &args.oidc;
    assert_eq!(
        oidc.oidc_public_url.as_deref(),
        Some("https://oidc.example/prod")
    );
    assert_eq!(oidc.oidc_addr, "0.0.0.0:9443".parse()?);
    assert!(!oidc.oidc_insecure_http);
    assert_eq!(oidc.publish_hosts, ["s3.example:9000", "static.example"]);
    assert_eq!(oidc.publish_max_age_seconds, 20);
    assert_eq!(oidc.publish_root.as_deref(), Some(Path::new("/srv/oidc")));
    for file in [&oidc.oidc_tls_cert_file, &oidc.oidc_tls_key_file] {
        let file = file.as_deref().context("no certificate file")?;
        let volume = mounted(&pod, file).context("the certificate is not mounted")?;
        assert_eq!(
            volume.secret.and_then(|s| s.secret_name).as_deref(),
            Some("oidc-serving")
        );
    }
    let ca = oidc.oidc_ca_file.as_deref().context("no --oidc-ca-file")?;
    assert_eq!(ca.file_name().and_then(|f| f.to_str()), Some("bundle.pem"));
    let volume = mounted(&pod, ca).context("the CA bundle is not mounted")?;
    assert_eq!(
        volume.config_map.map(|c| c.name),
        Some("oidc-ca-bundle".to_owned())
    );
    let root = oidc.publish_root.as_deref().context("no --publish-root")?;
    let volume = mounted(&pod, &root.join("ns/name/jwks")).context("the root is not mounted")?;
    assert_eq!(
        volume
            .persistent_volume_claim
            .map(|c| c.claim_name)
            .as_deref(),
        Some("oidc-documents")
    );
    let root_mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/srv/oidc")
        .context("no mount at the root")?;
    assert_ne!(root_mount.read_only, Some(true));
    let security = pod.security_context.clone().unwrap_or_default();
    assert_eq!(security.fs_group, Some(65532));
    assert!(
        container
            .ports
            .iter()
            .flatten()
            .any(|p| p.name.as_deref() == Some("oidc") && p.container_port == 9443)
    );
    let service = &objects["Service ksa-system/ksa-controller-oidc"];
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "oidc", "port": 443, "targetPort": "oidc", "nodePort": 30443}])
    );
    assert_eq!(
        service["metadata"]["annotations"],
        json!({"lb.example/scheme": "internal"})
    );

    // Plain HTTP behind a proxy: no certificate, and the settings the
    // controller starts with serve the endpoint.
    let objects = by_identity(render(&[
        "oidc.enabled=true",
        "oidc.publicUrl=https://oidc.example/prod",
        "oidc.insecureHttp=true",
    ])?);
    let pod = deployment_of(&objects)?
        .spec
        .and_then(|s| s.template.spec)
        .context("no pod spec")?;
    let args = RunArgs::try_parse_from(pod.containers[0].args.clone().unwrap_or_default())?;
    assert!(args.oidc.oidc_insecure_http);
    assert_eq!(args.oidc.oidc_tls_cert_file, None);
    assert_eq!(args.oidc.publish_root, None);
    let (settings, transport) = args.oidc.settings()?;
    assert!(transport.is_some(), "the endpoint is not served");
    assert_eq!(
        settings.public_url.as_deref(),
        Some("https://oidc.example/prod")
    );
    assert_eq!(pod.volumes, None);
    Ok(())
}

/// The ServiceMonitor is rendered only when asked, in the namespace asked,
/// and scrapes `/metrics` of the controller's Service, not the OIDC one.
#[test]
fn a_service_monitor_scrapes_the_controller_when_enabled() -> Result<()> {
    let kind = |objects: &[Value]| {
        objects
            .iter()
            .filter(|o| o["kind"] == "ServiceMonitor")
            .count()
    };
    ensure!(kind(&render(&[])?) == 0, "a ServiceMonitor by default");
    let objects = render(&[
        "serviceMonitor.enabled=true",
        "serviceMonitor.namespace=monitoring",
        "serviceMonitor.labels.release=prometheus",
        "serviceMonitor.interval=15s",
        "serviceMonitor.relabelings[0].action=labeldrop,serviceMonitor.relabelings[0].regex=pod",
        "oidc.enabled=true",
        "oidc.publicUrl=https://oidc.example/prod",
        "oidc.insecureHttp=true",
    ])?;
    let monitors: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ServiceMonitor")
        .collect();
    ensure!(monitors.len() == 1, "{} ServiceMonitors", monitors.len());
    let monitor = monitors[0];
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["namespace"], "monitoring");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        json!({"matchNames": [RELEASE_NAMESPACE]})
    );
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{
            "port": "http", "path": "/metrics", "scheme": "http", "interval": "15s",
            "scrapeTimeout": "10s", "honorLabels": false,
            "relabelings": [{"action": "labeldrop", "regex": "pod"}],
        }])
    );
    let selected: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .filter(|o| {
            selects(
                &monitor["spec"]["selector"]["matchLabels"],
                &o["metadata"]["labels"],
            )
        })
        .map(identity)
        .collect();
    assert_eq!(
        selected,
        [format!("Service {RELEASE_NAMESPACE}/{CONTROLLER}")]
    );
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
        ("image.digest=latest", "digest"),
        ("oidc.publicURL=https://oidc.example", "publicURL"),
        ("oidc.port=8080", "port"),
        (
            "publish.directory.volumes.emptyDir.medium=Memory",
            "volumes",
        ),
        ("publish.hosts={https://s3.example}", "hosts"),
        ("serviceMonitor.enable=true", "enable"),
        ("serviceMonitor.interval=often", "interval"),
        ("extraVolumeMount[0].name=x", "extraVolumeMount"),
        ("fullnameOverride=Not_A_Name", "fullnameOverride"),
    ] {
        let error = render(&[value]).expect_err(value);
        assert!(
            format!("{error:#}").contains(named),
            "--set {value}: {error:#}"
        );
    }
    Ok(())
}

/// Values that cannot work together are refused by the templates, with
/// the value to change and how.
#[test]
fn values_that_cannot_work_are_refused_with_what_to_do() -> Result<()> {
    let oidc = [
        "oidc.enabled=true",
        "oidc.publicUrl=https://oidc.example/prod",
    ];
    for (values, says) in [
        (
            vec!["oidc.enabled=true"],
            "oidc.enabled needs oidc.publicUrl",
        ),
        (oidc.to_vec(), "oidc.enabled needs oidc.tls.secretName"),
        (
            [
                &oidc[..],
                &["oidc.tls.secretName=t", "oidc.insecureHttp=true"],
            ]
            .concat(),
            "exclude each other",
        ),
        (
            [
                &oidc[..],
                &[
                    "oidc.insecureHttp=true",
                    "oidc.caBundle.configMapName=a",
                    "oidc.caBundle.secretName=b",
                ],
            ]
            .concat(),
            "oidc.caBundle.configMapName and oidc.caBundle.secretName",
        ),
        (
            vec!["publish.directory.enabled=true"],
            "publish.directory.enabled needs publish.directory.volume",
        ),
        (
            vec![
                "publish.directory.enabled=true",
                "publish.directory.volume.hostPath.path=/srv",
            ],
            "restricted Pod Security level",
        ),
        (
            vec!["extraVolumes[0].name=host,extraVolumes[0].hostPath.path=/"],
            "extraVolumes host: a hostPath volume",
        ),
        (
            vec![
                "watchNamespace=user-cluster-2",
                "rotationNamespaces={user-cluster-1}",
            ],
            "watchNamespace user-cluster-2 is not one of rotationNamespaces",
        ),
    ] {
        let error = format!("{:#}", render(&values).expect_err(says));
        ensure!(error.contains(says), "{values:?}: {error}");
    }
    Ok(())
}

/// The chart installs where the controller runs (Kubernetes 1.25 and
/// later); the admission policies need 1.30, and on an older cluster the
/// chart refuses them with a message that says how to install without
/// them, and installs without them when told.
#[test]
fn older_clusters_install_without_the_admission_policies() -> Result<()> {
    let at = |version: &str, values: &[&str]| -> Result<Vec<Value>> {
        parse_objects(&template(
            RELEASE,
            RELEASE_NAMESPACE,
            &["--kube-version", version],
            values,
        )?)
    };
    let policies = |objects: &[Value]| {
        objects
            .iter()
            .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
            .count()
    };
    ensure!(
        policies(&at("1.30.0", &[])?) == 6,
        "no admission policies on 1.30"
    );
    let error = format!("{:#}", at("1.29.4", &[]).expect_err("policies on 1.29"));
    for says in [
        "Kubernetes 1.30 or later",
        "v1.29.4",
        "--set admissionPolicies.enabled=false",
    ] {
        ensure!(error.contains(says), "{error}");
    }
    for version in ["1.29.4", "1.25.0"] {
        let objects = at(version, &["admissionPolicies.enabled=false"])?;
        ensure!(policies(&objects) == 0, "admission policies on {version}");
        ensure!(
            objects.iter().any(|o| o["kind"] == "Deployment"),
            "no controller on {version}"
        );
    }
    let error = format!(
        "{:#}",
        at("1.24.17", &["admissionPolicies.enabled=false"]).expect_err("1.24")
    );
    ensure!(error.contains("kubeVersion"), "{error}");
    Ok(())
}

/// `helm lint --strict` finds nothing, with the defaults and with every
/// template rendering.
#[test]
fn the_chart_lints_clean() -> Result<()> {
    let chart = chart();
    let chart = chart.to_str().context("a non-UTF-8 path")?;
    run_helm(&["lint", "--strict", chart])?;
    let mut args = vec!["lint", "--strict", chart];
    for value in EVERY_OBJECT {
        args.extend(["--set", value]);
    }
    run_helm(&args)?;
    Ok(())
}

/// The value paths of a schema: each property, down to the ones whose
/// value is free-form (no `properties` of their own).
fn value_paths(schema: &Value, prefix: &str, paths: &mut Vec<String>) {
    for (key, property) in schema["properties"].as_object().into_iter().flatten() {
        let path = format!("{prefix}{key}");
        if property["properties"].is_object() {
            value_paths(property, &format!("{path}."), paths);
        } else {
            paths.push(path);
        }
    }
}

/// The chart's README describes every value the schema allows (which is
/// every value: the schema refuses any other).
#[test]
fn the_chart_readme_describes_every_value() -> Result<()> {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        chart().join("values.schema.json"),
    )?)?;
    let readme = std::fs::read_to_string(chart().join("README.md"))?;
    let mut paths = Vec::new();
    value_paths(&schema, "", &mut paths);
    ensure!(paths.len() > 50, "{} value paths", paths.len());
    let missing: Vec<&String> = paths
        .iter()
        .filter(|path| *path != "global" && !readme.contains(&format!("| `{path}` |")))
        .collect();
    ensure!(
        missing.is_empty(),
        "charts/ksa/README.md has no row for {missing:?}"
    );
    Ok(())
}

/// The chart is released with the workspace: its version and appVersion
/// (the image tag it installs) are the crates'.
#[test]
fn the_chart_version_is_the_workspace_version() -> Result<()> {
    let text = std::fs::read_to_string(chart().join("Chart.yaml"))?;
    let chart: Value = serde_saphyr::from_str(&text)?;
    assert_eq!(chart["version"], VERSION);
    assert_eq!(chart["appVersion"], VERSION);
    Ok(())
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
    release_pods(client, RELEASE, RELEASE_NAMESPACE, count, restarted_for).await
}

/// [`controller_pods`] of release `release` in `namespace`, selected as its
/// Deployment selects them.
async fn release_pods(
    client: &kube::Client,
    release: &str,
    namespace: &str,
    count: usize,
    restarted_for: Option<&str>,
) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = ListParams::default().labels(&format!(
        "app.kubernetes.io/name={CONTROLLER},app.kubernetes.io/instance={release}"
    ));
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
            let failures: Vec<String> = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
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
    let as_second = a_second_release_installs_beside_the_first(&client, &work).await?;
    second_release_guards_match_its_controller(&plane, &client, &as_second).await?;
    eprintln!(
        "the second release was installed and guarded {:.1?} from the start",
        started.elapsed()
    );
    Ok(())
}

/// The second release of the end-to-end test: another name, another
/// namespace, and the values the README leaves at their defaults set.
const SECOND_RELEASE: &str = "ksa-staging";
const SECOND_NAMESPACE: &str = "ksa-staging";
const SECOND_CONTROLLER: &str = "ksa-staging-controller";

/// A second release installs beside the README's, in a namespace of its
/// own enforcing `restricted`, with the OIDC endpoint (its certificate
/// Secret), the directory sink, an extra volume, the signer, an image
/// digest and a namespace to watch: the API server takes every object,
/// the two releases' cluster-scoped objects are each their own, and its
/// pods (their volumes and fsGroup) are admitted and run, from the image
/// by digest. Returns the name of its controller's ServiceAccount.
async fn a_second_release_installs_beside_the_first(
    client: &kube::Client,
    work: &Path,
) -> Result<String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let restricted = Namespace {
        metadata: ObjectMeta {
            name: Some(SECOND_NAMESPACE.into()),
            labels: Some(BTreeMap::from([(
                ksa_controller::manifests::POD_SECURITY_ENFORCE.to_owned(),
                "restricted".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &restricted)
        .await?;
    create_namespace(client, "user-cluster-2").await?;
    // The endpoint's certificate, as cert-manager would keep it.
    let certificate = rcgen::generate_simple_self_signed(vec!["oidc.example".to_owned()])?;
    let tls = Secret {
        metadata: ObjectMeta {
            name: Some("oidc-serving".into()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        string_data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), certificate.cert.pem()),
            (
                "tls.key".to_owned(),
                certificate.signing_key.serialize_pem(),
            ),
        ])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), SECOND_NAMESPACE)
        .create(&PostParams::default(), &tls)
        .await?;
    let digest = format!("sha256:{}", "5".repeat(64));
    let chart = chart();
    let kubeconfig = work.join("admin.kubeconfig");
    let mut args = vec![
        "install",
        SECOND_RELEASE,
        chart.to_str().context("a non-UTF-8 path")?,
        "--namespace",
        SECOND_NAMESPACE,
        "--kubeconfig",
        kubeconfig.to_str().context("a non-UTF-8 path")?,
    ];
    let image = format!("image.digest={digest}");
    let values = [
        "image.repository=registry.example/ksa/ksa-controller",
        &image,
        "rotationNamespaces={user-cluster-2}",
        "watchNamespace=user-cluster-2",
        "signer.enabled=true",
        "signer.namespaces={user-cluster-2}",
        "oidc.enabled=true",
        "oidc.publicUrl=https://oidc.example/staging",
        "oidc.tls.secretName=oidc-serving",
        "publish.hosts={oidc.example}",
        "publish.directory.enabled=true",
        "publish.directory.volume.emptyDir.sizeLimit=16Mi",
        "extraVolumes[0].name=scratch,extraVolumes[0].emptyDir.medium=Memory",
        "extraVolumeMounts[0].name=scratch,extraVolumeMounts[0].mountPath=/scratch",
    ];
    for value in &values {
        args.extend(["--set", value]);
    }
    let printed = tokio::task::block_in_place(|| run_helm(&args))?;
    eprintln!("{printed}");

    // Each release's ClusterRoles and admission policies are its own.
    let instance = |release: &str| {
        ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"))
    };
    let names =
        |items: Vec<Option<String>>| -> BTreeSet<String> { items.into_iter().flatten().collect() };
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    for (release, fullname) in [(RELEASE, CONTROLLER), (SECOND_RELEASE, SECOND_CONTROLLER)] {
        let role_names = names(
            roles
                .list(&instance(release))
                .await?
                .items
                .into_iter()
                .map(|r| r.metadata.name)
                .collect(),
        );
        let policy_names = names(
            policies
                .list(&instance(release))
                .await?
                .items
                .into_iter()
                .map(|p| p.metadata.name)
                .collect(),
        );
        ensure!(
            role_names.len() == 6 && role_names.iter().all(|n| n.starts_with(fullname)),
            "release {release}'s ClusterRoles: {role_names:?}"
        );
        ensure!(
            policy_names.len() == 6 && policy_names.iter().all(|n| n.starts_with(fullname)),
            "release {release}'s admission policies: {policy_names:?}"
        );
    }

    // Admitted by Pod Security with their volumes, placed on kwok's nodes,
    // running the image by digest.
    let pods = release_pods(client, SECOND_RELEASE, SECOND_NAMESPACE, 2, None).await?;
    for pod in &pods {
        let spec = pod.spec.as_ref().context("a pod with no spec")?;
        let image = spec.containers.first().and_then(|c| c.image.clone());
        ensure!(
            image == Some(format!("registry.example/ksa/ksa-controller@{digest}")),
            "the second release's pod runs {image:?}"
        );
        let volumes: BTreeSet<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        for volume in ["oidc-tls", "publish", "scratch"] {
            ensure!(
                volumes.contains(volume),
                "the second release's pod has volumes {volumes:?}"
            );
        }
    }
    Ok(SECOND_CONTROLLER.to_owned())
}

/// The second release's admission policies match its own controller: with
/// a token of its ServiceAccount, creating a Secret in its namespace (which
/// its leases role allows, bound to it there) is refused by the release's
/// own Secret guard, named for it.
async fn second_release_guards_match_its_controller(
    plane: &Arc<Mutex<ControlPlane>>,
    client: &kube::Client,
    account: &str,
) -> Result<()> {
    let token = request_token(client, SECOND_NAMESPACE, account, Vec::new(), 600).await?;
    let as_controller = plane.lock().await.client_with_token(&token).await?;
    let secrets: Api<Secret> = Api::namespaced(as_controller, SECOND_NAMESPACE);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("not-the-seal-key".into()),
            ..ObjectMeta::default()
        },
        ..Secret::default()
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let guard = format!("ValidatingAdmissionPolicy '{SECOND_CONTROLLER}-secret-writes'");
    ksa_tests::eventually(
        "the second release's Secret guard refusing its controller",
        ksa_tests::OBSERVED_WITHIN,
        || async {
            let refused = secrets.create(&dry_run, &secret).await;
            ensure!(
                matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains(&guard)),
                "creating a Secret as {account}: {refused:?}"
            );
            Ok(())
        },
    )
    .await
}
