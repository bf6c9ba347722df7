//! ValidatingAdmissionPolicies that hold the controller's own writes to
//! what a rotation needs, whatever its RBAC allows.
//!
//! RBAC cannot say "patch only `data.token`" or "patch only one
//! annotation": re-minting legacy tokens needs `patch` on every Secret in
//! the cluster, restarting workloads `patch` on every Deployment. These
//! policies are checked by kube-apiserver itself on every write the
//! controller's identity makes outside the namespaces that hold rotations
//! (labelled [`ROTATION_NAMESPACE_LABEL`]), so a controller that is
//! confused or taken over still cannot use those grants for anything else:
//! - a Secret write may only change `data.token` of a
//!   `kubernetes.io/service-account-token` Secret;
//! - a Deployment, StatefulSet or DaemonSet write may only set the restart
//!   annotation on its pod template ([`RESTART_ANNOTATION`]);
//! - a Node write may only cordon it, and a Node may only be deleted once
//!   cordoned (recreate-nodes).
//!
//! Each of these matches only requests from the controller's user name, so
//! it costs nothing for anyone else's writes. One more holds everyone: only
//! a cluster administrator (RBAC: [`EXEMPT_VERB`] on [`EXEMPT_RESOURCE`])
//! may put [`ROTATION_NAMESPACE_LABEL`] on a namespace, so a tenant who may
//! create namespaces cannot exempt one. `failurePolicy: Fail`: a policy
//! that cannot be evaluated denies.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use ksa_kube::refresh::RESTART_ANNOTATION;
use kube::api::ObjectMeta;

/// The label an operator puts on each namespace that holds
/// KSASigningKeyRotations (`kubectl label namespace NS
/// ksa.dev/rotations=enabled`). There the controller keeps its own key
/// Secrets, ConfigMaps and Leases and rolls the API server workload, so the
/// policies below do not apply; everywhere else they do.
///
/// Whoever may create a namespace may label it, so the label alone would
/// let a tenant exempt their own namespace. The guard
/// `ksa-controller-namespace-labels` therefore lets only a user allowed
/// [`EXEMPT_VERB`] on [`EXEMPT_RESOURCE`] of group `ksa.dev` (cluster-wide;
/// a cluster administrator is) create a namespace with this label or set,
/// change or remove it.
pub const ROTATION_NAMESPACE_LABEL: &str = "ksa.dev/rotations";

/// The permission (checked cluster-wide, with the namespace's name) that
/// setting [`ROTATION_NAMESPACE_LABEL`] takes: `label` on
/// `rotationnamespaces.ksa.dev`. RBAC grants it to cluster administrators
/// (`*`) and to whoever an operator gives a ClusterRole with that rule.
pub const EXEMPT_RESOURCE: &str = "rotationnamespaces";
pub const EXEMPT_VERB: &str = "label";

/// One guard: a policy and the binding that enforces it (`Deny`).
#[derive(Clone, Debug)]
pub struct Guard {
    pub policy: ValidatingAdmissionPolicy,
    pub binding: ValidatingAdmissionPolicyBinding,
}

/// Every guard, for the controller authenticated as `user` (in a cluster:
/// `system:serviceaccount:ksa-system:ksa-controller`).
pub fn guards(user: &str) -> Vec<Guard> {
    let mut guards = vec![secret_guard(user)];
    guards.extend(WORKLOADS.iter().map(|w| workload_guard(user, w)));
    guards.push(node_guard(user));
    guards.push(namespace_label_guard());
    guards
}

