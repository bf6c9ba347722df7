//! The keys a verifier trusts, each loaded into a crypto backend once.

use std::fmt;

use crate::crypto::{CryptoBackend, VerifyingKey};
use crate::key::{KeyError, PublicKey};
use crate::{KeyId, KeyVersion};

/// A public key a verifier accepts, under the key id tokens name it by, and
/// with its rotation version when that is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    pub kid: KeyId,
    pub key: PublicKey,
    pub version: Option<KeyVersion>,
}

impl TrustedKey {
    /// A key under an explicit key id (a JWKS may name keys as it likes).
    pub fn new(kid: KeyId, key: PublicKey) -> TrustedKey {
        TrustedKey {
            kid,
            key,
            version: None,
        }
    }

    /// A key under the key id kube-apiserver derives for it.
    pub fn derived(key: PublicKey) -> TrustedKey {
        TrustedKey::new(key.kid().clone(), key)
    }

    pub fn with_version(mut self, version: KeyVersion) -> TrustedKey {
        self.version = Some(version);
        self
    }
}

pub(crate) struct LoadedKey {
    pub(crate) trusted: TrustedKey,
    pub(crate) verifier: Box<dyn VerifyingKey>,
}

/// Trusted keys loaded into a crypto backend, ready to verify tokens.
pub struct KeySet {
    pub(crate) keys: Vec<LoadedKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| &k.trusted))
            .finish()
    }
}

/// A key that a crypto backend would not load, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct RefusedKey {
    pub kid: KeyId,
    pub error: KeyError,
}

impl KeySet {
    /// Loads every key, or fails on the first one the backend refuses.
    pub fn new(
        keys: impl IntoIterator<Item = TrustedKey>,
        backend: &dyn CryptoBackend,
    ) -> Result<KeySet, KeyError> {
        let keys = keys
            .into_iter()
            .map(|trusted| {
                let verifier = backend.verifying_key(&trusted.key)?;
                Ok(LoadedKey { trusted, verifier })
            })
            .collect::<Result<_, KeyError>>()?;
        Ok(KeySet { keys })
    }

    /// Loads the keys the backend accepts and returns the others with the
    /// reason, so that one bad key in a published JWKS does not make every
    /// other key unusable. The caller should say which keys were refused.
    pub fn load_usable(
        keys: impl IntoIterator<Item = TrustedKey>,
        backend: &dyn CryptoBackend,
    ) -> (KeySet, Vec<RefusedKey>) {
        let mut loaded = Vec::new();
        let mut refused = Vec::new();
        for trusted in keys {
            match backend.verifying_key(&trusted.key) {
                Ok(verifier) => loaded.push(LoadedKey { trusted, verifier }),
                Err(error) => refused.push(RefusedKey {
                    kid: trusted.kid,
                    error,
                }),
            }
        }
        (KeySet { keys: loaded }, refused)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
