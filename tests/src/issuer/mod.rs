//! What the API server instances do with issuers (SPEC section 10), asked
//! of each instance on its own, since a client may reach any of them:
//! which `iss` its TokenReview accepts (on a token minted here with a
//! chosen issuer and key), which issuer its discovery document names, and
//! which `iss` the tokens it issues carry; the status lines of SPEC
//! sections 2 and 10, written out; and what the issuer suites
//! (`tests/tests/issuer_*.rs`) share: the issuers they rotate through, the
//! user cluster config, and [`follow`], which follows a rotation `ksa`
//! runs and checks each step's confirmation on every instance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::ServiceAccount;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::PrivateKey;
use ksa_core::rotation::{RotationState, Step};
use ksa_core::token::{self, BoundToken, ObjectRef};
use kube::api::Api;

use crate::cluster::{request_token, review_token};
use crate::hosted::{APISERVER_CONTAINER, UNRELATED_ARGS};
use crate::scenario::{APISERVER_DEPLOYMENT, APPS, CLUSTER};
use crate::{ISSUER, InstanceClient};

pub mod follow;

/// How long minted tokens live.
const MINTED_SECONDS: i64 = 3600;

/// A bound token of service account `namespace/account` (its uid read
/// through `client`) carrying `iss` `issuer` and `aud` `audiences`, signed
/// with `key`: what an API server signing with `key` under `issuer` would
/// issue (no pod or node bound).
pub async fn mint_token(
    client: &kube::Client,
    namespace: &str,
    account: &str,
    issuer: &str,
    audiences: &[&str],
    key: &PrivateKey,
) -> Result<String> {
    static MINTED: AtomicU64 = AtomicU64::new(0);
    let uid = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .get(account)
        .await
        .with_context(|| format!("reading service account {namespace}/{account}"))?
        .metadata
        .uid
        .context("the service account has no uid")?;
    let claims = BoundToken {
        issuer: issuer.to_owned(),
        audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        namespace: namespace.to_owned(),
        service_account: ObjectRef {
            name: account.to_owned(),
            uid,
        },
        pod: None,
        node: None,
        secret: None,
        issued_at: jiff::Timestamp::now().as_second(),
        lifetime_seconds: MINTED_SECONDS,
        jti: format!(
            "ksa-tests-minted-{}-{}",
            std::process::id(),
            MINTED.fetch_add(1, Ordering::Relaxed)
        ),
    }
    .claims()?;
    Ok(token::mint(
        &claims,
        AwsLc::new().signing_key(key)?.as_ref(),
    )?)
}

/// Whether each instance, in order, authenticates `token` (TokenReview
/// with the API server's own audiences).
pub async fn verdicts(instances: &[InstanceClient], token: &str) -> Result<Vec<bool>> {
    let reviews = instances.iter().map(|instance| async move {
        review_token(&instance.client, token)
            .await
            .map(|user| user.is_some())
            .with_context(|| format!("TokenReview on {}", instance.url))
    });
    futures::future::try_join_all(reviews).await
}

/// The issuer each instance's `/.well-known/openid-configuration` names,
/// in order.
pub async fn discovery_issuers(instances: &[InstanceClient]) -> Result<Vec<String>> {
    let documents = instances.iter().map(|instance| async move {
        let request = http::Request::get("/.well-known/openid-configuration").body(Vec::new())?;
        let text = instance
            .client
            .request_text(request)
            .await
            .with_context(|| format!("discovery on {}", instance.url))?;
        let document: serde_json::Value = serde_json::from_str(&text)?;
        document["issuer"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "no issuer in the discovery document of {}: {text}",
                    instance.url
                )
            })
    });
    futures::future::try_join_all(documents).await
}

/// The `iss` of a fresh bound token of `namespace/account` (TokenRequest,
/// the API server's own audiences) from each instance, in order.
pub async fn issued_issuers(
    instances: &[InstanceClient],
    namespace: &str,
    account: &str,
) -> Result<Vec<String>> {
    let issued = instances.iter().map(|instance| async move {
        let jwt = request_token(&instance.client, namespace, account, Vec::new(), 3600)
            .await
            .with_context(|| format!("TokenRequest on {}", instance.url))?;
        token_issuer(&jwt)
    });
    futures::future::try_join_all(issued).await
}

