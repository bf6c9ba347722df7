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
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
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
    // A restart changes one annotation: a template finalizer would be
    // copied to every new pod (which then never goes away), and owners
    // are no restart's business either.
    expect(
        "add a pod template finalizer",
        patch(
            &deployments,
            "web",
            json!({"spec": {"template": {"metadata": {"finalizers": ["example.com/hold"]}}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "add a pod template finalizer to a StatefulSet",
        patch(
            &stateful_sets,
            "db",
            json!({"spec": {"template": {"metadata": {"finalizers": ["example.com/hold"]}}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "add a pod template owner",
        patch(
            &daemon_sets,
            "agent",
            json!({"spec": {"template": {"metadata": {"ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                "uid": "00000000-0000-0000-0000-000000000001",
            }]}}}}),
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

/// A ClusterRole with `rules` (JSON) bound to the ServiceAccount
/// `apps/account`, and a client with that account's token.
async fn account_with(
    plane: &ControlPlane,
    admin: &kube::Client,
    account: &str,
    rules: Value,
) -> Result<kube::Client> {
    ksa_tests::cluster::create_service_account(admin, APPS, account).await?;
    let role: ClusterRole =
        serde_json::from_value(json!({"metadata": {"name": account}, "rules": rules}))?;
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": APPS}],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let token = ksa_tests::cluster::request_token(admin, APPS, account, vec![], 3600).await?;
    plane.client_with_token(&token).await
}

fn namespace(name: &str, labels: Value) -> Result<Namespace> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}}),
    )?)
}

/// The label that exempts a namespace from the guards is the operator's:
/// a tenant who may create and edit namespaces can neither create one with
/// it nor set, change or remove it later; a cluster administrator, or a
/// user granted `label` on `rotationnamespaces.ksa.dev`, can.
#[tokio::test]
async fn a_tenant_who_may_create_namespaces_cannot_exempt_one() -> Result<()> {
    use ksa_controller::admission::{EXEMPT_RESOURCE, EXEMPT_VERB, ROTATION_NAMESPACE_LABEL};
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let admin = plane.client().await?;
    let _installation =
        Installation::install(&admin, ROTATIONS, ROTATIONS, &key, plane.dir()).await?;
    ksa_tests::cluster::create_namespace(&admin, APPS).await?;
    let namespace_rights = json!({
        "apiGroups": [""], "resources": ["namespaces"],
        "verbs": ["get", "list", "create", "update", "patch"],
    });
    let tenant = account_with(&plane, &admin, "tenant", json!([namespace_rights])).await?;
    let operator = account_with(
        &plane,
        &admin,
        "operator",
        json!([namespace_rights, {
            "apiGroups": ["ksa.dev"], "resources": [EXEMPT_RESOURCE], "verbs": [EXEMPT_VERB],
        }]),
    )
    .await?;
    let as_tenant: Api<Namespace> = Api::all(tenant.clone());
    let exempt = json!({ROTATION_NAMESPACE_LABEL: "enabled"});

    // Wait (at most 60 s) for the guard to be in force: the tenant tries to
    // create a labelled namespace under a new name each time. Past 60 s the
    // checks below say what was admitted.
    let started = Instant::now();
    let mut attempt = 0u32;
    while started.elapsed() < Duration::from_secs(60)
        && answer(
            as_tenant
                .create(
                    &PostParams::default(),
                    &namespace(&format!("tenant-probe-{attempt}"), exempt.clone())?,
                )
                .await,
        )? != Answer::Guarded
    {
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut wrong = Vec::new();
    let mut expect = |what: &str, got: Answer, want: Answer| {
        if got != want {
            wrong.push(format!("{what}: {got:?}, expected {want:?}"));
        }
    };
    expect(
        "the tenant creates a namespace",
        answer(
            as_tenant
                .create(
                    &PostParams::default(),
                    &namespace("tenant-a", json!({"team": "a"}))?,
                )
                .await,
        )?,
        Answer::Admitted,
    );
    expect(
        "the tenant creates a namespace labelled as one that holds rotations",
        answer(
            as_tenant
                .create(
                    &PostParams::default(),
                    &namespace("tenant-b", exempt.clone())?,
                )
                .await,
        )?,
        Answer::Guarded,
    );
    expect(
        "the tenant labels its namespace as one that holds rotations",
        patch(
            &as_tenant,
            "tenant-a",
            json!({"metadata": {"labels": exempt}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "the tenant relabels its namespace otherwise",
        patch(
            &as_tenant,
            "tenant-a",
            json!({"metadata": {"labels": {"team": "b"}}}),
        )
        .await?,
        Answer::Admitted,
    );
    expect(
        "the tenant changes the label of a namespace that holds rotations",
        patch(
            &as_tenant,
            ROTATIONS,
            json!({"metadata": {"labels": {ROTATION_NAMESPACE_LABEL: "x"}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "the tenant removes the label of a namespace that holds rotations",
        patch(
            &as_tenant,
            ROTATIONS,
            json!({"metadata": {"labels": {ROTATION_NAMESPACE_LABEL: null}}}),
        )
        .await?,
        Answer::Guarded,
    );
    expect(
        "an operator granted the label creates a labelled namespace",
        answer(
            Api::<Namespace>::all(operator.clone())
                .create(
                    &PostParams::default(),
                    &namespace("rotations-2", exempt.clone())?,
                )
                .await,
        )?,
        Answer::Admitted,
    );
    expect(
        "the cluster admin labels the tenant's namespace",
        patch(
            &Api::<Namespace>::all(admin.clone()),
            "tenant-a",
            json!({"metadata": {"labels": exempt}}),
        )
        .await?,
        Answer::Admitted,
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The refusal says what was wrong and what to do.
    let refusal = as_tenant
        .create(
            &PostParams::default(),
            &namespace("tenant-c", exempt.clone())?,
        )
        .await
        .expect_err("refused");
    let message = refusal.to_string();
    for part in [
        ROTATION_NAMESPACE_LABEL,
        "cluster administrator",
        "create the namespace without it",
    ] {
        assert!(message.contains(part), "{message}");
    }
    Ok(())
}