/// Only a user allowed [`EXEMPT_VERB`] on [`EXEMPT_RESOURCE`] may put
/// [`ROTATION_NAMESPACE_LABEL`] on a namespace (at creation or later), or
/// change or remove it: the label exempts the namespace from the guards
/// above, and a tenant who may create namespaces may not exempt one.
/// Matches every user, and no namespace selector: for a Namespace the
/// selector would read the object's own labels, so a labelled namespace
/// would exempt itself.
fn namespace_label_guard() -> Guard {
    let label = cel_string(ROTATION_NAMESPACE_LABEL);
    let expression = format!(
        "(request.operation == 'CREATE' \
         ? object.metadata.?labels[?{label}] == optional.none() \
         : object.metadata.?labels[?{label}] == oldObject.metadata.?labels[?{label}]) \
         || authorizer.group('ksa.dev').resource({resource}).name(object.metadata.name).check({verb}).allowed()",
        resource = cel_string(EXEMPT_RESOURCE),
        verb = cel_string(EXEMPT_VERB),
    );
    let mut guard = guard(
        "ksa-controller-namespace-labels",
        None,
        // Labels can change through the status and finalize subresources
        // too.
        NamedRuleWithOperations {
            resources: Some(
                ["namespaces", "namespaces/status", "namespaces/finalize"]
                    .map(str::to_owned)
                    .to_vec(),
            ),
            ..rule("", "namespaces", &["CREATE", "UPDATE"])
        },
        vec![check(
            &expression,
            &format!(
                "only a cluster administrator may set, change or remove the label \
                 {ROTATION_NAMESPACE_LABEL} of a namespace: it exempts the namespace from \
                 ksa's admission guards (RBAC: verb {EXEMPT_VERB} on resource \
                 {EXEMPT_RESOURCE} of group ksa.dev); create the namespace without it"
            ),
        )],
    );
    if let Some(constraints) = guard
        .policy
        .spec
        .as_mut()
        .and_then(|spec| spec.match_constraints.as_mut())
    {
        constraints.namespace_selector = None;
    }
    guard
}

fn secret_guard(user: &str) -> Guard {
    let mut secrets = guard(
        "ksa-controller-secret-writes",
        Some(user),
        rule("", "secrets", &["CREATE", "UPDATE", "DELETE"]),
        vec![
            only_updates("Secrets"),
            check(
                "oldObject.type == 'kubernetes.io/service-account-token' && object.type == oldObject.type",
                "ksa-controller may only re-mint the token of a kubernetes.io/service-account-token Secret here",
            ),
            check(
                &unchanged_except("data", &["token"]),
                "ksa-controller may only change data.token of a legacy token Secret",
            ),
            check(
                &all_same(&[
                    "metadata.?labels",
                    "metadata.?annotations",
                    "metadata.?ownerReferences",
                    "metadata.?finalizers",
                    "?immutable",
                ]),
                "ksa-controller may not change a Secret's labels, annotations, owners, finalizers or immutability",
            ),
        ],
    );
    // The one Secret the controller makes outside the rotation namespaces:
    // its sealing key, in its own namespace, created once, immutable, with
    // nothing another component acts on (`ksa_kube::provenance`).
    if let Some(spec) = secrets.policy.spec.as_mut() {
        spec.match_conditions
            .get_or_insert_with(Vec::new)
            .push(MatchCondition {
                name: "not-the-sealing-key".to_owned(),
                expression: format!(
                    "!(request.operation == 'CREATE' && object.metadata.name == {} && \
                     object.type == 'Opaque' && has(object.immutable) && object.immutable && \
                     !has(object.metadata.annotations) && !has(object.metadata.ownerReferences) && \
                     !has(object.metadata.finalizers))",
                    cel_string(ksa_kube::provenance::SECRET_NAME)
                ),
            });
    }
    secrets
}

/// A workload kind and the fields of its spec outside the pod template,
/// none of which a restart changes.
#[derive(Debug)]
struct Workload {
    resource: &'static str,
    kind: &'static str,
    spec_fields: &'static [&'static str],
    /// Annotations of the workload itself that kube-apiserver changes on
    /// any template change (a restart included).
    server_annotations: &'static [&'static str],
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        resource: "deployments",
        kind: "Deployments",
        spec_fields: &[
            "replicas",
            "selector",
            "strategy",
            "minReadySeconds",
            "revisionHistoryLimit",
            "paused",
            "progressDeadlineSeconds",
        ],
        server_annotations: &[],
    },
    Workload {
        resource: "statefulsets",
        kind: "StatefulSets",
        spec_fields: &[
            "replicas",
            "selector",
            "serviceName",
            "podManagementPolicy",
            "updateStrategy",
            "revisionHistoryLimit",
            "minReadySeconds",
            "volumeClaimTemplates",
            "persistentVolumeClaimRetentionPolicy",
            "ordinals",
        ],
        server_annotations: &[],
    },
    Workload {
        resource: "daemonsets",
        kind: "DaemonSets",
        spec_fields: &[
            "selector",
            "updateStrategy",
            "minReadySeconds",
            "revisionHistoryLimit",
        ],
        // The DaemonSet strategy counts template changes there.
        server_annotations: &["deprecated.daemonset.template.generation"],
    },
];

