//! Legacy token Secrets in RefreshTokens: which are fresh, which ksa
//! re-mints, which it cannot re-mint (blocked), which the operator gave up
//! on, and which are cut off when the step ends.
//!
//! A tenant who may write Secrets in one namespace can keep a legacy token
//! stale for good: make its Secret `immutable` (every re-mint is refused),
//! or reset `data.token` each time ksa re-mints it. Such a Secret is
//! *blocked*: counted apart from the Secrets ksa still re-mints, named in
//! the status, and waited for only until [`Policy::legacy_token_deadline`]
//! after RefreshTokens began. The operator can give up on one sooner by
//! name ([`Policy::given_up_legacy_tokens`]). Either way the step then goes
//! on, and [`CutOff`] names the Secrets whose holders the Retire step cuts
//! off. So a tenant can delay a rotation, never stop it.
//!
//! [`assess`] decides on plain values of one Secret ([`LegacySecret`]);
//! the shells read the cluster into those values and record each verdict
//! in a [`LegacyTokens`] account, which [`super::step`] decides on.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{HolderReason, Holders, NamedHolder, Policy};

/// The field manager of ksa's re-mint writes: a later write of `data.token`
/// by any other manager replaced ksa's token.
pub const REMINT_FIELD_MANAGER: &str = "ksa-remint";

/// How long after RefreshTokens began the step waits for legacy tokens by
/// default: the kubelet's longest bound-token refresh, the bound the step
/// already has for pods.
pub const DEFAULT_LEGACY_TOKEN_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The shortest deadline honoured: ksa re-mints on every pass, and an
/// operator needs time to read the status and act before holders are cut
/// off.
pub const MIN_LEGACY_TOKEN_DEADLINE: Duration = Duration::from_secs(3600);

/// What is seen of one legacy token Secret, as plain values. Every field
/// comes from an object a tenant wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LegacySecret {
    pub namespace: String,
    pub name: String,
    /// The kid of the token it holds; `None` when it holds none, or one
    /// that does not decode.
    pub token_kid: Option<String>,
    /// `immutable: true`: the API server refuses every write of its data.
    pub immutable: bool,
    /// Who last wrote `data.token` (its `managedFields` entry: the field
    /// manager and the time), when recorded.
    pub token_written: Option<TokenWrite>,
}

/// A write of `data.token` as `managedFields` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenWrite {
    pub manager: String,
    pub at: Option<Timestamp>,
}

impl LegacySecret {
    /// Whether its token is not signed by the new key (`new_kid`).
    pub fn is_stale(&self, new_kid: &str) -> bool {
        self.token_kid.as_deref() != Some(new_kid)
    }

    /// Whether ksa writes a new token into it: stale, and not immutable
    /// (the API server would refuse the write).
    pub fn to_remint(&self, new_kid: &str) -> bool {
        self.is_stale(new_kid) && !self.immutable
    }

    /// `namespace/name`, as the operator lists it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What becomes of one legacy token Secret in RefreshTokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LegacyVerdict {
    /// Its token is signed by the new key.
    Fresh,
    /// Stale; ksa re-mints it and the step waits for it.
    Stale,
    /// Stale, and ksa cannot make it fresh (why): the step waits for it
    /// until the deadline.
    Blocked(HolderReason),
    /// Stale, and listed by the operator: not waited for (why it was
    /// stale, or blocked).
    GivenUp(HolderReason),
}

/// The verdict on `secret` at RefreshTokens towards the key `new_kid`,
/// the step having begun at `since`.
///
/// Blocked: immutable; or its token was last written by someone other than
/// ksa's re-mint, after the step began (a write in the moment before ksa's
/// first re-mint is named too, until that re-mint lands). What
/// `managedFields` says is the tenant's to forge: it only changes how a
/// Secret is named, never how long the step waits (the deadline holds for
/// every stale Secret alike).
pub fn assess(
    secret: &LegacySecret,
    new_kid: &str,
    since: Option<Timestamp>,
    policy: &Policy,
) -> LegacyVerdict {
    if !secret.is_stale(new_kid) {
        return LegacyVerdict::Fresh;
    }
    let blocked = if secret.immutable {
        Some(HolderReason::LegacyTokenImmutable)
    } else {
        secret.token_written.as_ref().and_then(|write| {
            let at = write.at?;
            (write.manager != REMINT_FIELD_MANAGER && since.is_some_and(|since| at > since)).then(
                || HolderReason::LegacyTokenReplaced {
                    by: write.manager.clone(),
                    at,
                },
            )
        })
    };
    if policy.given_up_legacy_tokens.contains(&secret.key()) {
        return LegacyVerdict::GivenUp(blocked.unwrap_or(HolderReason::LegacyTokenStale));
    }
    match blocked {
        Some(reason) => LegacyVerdict::Blocked(reason),
        None => LegacyVerdict::Stale,
    }
}

