//! Legacy Secret tokens: counted by the kid of the token each holds, and
//! re-minted with the new key, a bounded number at a time.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Secret;
use ksa_core::KeyId;
use ksa_core::crypto::SigningKey;
use ksa_core::token::{self, Claims, ObjectRef};
use kube::api::{Api, ListParams, Patch, PatchParams};

use super::{CONCURRENCY, each, pages};
use crate::error::{Error, Result};

const TOKEN_SECRET_TYPE: &str = "type=kubernetes.io/service-account-token";

/// The kid of the token in a legacy token Secret, if it holds one.
pub fn token_kid(secret: &Secret) -> Option<String> {
    let token = secret.data.as_ref()?.get("token")?;
    let token = std::str::from_utf8(&token.0).ok()?;
    token::decode(token).ok()?.header.kid
}

/// Every legacy token Secret, a page at a time.
pub(super) fn legacy_secret_pages(
    client: &kube::Client,
) -> impl Stream<Item = Result<Vec<Secret>>> + use<> {
    pages(
        Api::all(client.clone()),
        ListParams::default().fields(TOKEN_SECRET_TYPE),
    )
}

/// How many legacy token Secrets hold a token not signed by `kid`.
pub async fn count_stale_legacy_secrets(client: &kube::Client, kid: &KeyId) -> Result<u64> {
    legacy_secret_pages(client)
        .try_fold(0, |count, page| async move {
            let stale = page
                .iter()
                .filter(|s| token_kid(s).as_deref() != Some(kid.as_str()))
                .count();
            Ok(count + stale as u64)
        })
        .await
}

/// Re-mints every stale legacy token with `signer`, a bounded number at a
/// time, each on its own task (signing runs in parallel with the writes).
/// Each write is conditional on the Secret's resourceVersion, so a
/// concurrent change makes the write fail and the next pass retries it.
/// Returns how many were re-minted.
pub async fn refresh_legacy_tokens(
    client: &kube::Client,
    signer: Arc<dyn SigningKey>,
) -> Result<usize> {
    let kid = signer.kid().as_str().to_owned();
    let results: Vec<Result<()>> = each(legacy_secret_pages(client))
        .try_filter(|secret| std::future::ready(token_kid(secret).as_deref() != Some(kid.as_str())))
        .map(|secret| {
            let (client, signer) = (client.clone(), signer.clone());
            async move {
                tokio::spawn(remint(client, secret?, signer))
                    .await
                    .map_err(Error::Task)?
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut done = 0;
    for result in results {
        match result {
            Ok(()) => done += 1,
            Err(Error::Kube(kube::Error::Api(s))) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

async fn remint(client: kube::Client, secret: Secret, signer: Arc<dyn SigningKey>) -> Result<()> {
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let account = ObjectRef {
        name: annotations
            .get("kubernetes.io/service-account.name")
            .cloned()
            .unwrap_or_default(),
        uid: annotations
            .get("kubernetes.io/service-account.uid")
            .cloned()
            .unwrap_or_default(),
    };
    if account.name.is_empty() {
        return Err(Error::LegacySecretWithoutAccount { namespace, name });
    }
    let claims = Claims::legacy(&namespace, &account, &name);
    let jwt = token::mint(&claims, signer.as_ref())?;
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": secret.metadata.resource_version},
        "data": {"token": STANDARD.encode(jwt)},
    });
    Api::<Secret>::namespaced(client, &namespace)
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