fn workload_guard(user: &str, workload: &Workload) -> Guard {
    let spec: Vec<String> = workload
        .spec_fields
        .iter()
        .map(|field| format!("spec.?{field}"))
        .collect();
    let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
    guard(
        &format!("ksa-controller-{}-writes", workload.resource),
        Some(user),
        rule("apps", workload.resource, &["CREATE", "UPDATE", "DELETE"]),
        vec![
            only_updates(workload.kind),
            check(
                &format!(
                    "{} && {}",
                    all_same(&[
                        "metadata.?labels",
                        "metadata.?ownerReferences",
                        "metadata.?finalizers",
                    ]),
                    unchanged_except("metadata.annotations", workload.server_annotations)
                ),
                "ksa-controller may not change a workload's labels, annotations, owners or finalizers",
            ),
            check(
                &all_same(&spec),
                "ksa-controller may not change a workload's spec outside its pod template",
            ),
            // The workload controllers copy a template's finalizers to
            // every pod they create (a pod that never goes away).
            check(
                &all_same(&[
                    "spec.template.spec",
                    "spec.template.metadata.?labels",
                    "spec.template.metadata.?finalizers",
                    "spec.template.metadata.?ownerReferences",
                ]),
                "ksa-controller may not change a workload's pod spec, or its pod template's labels, finalizers or owners",
            ),
            check(
                &unchanged_except("spec.template.metadata.annotations", &[RESTART_ANNOTATION]),
                &format!(
                    "ksa-controller may only set the {RESTART_ANNOTATION} annotation of a pod template"
                ),
            ),
        ],
    )
}

fn node_guard(user: &str) -> Guard {
    guard(
        "ksa-controller-node-writes",
        Some(user),
        rule("", "nodes", &["CREATE", "UPDATE", "DELETE"]),
        vec![
            check(
                "request.operation != 'CREATE'",
                "ksa-controller never creates Nodes",
            ),
            check(
                "request.operation != 'DELETE' || oldObject.spec.?unschedulable == optional.of(true)",
                "ksa-controller may only delete a Node it has cordoned",
            ),
            check(
                &format!(
                    "request.operation != 'UPDATE' || ({} && object.spec.?unschedulable == optional.of(true))",
                    all_same(&[
                        "metadata.?labels",
                        "metadata.?annotations",
                        "metadata.?ownerReferences",
                        "metadata.?finalizers",
                        "spec.?taints",
                        "spec.?podCIDR",
                        "spec.?podCIDRs",
                        "spec.?providerID",
                        "spec.?configSource",
                    ])
                ),
                "ksa-controller may only cordon a Node (set spec.unschedulable), nothing else",
            ),
        ],
    )
}

/// A guard named `name` over `rule`: for requests made as `user` only
/// (all users when `None`), outside the namespaces that hold rotations.
fn guard(
    name: &str,
    user: Option<&str>,
    rule: NamedRuleWithOperations,
    checks: Vec<Validation>,
) -> Guard {
    let meta = ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            "ksa-controller".to_owned(),
        )])),
        ..ObjectMeta::default()
    };
    // Outside the namespaces that hold rotations. Cluster-scoped objects
    // (Nodes) always match: a namespace selector does not apply to them.
    let outside_rotation_namespaces = LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: ROTATION_NAMESPACE_LABEL.to_owned(),
            operator: "DoesNotExist".to_owned(),
            values: None,
        }]),
        ..LabelSelector::default()
    };
    let policy = ValidatingAdmissionPolicy {
        metadata: meta.clone(),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                namespace_selector: Some(outside_rotation_namespaces),
                resource_rules: Some(vec![rule]),
                ..MatchResources::default()
            }),
            match_conditions: user.map(|user| {
                vec![MatchCondition {
                    name: "ksa-controller".to_owned(),
                    expression: format!("request.userInfo.username == {}", cel_string(user)),
                }]
            }),
            validations: Some(checks),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        ..ValidatingAdmissionPolicy::default()
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: meta,
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(name.to_owned()),
            validation_actions: Some(vec!["Deny".to_owned()]),
            ..ValidatingAdmissionPolicyBindingSpec::default()
        }),
    };
    Guard { policy, binding }
}

