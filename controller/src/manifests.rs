//! The install manifests in `deploy/`, generated from Rust types so they
//! cannot drift from the code: `cargo xtask manifests` writes them and a
//! test fails when the files are stale.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use ksa_kube::api::KSASigningKeyRotation;
use kube::CustomResourceExt as _;
use kube::api::ObjectMeta;

pub const NAMESPACE: &str = "ksa-system";
/// The Pod Security admission label that sets the level a namespace
/// enforces.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
const RBAC: &str = "rbac.authorization.k8s.io/v1";
const ADMISSION: &str = "admissionregistration.k8s.io/v1";
const NAME: &str = "ksa-controller";
/// The user and group the controller runs as: not root, and the uid of
/// the image's only user (`cargo xtask image`).
pub const RUN_AS: i64 = 65532;
/// The port of `/metrics`, `/livez`, `/readyz` and the JWKS.
pub const HTTP_PORT: i32 = 8080;

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels()),
        ..ObjectMeta::default()
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/name".to_owned(), NAME.to_owned())])
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

/// What every rotation needs across the cluster: its own resources,
/// Events, and the API server instances. Bound by a ClusterRoleBinding,
/// beside [`legacy_tokens_role`] and the role of each token refresh policy
/// the rotations use ([`restart_pods_role`], [`recreate_nodes_role`]). Its
/// keys, JWKS and locks live in the namespaces of its rotations
/// ([`rotation_role`]), its leader Lease in its own ([`leases_role`]), its
/// probe account in kube-system ([`probe_role`]): each bound there only.
pub fn cluster_role() -> ClusterRole {
    cluster_role_named(
        NAME,
        vec![
            // Its own resource and status.
            rule(
                &["ksa.dev"],
                &["ksasigningkeyrotations"],
                &["get", "list", "watch", "patch"],
            ),
            rule(
                &["ksa.dev"],
                &["ksasigningkeyrotations/status"],
                &["get", "patch", "update"],
            ),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
            // A shard's namespaces (`--namespace-selector`): which
            // rotations are its to act on.
            rule(&[""], &["namespaces"], &["list", "watch"]),
            // Every API server instance: where they are, and (issuer
            // rotations) whether each accepts a token of an issuer.
            rule(&["discovery.k8s.io"], &["endpointslices"], &["list"]),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
            // Every pod, read: who holds a bound token and for how long
            // (every policy, `wait` for its window), and who mounts a
            // legacy token (the ones held outside the cluster).
            rule(&[""], &["pods"], &["list"]),
            PolicyRule {
                non_resource_urls: Some(vec![
                    "/openid/v1/jwks".to_owned(),
                    "/.well-known/openid-configuration".to_owned(),
                ]),
                verbs: vec!["get".to_owned()],
                ..PolicyRule::default()
            },
        ],
    )
}

/// Re-minting legacy token Secrets in RefreshTokens, which every rotation
/// does: `list` and `patch` of Secrets in every namespace. This is the one
/// grant RBAC cannot narrow: it cannot select Secrets by type, and the
/// names of legacy token Secrets are not known in advance (the token
/// controller of kube-controller-manager holds the same). No `get`,
/// `watch`, `create` or `delete` of Secrets outside its own namespaces, and
/// the admission guards ([`crate::admission`]) let a `patch` change only
/// `data.token` of a `kubernetes.io/service-account-token` Secret.
pub fn legacy_tokens_role() -> ClusterRole {
    cluster_role_named(
        LEGACY_TOKENS_ROLE,
        vec![rule(&[""], &["secrets"], &["list", "patch"])],
    )
}

