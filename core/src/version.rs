//! The two small newtypes every other module speaks in.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A signing-key version: 1 for the key a cluster was created with, N+1 for
/// the key a rotation from N introduces. Versions never decrease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyVersion(u64);

impl KeyVersion {
    /// The version of the key a cluster starts with.
    pub const FIRST: KeyVersion = KeyVersion(1);

    pub const fn new(version: u64) -> KeyVersion {
        KeyVersion(version)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version a rotation from `self` introduces, or `None` at `u64::MAX`.
    pub fn next(self) -> Option<KeyVersion> {
        self.0.checked_add(1).map(KeyVersion)
    }
}

impl fmt::Display for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A JWS key id. For keys of this project it is what kube-apiserver derives:
/// base64url (unpadded) of SHA-256 over the DER SubjectPublicKeyInfo.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn new(kid: impl Into<String>) -> KeyId {
        KeyId(kid.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
