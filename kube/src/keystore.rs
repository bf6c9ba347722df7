//! The key store: one Secret per key version in the rotation's namespace,
//! labelled, holding the private key. Private keys live nowhere else; the
//! API server key Secret holds only the current signing key and the public
//! keys, and the JWKS ConfigMap only public keys.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use ksa_core::KeyVersion;
use ksa_core::jwk::Jwks;
use ksa_core::key::{PrivateKey, PublicKey, parse_pem, public_keys_to_pem};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};

use crate::error::{Error, Result};

/// Every object ksa writes for a rotation carries this label with the
/// rotation's name: the controller serves a JWKS ConfigMap only when it
/// has it, and a key Secret or workload a rotation names must carry it too
/// (`rollout::Rollout::check_owned`).
pub const LABEL_ROTATION: &str = "ksa.dev/rotation";
/// The standard label, with value [`MANAGED_BY`], on every object ksa
/// writes, so that operators can find them all.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ksa";
pub const LABEL_KEY_VERSION: &str = "ksa.dev/key-version";
pub const FIELD_MANAGER: &str = "ksa-controller";

/// The labels of every object ksa writes for `rotation`.
pub fn owned_labels(rotation: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_ROTATION.to_owned(), rotation.to_owned()),
    ])
}

/// The key store of one rotation resource.
#[derive(Clone)]
pub struct KeyStore {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    rotation: String,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("rotation", &self.rotation)
            .finish()
    }
}

impl KeyStore {
    pub fn new(client: kube::Client, namespace: &str, rotation: &str) -> KeyStore {
        KeyStore {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            rotation: rotation.to_owned(),
        }
    }

    /// The Secret name of a key version.
    pub fn secret_name(&self, version: KeyVersion) -> String {
        format!("{}-signing-key-v{version}", self.rotation)
    }

    /// The public key of every stored version.
    pub async fn public_keys(&self) -> Result<BTreeMap<KeyVersion, PublicKey>> {
        let selector = format!("{LABEL_ROTATION}={}", self.rotation);
        let list = self
            .secrets
            .list(&ListParams::default().labels(&selector))
            .await?;
        let mut keys = BTreeMap::new();
        for secret in list {
            let Some(version) = secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_KEY_VERSION))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            let key = private_key_of(&secret)?;
            keys.insert(KeyVersion::new(version), key.public_key().clone());
        }
        Ok(keys)
    }

    pub async fn private_key(&self, version: KeyVersion) -> Result<PrivateKey> {
        let name = self.secret_name(version);
        match self.secrets.get_opt(&name).await? {
            Some(secret) => private_key_of(&secret),
            None => Err(Error::MissingKey {
                version,
                secret: name,
            }),
        }
    }

    /// Stores a key version unless it exists (a repeated Generate keeps the
    /// first key).
    pub async fn create(&self, version: KeyVersion, key: &PrivateKey) -> Result<()> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name(version)),
                labels: Some({
                    let mut labels = owned_labels(&self.rotation);
                    labels.insert(LABEL_KEY_VERSION.to_owned(), version.to_string());
                    labels
                }),
                annotations: Some(BTreeMap::from([(
                    "ksa.dev/kid".to_owned(),
                    key.kid().to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                "key.pem".to_owned(),
                ByteString(key.to_pem().as_bytes().to_vec()),
            )])),
            immutable: Some(true),
            ..Secret::default()
        };
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, version: KeyVersion) -> Result<()> {
        match self
            .secrets
            .delete(&self.secret_name(version), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the Secret the API servers mount (`sa.key`: the signing key,
    /// `sa.pub`: the public keys) and the JWKS ConfigMap (served at the
    /// controller's `/jwks/NAMESPACE/NAME`). Returns whether the API server
    /// Secret changed.
    pub async fn publish(
        &self,
        secret_name: &str,
        signing: KeyVersion,
        public: &[KeyVersion],
    ) -> Result<bool> {
        let signing_key = self.private_key(signing).await?;
        let mut public_keys = Vec::with_capacity(public.len());
        for version in public {
            public_keys.push(self.private_key(*version).await?.public_key().clone());
        }
        let sa_pub = public_keys_to_pem(&public_keys);
        let current = self.secrets.get_opt(secret_name).await?;
        let unchanged = current
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| {
                d.get("sa.pub").map(|b| b.0.as_slice()) == Some(sa_pub.as_bytes())
                    && d.get("sa.key").map(|b| b.0.as_slice())
                        == Some(signing_key.to_pem().as_bytes())
            });
        if !unchanged {
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(secret_name.to_owned()),
                    labels: Some(owned_labels(&self.rotation)),
                    annotations: Some(BTreeMap::from([(
                        "ksa.dev/key-set".to_owned(),
                        key_set_id(signing, public),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([
                    (
                        "sa.key".to_owned(),
                        ByteString(signing_key.to_pem().as_bytes().to_vec()),
                    ),
                    ("sa.pub".to_owned(), ByteString(sa_pub.into_bytes())),
                ])),
                ..Secret::default()
            };
            self.secrets
                .patch(
                    secret_name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&secret),
                )
                .await?;
        }
        self.publish_jwks(&public_keys).await?;
        Ok(!unchanged)
    }

    async fn publish_jwks(&self, keys: &[PublicKey]) -> Result<()> {
        let data = BTreeMap::from([(
            "jwks.json".to_owned(),
            Jwks::from_public_keys(keys).to_json(),
        )]);
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.jwks_config_map()),
                labels: Some(owned_labels(&self.rotation)),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        self.config_maps
            .patch(
                &self.jwks_config_map(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&config_map),
            )
            .await?;
        Ok(())
    }

    pub fn jwks_config_map(&self) -> String {
        format!("{}-jwks", self.rotation)
    }
}

/// A short, stable name for a key set, used to trigger roll-outs.
pub fn key_set_id(signing: KeyVersion, public: &[KeyVersion]) -> String {
    let public: Vec<String> = public.iter().map(ToString::to_string).collect();
    format!("signing-v{signing}.public-v{}", public.join("-"))
}

fn private_key_of(secret: &Secret) -> Result<PrivateKey> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let pem = secret
        .data
        .as_ref()
        .and_then(|d| d.get("key.pem"))
        .ok_or_else(|| Error::BadKeySecret {
            name: name.clone(),
            problem: "has no key.pem",
        })?;
    let keys = parse_pem(&pem.0)?;
    keys.private_keys()
        .next()
        .cloned()
        .ok_or(Error::BadKeySecret {
            name,
            problem: "holds no private key",
        })
}
