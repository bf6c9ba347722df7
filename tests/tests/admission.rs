//! The admission guards of `deploy/admission-policies.yaml`, on the real
//! API server: with the controller's own credentials (which RBAC lets
//! patch every Secret and workload), the writes a rotation makes outside
//! the namespaces that hold rotations are admitted and every other write is
//! denied by the guards, not by RBAC. (The rotation, faults and signer
//! suites run with the same guards installed: that is the proof they admit
//! a whole rotation.)

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Secret};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;
use ksa_kube::refresh::RESTART_ANNOTATION;
use ksa_tests::{ApiServerKeys, ControlPlane, Installation};
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const ROTATIONS: &str = "user-cluster-1";
const APPS: &str = "apps";

/// Creates an object (written as JSON) in namespace `apps`.
async fn create<K>(client: &kube::Client, object: Value) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object)?;
    Ok(Api::namespaced(client.clone(), APPS)
        .create(&PostParams::default(), &object)
        .await?)
}

/// What the API server answered a write.
#[derive(Debug, PartialEq)]
enum Answer {
    Admitted,
    /// Denied by one of ksa's admission guards.
    Guarded,
}

fn answer<T>(result: kube::Result<T>) -> Result<Answer> {
    match result {
        Ok(_) => Ok(Answer::Admitted),
        Err(kube::Error::Api(status))
            if status
                .message
                .contains("ValidatingAdmissionPolicy 'ksa-controller-") =>
        {
            Ok(Answer::Guarded)
        }
        Err(error) => bail!("neither admitted nor denied by a guard: {error}"),
    }
}

async fn patch<K>(api: &Api<K>, name: &str, patch: Value) -> Result<Answer>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    answer(
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    )
}

