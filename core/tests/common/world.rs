//! The model cluster the rotation tests run the step function against: a
//! key store, several API servers that pick up new key sets one at a time
//! (a roll-out), each with its `--service-account-issuer` list (the first
//! signs), tokens in circulation (bound tokens with their `iss`, legacy
//! tokens in Secrets), and one outside location that publishes the keys,
//! read by a verifier that honours caching.

use std::collections::BTreeSet;

use ksa_core::KeyVersion;
use ksa_core::issuer::Issuer;
use ksa_core::rotation::legacy::{self, LegacySecret, LegacyTokens};
use ksa_core::rotation::{ApiServerView, Effect, Observed, Policy, PublicationView, RotationState};

/// An API server of the model: the keys it accepts, the one it signs
/// with, its issuers.
#[derive(Clone, Debug)]
pub struct Server {
    pub accepts: BTreeSet<KeyVersion>,
    pub signs: KeyVersion,
    /// `--service-account-issuer`, in order: the first signs, all are
    /// accepted.
    pub issuers: Vec<Issuer>,
}

/// The issuer the model cluster starts with, and the `n`th one after it.
pub fn issuer(n: u64) -> Issuer {
    Issuer::target(format!("https://issuer-{n}.example")).expect("an issuer")
}

/// A bound token: the key that signed it, when it was issued, its `iss`,
/// its lifetime in seconds (the kubelet refreshes it at 80%, at most 24 h).
pub type BoundToken = (KeyVersion, i64, Issuer, i64);

/// The model cluster.
#[derive(Clone, Debug)]
pub struct World {
    pub store: BTreeSet<KeyVersion>,
    pub servers: Vec<Server>,
    /// The key set the servers are being rolled to: (public, signing,
    /// issuers).
    pub desired: (BTreeSet<KeyVersion>, KeyVersion, Vec<Issuer>),
    pub legacy_tokens: Vec<KeyVersion>,
    /// The first `frozen_legacy` legacy tokens are in immutable Secrets:
    /// no re-mint ever lands.
    pub frozen_legacy: usize,
    /// Legacy tokens a plan named cut off when RefreshTokens ended: their
    /// holders may be rejected from then on.
    pub cut_off: BTreeSet<usize>,
    pub bound_tokens: Vec<BoundToken>,
    /// Lifetimes of projected tokens, given in turn to the tokens pods get
    /// (600 s to 24 h): kubelets refresh each at 80% of its own, at most
    /// 24 h after it was issued.
    pub lifetimes: Vec<i64>,
    pub issued: usize,
    /// Versions the last effects asked tokens to be refreshed to.
    pub legacy_refresh_to: Option<KeyVersion>,
    pub bound_refresh_to: Option<KeyVersion>,
    pub lock_held: bool,
    /// Whether an outside verifier reads the keys from a location ksa
    /// publishes to (the property test; the walks keep time still).
    pub outside: bool,
    /// The keys the one outside location serves (`PublishOutside`).
    pub published: BTreeSet<KeyVersion>,
    /// What an outside verifier that honours caching holds: the keys it
    /// read and when; it reads again only once [`OUTSIDE_MAX_AGE`] is over.
    pub outside_cache: (BTreeSet<KeyVersion>, i64),
}

/// The `max-age` the outside location serves, in seconds.
pub const OUTSIDE_MAX_AGE: i64 = 60;
pub const OUTSIDE_URL: &str = "https://oidc.example/.well-known/openid-configuration";

/// The kid the model's key `version` has.
pub fn kid(version: KeyVersion) -> String {
    format!("kid-{version}")
}

