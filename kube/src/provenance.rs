//! Provenance: ksa acts only on what it made.
//!
//! A name and a label prove nothing: anyone who may create a Secret or a
//! ConfigMap in a rotation's namespace can give it any name and any label.
//! So every object ksa writes and later trusts (a key Secret, the API server
//! key Secret, the JWKS and endpoint ConfigMaps, the rotation's stored
//! state) carries a **seal**: an HMAC-SHA256, under a key only the
//! controller holds, over what the object is (its kind, namespace and name)
//! and everything it says (every data entry, or the state). Before ksa uses
//! such an object it checks the seal ([`Sealer::check`]); an object whose
//! seal is missing or wrong is refused with [`NotOurs`], which names it and
//! says how to fix it, and is never used, served, adopted or overwritten.
//!
//! The sealing key is 32 random bytes in the Secret [`SECRET_NAME`] of the
//! controller's own namespace (where only cluster administrators write),
//! made by the first controller that starts ([`Sealer::load_or_create`]).
//! A seal is bound to its object's namespace and name, so a sealed object
//! copied elsewhere does not verify, and to all of its data, so a sealed
//! object with one more entry does not either.
//!
//! Objects an operator brings in (the current key through `ksa keys
//! import`, the API server key Secret a hosted control plane already
//! mounts) carry no seal: the controller seals them once, and only after
//! every API server instance has shown that it signs with and accepts
//! exactly that key (`reconcile`'s adoption). This module decides nothing
//! else: it is the one place a seal is made and checked.

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::error::{Error, Result};

/// The annotation that holds an object's seal.
pub const ANNOTATION: &str = "ksa.dev/seal";
/// The Secret, in the controller's namespace, that holds the sealing key.
pub const SECRET_NAME: &str = "ksa-seal-key";
/// The data entry of [`SECRET_NAME`] that holds the key.
pub const SECRET_KEY: &str = "key";
/// The sealing key's length, in bytes.
const KEY_LEN: usize = 32;
/// Every seal starts its message with this, so that a seal of this scheme
/// can never be taken for another's.
const DOMAIN: &[u8] = b"ksa.dev/seal/v1";

/// What a sealed object is: its kind, namespace and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The kinds of object ksa seals. A seal of one kind never verifies as
/// another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A key Secret (`NAME-signing-key-vN`).
    KeySecret,
    /// The Secret the API servers mount (`NAME-apiserver-keys`).
    ApiServerKeys,
    /// The JWKS ConfigMap (`NAME-jwks`).
    Jwks,
    /// The OIDC endpoint's ConfigMap (`NAME-oidc`).
    Endpoint,
    /// The stored state of a rotation resource (its status).
    State,
    /// The audit webhook Secret the API servers mount
    /// (`NAME-audit-webhook`: an audit policy and a kubeconfig naming the
    /// controller's audit endpoint, with its bearer token).
    AuditWebhook,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::KeySecret => "key-secret",
            Kind::ApiServerKeys => "apiserver-keys",
            Kind::Jwks => "jwks",
            Kind::Endpoint => "endpoint",
            Kind::State => "state",
            Kind::AuditWebhook => "audit-webhook",
        }
    }

    /// The resource kind, for messages.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::KeySecret | Kind::ApiServerKeys | Kind::AuditWebhook => "Secret",
            Kind::Jwks | Kind::Endpoint => "ConfigMap",
            Kind::State => "KSASigningKeyRotation",
        }
    }
}

/// Why an object is refused: it is not ksa's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{resource} {namespace}/{name} is not ksa's ({problem}): ksa will not use, serve or \
     overwrite it. {fix}"
)]
pub struct NotOurs {
    pub resource: &'static str,
    pub namespace: String,
    pub name: String,
    pub problem: &'static str,
    pub fix: &'static str,
}