fn rule(group: &str, resource: &str, operations: &[&str]) -> NamedRuleWithOperations {
    NamedRuleWithOperations {
        api_groups: Some(vec![group.to_owned()]),
        api_versions: Some(vec!["*".to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        operations: Some(operations.iter().map(|o| (*o).to_owned()).collect()),
        ..NamedRuleWithOperations::default()
    }
}

fn check(expression: &str, message: &str) -> Validation {
    Validation {
        expression: expression.to_owned(),
        message: Some(message.to_owned()),
        reason: Some("Forbidden".to_owned()),
        ..Validation::default()
    }
}

fn only_updates(what: &str) -> Validation {
    check(
        "request.operation == 'UPDATE'",
        &format!(
            "ksa-controller may only update {what} outside the namespaces labelled {ROTATION_NAMESPACE_LABEL}"
        ),
    )
}

/// `object.P == oldObject.P` for every path (`?` marks an optional field).
fn all_same(paths: &[&str]) -> String {
    paths
        .iter()
        .map(|path| format!("object.{path} == oldObject.{path}"))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// The map at `path` (which may be absent) is the same before and after,
/// except for `keys`.
fn unchanged_except(path: &str, keys: &[&str]) -> String {
    let keys = keys
        .iter()
        .map(|k| cel_string(k))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "(!has(object.{path}) || object.{path}.all(k, k in [{keys}] || \
         (has(oldObject.{path}) && k in oldObject.{path} && oldObject.{path}[k] == object.{path}[k]))) \
         && (!has(oldObject.{path}) || oldObject.{path}.all(k, k in [{keys}] || \
         (has(object.{path}) && k in object.{path})))"
    )
}

/// A CEL string literal. The names quoted are ksa's own constants and a
/// Kubernetes user name, but quote them properly all the same.
fn cel_string(text: &str) -> String {
    let mut literal = String::from("'");
    for c in text.chars() {
        match c {
            '\\' => literal.push_str("\\\\"),
            '\'' => literal.push_str("\\'"),
            c if c.is_control() => literal.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => literal.push(c),
        }
    }
    literal.push('\'');
    literal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_quoted_as_cel_strings() {
        assert_eq!(cel_string("ksa-controller"), "'ksa-controller'");
        assert_eq!(cel_string("a'b\\c\n"), "'a\\'b\\\\c\\u000a'");
    }

    #[test]
    fn every_guard_but_the_label_guard_matches_only_the_controller_and_all_deny() {
        let guards = guards("system:serviceaccount:ksa-system:ksa-controller");
        assert_eq!(guards.len(), 6);
        for guard in guards {
            let name = guard.policy.metadata.name.clone().unwrap_or_default();
            let spec = guard.policy.spec.unwrap_or_default();
            assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
            let conditions = spec.match_conditions.unwrap_or_default();
            let selector = spec
                .match_constraints
                .unwrap_or_default()
                .namespace_selector;
            if name == "ksa-controller-namespace-labels" {
                // Everyone, and every namespace (a selector would read the
                // labels of the namespace being written).
                assert!(conditions.is_empty(), "{conditions:?}");
                assert_eq!(selector, None);
            } else {
                assert_eq!(
                    conditions[0].expression,
                    "request.userInfo.username == 'system:serviceaccount:ksa-system:ksa-controller'"
                );
                assert!(selector.is_some(), "{name}");
            }
            let binding = guard.binding.spec.unwrap_or_default();
            assert_eq!(binding.policy_name, guard.policy.metadata.name);
            assert_eq!(binding.validation_actions, Some(vec!["Deny".to_owned()]));
        }
    }
}
