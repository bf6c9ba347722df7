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
use crate::provenance::{Kind, NotOurs, Sealer, Subject};

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
/// The kid of the key a key Secret holds, for operators (never trusted:
/// the key itself is read).
pub const ANNOTATION_KID: &str = "ksa.dev/kid";
/// The key set the API server key Secret holds, which triggers roll-outs.
pub const ANNOTATION_KEY_SET: &str = "ksa.dev/key-set";
/// What `kubectl apply` leaves on an object it created.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Secret the API servers of `rotation` mount when the rotation names
/// none (`spec.rollout.keySecret`).
pub fn default_key_secret(rotation: &str) -> String {
    format!("{rotation}-apiserver-keys")
}

/// The labels of every object ksa writes for `rotation`.
pub fn owned_labels(rotation: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_ROTATION.to_owned(), rotation.to_owned()),
    ])
}

/// The key store of one rotation resource.
///
/// The controller's store is [`KeyStore::sealed`]: it seals every object it
/// writes and uses only keys whose seal verifies (`provenance`), refusing
/// a planted one by name. An operator's store ([`KeyStore::new`]: `ksa keys
/// import`, the tests' set-up) has no sealing key: it writes unsealed
/// objects, which the controller seals only once every API server shows it
/// signs with and accepts that key, and reads without checking.
#[derive(Clone)]
pub struct KeyStore {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    namespace: String,
    rotation: String,
    sealer: Option<Sealer>,
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
            namespace: namespace.to_owned(),
            rotation: rotation.to_owned(),
            sealer: None,
        }
    }

    /// The controller's store: every object it writes is sealed with
    /// `sealer`, and only keys sealed with it are used.
    pub fn sealed(
        client: kube::Client,
        namespace: &str,
        rotation: &str,
        sealer: Sealer,
    ) -> KeyStore {
        KeyStore {
            sealer: Some(sealer),
            ..KeyStore::new(client, namespace, rotation)
        }
    }

    /// Checks a key Secret of `version` read from the API: its name is the
    /// version's, and, in a sealed store, its seal verifies.
    fn check_key_secret(&self, version: KeyVersion, secret: &Secret) -> Result<(), NotOurs> {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        let subject = Subject {
            kind: Kind::KeySecret,
            namespace: &self.namespace,
            name,
        };
        if name != self.secret_name(version) {
            return Err(NotOurs::new(
                &subject,
                "it is labelled as a key version whose Secret has another name",
            ));
        }
        match &self.sealer {
            Some(sealer) => sealer.check_secret(Kind::KeySecret, &self.namespace, secret),
            None => Ok(()),
        }
    }

    /// The key Secrets labelled for this rotation whose seal does not
    /// verify, with the version each is labelled as and the key it holds
    /// (`None` when it holds none). An operator's import is among them until
    /// the controller has checked and sealed it.
    pub async fn unsealed(&self) -> Result<Vec<Unsealed>> {
        let selector = format!("{LABEL_ROTATION}={},{LABEL_KEY_VERSION}", self.rotation);
        let list = self
            .secrets
            .list(&ListParams::default().labels(&selector))
            .await?;
        let mut found = Vec::new();
        for secret in list {
            let version = key_version_label(&secret);
            // Labelled, but not under a key's own name: never used (see
            // `public_keys`), so nothing to refuse.
            if let Some(version) = version
                && secret.metadata.name.as_deref() != Some(self.secret_name(version).as_str())
            {
                continue;
            }
            let refused = match version {
                Some(version) => self.check_key_secret(version, &secret).err(),
                None => Some(NotOurs::new(
                    &Subject {
                        kind: Kind::KeySecret,
                        namespace: &self.namespace,
                        name: secret.metadata.name.as_deref().unwrap_or_default(),
                    },
                    "its key-version label is not a version",
                )),
            };
            if let Some(refused) = refused {
                found.push(Unsealed {
                    version,
                    key: private_key_of(&secret).ok(),
                    refused,
                    secret,
                });
            }
        }
        Ok(found)
    }

    /// Seals the operator's key Secret of `version` as the controller's,
    /// once the caller has checked that every API server signs with and
    /// accepts `key`: the Secret must still hold exactly that key (its data
    /// is immutable, and the patch is conditional on what was read).
    pub async fn adopt(&self, unsealed: &Unsealed, key: &PrivateKey) -> Result<()> {
        let Some(sealer) = &self.sealer else {
            return Ok(());
        };
        let Some(version) = unsealed.version else {
            return Err(unsealed.refused.clone().into());
        };
        let secret = &unsealed.secret;
        let held = private_key_of(secret)?;
        if held.kid() != key.kid()
            || secret.metadata.name.as_deref() != Some(self.secret_name(version).as_str())
            || !metadata_is_clean(&secret.metadata, &[ANNOTATION_KID])
        {
            return Err(unsealed.refused.clone().into());
        }
        // The seal covers exactly what it holds; anything else in it makes
        // the seal fail later, and it is refused then.
        let mut sealed = secret.clone();
        sealer.seal_secret(Kind::KeySecret, &self.namespace, &mut sealed);
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": secret.metadata.resource_version,
                "annotations": {crate::provenance::ANNOTATION: sealed
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::provenance::ANNOTATION))},
            }
        });
        self.secrets
            .patch(
                &self.secret_name(version),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
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
            let Some(version) = key_version_label(&secret) else {
                continue;
            };
            // A Secret under another name is not a key of this store,
            // whatever its labels say: never used, and no reason to stop.
            if secret.metadata.name.as_deref() != Some(self.secret_name(version).as_str()) {
                continue;
            }
            // A Secret under a key's own name that ksa did not seal is
            // refused by name, never skipped.
            self.check_key_secret(version, &secret)?;
            let key = private_key_of(&secret)?;
            keys.insert(version, key.public_key().clone());
        }
        Ok(keys)
    }

    pub async fn private_key(&self, version: KeyVersion) -> Result<PrivateKey> {
        let name = self.secret_name(version);
        match self.secrets.get_opt(&name).await? {
            Some(secret) => {
                self.check_key_secret(version, &secret)?;
                private_key_of(&secret)
            }
            None => Err(Error::MissingKey {
                version,
                secret: name,
            }),
        }
    }

    /// The key stored as `version`, read without checking its seal: for
    /// `ksa keys import`, which compares it whole with the key it brings
    /// (a kid says only what the public half is), and `rotate`'s check that
    /// it was imported. `None` when there is none.
    pub async fn stored_key(&self, version: KeyVersion) -> Result<Option<PrivateKey>> {
        match self.secrets.get_opt(&self.secret_name(version)).await? {
            Some(secret) => Ok(Some(private_key_of(&secret)?)),
            None => Ok(None),
        }
    }

    /// Stores a key version unless it exists (a repeated Generate keeps the
    /// first key). A sealed store accepts an existing Secret only when it
    /// sealed it itself (a Generate applied again after a crash); any other
    /// is refused by name, never adopted.
    pub async fn create(&self, version: KeyVersion, key: &PrivateKey) -> Result<()> {
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name(version)),
                labels: Some({
                    let mut labels = owned_labels(&self.rotation);
                    labels.insert(LABEL_KEY_VERSION.to_owned(), version.to_string());
                    labels
                }),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION_KID.to_owned(),
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
        if let Some(sealer) = &self.sealer {
            sealer.seal_secret(Kind::KeySecret, &self.namespace, &mut secret);
        }
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                if self.sealer.is_some() {
                    let name = self.secret_name(version);
                    match self.secrets.get_opt(&name).await? {
                        Some(existing) => self.check_key_secret(version, &existing)?,
                        None => {
                            return Err(Error::MissingKey {
                                version,
                                secret: name,
                            });
                        }
                    }
                }
                Ok(())
            }
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
        if let (Some(sealer), Some(current)) = (&self.sealer, &current) {
            self.check_api_server_keys(sealer, current).await?;
        }
        let sealed = current.as_ref().is_some_and(|current| {
            self.sealer.as_ref().is_none_or(|sealer| {
                sealer
                    .check_secret(Kind::ApiServerKeys, &self.namespace, current)
                    .is_ok()
            })
        });
        let unchanged = sealed
            && current
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .is_some_and(|d| {
                    d.get("sa.pub").map(|b| b.0.as_slice()) == Some(sa_pub.as_bytes())
                        && d.get("sa.key").map(|b| b.0.as_slice())
                            == Some(signing_key.to_pem().as_bytes())
                });
        if !unchanged {
            let mut secret =
                self.api_server_keys_secret(secret_name, signing, public, &signing_key, sa_pub);
            if let Some(sealer) = &self.sealer {
                sealer.seal_secret(Kind::ApiServerKeys, &self.namespace, &mut secret);
            }
            write_owned(&self.secrets, current.as_ref(), secret, || {
                NotOurs::new(
                    &Subject {
                        kind: Kind::ApiServerKeys,
                        namespace: &self.namespace,
                        name: secret_name,
                    },
                    "someone else created it while ksa was writing it",
                )
            })
            .await?;
        }
        self.publish_jwks(&public_keys).await?;
        Ok(!unchanged)
    }

    /// The Secret the API servers mount, as ksa writes it: `sa.key` signs,
    /// `sa.pub` verifies, with ksa's labels and the key set it holds.
    fn api_server_keys_secret(
        &self,
        secret_name: &str,
        signing: KeyVersion,
        public: &[KeyVersion],
        signing_key: &PrivateKey,
        sa_pub: String,
    ) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.to_owned()),
                labels: Some(owned_labels(&self.rotation)),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION_KEY_SET.to_owned(),
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
        }
    }

    /// Whether the Secret the API servers mount holds `key` as `sa.key`
    /// (`None`: it does not exist); reads only, so that an import can
    /// refuse before it writes anything.
    pub async fn api_server_keys_hold(
        &self,
        secret_name: &str,
        key: &PrivateKey,
    ) -> Result<Option<ApiServerKeysImport>> {
        let Some(existing) = self.secrets.get_opt(secret_name).await? else {
            return Ok(None);
        };
        Ok(Some(api_server_keys_import(&existing, key)))
    }

    /// The operator's onboarding (`ksa keys import`): creates the Secret
    /// the API servers mount, holding `key` as version `version`, the one
    /// key they sign with and accept, unless it exists. One that exists is
    /// left as it is: it either holds this key already or is reported.
    /// An operator's store only: the controller writes it with
    /// [`KeyStore::publish`].
    pub async fn import_api_server_keys(
        &self,
        secret_name: &str,
        version: KeyVersion,
        key: &PrivateKey,
    ) -> Result<ApiServerKeysImport> {
        if let Some(found) = self.api_server_keys_hold(secret_name, key).await? {
            return Ok(found);
        }
        let secret = self.api_server_keys_secret(
            secret_name,
            version,
            &[version],
            key,
            public_keys_to_pem(std::slice::from_ref(key.public_key())),
        );
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => Ok(ApiServerKeysImport::Created),
            // Made meanwhile by someone else: read what it holds.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(self
                .api_server_keys_hold(secret_name, key)
                .await?
                .unwrap_or(ApiServerKeysImport::HoldsAnother {
                    kid: None,
                    also_trusted: 0,
                })),
            Err(error) => Err(error.into()),
        }
    }

    /// Writes the JWKS ConfigMap of `keys` (served at the controller's
    /// `/jwks/NAMESPACE/NAME`), sealed in a sealed store; refuses one
    /// someone else wrote that holds anything ksa would not write.
    pub async fn publish_jwks(&self, keys: &[PublicKey]) -> Result<()> {
        let name = self.jwks_config_map();
        let current = self.config_maps.get_opt(&name).await?;
        if let Some(sealer) = &self.sealer
            && let Some(current) = &current
            && sealer
                .check_config_map(Kind::Jwks, &self.namespace, current)
                .is_err()
        {
            // Written by someone else: taken over only when nothing of
            // theirs would be kept or lost.
            let extra_data = current
                .data
                .iter()
                .flatten()
                .any(|(key, _)| key != JWKS_KEY)
                || current.binary_data.as_ref().is_some_and(|b| !b.is_empty());
            if extra_data || !metadata_is_clean(&current.metadata, &[]) {
                return Err(NotOurs::new(
                    &Subject {
                        kind: Kind::Jwks,
                        namespace: &self.namespace,
                        name: &name,
                    },
                    "it has no valid seal and holds data or metadata ksa did not write",
                )
                .into());
            }
        }
        let data = BTreeMap::from([(JWKS_KEY.to_owned(), Jwks::from_public_keys(keys).to_json())]);
        let mut config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.jwks_config_map()),
                labels: Some(owned_labels(&self.rotation)),
                ..ObjectMeta::default()
            },
            data: Some(data),
            ..ConfigMap::default()
        };
        if let Some(sealer) = &self.sealer {
            sealer.seal_config_map(Kind::Jwks, &self.namespace, &mut config_map);
        }
        write_owned(&self.config_maps, current.as_ref(), config_map, || {
            NotOurs::new(
                &Subject {
                    kind: Kind::Jwks,
                    namespace: &self.namespace,
                    name: &name,
                },
                "someone else created it while ksa was writing it",
            )
        })
        .await
    }

    pub fn jwks_config_map(&self) -> String {
        format!("{}-jwks", self.rotation)
    }

    /// Checks the API server key Secret before it is written: ksa's own
    /// (its seal verifies), or an operator's made to onboard the cluster
    /// (it holds a key ksa stores and nothing else). Either way it must
    /// carry nothing of another's: an annotation a replicator follows, an
    /// owner whose deletion collects it, a finalizer, a label ksa does not
    /// set, or another data entry would make ksa's write copy the signing
    /// key somewhere or lose someone's data.
    async fn check_api_server_keys(&self, sealer: &Sealer, secret: &Secret) -> Result<()> {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        let subject = Subject {
            kind: Kind::ApiServerKeys,
            namespace: &self.namespace,
            name,
        };
        if !metadata_is_clean(&secret.metadata, &[ANNOTATION_KEY_SET]) {
            return Err(NotOurs::new(
                &subject,
                "it carries annotations, labels, owners or finalizers ksa does not write",
            )
            .into());
        }
        if secret.string_data.is_some()
            || secret
                .data
                .iter()
                .flatten()
                .any(|(key, _)| key != "sa.key" && key != "sa.pub")
            || secret.type_.as_deref().is_some_and(|t| t != "Opaque")
        {
            return Err(NotOurs::new(&subject, "it holds data ksa does not write").into());
        }
        if sealer
            .check_secret(Kind::ApiServerKeys, &self.namespace, secret)
            .is_ok()
        {
            return Ok(());
        }
        // An operator's: its sa.key must be a key ksa stores (and so sealed).
        let held = secret
            .data
            .as_ref()
            .and_then(|d| d.get("sa.key"))
            .and_then(|pem| parse_pem(&pem.0).ok())
            .and_then(|keys| keys.private_keys().next().map(|k| k.kid().clone()));
        let stored = self.public_keys().await?;
        if held.is_some_and(|kid| stored.values().any(|key| *key.kid() == kid)) {
            Ok(())
        } else {
            Err(NotOurs::new(
                &subject,
                "it has no valid seal and its sa.key is no key ksa stores",
            )
            .into())
        }
    }
}