impl NotOurs {
    pub fn new(subject: &Subject<'_>, problem: &'static str) -> NotOurs {
        let fix = match subject.kind {
            Kind::KeySecret => {
                "Find out who created it; delete it if nobody needs it (ksa makes the next key \
                 itself), or import the cluster's current key with `ksa keys import`."
            }
            Kind::ApiServerKeys => {
                "The API server key Secret must hold the key ksa stores and nothing else of \
                 another's (no other annotations, labels, owners or finalizers); find out who \
                 created or changed it, then recreate it from `sa.key`/`sa.pub` with \
                 `kubectl create secret generic`."
            }
            Kind::Jwks | Kind::Endpoint => {
                "Find out who created or changed it, then delete it: ksa writes it anew."
            }
            Kind::AuditWebhook => {
                "Find out who created or changed it (it tells the API servers where to send \
                 their audit events), then delete it: ksa writes it anew, and the API servers \
                 must be given the new one."
            }
            Kind::State => {
                "Its status was written by someone other than ksa-controller; restore the \
                 status ksa wrote (from a backup or `kubectl get -o yaml` taken before), or \
                 delete and recreate the rotation once no rotation is in progress."
            }
        };
        NotOurs {
            resource: subject.kind.resource(),
            namespace: subject.namespace.to_owned(),
            name: subject.name.to_owned(),
            problem,
            fix,
        }
    }
}

/// The sealing key. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Sealer {
    key: hmac::Key,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer with `key`, which must be [`KEY_LEN`] bytes.
    pub fn from_bytes(key: &[u8]) -> Option<Sealer> {
        (key.len() == KEY_LEN).then(|| Sealer {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        })
    }

    /// A sealer with a new random key, and the key's bytes.
    pub fn generate() -> Result<(Sealer, zeroize::Zeroizing<Vec<u8>>)> {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = zeroize::Zeroizing::new(vec![0u8; KEY_LEN]);
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::BadResponse {
                what: "system random number generator",
                detail: "failed".into(),
            })?;
        let sealer = Sealer::from_bytes(&bytes).ok_or(Error::BadResponse {
            what: "sealing key",
            detail: "wrong length".into(),
        })?;
        Ok((sealer, bytes))
    }

    /// The sealing key of the controller in `namespace`: read from
    /// [`SECRET_NAME`], or made and stored there by the first controller
    /// that starts (of two racing, the one whose create lands wins and both
    /// use its key).
    pub async fn load_or_create(client: &kube::Client, namespace: &str) -> Result<Sealer> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for _ in 0..3 {
            if let Some(secret) = api.get_opt(SECRET_NAME).await? {
                return Sealer::of_secret(&secret, namespace);
            }
            let (_, bytes) = Sealer::generate()?;
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(SECRET_NAME.to_owned()),
                    labels: Some(BTreeMap::from([(
                        crate::keystore::LABEL_MANAGED_BY.to_owned(),
                        crate::keystore::MANAGED_BY.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([(
                    SECRET_KEY.to_owned(),
                    ByteString(bytes.to_vec()),
                )])),
                immutable: Some(true),
                ..Secret::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(created) => return Sealer::of_secret(&created, namespace),
                // Another replica made it first: read theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::BadResponse {
            what: "sealing key Secret",
            detail: format!("{namespace}/{SECRET_NAME} could be neither read nor created"),
        })
    }

    fn of_secret(secret: &Secret, namespace: &str) -> Result<Sealer> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(SECRET_KEY))
            .and_then(|key| Sealer::from_bytes(&key.0))
            .ok_or_else(|| Error::BadResponse {
                what: "sealing key Secret",
                detail: format!(
                    "{namespace}/{SECRET_NAME} must hold {KEY_LEN} bytes under `{SECRET_KEY}`; \
                     delete it and the controller makes a new one (every object ksa sealed \
                     with the old key is then refused until it is written anew)"
                ),
            })
    }

    /// The seal of `subject` holding `entries` (every data entry, in key
    /// order).
    pub fn seal<'e>(
        &self,
        subject: &Subject<'_>,
        entries: impl IntoIterator<Item = (&'e str, &'e [u8])>,
    ) -> String {
        let tag = hmac::sign(&self.key, &message(subject, entries));
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `seal` is the seal of `subject` holding `entries`, compared
    /// in constant time.
    pub fn verify<'e>(
        &self,
        subject: &Subject<'_>,
        entries: impl IntoIterator<Item = (&'e str, &'e [u8])>,
        seal: &str,
    ) -> bool {
        let Ok(tag) = URL_SAFE_NO_PAD.decode(seal) else {
            return false;
        };
        hmac::verify(&self.key, &message(subject, entries), &tag).is_ok()
    }

    /// Seals a Secret: its annotation [`ANNOTATION`] over every data entry.
    pub fn seal_secret(&self, kind: Kind, namespace: &str, secret: &mut Secret) {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let subject = Subject {
            kind,
            namespace,
            name: &name,
        };
        let seal = self.seal(&subject, secret_entries(secret));
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION.to_owned(), seal);
    }

    /// Checks a Secret ksa sealed as `kind` in `namespace`.
    pub fn check_secret(
        &self,
        kind: Kind,
        namespace: &str,
        secret: &Secret,
    ) -> Result<(), NotOurs> {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        let subject = Subject {
            kind,
            namespace,
            name,
        };
        if secret.string_data.is_some() {
            return Err(NotOurs::new(&subject, "it has stringData"));
        }
        self.check(&subject, &secret.metadata, secret_entries(secret))
    }

    /// Seals a ConfigMap: its annotation [`ANNOTATION`] over every data entry.
    pub fn seal_config_map(&self, kind: Kind, namespace: &str, config_map: &mut ConfigMap) {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        let subject = Subject {
            kind,
            namespace,
            name: &name,
        };
        let seal = self.seal(&subject, config_map_entries(config_map));
        config_map
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION.to_owned(), seal);
    }

    /// Checks a ConfigMap ksa sealed as `kind` in `namespace`. A ConfigMap
    /// with binary data is never ksa's.
    pub fn check_config_map(
        &self,
        kind: Kind,
        namespace: &str,
        config_map: &ConfigMap,
    ) -> Result<(), NotOurs> {
        let name = config_map.metadata.name.as_deref().unwrap_or_default();
        let subject = Subject {
            kind,
            namespace,
            name,
        };
        if config_map
            .binary_data
            .as_ref()
            .is_some_and(|b| !b.is_empty())
        {
            return Err(NotOurs::new(&subject, "it has binaryData"));
        }
        self.check(
            &subject,
            &config_map.metadata,
            config_map_entries(config_map),
        )
    }

    fn check<'e>(
        &self,
        subject: &Subject<'_>,
        metadata: &ObjectMeta,
        entries: impl IntoIterator<Item = (&'e str, &'e [u8])>,
    ) -> Result<(), NotOurs> {
        let Some(seal) = metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
        else {
            return Err(NotOurs::new(subject, "it has no seal"));
        };
        if self.verify(subject, entries, seal) {
            Ok(())
        } else {
            Err(NotOurs::new(
                subject,
                "its seal does not match its name and content",
            ))
        }
    }
}