/// The `iss` of a token.
pub fn token_issuer(jwt: &str) -> Result<String> {
    token::decode(jwt)?
        .claims
        .iss
        .context("the token has no iss")
}

/// The `aud` of a token.
pub fn token_audiences(jwt: &str) -> Result<Vec<String>> {
    Ok(token::decode(jwt)?.claims.aud.unwrap_or_default())
}

/// How long a request to the instances is retried while they restart.
const RETRY_FOR: Duration = Duration::from_secs(90);

/// `attempt` until it succeeds: the instances (and the instance a
/// kubeconfig names) restart one at a time during a roll-out, and a check
/// of what every instance does must wait for the one restarting. Gives up
/// with the last error after 90 s.
pub async fn retrying<T, F, Fut>(what: &str, attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    crate::wait::eventually(what, RETRY_FOR, attempt).await
}

/// The started state of a rotation that changes the issuer from `from`
/// to `to` (and the key to `key_version` when `changes_key`, otherwise
/// keeps key `key_version`), as the core stores it: what identifies the
/// rotation at every step ([`RotationState::same_rotation`]).
pub fn issuer_rotation(
    key_version: u64,
    from: &str,
    to: &str,
    changes_key: bool,
) -> Result<RotationState> {
    let state = serde_json::json!({
        "keyVersion": key_version,
        "step": if changes_key { "Generate" } else { "Trust" },
        "issuer": {"from": from, "to": to},
        "changesKey": changes_key,
    });
    // Through the core's own type, which checks the state.
    Ok(serde_json::from_value(state)?)
}

/// The status lines `rotate --wait` prints for the rotation `started` is a
/// state of, computed from the core: at each step, in order, the key line
/// (SPEC section 2; only when the rotation changes the key) and then the
/// issuer line (SPEC section 10), each only when it differs from the last
/// one of its kind (Generate and Trust confirm the same values).
pub fn wait_lines(started: &RotationState) -> Vec<String> {
    let mut lines = Vec::new();
    let mut last: [Option<String>; 2] = [None, None];
    for step in Step::ROTATION.into_iter().chain([Step::Completed]) {
        let Some(state) = started.at_step(step) else {
            continue;
        };
        let key = started
            .changes_key()
            .then(|| state.status_line().to_string());
        let issuer = state.issuer_status_line().map(|line| line.to_string());
        for (kind, text) in [key, issuer].into_iter().enumerate() {
            if let Some(text) = text
                && last[kind].as_ref() != Some(&text)
            {
                last[kind] = Some(text.clone());
                lines.push(text);
            }
        }
    }
    lines
}

/// An issuer status line of SPEC section 10, written out.
pub fn issuer_line(
    to: &str,
    completed: bool,
    token: &str,
    signing: &str,
    accepted: &[&str],
) -> String {
    let (status, reason) = if completed {
        ("True", "KSAIssuerRotationCompleted")
    } else {
        ("False", "KSAIssuerRotationProcessedReason")
    };
    let accepted: Vec<String> = accepted.iter().map(|i| format!("\"{i}\"")).collect();
    format!(
        "State of KSAIssuerRotation with KSAIssuer {to} is - status: {status}, reason: {reason}, \
         message:{{\"tokenIssuer\":\"{token}\",\"signingIssuer\":\"{signing}\",\"acceptedIssuers\":[{}]}}",
        accepted.join(",")
    )
}

/// The issuer lines of a rotation from `a` to `b`, one per step, as SPEC
/// section 10 says (the values as confirmed): Trust (and Generate), Sign,
/// RefreshTokens, Retire, Completed.
pub fn issuer_lines(a: &str, b: &str) -> [String; 5] {
    [
        // At Trust nothing is confirmed yet.
        issuer_line(b, false, a, a, &[a]),
        // At Sign every instance was seen to accept B.
        issuer_line(b, false, a, a, &[a, b]),
        // At RefreshTokens every instance was seen to sign with B.
        issuer_line(b, false, a, b, &[b, a]),
        // At Retire the tokens in circulation carry B.
        issuer_line(b, false, b, b, &[b, a]),
        issuer_line(b, true, b, b, &[b]),
    ]
}

