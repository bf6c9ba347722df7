//! The controller's permissions, exactly as `deploy/` grants them, asked
//! of the real API server's RBAC authorizer with SubjectAccessReviews: what
//! a rotation needs is allowed, and what it has no business with is not.
//! (The end-to-end rotation and fault tests run the controller with these
//! same permissions: that is the proof they suffice.)

use anyhow::{Context as _, Result};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;
use ksa_tests::install::{Request, controller_allowed as allowed, wait_controller_allowed};
use ksa_tests::{ApiServerKeys, ControlPlane, Installation};
use kube::api::{Api, PostParams};

const ROTATIONS: &str = "user-cluster-1";

#[tokio::test]
async fn the_controller_may_do_its_job_and_nothing_else() -> Result<()> {
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let client = plane.client().await?;
    let _installation =
        Installation::install(&client, ROTATIONS, ROTATIONS, &key, plane.dir()).await?;

    let needed: [Request<'_>; 17] = [
        ("watch", "ksa.dev", "ksasigningkeyrotations", "", ""),
        (
            "patch",
            "ksa.dev",
            "ksasigningkeyrotations/status",
            ROTATIONS,
            ROTATIONS,
        ),
        // Legacy token Secrets, everywhere.
        ("list", "", "secrets", "", ""),
        ("patch", "", "secrets", "apps", "app-token"),
        // Keys and the JWKS in the rotation's namespace.
        ("get", "", "secrets", ROTATIONS, "user-cluster-1-key-v1"),
        ("create", "", "secrets", ROTATIONS, ""),
        ("delete", "", "secrets", ROTATIONS, "user-cluster-1-key-v1"),
        ("patch", "", "configmaps", ROTATIONS, "user-cluster-1-jwks"),
        ("create", "coordination.k8s.io", "leases", ROTATIONS, ""),
        (
            "update",
            "coordination.k8s.io",
            "leases",
            "default",
            ksa_controller::run::LEADER_LEASE,
        ),
        (
            "create",
            "",
            "serviceaccounts/token",
            "kube-system",
            "ksa-rotation-probe",
        ),
        // The restart-pods policy's role (the default policy), bound.
        ("patch", "apps", "deployments", "apps", "web"),
        ("create", "", "pods/eviction", "apps", "web-1"),
        // Reads only: which Deployment controls a pod, which budget blocks
        // its eviction.
        ("list", "apps", "replicasets", "", ""),
        ("list", "policy", "poddisruptionbudgets", "", ""),
        ("list", "discovery.k8s.io", "endpointslices", "default", ""),
        // Every API server instance, listed or not: their identity Leases.
        ("list", "coordination.k8s.io", "leases", "kube-system", ""),
    ];
    let forbidden: [Request<'_>; 21] = [
        // The recreate-nodes policy's role is not bound: no rotation here
        // uses it.
        ("patch", "", "nodes", "", "node-1"),
        ("delete", "", "nodes", "", "node-1"),
        // Secrets it has no business with: no reading one by name, no
        // watching them all, no creating or deleting outside its namespace.
        (
            "get",
            "",
            "secrets",
            "kube-system",
            "bootstrap-token-abcdef",
        ),
        ("get", "", "secrets", "apps", "database-password"),
        ("watch", "", "secrets", "", ""),
        ("create", "", "secrets", "apps", ""),
        ("delete", "", "secrets", "apps", "app-token"),
        ("patch", "", "configmaps", "kube-system", "kube-proxy"),
        // Tokens of any other service account.
        (
            "create",
            "",
            "serviceaccounts/token",
            "kube-system",
            "default",
        ),
        ("create", "", "serviceaccounts/token", "apps", "app"),
        // Other components' leases.
        (
            "update",
            "coordination.k8s.io",
            "leases",
            "kube-system",
            "kube-controller-manager",
        ),
        // Workloads: restart, never run or reach into them.
        ("create", "", "pods", "apps", ""),
        ("create", "", "pods/exec", "apps", "web-1"),
        ("delete", "apps", "deployments", "apps", "web"),
        ("get", "", "nodes/proxy", "", "node-1"),
        // No way to grant itself more.
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            "",
            "",
        ),
        (
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            "apps",
            "",
        ),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            "",
            "ksa-controller",
        ),
        ("impersonate", "", "users", "", "admin"),
        ("delete", "", "namespaces", "", "apps"),
        (
            "update",
            "ksa.dev",
            "ksasigningkeyrotations",
            ROTATIONS,
            ROTATIONS,
        ),
    ];
    // The authorizer sees bindings through an informer: what a rotation
    // needs is asked until it is allowed, and only then is what it must
    // not do asked (before, a denial would prove nothing).
    wait_controller_allowed(&client, &needed)
        .await
        .context("denied, but a rotation needs it")?;
    let mut wrong = Vec::new();
    for request in forbidden {
        if allowed(&client, request).await? {
            wrong.push(format!(
                "allowed, but it has no business with it: {request:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Bound when a rotation uses recreate-nodes, as README says; allowed
    // once the authorizer has seen the binding.
    ksa_tests::install::grant_recreate_nodes(&client).await?;
    wait_controller_allowed(
        &client,
        &[
            ("patch", "", "nodes", "", "node-1"),
            ("delete", "", "nodes", "", "node-1"),
        ],
    )
    .await
    .context("recreate-nodes bound, yet denied")?;
    Ok(())
}

/// A rotation whose token refresh policy needs a ClusterRole that is not
/// bound is refused before anything changes, naming the role and the file
/// that binds it; once bound, the rotation starts.
#[tokio::test]
async fn a_rotation_without_its_policys_role_is_refused_before_it_starts() -> Result<()> {
    use ksa_kube::api::{
        KSASigningKeyRotation, RotationSpec, TokenRefreshPolicy, TokenRefreshSpec,
    };
    use std::time::{Duration, Instant};

    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let plane = ControlPlane::start(ApiServerKeys::single(key.clone())).await?;
    let client = plane.client().await?;
    let mut installation =
        Installation::install(&client, ROTATIONS, ROTATIONS, &key, plane.dir()).await?;
    installation.start_controller(&plane.controller_kubeconfig_path())?;
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), ROTATIONS);
    let rotation = KSASigningKeyRotation::new(
        ROTATIONS,
        RotationSpec {
            key_version: 2,
            issuer: None,
            cluster: None,
            key: Default::default(),
            rollout: Default::default(),
            token_refresh: TokenRefreshSpec {
                policy: TokenRefreshPolicy::RecreateNodes,
                max_token_seconds: 3600,
                ..TokenRefreshSpec::default()
            },
            trust_lead_time_seconds: 0,
            publish: Default::default(),
        },
    );
    rotations.create(&PostParams::default(), &rotation).await?;

    let waiting_for = || async {
        anyhow::Ok(
            rotations
                .get(ROTATIONS)
                .await?
                .status
                .and_then(|s| s.waiting_for)
                .unwrap_or_default(),
        )
    };
    let started = Instant::now();
    let mut seen = waiting_for().await?;
    while !seen.contains("refused") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the rotation was not refused within 60 s; status says {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        seen = waiting_for().await?;
    }
    assert_eq!(
        seen,
        "refused: ClusterRole ksa-controller-recreate-nodes is not bound to the controller \
         (kubectl apply -f deploy/refresh-recreate-nodes.yaml)"
    );
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), ROTATIONS);
    assert!(
        secrets
            .get_opt(&format!("{ROTATIONS}-signing-key-v2"))
            .await?
            .is_none(),
        "a refused rotation generated a key"
    );

    ksa_tests::install::grant_recreate_nodes(&client).await?;
    let started = Instant::now();
    while secrets
        .get_opt(&format!("{ROTATIONS}-signing-key-v2"))
        .await?
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the rotation did not start within 60 s of its role being bound; status says {:?}",
            waiting_for().await?
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