/// A Secret's data entries, in key order.
pub fn secret_entries(secret: &Secret) -> impl Iterator<Item = (&str, &[u8])> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()))
}

/// A ConfigMap's data entries, in key order.
pub fn config_map_entries(config_map: &ConfigMap) -> impl Iterator<Item = (&str, &[u8])> {
    config_map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
}

/// The sealed message: the domain, the subject, then each entry, every
/// part prefixed with its length so that no two inputs share a message.
fn message<'e>(
    subject: &Subject<'_>,
    entries: impl IntoIterator<Item = (&'e str, &'e [u8])>,
) -> Vec<u8> {
    let mut message = Vec::new();
    let mut part = |bytes: &[u8]| {
        message.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        message.extend_from_slice(bytes);
    };
    part(DOMAIN);
    part(subject.kind.tag().as_bytes());
    part(subject.namespace.as_bytes());
    part(subject.name.as_bytes());
    for (key, value) in entries {
        part(key.as_bytes());
        part(value);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::from_bytes(&[7u8; KEY_LEN]).expect("32 bytes")
    }

    fn subject(name: &str) -> Subject<'_> {
        Subject {
            kind: Kind::KeySecret,
            namespace: "ns",
            name,
        }
    }

    #[test]
    fn a_seal_verifies_only_its_own_subject_and_content() {
        let sealer = sealer();
        let entries = [("key.pem", b"pem".as_slice())];
        let seal = sealer.seal(&subject("r-signing-key-v2"), entries);
        assert!(sealer.verify(&subject("r-signing-key-v2"), entries, &seal));
        // Another name, namespace, kind, content, entry or key: no.
        assert!(!sealer.verify(&subject("r-signing-key-v3"), entries, &seal));
        let other_namespace = Subject {
            namespace: "other",
            ..subject("r-signing-key-v2")
        };
        assert!(!sealer.verify(&other_namespace, entries, &seal));
        let other_kind = Subject {
            kind: Kind::Jwks,
            ..subject("r-signing-key-v2")
        };
        assert!(!sealer.verify(&other_kind, entries, &seal));
        assert!(!sealer.verify(
            &subject("r-signing-key-v2"),
            [("key.pem", b"pen".as_slice())],
            &seal
        ));
        assert!(!sealer.verify(
            &subject("r-signing-key-v2"),
            [("key.pem", b"pem".as_slice()), ("x", b"".as_slice())],
            &seal
        ));
        let other = Sealer::from_bytes(&[8u8; KEY_LEN]).expect("32 bytes");
        assert!(!other.verify(&subject("r-signing-key-v2"), entries, &seal));
        assert!(!sealer.verify(&subject("r-signing-key-v2"), entries, "not base64!"));
        assert!(!sealer.verify(&subject("r-signing-key-v2"), entries, ""));
    }

    #[test]
    fn lengths_keep_entries_apart() {
        // "ab" + "c" and "a" + "bc" must not seal alike.
        let sealer = sealer();
        let one = sealer.seal(&subject("n"), [("ab", b"c".as_slice())]);
        assert!(!sealer.verify(&subject("n"), [("a", b"bc".as_slice())], &one));
    }

    #[test]
    fn a_sealed_secret_checks_and_a_planted_one_is_refused_by_name() {
        let sealer = sealer();
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some("r-signing-key-v2".into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "key.pem".to_owned(),
                ByteString(b"pem".to_vec()),
            )])),
            ..Secret::default()
        };
        let planted = secret.clone();
        sealer.seal_secret(Kind::KeySecret, "ns", &mut secret);
        assert_eq!(sealer.check_secret(Kind::KeySecret, "ns", &secret), Ok(()));
        let refused = sealer
            .check_secret(Kind::KeySecret, "ns", &planted)
            .expect_err("no seal");
        assert_eq!(refused.name, "r-signing-key-v2");
        assert!(
            refused
                .to_string()
                .contains("Secret ns/r-signing-key-v2 is not ksa's (it has no seal)")
        );
        // A seal copied onto another key.
        let mut swapped = secret.clone();
        swapped.data = Some(BTreeMap::from([(
            "key.pem".to_owned(),
            ByteString(b"attacker".to_vec()),
        )]));
        assert!(
            sealer
                .check_secret(Kind::KeySecret, "ns", &swapped)
                .is_err()
        );
        // In another namespace.
        assert!(
            sealer
                .check_secret(Kind::KeySecret, "other", &secret)
                .is_err()
        );
    }

    #[test]
    fn a_config_map_with_binary_data_is_not_ours() {
        let sealer = sealer();
        let mut config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some("r-jwks".into()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("jwks.json".into(), "{}".into())])),
            ..ConfigMap::default()
        };
        sealer.seal_config_map(Kind::Jwks, "ns", &mut config_map);
        assert_eq!(
            sealer.check_config_map(Kind::Jwks, "ns", &config_map),
            Ok(())
        );
        assert!(
            sealer
                .check_config_map(Kind::Endpoint, "ns", &config_map)
                .is_err()
        );
        config_map.binary_data = Some(BTreeMap::from([("x".into(), ByteString(vec![1]))]));
        assert!(
            sealer
                .check_config_map(Kind::Jwks, "ns", &config_map)
                .is_err()
        );
    }

    #[test]
    fn debug_prints_no_key() {
        assert_eq!(format!("{:?}", sealer()), "Sealer(..)");
    }

    #[test]
    fn only_32_byte_keys() {
        assert!(Sealer::from_bytes(&[0; 31]).is_none());
        assert!(Sealer::from_bytes(&[0; 33]).is_none());
        assert!(Sealer::generate().is_ok());
    }
}