/// A key status line of SPEC section 2, written out.
pub fn key_line(to: u64, completed: bool, token: u64, private: u64, public: &[u64]) -> String {
    let (status, reason) = if completed {
        ("True", "KSASigningKeyRotationCompleted")
    } else {
        ("False", "KSASigningKeyRotationProcessedReason")
    };
    let public: Vec<String> = public.iter().map(ToString::to_string).collect();
    format!(
        "State of KSASigningKeyRotation with KSASigningKeyVersion {to} is - status: {status}, \
         reason: {reason}, message:{{\"tokenVersion\":{token},\"privateKeyVersion\":{private},\
         \"publicKeyVersions\":[{}]}}",
        public.join(",")
    )
}

/// The key lines of a rotation from `n` to `n + 1`, one per step: Generate
/// and Trust, Sign, RefreshTokens, Retire, Completed.
pub fn key_lines(n: u64) -> [String; 5] {
    let m = n + 1;
    [
        key_line(m, false, n, n, &[n]),
        key_line(m, false, n, n, &[n, m]),
        key_line(m, false, n, m, &[n, m]),
        key_line(m, false, m, m, &[n, m]),
        key_line(m, true, m, m, &[m]),
    ]
}

/// The issuer every test control plane starts with.
pub const A: &str = ISSUER;
/// The issuer rotated to.
pub const B: &str = "https://issuer-b.example";
/// The issuer of the key and issuer rotation that follows A -> B.
pub const C: &str = "https://issuer-c.example";
/// SPEC section 10's completed line of the rotation to B, written out.
pub const COMPLETED_B: &str = r#"State of KSAIssuerRotation with KSAIssuer https://issuer-b.example is - status: True, reason: KSAIssuerRotationCompleted, message:{"tokenIssuer":"https://issuer-b.example","signingIssuer":"https://issuer-b.example","acceptedIssuers":["https://issuer-b.example"]}"#;
/// How long one rotation may take (`--timeout` and the test's own wait).
pub const ROTATION_TIMEOUT: Duration = Duration::from_secs(300);
/// The service account (in [`APPS`]) whose tokens are minted, issued and
/// probed.
pub const APP: &str = "app";

/// A user cluster config naming the API server workload (and the roll-out
/// kind, when given), as a hosted control plane's operator writes it.
pub fn user_cluster_config(rollout: Option<&str>, trust_lead_seconds: u64) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\ngkeOnPremVersion: 1.16.0-gke.669\n\
         enableAdvancedCluster: false\nksaSigningKeyRotation:\n  apiServerWorkload: \
         {{kind: Deployment, name: {APISERVER_DEPLOYMENT}, container: {APISERVER_CONTAINER}}}\n"
    );
    if let Some(rollout) = rollout {
        text.push_str(&format!("  rollout: {rollout}\n"));
    }
    text.push_str(&format!("  trustLeadTimeSeconds: {trust_lead_seconds}\n"));
    text
}

/// The API server container's args after a rotation to `issuer`: the
/// issuer flag where it stood, the default audience pinned to A after it
/// (the first rewrite added it), every other arg byte for byte.
pub fn args_signing(issuer: &str) -> Vec<String> {
    [
        format!("--service-account-issuer={issuer}"),
        format!("--api-audiences={A}"),
    ]
    .into_iter()
    .chain(UNRELATED_ARGS.iter().map(|a| (*a).to_owned()))
    .collect()
}

/// Each instance's verdict on `token`, asked until every instance answers:
/// when a rotation completes, the last instance of the last roll-out may
/// still be restarting (a step is confirmed on the instances the
/// `kubernetes` EndpointSlice lists, and one shutting down has left it).
pub async fn verdicts_of(instances: &[InstanceClient], token: &str) -> Result<Vec<bool>> {
    retrying("TokenReview", || verdicts(instances, token)).await
}

/// The `iss` of a fresh token from each instance, asked until every
/// instance answers.
pub async fn issuers_issued(instances: &[InstanceClient]) -> Result<Vec<String>> {
    retrying("TokenRequest", || issued_issuers(instances, APPS, APP)).await
}

/// The issuer each instance's discovery document names, asked until every
/// instance answers.
pub async fn issuers_discovered(instances: &[InstanceClient]) -> Result<Vec<String>> {
    retrying("discovery", || discovery_issuers(instances)).await
}