/// The `restart-pods` token refresh policy (the default): restart the pod
/// templates of Deployments, StatefulSets and DaemonSets and evict other
/// pods (listed through [`cluster_role`]). `list` ReplicaSets (which Deployment controls a pod) and
/// PodDisruptionBudgets (which one blocks an eviction, to name it) only
/// reads. Bind it only when a rotation uses that policy; the admission
/// guards let a workload `patch` only set the restart annotation.
pub fn restart_pods_role() -> ClusterRole {
    cluster_role_named(
        RESTART_PODS_ROLE,
        vec![
            rule(&[""], &["pods/eviction"], &["create"]),
            rule(
                &["apps"],
                &["deployments", "statefulsets", "daemonsets"],
                &["list", "patch"],
            ),
            rule(&["apps"], &["replicasets"], &["list"]),
            rule(&["policy"], &["poddisruptionbudgets"], &["list"]),
        ],
    )
}

/// The `recreate-nodes` token refresh policy: cordon each node, evict its
/// pods and delete it for the infrastructure to replace (`list`
/// PodDisruptionBudgets to name one that blocks a drain). Bind it only when
/// a rotation uses that policy; the admission guards let a node `patch`
/// only cordon it, and a `delete` only remove a cordoned node.
pub fn recreate_nodes_role() -> ClusterRole {
    cluster_role_named(
        RECREATE_NODES_ROLE,
        vec![
            rule(&[""], &["nodes"], &["list", "patch", "delete"]),
            rule(&[""], &["pods/eviction"], &["create"]),
            rule(&["policy"], &["poddisruptionbudgets"], &["list"]),
        ],
    )
}

pub const LEGACY_TOKENS_ROLE: &str = "ksa-controller-legacy-tokens";
pub const RESTART_PODS_ROLE: &str = "ksa-controller-restart-pods";
pub const RECREATE_NODES_ROLE: &str = "ksa-controller-recreate-nodes";

/// Bind with a RoleBinding in each namespace that holds
/// KSASigningKeyRotations: the key Secrets, the API server key Secret, the
/// JWKS ConfigMaps and the cluster operation lock.
pub fn rotation_role() -> ClusterRole {
    cluster_role_named(
        ROTATION_ROLE,
        vec![
            rule(&[""], &["secrets"], &["get", "create", "patch", "delete"]),
            rule(&[""], &["configmaps"], &["get", "create", "patch"]),
            lease_rule(),
        ],
    )
}

/// Bind with a RoleBinding in the leader-election namespace: the leader
/// Lease, and the sealing key (`ksa_kube::provenance`), which the first
/// controller to start creates.
pub fn leases_role() -> ClusterRole {
    let mut seal_key = rule(&[""], &["secrets"], &["get"]);
    seal_key.resource_names = Some(vec![ksa_kube::provenance::SECRET_NAME.to_owned()]);
    cluster_role_named(
        LEASES_ROLE,
        vec![
            lease_rule(),
            seal_key,
            // Create cannot be limited by name: the name is in the body.
            rule(&[""], &["secrets"], &["create"]),
        ],
    )
}

/// Bind with a RoleBinding in kube-system: the probe account whose fresh
/// tokens show which key an API server signs with, and its tokens only;
/// and the API servers' identity Leases (read), which name every instance,
/// including one the `kubernetes` EndpointSlice does not list.
pub fn probe_role() -> ClusterRole {
    let probe = || Some(vec![ksa_kube::probe::PROBE_ACCOUNT.to_owned()]);
    let mut account = rule(&[""], &["serviceaccounts"], &["get"]);
    account.resource_names = probe();
    let mut token = rule(&[""], &["serviceaccounts/token"], &["create"]);
    token.resource_names = probe();
    cluster_role_named(
        PROBE_ROLE,
        vec![
            account,
            // Create cannot be limited by name: the name is in the body.
            rule(&[""], &["serviceaccounts"], &["create"]),
            token,
            rule(&["coordination.k8s.io"], &["leases"], &["list"]),
        ],
    )
}

pub const ROTATION_ROLE: &str = "ksa-controller-rotation";
pub const LEASES_ROLE: &str = "ksa-controller-leases";
pub const PROBE_ROLE: &str = "ksa-controller-probe";