/// The legacy token Secrets of one observation: how many ksa re-mints, and
/// who is blocked or given up, counted with the first few named.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyTokens {
    pub stale: u64,
    pub blocked: Holders,
    pub given_up: Holders,
}

impl LegacyTokens {
    /// Counts `secret` by its verdict.
    pub fn record(&mut self, secret: &LegacySecret, verdict: LegacyVerdict) {
        let named = |reason| NamedHolder::new(&secret.namespace, &secret.name, reason);
        match verdict {
            LegacyVerdict::Fresh => {}
            LegacyVerdict::Stale => self.stale = self.stale.saturating_add(1),
            LegacyVerdict::Blocked(reason) => self.blocked.record(named(reason)),
            LegacyVerdict::GivenUp(reason) => self.given_up.record(named(reason)),
        }
    }
}

/// The legacy token Secrets still stale when RefreshTokens ended: the
/// Retire step cuts their holders off (the old key stops verifying).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CutOff {
    /// Those the operator gave up on.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub given_up: Holders,
    /// Those still blocked when the deadline passed.
    #[serde(default, skip_serializing_if = "Holders::is_empty")]
    pub blocked: Holders,
    /// How many more were still stale when the deadline passed (not named:
    /// ksa re-minted them on every pass and none held).
    #[serde(default)]
    pub stale: u64,
}

impl CutOff {
    pub fn is_empty(&self) -> bool {
        self.given_up.is_empty() && self.blocked.is_empty() && self.stale == 0
    }

    /// How many Secrets are cut off.
    pub fn total(&self) -> u64 {
        self.given_up
            .total()
            .saturating_add(self.blocked.total())
            .saturating_add(self.stale)
    }

    /// Every named Secret cut off, the operator's first.
    pub fn named(&self) -> impl Iterator<Item = &NamedHolder> {
        self.given_up.named.iter().chain(&self.blocked.named)
    }
}

