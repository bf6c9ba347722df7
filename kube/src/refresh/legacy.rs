//! Legacy Secret tokens: read into the core's plain values
//! ([`LegacySecret`]: the kid of the token each holds, whether it is
//! immutable, who last wrote its token), judged by
//! `ksa_core::rotation::legacy::assess`, and re-minted with the new key, a
//! bounded number at a time.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use ksa_core::KeyId;
use ksa_core::crypto::SigningKey;
use ksa_core::rotation::Policy;
use ksa_core::rotation::legacy::{
    self, LegacySecret, LegacyTokens, REMINT_FIELD_MANAGER, TokenWrite,
};
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

/// What the core judges of a legacy token Secret: its names, the kid of
/// its token, whether it is immutable, and who last wrote `data.token`
/// (the newest `managedFields` entry that owns it).
pub fn legacy_secret(secret: &Secret) -> LegacySecret {
    let token_written = secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0.pointer("/f:data/f:token").is_some())
        })
        .map(|entry| TokenWrite {
            manager: entry.manager.clone().unwrap_or_default(),
            at: entry.time.as_ref().map(|time| time.0),
        })
        .max_by_key(|write| write.at);
    LegacySecret {
        namespace: secret.metadata.namespace.clone().unwrap_or_default(),
        name: secret.metadata.name.clone().unwrap_or_default(),
        token_kid: token_kid(secret),
        immutable: secret.immutable == Some(true),
        token_written,
    }
}

/// Every legacy token Secret judged for a RefreshTokens towards key `kid`
/// that began at `since`, under `policy`: how many ksa re-mints, and who is
/// blocked or given up (counted, the first few named).
pub async fn observe_legacy_tokens(
    client: &kube::Client,
    kid: &KeyId,
    since: Option<Timestamp>,
    policy: &Policy,
) -> Result<LegacyTokens> {
    legacy_secret_pages(client)
        .try_fold(LegacyTokens::default(), |mut account, page| async move {
            for secret in &page {
                let seen = legacy_secret(secret);
                let verdict = legacy::assess(&seen, kid.as_str(), since, policy);
                account.record(&seen, verdict);
            }
            Ok(account)
        })
        .await
}

/// Re-mints every stale legacy token with `signer`, a bounded number at a
/// time, each on its own task (signing runs in parallel with the writes).
/// Each write is conditional on the Secret's resourceVersion, so a
/// concurrent change makes the write fail and the next pass retries it.
/// An immutable Secret is not written (the API server refuses it); a
/// write the API server refuses for one Secret (400, 403, 422) is left for
/// the next pass and does not stop the others, so one tenant's Secret never
/// stops the refresh of anyone else's tokens: the observation names it as
/// blocked. Returns how many were re-minted.
pub async fn refresh_legacy_tokens(
    client: &kube::Client,
    signer: Arc<dyn SigningKey>,
) -> Result<usize> {
    let kid = signer.kid().as_str().to_owned();
    let results: Vec<Result<Remint>> = each(legacy_secret_pages(client))
        .try_filter(|secret| std::future::ready(legacy_secret(secret).to_remint(&kid)))
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
            Ok(Remint::Done) => done += 1,
            Ok(Remint::Refused) => {}
            Err(Error::Kube(kube::Error::Api(s))) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// What became of one re-mint.
enum Remint {
    Done,
    /// The API server refused this Secret's write (immutable, invalid,
    /// forbidden by an admission guard); the next pass tries again.
    Refused,
}

async fn remint(
    client: kube::Client,
    secret: Secret,
    signer: Arc<dyn SigningKey>,
) -> Result<Remint> {
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
    let params = PatchParams {
        field_manager: Some(REMINT_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match Api::<Secret>::namespaced(client, &namespace)
        .patch(&name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Remint::Done),
        // Refused for this Secret alone: the others go on.
        Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422) => {
            Ok(Remint::Refused)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: serde_json::Value) -> Secret {
        serde_json::from_value(value).expect("a Secret")
    }

    #[test]
    fn a_secret_is_read_into_what_the_core_judges() {
        let seen = legacy_secret(&secret(serde_json::json!({
            "metadata": {
                "namespace": "tenant",
                "name": "frozen-token",
                "managedFields": [
                    {"manager": "kube-controller-manager", "operation": "Update",
                     "time": "2026-12-01T09:00:00Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:data": {".": {}, "f:ca.crt": {}, "f:namespace": {}}}},
                    {"manager": "ksa-remint", "operation": "Update",
                     "time": "2026-12-01T10:00:01Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:data": {"f:token": {}}}},
                    {"manager": "kubectl-patch", "operation": "Update",
                     "time": "2026-12-01T10:00:03Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:data": {"f:token": {}}}},
                    {"manager": "kubectl-label", "operation": "Update",
                     "time": "2026-12-01T10:00:09Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:metadata": {"f:labels": {}}}}
                ]
            },
            "type": "kubernetes.io/service-account-token",
            "immutable": true,
            "data": {"token": "bm90IGEgdG9rZW4="}
        })));
        assert_eq!(seen.namespace, "tenant");
        assert_eq!(seen.name, "frozen-token");
        assert!(seen.immutable);
        // Not a token: no kid, so stale.
        assert_eq!(seen.token_kid, None);
        assert_eq!(
            seen.token_written,
            Some(TokenWrite {
                manager: "kubectl-patch".into(),
                at: Some("2026-12-01T10:00:03Z".parse().expect("a time")),
            })
        );
        assert!(seen.is_stale("kid") && !seen.to_remint("kid"));

        let plain = legacy_secret(&secret(serde_json::json!({
            "metadata": {"namespace": "apps", "name": "app-token"},
            "type": "kubernetes.io/service-account-token"
        })));
        assert!(!plain.immutable);
        assert_eq!(plain.token_written, None);
        assert!(plain.to_remint("kid"));
    }
}