/// `want` from every instance, in order, `what` of it.
pub fn ensure_all<T: PartialEq + std::fmt::Debug>(got: &[T], want: &T, what: &str) -> Result<()> {
    ensure!(
        !got.is_empty() && got.iter().all(|g| g == want),
        "{what}: the instances answer {got:?}, not {want:?} each"
    );
    Ok(())
}

/// The kid each instance serves at `/openid/v1/jwks`, in order.
pub async fn served_kids(instances: &[InstanceClient]) -> Result<Vec<Vec<String>>> {
    retrying("/openid/v1/jwks", || async {
        let mut all = Vec::new();
        for instance in instances {
            let request = http::Request::get("/openid/v1/jwks").body(Vec::new())?;
            let text = instance.client.request_text(request).await?;
            all.push(
                ksa_core::jwk::parse_jwks(&text)?
                    .into_iter()
                    .map(|k| k.kid.as_str().to_owned())
                    .collect(),
            );
        }
        Ok(all)
    })
    .await
}

/// Every instance serves the one key `kid` at `/openid/v1/jwks` and
/// issues tokens of `kid` carrying `iss` `issuer`.
pub async fn ensure_signing(instances: &[InstanceClient], kid: &str, issuer: &str) -> Result<()> {
    let served = served_kids(instances).await?;
    ensure!(
        served == vec![vec![kid.to_owned()]; instances.len()],
        "the instances serve {served:?}, not [{kid}] each"
    );
    for instance in instances {
        let jwt = retrying("TokenRequest", || {
            request_token(&instance.client, APPS, APP, Vec::new(), 3600)
        })
        .await?;
        let decoded = token::decode(&jwt)?;
        ensure!(
            decoded.header.kid.as_deref() == Some(kid),
            "{}: issued a token of {:?}, not {kid}",
            instance.url,
            decoded.header.kid
        );
        ensure!(
            decoded.claims.iss.as_deref() == Some(issuer),
            "{}: issued a token of {:?}, not {issuer}",
            instance.url,
            decoded.claims.iss
        );
    }
    Ok(())
}

/// The legacy token of `APPS/app-token` (the suites' Secret), which every
/// instance must still accept.
pub async fn ensure_legacy_token_accepted(
    client: &kube::Client,
    instances: &[InstanceClient],
) -> Result<()> {
    let legacy = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), APPS)
        .get("app-token")
        .await?
        .data
        .and_then(|d| d.get("token").cloned())
        .context("the legacy token")?;
    let legacy = String::from_utf8(legacy.0)?;
    ensure_all(
        &verdicts_of(instances, &legacy).await?,
        &true,
        "the legacy token",
    )
}

/// The key line and issuer lines interleaved: at each step, the key line,
/// then the issuer line.
pub fn interleaved(keys: &[String; 5], issuers: &[String; 5]) -> Vec<String> {
    keys.iter()
        .zip(issuers)
        .flat_map(|(key, issuer)| [key.clone(), issuer.clone()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "https://a.example";
    const B: &str = "https://b.example";

    #[test]
    fn the_core_prints_the_spec_issuer_lines_of_an_issuer_rotation() {
        let started = issuer_rotation(1, A, B, false).expect("an issuer rotation");
        assert_eq!(wait_lines(&started), issuer_lines(A, B));
        // SPEC section 10's own examples, byte for byte.
        assert_eq!(
            issuer_lines(A, B)[2],
            r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: False, reason: KSAIssuerRotationProcessedReason, message:{"tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}"#
        );
        assert_eq!(
            issuer_lines(A, B)[4],
            r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: True, reason: KSAIssuerRotationCompleted, message:{"tokenIssuer":"https://b.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example"]}"#
        );
    }

    #[test]
    fn a_key_and_issuer_rotation_prints_the_key_line_then_the_issuer_line_at_each_step() {
        let started = issuer_rotation(3, A, B, true).expect("a key and issuer rotation");
        let (keys, issuers) = (key_lines(2), issuer_lines(A, B));
        assert_eq!(wait_lines(&started), interleaved(&keys, &issuers));
        assert_eq!(
            keys[4],
            r#"State of KSASigningKeyRotation with KSASigningKeyVersion 3 is - status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":3,"privateKeyVersion":3,"publicKeyVersions":[3]}"#
        );
    }
}
