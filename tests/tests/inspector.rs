//! The inspector page in headless Chromium, on a token and a JWKS from a real
//! kube-apiserver: what the page shows for a valid token, a tampered one, a
//! wrong audience, an unknown key and a status line. Saves a screenshot to
//! `target/inspector/inspector.png` (and to `docs/inspector.png`, which the
//! README shows, when KSA_UPDATE_SCREENSHOT=1).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::{Client, Locator};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, ServiceAccount};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;
use ksa_tests::browser::{Browser, inspector_dir, serve_dir};
use ksa_tests::cluster::{create_namespace, create_service_account};
use ksa_tests::{ApiServerKeys, ControlPlane, ISSUER};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

const ISSUER_IN_PROGRESS: &str = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: False, reason: KSAIssuerRotationProcessedReason, message:{"tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}"#;
const IN_PROGRESS: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#;

/// A pod on a node, and a one-hour token bound to it with audience "vault".
async fn pod_bound_token(client: &kube::Client) -> Result<String> {
    create_namespace(client, "apps").await?;
    create_service_account(client, "apps", "web").await?;
    let node = Node {
        metadata: ObjectMeta {
            name: Some("node-1".into()),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await?;
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some("web".into()),
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "web".into(),
                image: Some("registry.invalid/web:1".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let pod = Api::<Pod>::namespaced(client.clone(), "apps")
        .create(&PostParams::default(), &pod)
        .await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["vault".into()],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let response = Api::<ServiceAccount>::namespaced(client.clone(), "apps")
        .create_token_request("web", &PostParams::default(), &request)
        .await?;
    Ok(response.status.context("no token")?.token)
}

/// Pastes `text` into the field `id`, as a user would (one input event).
async fn paste(page: &Client, id: &str, text: &str) -> Result<()> {
    page.execute(
        "const field = document.getElementById(arguments[0]);
         field.value = arguments[1];
         field.dispatchEvent(new Event('input'));",
        vec![json!(id), json!(text)],
    )
    .await?;
    Ok(())
}

/// The state and text of an element once its state is `state`.
async fn shown(page: &Client, id: &str, state: &str) -> Result<String> {
    let selector = format!("#{id}[data-state='{state}']");
    match page
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(&selector))
        .await
    {
        Ok(element) => Ok(element.text().await?),
        Err(_) => {
            let element = page.find(Locator::Id(id)).await?;
            let actual = element.attr("data-state").await?;
            bail!(
                "#{id} never reached state {state}; it is {actual:?}: {}",
                element.text().await?
            )
        }
    }
}

async fn text(page: &Client, id: &str) -> Result<String> {
    Ok(page.find(Locator::Id(id)).await?.text().await?)
}

#[tokio::test]
async fn the_inspector_shows_what_a_real_token_means() -> Result<()> {
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let kid = key.kid().as_str().to_owned();
    let plane = ControlPlane::start(ApiServerKeys::single(key)).await?;
    let client = plane.client().await?;
    let token = pod_bound_token(&client).await?;
    let jwks = client
        .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
        .await?;

    let address = serve_dir(&inspector_dir()?, 0).await?;
    let browser = Browser::start().await?;
    let page = &browser.client;
    let outcome = async {
        page.set_window_size(1280, 1250).await?;
        page.goto(&format!("http://{address}/")).await?;
        page.wait()
            .for_element(Locator::Css("body[data-ready]"))
            .await?;

        paste(page, "token", &token).await?;
        let unchecked = shown(page, "validity", "unchecked").await?;
        assert!(
            unchecked.contains("paste the cluster's JWKS"),
            "{unchecked}"
        );
        paste(page, "jwks", &jwks).await?;
        paste(page, "issuers", ISSUER).await?;
        paste(page, "audiences", "vault").await?;
        let valid = shown(page, "validity", "valid").await?;
        assert!(valid.contains(&kid), "names the key that verified: {valid}");
        assert!(
            valid.contains("signature, lifetime, issuer, audience accepted"),
            "{valid}"
        );
        assert_eq!(
            text(page, "not-checked").await?,
            "",
            "everything was checked"
        );
        // Results are announced to screen readers.
        let live = page
            .find(Locator::Id("validity"))
            .await?
            .attr("aria-live")
            .await?;
        assert_eq!(live.as_deref(), Some("polite"));
        // The JWKS's kids, the token's marked.
        let matched = page
            .find(Locator::Css("#jwks-kids li.matched"))
            .await?
            .text()
            .await?;
        assert_eq!(matched, format!("{kid} (the token's key)"));
        // Pasted as an Authorization header value: the same verdict.
        paste(page, "token", &format!("Bearer {token}")).await?;
        let valid = shown(page, "validity", "valid").await?;
        assert!(valid.contains(&kid), "{valid}");
        // An audience not asked for is said to be unchecked.
        paste(page, "audiences", "").await?;
        let valid = shown(page, "validity", "valid").await?;
        assert!(
            valid.contains("signature, lifetime, issuer accepted"),
            "{valid}"
        );
        let notes = text(page, "not-checked").await?;
        assert!(notes.contains("The audience was not checked"), "{notes}");
        paste(page, "token", &token).await?;
        paste(page, "audiences", "vault").await?;
        let identity = text(page, "identity").await?;
        for expected in [
            "bound token (TokenRequest)",
            "apps/web",
            "system:serviceaccount:apps:web",
            "web-0 (uid",
            "node-1 (uid",
            "vault",
            ISSUER,
        ] {
            assert!(identity.contains(expected), "{expected:?} in {identity}");
        }
        let expiry = text(page, "expiry").await?;
        assert!(expiry.starts_with("expires in "), "{expiry}");
        assert!(text(page, "header").await?.contains(&kid));

        paste(page, "status", IN_PROGRESS).await?;
        let step = shown(page, "rotation-step", "in-progress").await?;
        assert!(step.contains("step 5 of 5, Retire"), "{step}");
        let current = page
            .find(Locator::Css("#rotation-steps li.current"))
            .await?
            .text()
            .await?;
        // In words as well as colour.
        assert_eq!(current, "5. Retire (current)");
        let done = page
            .find(Locator::Css("#rotation-steps li.done"))
            .await?
            .text()
            .await?;
        assert_eq!(done, "1. Generate (done)");
        save_screenshot(&page.screenshot().await?)?;
        paste(page, "status", ISSUER_IN_PROGRESS).await?;
        let step = shown(page, "rotation-step", "in-progress").await?;
        assert!(
            step.contains("Rotating to issuer https://b.example: step 4 of 5, RefreshTokens"),
            "{step}"
        );

        // What a user gets wrong, each with its reason.
        let mut tampered = token.clone().into_bytes();
        let middle = token.rfind('.').context("a JWT")? + 20;
        tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
        paste(page, "token", std::str::from_utf8(&tampered)?).await?;
        let invalid = shown(page, "validity", "invalid").await?;
        assert!(invalid.contains("bad_signature"), "{invalid}");
        paste(page, "token", &token).await?;
        paste(page, "audiences", "another-audience").await?;
        let invalid = shown(page, "validity", "invalid").await?;
        assert!(invalid.contains("wrong_audience"), "{invalid}");
        let other = AwsLc::new().generate(KeySpec::Rsa2048)?;
        let other_jwks = ksa_core::jwk::Jwks::from_public_keys([other.public_key()]);
        paste(page, "jwks", &other_jwks.to_json()).await?;
        let invalid = shown(page, "validity", "invalid").await?;
        assert!(invalid.contains("unknown_kid"), "{invalid}");
        paste(page, "status", "State of something else").await?;
        let error = shown(page, "rotation-step", "error").await?;
        assert!(error.contains("Not a status line"), "{error}");
        anyhow::Ok(())
    }
    .await;
    browser.client.clone().close().await?;
    outcome
}

fn save_screenshot(png: &[u8]) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = root.join("target/inspector");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("inspector.png"), png)?;
    if std::env::var_os("KSA_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(root.join("docs/inspector.png"), png)?;
    }
    Ok(())
}