fn lease_rule() -> PolicyRule {
    rule(
        &["coordination.k8s.io"],
        &["leases"],
        &["get", "create", "update", "patch", "delete"],
    )
}

fn cluster_role_named(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: meta(name, None),
        rules: Some(rules),
        ..ClusterRole::default()
    }
}

/// A RoleBinding of ClusterRole `role` to `subject` in `namespace`.
pub fn role_binding(role: &str, namespace: &str, subject: Subject) -> RoleBinding {
    RoleBinding {
        metadata: meta(role, Some(namespace)),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: role.to_owned(),
        },
        subjects: Some(vec![subject]),
    }
}

/// What `ksa-controller signer --secret NAMESPACE/SECRET` needs: to read
/// and watch that one Secret, a Role in its namespace (the namespace is
/// left to whoever creates it). Its rule names the Secret: the signer's
/// watch selects it by `metadata.name`, so its list and watch are requests
/// for that name, which such a rule allows; no other Secret is readable.
pub fn signer_role(secret: &str) -> Role {
    let mut rule = rule(&[""], &["secrets"], &["get", "list", "watch"]);
    rule.resource_names = Some(vec![secret.to_owned()]);
    Role {
        metadata: meta(SIGNER, None),
        rules: Some(vec![rule]),
    }
}

/// The key Secret `deploy/signer-rbac.yaml` names, to be replaced by the
/// real one: not a valid name, so an unedited Role allows nothing.
pub const SIGNER_SECRET_PLACEHOLDER: &str = "ROTATION-apiserver-keys";

/// The signer's identity.
pub const SIGNER: &str = "ksa-signer";

