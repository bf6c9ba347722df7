//! The three numbers of SPEC section 2 and the invariants that tie them.

use serde::{Deserialize, Serialize};

use crate::KeyVersion;

/// `tokenVersion`, `privateKeyVersion` and `publicKeyVersions`, in the order
/// the status message prints them.
///
/// Architecture invariant: a value of this type always satisfies SPEC
/// section 2: `publicKeyVersions` is ascending and non-empty, and holds both
/// other numbers. [`KeyVersions::new`] is the only constructor, and
/// deserialization goes through it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawKeyVersions", rename_all = "camelCase")]
pub struct KeyVersions {
    token_version: KeyVersion,
    private_key_version: KeyVersion,
    public_key_versions: Vec<KeyVersion>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawKeyVersions {
    token_version: KeyVersion,
    private_key_version: KeyVersion,
    public_key_versions: Vec<KeyVersion>,
}

impl TryFrom<RawKeyVersions> for KeyVersions {
    type Error = InvariantViolation;

    fn try_from(raw: RawKeyVersions) -> Result<Self, Self::Error> {
        KeyVersions::new(
            raw.token_version,
            raw.private_key_version,
            raw.public_key_versions,
        )
    }
}

/// Which invariant of SPEC section 2 a set of numbers breaks.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum InvariantViolation {
    #[error("publicKeyVersions is empty")]
    NoPublicKeys,
    #[error("publicKeyVersions {0:?} is not strictly ascending")]
    NotAscending(Vec<u64>),
    #[error("privateKeyVersion {0} is not in publicKeyVersions")]
    PrivateKeyNotTrusted(u64),
    #[error("tokenVersion {0} is not in publicKeyVersions")]
    TokenVersionNotTrusted(u64),
    #[error("key version 0 does not exist; versions start at 1")]
    VersionZero,
    #[error("{what} went down from {from} to {to}; versions never decrease")]
    Decreased {
        what: &'static str,
        from: u64,
        to: u64,
    },
    #[error("key version {0} left publicKeyVersions before the other numbers moved past it")]
    RetiredTooEarly(u64),
    #[error("a rotation that keeps the key must change the issuer, and has no Generate step")]
    NothingToRotate,
    #[error("issuers: {0}")]
    Issuer(#[from] crate::issuer::IssuerViolation),
}

impl KeyVersions {
    pub fn new(
        token_version: KeyVersion,
        private_key_version: KeyVersion,
        public_key_versions: Vec<KeyVersion>,
    ) -> Result<KeyVersions, InvariantViolation> {
        if public_key_versions.is_empty() {
            return Err(InvariantViolation::NoPublicKeys);
        }
        if public_key_versions.contains(&KeyVersion::new(0)) {
            return Err(InvariantViolation::VersionZero);
        }
        if public_key_versions.windows(2).any(|w| w[0] >= w[1]) {
            return Err(InvariantViolation::NotAscending(
                public_key_versions.iter().map(|v| v.get()).collect(),
            ));
        }
        if !public_key_versions.contains(&private_key_version) {
            return Err(InvariantViolation::PrivateKeyNotTrusted(
                private_key_version.get(),
            ));
        }
        if !public_key_versions.contains(&token_version) {
            return Err(InvariantViolation::TokenVersionNotTrusted(
                token_version.get(),
            ));
        }
        Ok(KeyVersions {
            token_version,
            private_key_version,
            public_key_versions,
        })
    }

    /// One key everywhere: a cluster at rest.
    pub fn settled(version: KeyVersion) -> KeyVersions {
        KeyVersions {
            token_version: version,
            private_key_version: version,
            public_key_versions: vec![version],
        }
    }

    pub fn token_version(&self) -> KeyVersion {
        self.token_version
    }

    pub fn private_key_version(&self) -> KeyVersion {
        self.private_key_version
    }

    pub fn public_key_versions(&self) -> &[KeyVersion] {
        &self.public_key_versions
    }

    /// Checks that `next` may follow `self`: no number goes down, and a
    /// version leaves `publicKeyVersions` only once both other numbers have
    /// moved past it.
    pub fn check_transition(&self, next: &KeyVersions) -> Result<(), InvariantViolation> {
        let pairs = [
            ("tokenVersion", self.token_version, next.token_version),
            (
                "privateKeyVersion",
                self.private_key_version,
                next.private_key_version,
            ),
            (
                "the newest public key version",
                self.newest_public(),
                next.newest_public(),
            ),
            (
                "the oldest public key version",
                self.oldest_public(),
                next.oldest_public(),
            ),
        ];
        for (what, from, to) in pairs {
            if to < from {
                return Err(InvariantViolation::Decreased {
                    what,
                    from: from.get(),
                    to: to.get(),
                });
            }
        }
        for gone in self
            .public_key_versions
            .iter()
            .filter(|v| !next.public_key_versions.contains(v))
        {
            if next.token_version <= *gone || next.private_key_version <= *gone {
                return Err(InvariantViolation::RetiredTooEarly(gone.get()));
            }
        }
        Ok(())
    }

    fn newest_public(&self) -> KeyVersion {
        self.public_key_versions[self.public_key_versions.len() - 1]
    }

    fn oldest_public(&self) -> KeyVersion {
        self.public_key_versions[0]
    }
}
