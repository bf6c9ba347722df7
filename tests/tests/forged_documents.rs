//! Forged documents (issue 29, finding 2), end to end: ConfigMaps made by
//! hand with the names and the label of a rotation's published documents
//! (`NAME-oidc` behind the OIDC endpoint, `NAME-jwks` behind `/jwks`),
//! serving a kid `ATTACKER` and a `jwks_uri` on another host, are never
//! served: only what the controller sealed is. A `NAME-oidc` holding data
//! of another's is not written into either (finding 6): the rotation says
//! so by name, and once it is deleted the controller's own documents are
//! served.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use ksa_core::discovery::issuer_paths;
use ksa_core::issuer::Issuer;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{CLUSTER, NAMESPACE, Scenario};
use ksa_tests::{FIRST_REPLICA, ISSUER, loopback_addr};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

/// What the forged documents serve, and what must never be served.
const ATTACKER: &str = "ATTACKER";
/// How long the controller may take to start serving, or to reconcile.
const DEADLINE: Duration = Duration::from_secs(120);

/// A ConfigMap named `name`, labelled as ksa labels its own, holding `data`.
fn forged(name: &str, data: &[(&str, String)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                [
                    ("app.kubernetes.io/managed-by", "ksa"),
                    ("ksa.dev/rotation", CLUSTER),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

/// GETs `url`: its status and body, or None when nothing answers yet.
async fn get(reader: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = reader.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_documents_are_never_served() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let mut scenario = Scenario::start().await?;
    let client = scenario.client.clone();

    // The controller with its OIDC endpoint (plain HTTP: what is served is
    // the question here, not how).
    let oidc_addr = loopback_addr()?;
    let public_url = format!("http://{oidc_addr}");
    let installation = &mut scenario.installation;
    installation.kill_replica(FIRST_REPLICA)?;
    installation.extra_args = vec![
        format!("--oidc-public-url={public_url}"),
        format!("--oidc-addr={oidc_addr}"),
        "--oidc-insecure-http".to_owned(),
    ];
    let http_addr = installation.http_addr;
    installation.start_replica(FIRST_REPLICA, http_addr)?;

    // The forgeries, before the rotation exists: the names, the label, a
    // discovery document naming the issuer and a JWKS on another host.
    let base = format!("{public_url}/{NAMESPACE}/{CLUSTER}");
    let paths = issuer_paths(&base, &Issuer::new(ISSUER)?)?;
    let attacker_jwks = format!(r#"{{"keys":[{{"kty":"EC","kid":"{ATTACKER}"}}]}}"#);
    let documents = serde_json::json!({
        paths.discovery_key(): serde_json::json!({
            "issuer": ISSUER,
            "jwks_uri": format!("https://{ATTACKER}.example/jwks"),
        }).to_string(),
        paths.jwks_key(): attacker_jwks,
    });
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let oidc_name = format!("{CLUSTER}-oidc");
    config_maps
        .create(
            &PostParams::default(),
            &forged(&oidc_name, &[("documents.json", documents.to_string())]),
        )
        .await?;
    // The set-up published a `NAME-jwks` as an operator's import does
    // (unsealed): replaced by the forgery.
    let jwks_name = format!("{CLUSTER}-jwks");
    if config_maps.get_opt(&jwks_name).await?.is_some() {
        config_maps
            .delete(&jwks_name, &DeleteParams::default())
            .await?;
    }
    config_maps
        .create(
            &PostParams::default(),
            &forged(&jwks_name, &[("jwks.json", attacker_jwks.clone())]),
        )
        .await?;

    let reader = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let jwks_url = format!("http://{http_addr}/jwks/{NAMESPACE}/{CLUSTER}");
    let urls = [
        paths.discovery_url.clone(),
        paths.jwks_url.clone(),
        jwks_url.clone(),
    ];
    // Every answer, at any time: never the forgery.
    let never_forged = |url: &str, status: u16, body: &str| -> Result<()> {
        ensure!(
            !body.contains(ATTACKER),
            "{url} served the forgery ({status}): {body}"
        );
        Ok(())
    };

    // 1. With no rotation: the endpoints answer, and 404.
    for url in &urls {
        let started = Instant::now();
        loop {
            match get(&reader, url).await {
                Some((status, body)) => {
                    never_forged(url, status, &body)?;
                    ensure!(status == 404, "{url}: {status} {body}");
                    break;
                }
                None if started.elapsed() > DEADLINE => {
                    bail!(
                        "{url} never answered:\n{}",
                        scenario.installation.controller_log()
                    )
                }
                None => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    // 2. The rotation: the controller refuses to write into the forged
    // `NAME-oidc` (it holds data of another's), and says so by name;
    // nothing forged is served meanwhile.
    let resource: KSASigningKeyRotation = serde_json::from_value(serde_json::json!({
        "apiVersion": "ksa.dev/v1alpha1",
        "kind": "KSASigningKeyRotation",
        "metadata": {"name": CLUSTER, "namespace": NAMESPACE},
        "spec": {"keyVersion": 1},
    }))?;
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    rotations.create(&PostParams::default(), &resource).await?;
    let started = Instant::now();
    let refusal = loop {
        for url in &urls {
            if let Some((status, body)) = get(&reader, url).await {
                never_forged(url, status, &body)?;
            }
        }
        let waiting = rotations
            .get(CLUSTER)
            .await?
            .status
            .and_then(|s| s.waiting_for)
            .unwrap_or_default();
        if waiting.contains(&format!("{NAMESPACE}/{oidc_name} is not ksa's")) {
            break waiting;
        }
        ensure!(
            started.elapsed() < DEADLINE,
            "the rotation never named the forged {oidc_name}; last said {waiting:?}:\n{}",
            scenario.installation.controller_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    ensure!(refusal.contains("delete it"), "{refusal}");
    let kept = config_maps.get(&oidc_name).await?;
    ensure!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
            && kept.data.unwrap_or_default().get("documents.json") == Some(&documents.to_string()),
        "the forged {oidc_name} was written into or given an owner"
    );

    // 3. Deleted, as the refusal says: the controller's own documents are
    // served, the discovery document pointing at the JWKS beside it, which
    // serves the cluster's key.
    config_maps
        .delete(&oidc_name, &DeleteParams::default())
        .await?;
    let started = Instant::now();
    let kid = scenario.first_key.kid().to_string();
    loop {
        let mut served = Vec::new();
        for url in &urls[..2] {
            if let Some((status, body)) = get(&reader, url).await {
                never_forged(url, status, &body)?;
                served.push((status, body));
            }
        }
        if let [(200, discovery), (200, jwks)] = served.as_slice() {
            let document: serde_json::Value = serde_json::from_str(discovery)?;
            ensure!(
                document["issuer"] == ISSUER && document["jwks_uri"] == paths.jwks_url.as_str(),
                "{discovery}"
            );
            ensure!(jwks.contains(&kid), "the JWKS serves {jwks}, not kid {kid}");
            break;
        }
        ensure!(
            started.elapsed() < DEADLINE,
            "the controller's documents were never served: {served:?}\n{}",
            scenario.installation.controller_log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // `/jwks`: the forged `NAME-jwks` is never served; what is served, if
    // anything, is the controller's (which replaces a forgery holding
    // nothing of another's).
    let (status, body) = get(&reader, &jwks_url).await.context("/jwks answers")?;
    never_forged(&jwks_url, status, &body)?;
    ensure!(
        status == 404 || (status == 200 && body.contains(&kid)),
        "{jwks_url}: {status} {body}"
    );
    let log = scenario.installation.controller_log();
    ensure!(
        log.contains("not serving a ConfigMap ksa did not write") && !log.contains(ATTACKER),
        "the controller warns of the forgeries by name, never by content:\n{log}"
    );
    Ok(())
}