impl World {
    pub fn new(servers: usize, lifetimes: Vec<i64>, now: i64) -> World {
        let one = KeyVersion::FIRST;
        World {
            store: [one].into(),
            servers: vec![
                Server {
                    accepts: [one].into(),
                    signs: one,
                    issuers: vec![issuer(0)],
                };
                servers
            ],
            desired: ([one].into(), one, vec![issuer(0)]),
            legacy_tokens: vec![one; 3],
            frozen_legacy: 0,
            cut_off: BTreeSet::new(),
            bound_tokens: (0..3)
                .map(|i| (one, now, issuer(0), lifetimes[i % lifetimes.len()]))
                .collect(),
            issued: 3,
            lifetimes,
            legacy_refresh_to: None,
            bound_refresh_to: None,
            lock_held: false,
            outside: false,
            published: [one].into(),
            outside_cache: ([one].into(), now),
        }
    }

    /// The outside verifier reads the location again if its cache expired.
    pub fn outside_catch_up(&mut self, now: i64) {
        if now >= self.outside_cache.1 + OUTSIDE_MAX_AGE {
            self.outside_cache = (self.published.clone(), now);
        }
    }

    /// Everything an observer could see of the world for a rotation in
    /// `state` (the harness masks what the step did not ask for).
    pub fn observe(&self, state: &RotationState, policy: &Policy) -> Observed {
        let target = state.key_version();
        let mut legacy = LegacyTokens::default();
        for (i, version) in self.legacy_tokens.iter().enumerate() {
            let secret = self.legacy_secret(i, *version);
            let verdict = legacy::assess(&secret, &kid(target), state.step_started_at(), policy);
            legacy.record(&secret, verdict);
        }
        let target_issuer = state.issuer().map_or_else(|| issuer(0), |c| c.to.clone());
        let reviewed: Vec<Issuer> = state
            .issuer()
            .map(|c| vec![c.from.clone(), c.to.clone()])
            .unwrap_or_default();
        Observed {
            stored_keys: self.store.clone(),
            api_servers: self
                .servers
                .iter()
                .enumerate()
                .map(|(i, s)| ApiServerView {
                    name: format!("apiserver-{i}"),
                    // Observers know a served key by its kid, and learn kids
                    // from the key store: a deleted key is unrecognisable.
                    accepts: s.accepts.intersection(&self.store).copied().collect(),
                    signs_with: Some(s.signs),
                    issuer_reviews: reviewed
                        .iter()
                        .map(|i| (i.clone(), s.issuers.contains(i)))
                        .collect(),
                    issues: Some(s.issuers[0].clone()),
                    discovery_issuer: Some(s.issuers[0].clone()),
                    unanswered: None,
                })
                .collect(),
            stale_legacy_tokens: Some(legacy.stale),
            blocked_legacy_tokens: legacy.blocked,
            given_up_legacy_tokens: legacy.given_up,
            stale_bound_tokens: Some(
                self.bound_tokens
                    .iter()
                    .filter(|(v, _, iss, _)| *v != target || *iss != target_issuer)
                    .count() as u64,
            ),
            longest_bound_token_seconds: self
                .bound_tokens
                .iter()
                .map(|(_, _, _, lifetime)| *lifetime as u64)
                .max()
                .or(Some(0)),
            publications: self
                .outside
                .then(|| PublicationView {
                    url: OUTSIDE_URL.to_owned(),
                    serves: Some(self.published.intersection(&self.store).copied().collect()),
                    max_age_seconds: OUTSIDE_MAX_AGE as u64,
                })
                .into_iter()
                .collect(),
            ..Observed::default()
        }
    }

    /// Legacy token `i`'s Secret as an observer sees it.
    pub fn legacy_secret(&self, i: usize, version: KeyVersion) -> LegacySecret {
        LegacySecret {
            namespace: "tenant".into(),
            name: format!("legacy-{i}"),
            token_kid: Some(kid(version)),
            immutable: i < self.frozen_legacy,
            token_written: None,
        }
    }