/// What `ksa keys import` found of the Secret the API servers mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiServerKeysImport {
    /// It did not exist and now holds the imported key.
    Created,
    /// It already held the imported key as its signing key: nothing changed.
    AlreadyThere,
    /// It holds another signing key (its kid, when it holds a key at all),
    /// or the imported one with an `sa.pub` that is not that key's public
    /// half alone (`also_trusted`: how many other public keys it holds,
    /// which the API servers accept too): nothing changed.
    HoldsAnother {
        kid: Option<String>,
        also_trusted: usize,
    },
}

/// The data entry of the JWKS ConfigMap.
pub const JWKS_KEY: &str = "jwks.json";

/// A key Secret labelled for a rotation whose seal does not verify.
#[derive(Clone)]
pub struct Unsealed {
    /// The version its label names, if it is one.
    pub version: Option<KeyVersion>,
    /// The key it holds, if any.
    pub key: Option<PrivateKey>,
    /// Why it is not ksa's.
    pub refused: NotOurs,
    secret: Secret,
}

impl std::fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealed")
            .field("version", &self.version)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

/// Writes `object` as ksa's, never into an object someone else made or
/// changed since `current` was read: created when `current` is `None` (a
/// 409 means another made it meanwhile, and is refused by name), otherwise
/// applied on the condition that it is still the one read (its
/// resourceVersion; the API server answers 409 when it is not, and the next
/// pass reads and checks it again).
pub async fn write_owned<K>(
    api: &Api<K>,
    current: Option<&K>,
    mut object: K,
    refused: impl FnOnce() -> NotOurs,
) -> Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match current {
        None => match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(refused().into()),
            Err(error) => Err(error.into()),
        },
        Some(current) => {
            object.meta_mut().resource_version = current.meta().resource_version.clone();
            let name = object.meta().name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await?;
            Ok(())
        }
    }
}