fn deployment() -> Deployment {
    let env = |name: &str, field: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    Deployment {
        metadata: meta(NAME, Some(NAMESPACE)),
        spec: Some(DeploymentSpec {
            // Two replicas: one leads (a Lease); the other takes over
            // within the lease duration.
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(NAME.to_owned()),
                    // The `restricted` Pod Security level: not root, the
                    // runtime's default seccomp profile, and (below) no
                    // privilege escalation, no capabilities, and a
                    // read-only root filesystem.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: NAME.to_owned(),
                        image: Some(IMAGE.to_owned()),
                        image_pull_policy: Some("IfNotPresent".to_owned()),
                        args: Some(vec![
                            "run".to_owned(),
                            "--log-format=json".to_owned(),
                            format!("--leader-namespace={NAMESPACE}"),
                            format!("--http-addr=0.0.0.0:{HTTP_PORT}"),
                        ]),
                        env: Some(vec![env("POD_NAME", "metadata.name")]),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".to_owned()),
                            container_port: HTTP_PORT,
                            ..ContainerPort::default()
                        }]),
                        liveness_probe: Some(probe("/livez")),
                        readiness_probe: Some(probe("/readyz")),
                        resources: Some(ResourceRequirements {
                            requests: Some(quantities("50m", "64Mi")),
                            limits: Some(quantities("500m", "256Mi")),
                            ..ResourceRequirements::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".to_owned()]),
                                ..Capabilities::default()
                            }),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The image `cargo xtask image` builds, by the name and tag it is given
/// there; an operator pushes it to a registry and sets its name there (the
/// Helm chart's `image.repository`).
pub const IMAGE: &str = concat!("ksa-controller:", env!("CARGO_PKG_VERSION"));

/// At most one controller replica down at a time for a drain or a node
/// upgrade: the other keeps the leader Lease (or takes it over).
fn disruption_budget() -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(NAME, Some(NAMESPACE)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels()),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

fn service() -> Service {
    Service {
        metadata: meta(NAME, Some(NAMESPACE)),
        spec: Some(ServiceSpec {
            selector: Some(labels()),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: HTTP_PORT,
                target_port: Some(IntOrString::String("http".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn yaml<T: serde::Serialize>(kind_and_version: (&str, &str), object: &T) -> String {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), kind_and_version.1.into());
        map.insert("kind".into(), kind_and_version.0.into());
    }
    to_yaml(&value)
}

/// YAML as kubectl writes it: a long string stays on one line.
pub fn to_yaml<T: serde::Serialize>(value: &T) -> String {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    options.min_fold_chars = usize::MAX;
    serde_saphyr::to_string_with_options(value, options).unwrap_or_default()
}

/// The controller's user name when it runs with the ServiceAccount of
/// `deploy/`: the name the admission guards match.
pub fn service_account_user() -> String {
    format!("system:serviceaccount:{NAMESPACE}:{NAME}")
}

/// A ClusterRoleBinding of ClusterRole `role` (bound under the same name)
/// to `subject`.
pub fn cluster_role_binding(role: &str, subject: Subject) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(role, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: role.to_owned(),
        },
        subjects: Some(vec![subject]),
    }
}

/// Every file of `deploy/`, by name.
pub fn render() -> BTreeMap<&'static str, String> {
    let header =
        "# Generated by `cargo xtask manifests` from controller/src/manifests.rs; do not edit.\n";
    let crd = to_yaml(&KSASigningKeyRotation::crd());
    // The controller's namespace admits only pods of the `restricted` Pod
    // Security level, the controller's included.
    let mut namespace = Namespace {
        metadata: meta(NAMESPACE, None),
        ..Namespace::default()
    };
    namespace
        .metadata
        .labels
        .get_or_insert_default()
        .insert(POD_SECURITY_ENFORCE.to_owned(), "restricted".to_owned());
    let account = ServiceAccount {
        metadata: meta(NAME, Some(NAMESPACE)),
        ..ServiceAccount::default()
    };
    let subject = Subject {
        kind: "ServiceAccount".to_owned(),
        name: NAME.to_owned(),
        namespace: Some(NAMESPACE.to_owned()),
        ..Subject::default()
    };
    let cluster_role_yaml = |role: &ClusterRole| yaml(("ClusterRole", RBAC), role);
    let cluster_binding_yaml = |role: &str| {
        yaml(
            ("ClusterRoleBinding", RBAC),
            &cluster_role_binding(role, subject.clone()),
        )
    };
    let binding_yaml = |binding: &RoleBinding| yaml(("RoleBinding", RBAC), binding);
    let controller = [
        yaml(("Namespace", "v1"), &namespace),
        yaml(("ServiceAccount", "v1"), &account),
        cluster_role_yaml(&cluster_role()),
        cluster_binding_yaml(NAME),
        cluster_role_yaml(&legacy_tokens_role()),
        cluster_binding_yaml(LEGACY_TOKENS_ROLE),
        cluster_role_yaml(&rotation_role()),
        cluster_role_yaml(&leases_role()),
        binding_yaml(&role_binding(LEASES_ROLE, NAMESPACE, subject.clone())),
        cluster_role_yaml(&probe_role()),
        binding_yaml(&role_binding(PROBE_ROLE, "kube-system", subject.clone())),
        yaml(("Deployment", "apps/v1"), &deployment()),
        yaml(("PodDisruptionBudget", "policy/v1"), &disruption_budget()),
        yaml(("Service", "v1"), &service()),
    ]
    .join("---\n");
    let policy_role = |role: &ClusterRole, policy: &str| {
        let name = role.metadata.name.clone().unwrap_or_default();
        format!(
            "{header}# Apply when a rotation uses tokenRefresh.policy {policy}.\n{}---\n{}",
            cluster_role_yaml(role),
            cluster_binding_yaml(&name)
        )
    };
    let admission = crate::admission::guards(&service_account_user())
        .iter()
        .flat_map(|guard| {
            [
                yaml(("ValidatingAdmissionPolicy", ADMISSION), &guard.policy),
                yaml(
                    ("ValidatingAdmissionPolicyBinding", ADMISSION),
                    &guard.binding,
                ),
            ]
        })
        .collect::<Vec<_>>()
        .join("---\n");
    // The namespace is left for `kubectl apply -n` to give.
    let mut rotation_binding = role_binding(ROTATION_ROLE, "", subject.clone());
    rotation_binding.metadata.namespace = None;
    let rotation_binding = format!(
        "{header}# Apply in each namespace that holds KSASigningKeyRotations, and label it:\n\
         # kubectl apply -n <namespace> -f rotation-rbac.yaml\n\
         # kubectl label namespace <namespace> {label}=enabled\n{}",
        binding_yaml(&rotation_binding),
        label = crate::admission::ROTATION_NAMESPACE_LABEL,
    );
    BTreeMap::from([
        ("crd.yaml", format!("{header}{crd}")),
        ("rotation-rbac.yaml", rotation_binding),
        ("controller.yaml", format!("{header}{controller}")),
        (
            "refresh-restart-pods.yaml",
            policy_role(&restart_pods_role(), "restart-pods (the default)"),
        ),
        (
            "refresh-recreate-nodes.yaml",
            policy_role(&recreate_nodes_role(), "recreate-nodes"),
        ),
        (
            "admission-policies.yaml",
            format!(
                "{header}# Kubernetes 1.30 or later. Holds the controller's writes outside the namespaces\n\
                 # labelled {label} to what a rotation needs.\n{admission}",
                label = crate::admission::ROTATION_NAMESPACE_LABEL,
            ),
        ),
        (
            "signer-rbac.yaml",
            format!(
                "{header}# The signer may read its key Secret only. Replace {placeholder} by that Secret's\n\
                 # name (NAME-apiserver-keys of the rotation NAME, or its keySecret), then apply it in\n\
                 # the Secret's namespace and bind it there:\n\
                 # kubectl apply -n <namespace> -f signer-rbac.yaml\n{}",
                yaml(("Role", RBAC), &signer_role(SIGNER_SECRET_PLACEHOLDER)),
                placeholder = SIGNER_SECRET_PLACEHOLDER,
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;

    /// The checks of the `restricted` Pod Security Standard (Kubernetes
    /// 1.25 and later) that a pod spec can fail, and this installation's
    /// own: a read-only root filesystem and uid [`super::RUN_AS`]. Returns
    /// what fails.
    fn restricted_violations(pod: &PodSpec) -> Vec<String> {
        let mut failures = Vec::new();
        let pod_context = pod.security_context.clone().unwrap_or_default();
        if pod.host_network == Some(true)
            || pod.host_pid == Some(true)
            || pod.host_ipc == Some(true)
        {
            failures.push("host namespaces".to_owned());
        }
        for volume in pod.volumes.iter().flatten() {
            let allowed = volume.config_map.is_some()
                || volume.csi.is_some()
                || volume.downward_api.is_some()
                || volume.empty_dir.is_some()
                || volume.ephemeral.is_some()
                || volume.persistent_volume_claim.is_some()
                || volume.projected.is_some()
                || volume.secret.is_some();
            if !allowed {
                failures.push(format!("volume {} of a restricted type", volume.name));
            }
        }
        let pod_seccomp = pod_context
            .seccomp_profile
            .as_ref()
            .map(|p| p.type_.as_str());
        for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
            let name = &container.name;
            let context = container.security_context.clone().unwrap_or_default();
            if context.privileged == Some(true) {
                failures.push(format!("{name}: privileged"));
            }
            if context.allow_privilege_escalation != Some(false) {
                failures.push(format!("{name}: allowPrivilegeEscalation is not false"));
            }
            let capabilities = context.capabilities.clone().unwrap_or_default();
            if !capabilities.drop.iter().flatten().any(|c| c == "ALL") {
                failures.push(format!("{name}: capabilities do not drop ALL"));
            }
            if capabilities
                .add
                .iter()
                .flatten()
                .any(|c| c != "NET_BIND_SERVICE")
            {
                failures.push(format!("{name}: adds capabilities"));
            }
            if context.run_as_non_root.or(pod_context.run_as_non_root) != Some(true) {
                failures.push(format!("{name}: runAsNonRoot is not true"));
            }
            let user = context.run_as_user.or(pod_context.run_as_user);
            if user != Some(super::RUN_AS) {
                failures.push(format!("{name}: runs as {user:?}, not {}", super::RUN_AS));
            }
            let seccomp = context
                .seccomp_profile
                .as_ref()
                .map(|p| p.type_.as_str())
                .or(pod_seccomp);
            if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
                failures.push(format!("{name}: seccompProfile is {seccomp:?}"));
            }
            if context.read_only_root_filesystem != Some(true) {
                failures.push(format!("{name}: the root filesystem is writable"));
            }
            if container
                .ports
                .iter()
                .flatten()
                .any(|p| p.host_port.is_some())
            {
                failures.push(format!("{name}: host ports"));
            }
        }
        failures
    }

    /// The signer reads one Secret: every rule of `deploy/signer-rbac.yaml`
    /// names the Secrets it allows (a rule without `resourceNames` allows
    /// every Secret of the namespace it is bound in).
    #[test]
    fn the_signer_may_read_its_key_secret_only() {
        let file = super::render()["signer-rbac.yaml"].clone();
        let mut rules = 0;
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&file).expect("YAML");
        for object in documents {
            for rule in object["rules"].as_array().into_iter().flatten() {
                rules += 1;
                let names = rule["resourceNames"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(names.len(), 1, "{rule}");
                assert_eq!(rule["resources"], serde_json::json!(["secrets"]), "{rule}");
            }
        }
        assert_eq!(rules, 1, "{file}");
        let role = super::signer_role("c1-apiserver-keys");
        let rule = &role.rules.unwrap_or_default()[0];
        assert_eq!(
            rule.resource_names.as_deref(),
            Some(&["c1-apiserver-keys".to_owned()][..])
        );
        assert_eq!(rule.verbs, ["get", "list", "watch"]);
    }

    #[test]
    fn the_controller_pod_meets_the_restricted_pod_security_level() {
        let deployment = super::deployment();
        let pod = deployment
            .spec
            .and_then(|s| s.template.spec)
            .unwrap_or_default();
        assert_eq!(restricted_violations(&pod), Vec::<String>::new());
        assert!(
            !restricted_violations(&PodSpec {
                containers: vec![Default::default()],
                ..PodSpec::default()
            })
            .is_empty(),
            "the check finds nothing wrong with a pod that sets nothing"
        );
    }

    /// The controller's namespace enforces `restricted`, and a
    /// PodDisruptionBudget lets a drain take one replica of the two at a
    /// time.
    #[test]
    fn the_controller_namespace_is_restricted_and_has_a_disruption_budget() {
        let controller = &super::render()["controller.yaml"];
        assert!(controller.contains("pod-security.kubernetes.io/enforce: restricted"));
        let deployment = super::deployment();
        let spec = deployment.spec.unwrap_or_default();
        let budget = super::disruption_budget().spec.unwrap_or_default();
        assert_eq!(
            budget.selector.and_then(|s| s.match_labels),
            spec.template.metadata.and_then(|m| m.labels),
            "the budget selects the controller's pods"
        );
        let unavailable = match budget.max_unavailable {
            Some(super::IntOrString::Int(n)) => n,
            other => panic!("maxUnavailable {other:?}"),
        };
        assert!(unavailable >= 1 && unavailable < spec.replicas.unwrap_or(1));
        assert!(controller.contains("kind: PodDisruptionBudget"));
    }

    /// `deploy/` must be what the code generates: run `cargo xtask
    /// manifests` after changing the CRD or the install.
    #[test]
    fn deploy_files_are_fresh() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        for (name, expected) in super::render() {
            let path = dir.join(name);
            let actual = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                actual == expected,
                "{} is stale; run `cargo xtask manifests` and commit the result",
                path.display()
            );
        }
    }
}