impl fmt::Display for CutOff {
    /// `given up by the operator: 1 blocked: ns/a (why); still blocked at
    /// the deadline: ...; 3 more still stale at the deadline`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.given_up.is_empty() {
            parts.push(format!("given up by the operator: {}", self.given_up));
        }
        if !self.blocked.is_empty() {
            parts.push(format!("still blocked at the deadline: {}", self.blocked));
        }
        if self.stale > 0 {
            parts.push(format!(
                "{} more still stale at the deadline, though re-minted on every pass",
                self.stale
            ));
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "kid-2";

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a time")
    }

    fn secret(name: &str) -> LegacySecret {
        LegacySecret {
            namespace: "tenant".into(),
            name: name.into(),
            token_kid: Some("kid-1".into()),
            ..LegacySecret::default()
        }
    }

    fn since() -> Option<Timestamp> {
        Some(at("2026-12-01T10:00:00.5Z"))
    }

    #[test]
    fn a_fresh_secret_is_fresh_even_when_immutable_or_given_up() {
        let policy = Policy {
            given_up_legacy_tokens: ["tenant/frozen".to_owned()].into(),
            ..Policy::default()
        };
        let frozen = LegacySecret {
            token_kid: Some(NEW.into()),
            immutable: true,
            ..secret("frozen")
        };
        assert_eq!(assess(&frozen, NEW, since(), &policy), LegacyVerdict::Fresh);
        assert!(!frozen.to_remint(NEW));
    }

    #[test]
    fn an_immutable_stale_secret_is_blocked_and_never_written() {
        let frozen = LegacySecret {
            immutable: true,
            ..secret("frozen")
        };
        assert_eq!(
            assess(&frozen, NEW, since(), &Policy::default()),
            LegacyVerdict::Blocked(HolderReason::LegacyTokenImmutable)
        );
        assert!(!frozen.to_remint(NEW));
        // No token at all is stale too.
        let empty = LegacySecret {
            token_kid: None,
            ..secret("empty")
        };
        assert_eq!(
            assess(&empty, NEW, since(), &Policy::default()),
            LegacyVerdict::Stale
        );
        assert!(empty.to_remint(NEW));
    }

    #[test]
    fn a_token_replaced_by_another_manager_after_the_step_began_is_blocked() {
        let written = |manager: &str, when: &str| LegacySecret {
            token_written: Some(TokenWrite {
                manager: manager.into(),
                at: Some(at(when)),
            }),
            ..secret("looped")
        };
        let policy = Policy::default();
        let looped = written("kubectl-patch", "2026-12-01T10:05:00Z");
        assert_eq!(
            assess(&looped, NEW, since(), &policy),
            LegacyVerdict::Blocked(HolderReason::LegacyTokenReplaced {
                by: "kubectl-patch".into(),
                at: at("2026-12-01T10:05:00Z"),
            })
        );
        // Still re-minted on every pass: the loop may stop.
        assert!(looped.to_remint(NEW));
        // Written before the step began, by ksa, or with no time or no
        // step start: stale, to re-mint.
        for plain in [
            written("kubectl-patch", "2026-12-01T10:00:00Z"),
            written(REMINT_FIELD_MANAGER, "2026-12-01T10:05:00Z"),
            LegacySecret {
                token_written: Some(TokenWrite {
                    manager: "kubectl-patch".into(),
                    at: None,
                }),
                ..secret("untimed")
            },
        ] {
            assert_eq!(assess(&plain, NEW, since(), &policy), LegacyVerdict::Stale);
        }
        assert_eq!(assess(&looped, NEW, None, &policy), LegacyVerdict::Stale);
    }

    #[test]
    fn the_operator_gives_up_on_a_secret_by_namespace_and_name() {
        let policy = Policy {
            given_up_legacy_tokens: ["tenant/frozen".to_owned(), "tenant/plain".to_owned()].into(),
            ..Policy::default()
        };
        let frozen = LegacySecret {
            immutable: true,
            ..secret("frozen")
        };
        assert_eq!(
            assess(&frozen, NEW, since(), &policy),
            LegacyVerdict::GivenUp(HolderReason::LegacyTokenImmutable)
        );
        assert_eq!(
            assess(&secret("plain"), NEW, since(), &policy),
            LegacyVerdict::GivenUp(HolderReason::LegacyTokenStale)
        );
        // Another namespace's Secret of the same name is not given up.
        let elsewhere = LegacySecret {
            namespace: "other".into(),
            ..secret("plain")
        };
        assert_eq!(
            assess(&elsewhere, NEW, since(), &policy),
            LegacyVerdict::Stale
        );
    }

    #[test]
    fn the_account_counts_each_kind_apart_and_names_the_blocked() {
        let policy = Policy {
            given_up_legacy_tokens: ["tenant/given".to_owned()].into(),
            ..Policy::default()
        };
        let mut account = LegacyTokens::default();
        let secrets = [
            secret("a"),
            secret("b"),
            LegacySecret {
                immutable: true,
                ..secret("frozen")
            },
            secret("given"),
            LegacySecret {
                token_kid: Some(NEW.into()),
                ..secret("fresh")
            },
        ];
        for s in &secrets {
            account.record(s, assess(s, NEW, since(), &policy));
        }
        assert_eq!(account.stale, 2);
        assert_eq!(account.blocked.total(), 1);
        assert_eq!(
            account.blocked.to_string(),
            "1 blocked: tenant/frozen (legacy token Secret is immutable: ksa cannot re-mint it)"
        );
        assert_eq!(account.given_up.total(), 1);
        let cut = CutOff {
            given_up: account.given_up.clone(),
            blocked: account.blocked.clone(),
            stale: 2,
        };
        assert_eq!(cut.total(), 4);
        assert_eq!(cut.named().count(), 2);
        assert_eq!(
            cut.to_string(),
            "given up by the operator: 1 legacy token to re-mint: tenant/given (legacy token Secret not re-minted yet); \
             still blocked at the deadline: 1 blocked: tenant/frozen (legacy token Secret is immutable: ksa cannot re-mint it); \
             2 more still stale at the deadline, though re-minted on every pass"
        );
    }
}
