//! Workloads the tests and benches create: pods of one container that run
//! as a named service account, labelled `app: NAME` after their workload.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

/// The labels of the pods of workload `app`.
pub fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_owned(), app.to_owned())])
}

/// Metadata with only a name.
pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

/// Selects the pods of workload `app`.
pub fn selector(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(app)),
        ..LabelSelector::default()
    }
}

/// One container running as `service_account`.
pub fn pod_spec(service_account: &str) -> PodSpec {
    PodSpec {
        service_account_name: Some(service_account.to_owned()),
        containers: vec![Container {
            name: "app".into(),
            image: Some("registry.example/app:1".into()),
            ..Container::default()
        }],
        ..PodSpec::default()
    }
}

/// The pod template of workload `app`.
pub fn template(app: &str, service_account: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(app)),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec(service_account)),
    }
}

/// A Deployment of `replicas` pods running as `service_account`; without
/// a `strategy`, the API server's default (a rolling update of 25%).
pub fn deployment(
    name: &str,
    service_account: &str,
    replicas: i32,
    strategy: Option<DeploymentStrategy>,
) -> Deployment {
    Deployment {
        metadata: meta(name),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(name),
            strategy,
            template: template(name, service_account),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}