fn key_version_label(secret: &Secret) -> Option<KeyVersion> {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_KEY_VERSION))
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v > 0)
        .map(KeyVersion::new)
}

/// Whether an object carries nothing ksa does not write: only ksa's labels,
/// only the seal, `kubectl apply`'s record and the annotations `also`, no
/// owners and no finalizers.
pub fn metadata_is_clean(metadata: &ObjectMeta, also: &[&str]) -> bool {
    let labels_ok = metadata.labels.iter().flatten().all(|(key, _)| {
        [LABEL_MANAGED_BY, LABEL_ROTATION, LABEL_KEY_VERSION].contains(&key.as_str())
    });
    let annotations_ok = metadata.annotations.iter().flatten().all(|(key, _)| {
        key == crate::provenance::ANNOTATION || key == LAST_APPLIED || also.contains(&key.as_str())
    });
    labels_ok
        && annotations_ok
        && metadata.owner_references.as_ref().is_none_or(Vec::is_empty)
        && metadata.finalizers.as_ref().is_none_or(Vec::is_empty)
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

/// What an existing API server key Secret means for an import of `key`:
/// it holds that very key as `sa.key` (the whole key, not its kid: a kid
/// names only the public half) and that key's public half alone as
/// `sa.pub` (every key in it is one the API servers accept), or something
/// else.
fn api_server_keys_import(existing: &Secret, key: &PrivateKey) -> ApiServerKeysImport {
    let entry = |name: &str| {
        existing
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .and_then(|pem| parse_pem(&pem.0).ok())
    };
    let held = entry("sa.key").and_then(|keys| keys.private_keys().next().cloned());
    let trusted: Vec<PublicKey> = entry("sa.pub")
        .map(|keys| keys.public_keys().cloned().collect())
        .unwrap_or_default();
    match held {
        Some(held) if *held.to_pem() == *key.to_pem() => {
            let others = trusted
                .iter()
                .filter(|public| public.to_pem() != key.public_key().to_pem())
                .count();
            if others == 0 && trusted.len() == 1 {
                ApiServerKeysImport::AlreadyThere
            } else {
                ApiServerKeysImport::HoldsAnother {
                    kid: Some(held.kid().to_string()),
                    also_trusted: others,
                }
            }
        }
        held => ApiServerKeysImport::HoldsAnother {
            kid: held.map(|k| k.kid().to_string()),
            also_trusted: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksa_core::crypto::{AwsLc, SigningBackend as _};
    use ksa_core::key::KeySpec;

    fn holding(sa_key: &[u8]) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                "sa.key".to_owned(),
                ByteString(sa_key.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    /// What the import writes: `sa.key` and its public half as `sa.pub`.
    fn mounted(key: &PrivateKey, trusted: &[&PublicKey]) -> Secret {
        let mut secret = holding(key.to_pem().as_bytes());
        secret.data.get_or_insert_with(BTreeMap::new).insert(
            "sa.pub".to_owned(),
            ByteString(public_keys_to_pem(trusted.iter().copied()).into_bytes()),
        );
        secret
    }

    #[test]
    fn an_api_server_key_secret_holds_the_import_only_with_the_whole_key() {
        let backend = AwsLc::new();
        let key = backend.generate(KeySpec::EcP256).expect("a key");
        let other = backend.generate(KeySpec::EcP256).expect("a key");
        assert_eq!(
            api_server_keys_import(&mounted(&key, &[key.public_key()]), &key),
            ApiServerKeysImport::AlreadyThere
        );
        assert_eq!(
            api_server_keys_import(&mounted(&other, &[other.public_key()]), &key),
            ApiServerKeysImport::HoldsAnother {
                kid: Some(other.kid().to_string()),
                also_trusted: 0,
            }
        );
        assert_eq!(
            api_server_keys_import(&holding(b"not a key"), &key),
            ApiServerKeysImport::HoldsAnother {
                kid: None,
                also_trusted: 0,
            }
        );
        assert_eq!(
            api_server_keys_import(&Secret::default(), &key),
            ApiServerKeysImport::HoldsAnother {
                kid: None,
                also_trusted: 0,
            }
        );
    }

    #[test]
    fn an_api_server_key_secret_that_trusts_another_key_does_not_hold_the_import() {
        let backend = AwsLc::new();
        let key = backend.generate(KeySpec::EcP256).expect("a key");
        let planted = backend.generate(KeySpec::EcP256).expect("a key");
        let kid = Some(key.kid().to_string());
        // The API servers would accept tokens the planted key signs.
        assert_eq!(
            api_server_keys_import(
                &mounted(&key, &[key.public_key(), planted.public_key()]),
                &key
            ),
            ApiServerKeysImport::HoldsAnother {
                kid: kid.clone(),
                also_trusted: 1,
            }
        );
        // An sa.pub without the key's own public half, or none at all.
        assert_eq!(
            api_server_keys_import(&mounted(&key, &[planted.public_key()]), &key),
            ApiServerKeysImport::HoldsAnother {
                kid: kid.clone(),
                also_trusted: 1,
            }
        );
        assert_eq!(
            api_server_keys_import(&holding(key.to_pem().as_bytes()), &key),
            ApiServerKeysImport::HoldsAnother {
                kid,
                also_trusted: 0,
            }
        );
    }
}