#[tokio::test]
async fn the_guards_admit_a_rotations_writes_and_deny_the_rest() -> Result<()> {
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let admin = plane.client().await?;
    let _installation =
        Installation::install(&admin, ROTATIONS, ROTATIONS, &key, plane.dir()).await?;
    ksa_tests::install::grant_recreate_nodes(&admin).await?;
    ksa_tests::cluster::create_namespace(&admin, APPS).await?;
    ksa_tests::cluster::create_service_account(&admin, APPS, "app").await?;

    let legacy = |name: &str| {
        json!({
            "metadata": {"name": name, "annotations": {"kubernetes.io/service-account.name": "app"}},
            "type": "kubernetes.io/service-account-token",
            "data": {"token": "b2xk", "ca.crt": "Y2E="},
        })
    };
    create::<Secret>(&admin, legacy("app-token")).await?;
    create::<Secret>(
        &admin,
        json!({"metadata": {"name": "database"}, "type": "Opaque", "data": {"token": "c2VjcmV0"}}),
    )
    .await?;
    let template = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
    });
    let selector = json!({"matchLabels": {"app": "web"}});
    create::<Deployment>(
        &admin,
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 2, "selector": selector, "template": template}}),
    )
    .await?;
    create::<StatefulSet>(
        &admin,
        json!({"metadata": {"name": "db"}, "spec": {"serviceName": "db", "selector": selector, "template": template}}),
    )
    .await?;
    create::<DaemonSet>(
        &admin,
        json!({"metadata": {"name": "agent"}, "spec": {"selector": selector, "template": template}}),
    )
    .await?;
    for name in ["node-1", "node-2"] {
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"zone": "a"}}}))?;
        Api::<Node>::all(admin.clone())
            .create(&PostParams::default(), &node)
            .await?;
    }

    let controller = plane.controller_client().await?;
    let secrets: Api<Secret> = Api::namespaced(controller.clone(), APPS);
    // Policies take effect a moment after they are created: wait until a
    // forbidden write to a Secret kept for it is denied (a new value each
    // time: a write that changes nothing is no change to deny).
    create::<Secret>(&admin, legacy("probe-token")).await?;
    let started = Instant::now();
    let mut attempt = 0u32;
    while patch(
        &secrets,
        "probe-token",
        json!({"data": {"extra": STANDARD.encode(attempt.to_string())}}),
    )
    .await?
        != Answer::Guarded
    {
        attempt += 1;
        if started.elapsed() > Duration::from_secs(60) {
            let policies: Api<ValidatingAdmissionPolicy> = Api::all(admin.clone());
            let status = policies.get("ksa-controller-secret-writes").await?.status;
            bail!(
                "the admission guards were not in force within 60 s; the policy's status: {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The guards are created in order and each takes effect on its own:
    // wait for the last one (nodes) too, with a label the guard forbids
    // (a new value each time).
    let nodes: Api<Node> = Api::all(controller.clone());
    while patch(
        &nodes,
        "node-1",
        json!({"metadata": {"labels": {"ksa-probe": attempt.to_string()}}}),
    )
    .await?
        != Answer::Guarded
    {
        attempt += 1;
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the node guard was not in force within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let restart = |version: &str| json!({"spec": {"template": {"metadata": {"annotations": {RESTART_ANNOTATION: version}}}}});
    let deployments: Api<Deployment> = Api::namespaced(controller.clone(), APPS);
    let stateful_sets: Api<StatefulSet> = Api::namespaced(controller.clone(), APPS);
    let daemon_sets: Api<DaemonSet> = Api::namespaced(controller.clone(), APPS);
    let mut wrong = Vec::new();
    let mut expect = |what: &str, got: Answer, want: Answer| {
        if got != want {
            wrong.push(format!("{what}: {got:?}, expected {want:?}"));
        }
    };

    // What a rotation writes outside its namespaces.
    expect(
        "re-mint a legacy token",
        patch(&secrets, "app-token", json!({"data": {"token": "bmV3"}})).await?,
        Answer::Admitted,
    );
    expect(
        "restart a Deployment",
        patch(&deployments, "web", restart("2")).await?,
        Answer::Admitted,
    );
    expect(
        "restart a StatefulSet",
        patch(&stateful_sets, "db", restart("2")).await?,
        Answer::Admitted,
    );
    expect(
        "restart a DaemonSet",
        patch(&daemon_sets, "agent", restart("2")).await?,
        Answer::Admitted,
    );
    expect(
        "cordon a node",
        patch(&nodes, "node-1", json!({"spec": {"unschedulable": true}})).await?,
        Answer::Admitted,
    );
    expect(
        "delete a cordoned node",
        answer(nodes.delete("node-1", &DeleteParams::default()).await)?,
        Answer::Admitted,
    );

    // Everything else RBAC would let it do.
    expect(
        "add a key to a legacy token Secret",
        patch(&secrets, "app-token", json!({"data": {"extra": "eA=="}})).await?,
        Answer::Guarded,
    );
    expect(
        "change ca.crt of a legacy token Secret",
        patch(
            &secrets,
            "app-token",
            json!({"data": {"ca.crt": "bWluZQ=="}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "remove ca.crt of a legacy token Secret",
        patch(&secrets, "app-token", json!({"data": {"ca.crt": null}})).await?,
        Answer::Guarded,
    );
    expect(
        "label a legacy token Secret",
        patch(
            &secrets,
            "app-token",
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "write data.token of an Opaque Secret",
        patch(&secrets, "database", json!({"data": {"token": "bWluZQ=="}})).await?,
        Answer::Guarded,
    );
    expect(
        "scale a Deployment",
        patch(&deployments, "web", json!({"spec": {"replicas": 0}})).await?,
        Answer::Guarded,
    );
    expect(
        "change a Deployment's image",
        patch(
            &deployments,
            "web",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "attacker.invalid/x"}]}}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "set another pod template annotation",
        patch(
            &deployments,
            "web",
            json!({"spec": {"template": {"metadata": {"annotations": {"other": "1"}}}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "label a Deployment",
        patch(
            &deployments,
            "web",
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "change a StatefulSet's update strategy",
        patch(
            &stateful_sets,
            "db",
            json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "change a DaemonSet's pod labels",
        patch(
            &daemon_sets,
            "agent",
            json!({"spec": {"template": {"metadata": {"labels": {"x": "y"}}}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "annotate a DaemonSet",
        patch(
            &daemon_sets,
            "agent",
            json!({"metadata": {"annotations": {"x": "y"}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "label a node",
        patch(
            &nodes,
            "node-2",
            json!({"metadata": {"labels": {"zone": "b"}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "delete a node not cordoned",
        answer(nodes.delete("node-2", &DeleteParams::default()).await)?,
        Answer::Guarded,
    );

    // In the namespace that holds its rotations, its own objects are its.
    let own: Api<Secret> = Api::namespaced(controller.clone(), ROTATIONS);
    expect(
        "create a Secret where rotations live",
        answer(
            own.create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"metadata": {"name": "user-cluster-1-key-v9"}, "type": "Opaque"}),
                )?,
            )
            .await,
        )?,
        Answer::Admitted,
    );

    // And nobody else is held by them.
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), APPS);
    expect(
        "the cluster admin adds a key",
        patch(
            &admin_secrets,
            "app-token",
            json!({"data": {"extra": "eA=="}}),
        )
        .await?,
        Answer::Admitted,
    );

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    Ok(())
}