    pub fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::HoldOperationLock => self.lock_held = true,
            Effect::ReleaseOperationLock => self.lock_held = false,
            Effect::GenerateKey { version, .. } => {
                self.store.insert(*version);
            }
            Effect::PublishPublicKeys {
                public,
                signing,
                issuers,
            }
            | Effect::SwitchSigner {
                signing,
                public,
                issuers,
            } => {
                let issuers = issuers.clone().unwrap_or_else(|| self.desired.2.clone());
                self.desired = (public.iter().copied().collect(), *signing, issuers);
            }
            Effect::RefreshLegacyTokens { version } => self.legacy_refresh_to = Some(*version),
            Effect::RefreshBoundTokens { version, .. } => self.bound_refresh_to = Some(*version),
            Effect::RetireKey { version } => {
                self.store.remove(version);
            }
            Effect::PublishOutside { public, .. } => {
                self.published = public.iter().copied().collect();
            }
        }
    }

    /// One API server restarts with the desired key set.
    pub fn roll_out(&mut self, index: usize) {
        let server = index % self.servers.len();
        self.servers[server] = Server {
            accepts: self.desired.0.clone(),
            signs: self.desired.1,
            issuers: self.desired.2.clone(),
        };
    }

    /// A pod gets a fresh bound token from some API server.
    pub fn issue(&mut self, index: usize, now: i64) {
        let server = &self.servers[index % self.servers.len()];
        let lifetime = self.lifetimes[self.issued % self.lifetimes.len()];
        self.issued += 1;
        self.bound_tokens
            .push((server.signs, now, server.issuers[0].clone(), lifetime));
    }

    /// Kubelets refresh every projected token at 80% of its lifetime, from
    /// some API server.
    pub fn kubelets_refresh(&mut self, now: i64) {
        let (signs, iss) = (self.servers[0].signs, self.servers[0].issuers[0].clone());
        for token in &mut self.bound_tokens {
            let due = (token.3 * 8 / 10).min(24 * 3600);
            if now >= token.1 + due {
                *token = (signs, now, iss.clone(), token.3);
            }
        }
    }

    /// Part of the refresh work happens: one legacy token re-minted, one
    /// workload restarted (its new token comes from some API server).
    pub fn refresh_some(&mut self, index: usize) {
        let frozen = self.frozen_legacy;
        if let Some(to) = self.legacy_refresh_to
            && let Some((_, token)) = self
                .legacy_tokens
                .iter_mut()
                .enumerate()
                .find(|(i, v)| *i >= frozen && **v != to)
        {
            *token = to;
        }
        if self.bound_refresh_to.is_some() {
            let server = &self.servers[index % self.servers.len()];
            let (signs, iss) = (server.signs, &server.issuers[0]);
            if let Some(token) = self
                .bound_tokens
                .iter_mut()
                .find(|(v, _, i, _)| *v != signs || i != iss)
            {
                token.0 = signs;
                token.2 = iss.clone();
            }
        }
    }

    pub fn check_nobody_logged_out(&self) -> Result<(), String> {
        for (_, _, iss, _) in &self.bound_tokens {
            for (i, server) in self.servers.iter().enumerate() {
                if !server.issuers.contains(iss) {
                    return Err(format!(
                        "apiserver-{i} rejects a token of issuer {iss}: {self:?}"
                    ));
                }
            }
        }
        // Outside verifiers see only bound tokens (legacy ones carry no
        // issuer they federate with).
        for (key, _, _, _) in self.bound_tokens.iter().filter(|_| self.outside) {
            if !self.outside_cache.0.contains(key) {
                return Err(format!(
                    "the outside verifier rejects a token of key {key}: {self:?}"
                ));
            }
        }
        let bound = self.bound_tokens.iter().map(|(v, _, _, _)| v);
        let legacy = self
            .legacy_tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.cut_off.contains(i))
            .map(|(_, v)| v);
        for token in legacy.chain(bound) {
            for (i, server) in self.servers.iter().enumerate() {
                if !server.accepts.contains(token) {
                    return Err(format!(
                        "apiserver-{i} rejects a token of key {token}: {self:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}
