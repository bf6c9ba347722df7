//! What a step still waits for: the account [`super::step`] decides by.
//!
//! Each step's advance condition is computed once, here, as a list of the
//! conditions not yet met ([`Wait`]), each with what was observed of it. The
//! step advances exactly when the list is empty, so what the status says a
//! step waits for and what makes it advance cannot disagree (cert-manager's
//! "decision with its reason").

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{ApiServerView, Holders, IssuerChange, Observed, Policy, RotationState, Step};
use crate::KeyVersion;
use crate::issuer::Issuer;

/// One condition a step waits for that `Observed` (or the clock) does not
/// satisfy yet, with the counts observed.
///
/// Counts of API servers are never complete: an entry is only present while
/// `count < total`. When no API server was observed at all, the step waits
/// for [`Wait::ApiServersObserved`] instead of counts out of zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "wait")]
#[non_exhaustive]
pub enum Wait {
    /// Generate: key pair `version` is not in the key store yet.
    KeyStored { version: KeyVersion },
    /// Trust, Sign, Retire: no API server was observed, and an empty
    /// observation confirms nothing.
    ApiServersObserved,
    /// Trust, Sign, Retire: these API server instances, named with why,
    /// could not be asked; the step holds until each answers (or, gone for
    /// good, is no longer announced).
    ApiServersUnanswered { instances: Vec<String> },
    /// Sign, RefreshTokens, Retire: these API server instances, each named
    /// with what it lost, no longer do what an earlier step confirmed on
    /// every instance (one restarted with an older configuration: a
    /// roll-out ksa did not drive, a lagging configuration manager, a
    /// restored node). The step holds until they are rolled forward.
    ApiServersRegressed { instances: Vec<String> },
    /// Trust, Sign, Retire: `accepting` of `total` API servers accept key
    /// `version` (the new key).
    ApiServersAccepting {
        version: KeyVersion,
        accepting: usize,
        total: usize,
    },
    /// Trust: `accepting` of `total` API servers still accept key `version`
    /// (the old key, which every token in circulation is signed with).
    ApiServersStillAccepting {
        version: KeyVersion,
        accepting: usize,
        total: usize,
    },
    /// Trust: the discovery document at `url` (a location outside verifiers
    /// read) does not serve key `version` yet, or could not be read.
    Published { url: String, version: KeyVersion },
    /// Trust: every location serves the new key; a verifier that cached
    /// what was there before may keep it for the `max-age` it was served
    /// with, which ends at `until`.
    OutsideCaches { until: Timestamp },
    /// Trust: every API server and every location serves both keys, and
    /// outside caches have expired; verifiers that ignore caching get
    /// [`Policy::trust_lead_time`] more to catch up, which ends at `until`.
    TrustLeadTime { until: Timestamp },
    /// Sign: `signing` of `total` API servers sign with key `version`.
    ApiServersSigning {
        version: KeyVersion,
        signing: usize,
        total: usize,
    },
    /// RefreshTokens: legacy Secret tokens not yet re-minted with the new
    /// key; `None` when they were not counted.
    LegacyTokens { stale: Option<u64> },
    /// RefreshTokens: legacy token Secrets ksa cannot re-mint (`blocked`,
    /// counted, the first few named with why); waited for until `until`
    /// (the deadline), then given up and their holders cut off at Retire.
    /// `None` when the step's start was not recorded.
    LegacyTokensBlocked {
        blocked: Holders,
        until: Option<Timestamp>,
    },
    /// RefreshTokens (restart-pods, recreate-nodes): workloads, pods or
    /// nodes whose bound tokens are not refreshed yet; `None` when not
    /// counted. `holders` says who, as observed (shown, not decided on).
    BoundTokenHolders {
        stale: Option<u64>,
        #[serde(default, skip_serializing_if = "Holders::is_empty")]
        holders: Holders,
    },
    /// RefreshTokens (wait): the kubelet refresh window closes at `until`;
    /// `None` when the step's start was not recorded, so it cannot close.
    RefreshWindow { until: Option<Timestamp> },
    /// RefreshTokens (`wait` policy): the projected token lifetimes pods
    /// hold, which size the window, were not observed.
    TokenLifetimesObserved,
    /// RefreshTokens (`wait` policy, refreshes observed): `seen` of `pods`
    /// pods from before the step were seen (in the API servers' audit
    /// stream) getting a new token from their kubelet; the step ends when
    /// all were, or at the latest when the window closes at `until`.
    KubeletRefreshes {
        seen: u64,
        pods: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unseen: Vec<String>,
        until: Option<Timestamp>,
    },
    /// Retire: `dropped` of `total` API servers no longer accept key
    /// `version` (the old key).
    ApiServersDroppingOld {
        version: KeyVersion,
        dropped: usize,
        total: usize,
    },
    /// Retire: the discovery document at `url` still serves key `version`
    /// (the old key), or could not be read to confirm it does not.
    Unpublished { url: String, version: KeyVersion },
    /// Retire: key pair `version` (the old key) is still in the key store.
    /// It is deleted once every API server has dropped it.
    OldKeyDeleted { version: KeyVersion },
    /// Trust, Retire (issuer rotations): `accepting` of `total` API servers
    /// accept a token carrying `issuer`.
    IssuerAccepted {
        issuer: Issuer,
        accepting: usize,
        total: usize,
    },
    /// Sign (issuer rotations): `issuing` of `total` API servers put
    /// `issuer` in fresh tokens and name it in their discovery document.
    IssuerSigning {
        issuer: Issuer,
        issuing: usize,
        total: usize,
    },
    /// Retire (issuer rotations): `rejecting` of `total` API servers reject
    /// a token carrying `issuer` (the old issuer).
    IssuerRejected {
        issuer: Issuer,
        rejecting: usize,
        total: usize,
    },
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |n: &Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
        match self {
            Wait::KeyStored { version } => write!(f, "key version {version} to be stored"),
            Wait::ApiServersObserved => f.write_str("API servers observed: none"),
            Wait::ApiServersUnanswered { instances } => {
                write!(f, "API servers not answering: {}", instances.join(", "))
            }
            Wait::ApiServersRegressed { instances } => write!(
                f,
                "API servers back on an older configuration: {}",
                instances.join(", ")
            ),
            Wait::ApiServersAccepting {
                version,
                accepting,
                total,
            } => write!(f, "API servers accepting key {version}: {accepting}/{total}"),
            Wait::ApiServersStillAccepting {
                version,
                accepting,
                total,
            } => write!(
                f,
                "API servers still accepting key {version}: {accepting}/{total}"
            ),
            Wait::Published { url, version } => {
                write!(f, "outside verifiers seeing key {version} at {url}: not yet")
            }
            Wait::OutsideCaches { until } => {
                write!(f, "outside verifiers' caches to expire: until {until}")
            }
            Wait::TrustLeadTime { until } => write!(f, "trust lead time until {until}"),
            Wait::ApiServersSigning {
                version,
                signing,
                total,
            } => write!(f, "API servers signing with key {version}: {signing}/{total}"),
            Wait::LegacyTokens { stale } => {
                write!(f, "legacy tokens to re-mint: {}", count(stale))
            }
            Wait::LegacyTokensBlocked { blocked, until } => {
                write!(f, "legacy tokens ksa cannot re-mint: {blocked}")?;
                match until {
                    Some(until) => write!(
                        f,
                        " (waited for until {until}, then cut off at Retire)"
                    ),
                    None => Ok(()),
                }
            }
            Wait::BoundTokenHolders { stale, holders } => {
                write!(f, "bound-token holders to refresh: {}", count(stale))?;
                if !holders.is_empty() {
                    write!(f, " ({holders})")?;
                }
                Ok(())
            }
            Wait::RefreshWindow { until: Some(until) } => write!(
                f,
                "bound-token holders to refresh: (waiting out the kubelet refresh window, until {until})"
            ),
            Wait::KubeletRefreshes {
                seen,
                pods,
                unseen,
                until,
            } => {
                let refreshes = crate::rotation::refresh::KubeletRefreshes {
                    pods: *pods,
                    seen: *seen,
                    unseen: unseen.clone(),
                };
                write!(f, "bound-token holders to refresh: {refreshes}, observed")?;
                match until {
                    Some(until) => write!(f, "; the kubelet refresh window closes at {until}"),
                    None => Ok(()),
                }
            }
            Wait::TokenLifetimesObserved => f.write_str(
                "bound-token holders to refresh: (the projected token lifetimes pods hold, which size the kubelet refresh window, not observed yet)",
            ),
            Wait::RefreshWindow { until: None } => f.write_str(
                "bound-token holders to refresh: (waiting out the kubelet refresh window, whose start was not recorded)",
            ),
            Wait::ApiServersDroppingOld {
                version,
                dropped,
                total,
            } => write!(
                f,
                "API servers no longer accepting key {version}: {dropped}/{total}"
            ),
            Wait::Unpublished { url, version } => {
                write!(f, "key {version} withdrawn from {url}: not yet")
            }
            Wait::OldKeyDeleted { version } => {
                write!(f, "old key {version} still to be deleted")
            }
            Wait::IssuerAccepted {
                issuer,
                accepting,
                total,
            } => write!(
                f,
                "API servers accepting issuer {issuer}: {accepting}/{total}"
            ),
            Wait::IssuerSigning {
                issuer,
                issuing,
                total,
            } => write!(
                f,
                "API servers issuing tokens of issuer {issuer}: {issuing}/{total}"
            ),
            Wait::IssuerRejected {
                issuer,
                rejecting,
                total,
            } => write!(
                f,
                "API servers rejecting issuer {issuer}: {rejecting}/{total}"
            ),
        }
    }
}

/// Everything a step waits for; empty when it advances (and when the
/// rotation is completed). Displayed as its entries joined by `; `.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Waiting(pub Vec<Wait>);

impl Waiting {
    /// Nothing left to wait for: the step advances.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Wait> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Waiting {
    type Item = &'a Wait;
    type IntoIter = std::slice::Iter<'a, Wait>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Waiting {
    /// The holders named as waiting for an operator (a PodDisruptionBudget
    /// that allows no disruption, a paused Deployment, a legacy token
    /// Secret ksa cannot re-mint): what a Warning Event should name.
    pub fn blocked_holders(&self) -> impl Iterator<Item = &super::NamedHolder> {
        self.0
            .iter()
            .flat_map(|wait| match wait {
                Wait::BoundTokenHolders { holders, .. } => holders.named.as_slice(),
                Wait::LegacyTokensBlocked { blocked, .. } => blocked.named.as_slice(),
                _ => &[],
            })
            .filter(|holder| holder.reason.is_blocked())
    }
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, wait) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{wait}")?;
        }
        Ok(())
    }
}

/// The account of one step: what it waits for, and for Trust, when every
/// API server was first seen to accept both keys (the lead time runs from
/// there).
pub(super) struct Assessment {
    pub waiting: Waiting,
    pub trust_confirmed_at: Option<Timestamp>,
}

/// Computes what `state`'s step waits for. The step advances exactly when
/// the result is empty; this is the only place its conditions are tested.
pub(super) fn assess(
    state: &RotationState,
    observed: &Observed,
    now: Timestamp,
    policy: &Policy,
) -> Assessment {
    let (old, new) = (state.previous_version(), state.key_version());
    let key = state.changes_key();
    let issuer = state
        .issuer()
        .filter(|_| state.changes_issuer())
        .map(|IssuerChange { from, to }| (from, to));
    let servers = &observed.api_servers;
    let mut waits = Vec::new();
    let mut trust_confirmed_at = None;
    // The tests every API server must pass at this step: the key's when the
    // key changes, the issuer's when the issuer does.
    let mut tests = Vec::new();
    match state.step() {
        Step::Generate => {
            if !observed.stored_keys.contains(&new) {
                waits.push(Wait::KeyStored { version: new });
            }
        }
        Step::Trust => {
            if key {
                tests.extend([ServerTest::Accepts(new), ServerTest::StillAccepts(old)]);
            }
            if let Some((a, b)) = issuer {
                tests.extend([ServerTest::AcceptsIssuer(b), ServerTest::AcceptsIssuer(a)]);
            }
            count_servers(&mut waits, servers, &tests);
            // Outside verifiers: every location serves the key that will
            // sign (for an issuer rotation, under the new issuer too).
            for publication in &observed.publications {
                if !publication.serves(new) {
                    waits.push(Wait::Published {
                        url: publication.url.clone(),
                        version: new,
                    });
                }
            }
            let caches = observed.longest_max_age();
            let hold = trust_hold(policy, observed);
            if waits.is_empty() && !hold.is_zero() {
                let confirmed_at = state.confirmed_at.unwrap_or(now);
                trust_confirmed_at = Some(confirmed_at);
                let elapsed = elapsed_since(Some(confirmed_at), now);
                if elapsed < Some(caches) {
                    waits.push(Wait::OutsideCaches {
                        until: deadline(confirmed_at, caches),
                    });
                } else if elapsed < Some(hold) {
                    waits.push(Wait::TrustLeadTime {
                        until: deadline(confirmed_at, hold),
                    });
                }
            }
        }
        Step::Sign => {
            if key {
                tests.extend([ServerTest::SignsWith(new), ServerTest::Accepts(new)]);
            }
            if let Some((_, b)) = issuer {
                tests.push(ServerTest::IssuesFor(b));
            }
            count_servers(&mut waits, servers, &tests);
        }
        Step::RefreshTokens => {
            if key {
                tests.extend([ServerTest::SignsWith(new), ServerTest::Accepts(new)]);
            }
            if let Some((_, b)) = issuer {
                tests.push(ServerTest::IssuesFor(b));
            }
            count_servers(&mut waits, servers, &tests);
            if key {
                // Legacy tokens are waited for until the deadline, blocked
                // or not: past it, whatever is still stale is cut off, so
                // no Secret holds the step for good. Uncounted, nothing is
                // known of them, and the step waits.
                let window = policy.legacy_deadline();
                let over = elapsed_since(state.step_started_at, now) >= Some(window);
                match observed.stale_legacy_tokens {
                    None => waits.push(Wait::LegacyTokens { stale: None }),
                    Some(_) if over => {}
                    Some(stale) => {
                        if stale > 0 {
                            waits.push(Wait::LegacyTokens { stale: Some(stale) });
                        }
                        if observed.blocked_legacy_tokens.total() > 0 {
                            waits.push(Wait::LegacyTokensBlocked {
                                blocked: observed.blocked_legacy_tokens.clone(),
                                until: state.step_started_at.map(|at| deadline(at, window)),
                            });
                        }
                    }
                }
            }
            if policy.bound_token_refresh.waits() {
                // The window is what the pods from before the step hold,
                // looked at again each time: they only go away.
                let window = observed.longest_bound_token_seconds.and_then(|longest| {
                    policy
                        .bound_token_refresh
                        .wait_window(longest, policy.clock_skew)
                });
                let refreshes = observed.kubelet_refreshes.as_ref();
                match window {
                    // Every pod from before the step was seen refreshing.
                    _ if refreshes.is_some_and(|r| r.all_seen()) => {}
                    Some(window) if elapsed_since(state.step_started_at, now) >= Some(window) => {}
                    Some(window) => {
                        let until = state.step_started_at.map(|at| deadline(at, window));
                        waits.push(match refreshes {
                            Some(r) => Wait::KubeletRefreshes {
                                seen: r.seen,
                                pods: r.pods,
                                unseen: r.unseen.clone(),
                                until,
                            },
                            None => Wait::RefreshWindow { until },
                        });
                    }
                    // Not observed: nothing says how long to wait.
                    None => waits.push(Wait::TokenLifetimesObserved),
                }
            } else if observed.stale_bound_tokens != Some(0) {
                waits.push(Wait::BoundTokenHolders {
                    stale: observed.stale_bound_tokens,
                    holders: observed.bound_token_holders.clone(),
                });
            }
        }
        Step::Retire => {
            if key {
                tests.extend([
                    ServerTest::Dropped(old),
                    ServerTest::Accepts(new),
                    ServerTest::SignsWith(new),
                ]);
            }
            if let Some((a, b)) = issuer {
                tests.extend([
                    ServerTest::RejectsIssuer(a),
                    ServerTest::AcceptsIssuer(b),
                    ServerTest::IssuesFor(b),
                ]);
            }
            count_servers(&mut waits, servers, &tests);
            if key {
                for publication in &observed.publications {
                    if publication
                        .serves
                        .as_ref()
                        .is_none_or(|keys| keys.contains(&old))
                    {
                        waits.push(Wait::Unpublished {
                            url: publication.url.clone(),
                            version: old,
                        });
                    }
                }
            }
            if key && observed.stored_keys.contains(&old) {
                waits.push(Wait::OldKeyDeleted { version: old });
            }
        }
        Step::Completed => {}
    }
    let regressed = regressions(state, servers);
    if !regressed.is_empty() {
        waits.insert(
            0,
            Wait::ApiServersRegressed {
                instances: regressed,
            },
        );
    }
    Assessment {
        waiting: Waiting(waits),
        trust_confirmed_at,
    }
}

/// How long Trust holds once everything is confirmed: the longest `max-age`
/// a location served (a verifier honouring it has refetched by then), then
/// the fixed lead time as a margin for verifiers that do not.
pub(super) fn trust_hold(policy: &Policy, observed: &Observed) -> Duration {
    observed
        .longest_max_age()
        .saturating_add(policy.trust_lead_time)
}

/// Whether some location still serves the old key (or could not be read
/// to confirm it does not).
pub(super) fn old_key_published(waiting: &Waiting) -> bool {
    waiting
        .iter()
        .any(|wait| matches!(wait, Wait::Unpublished { .. }))
}

/// Whether every API server has stopped accepting the old key (and accepts
/// the new one): the condition for deleting key N. While it exists, its kid
/// is what observers recognise in a JWKS.
pub(super) fn old_key_dropped(waiting: &Waiting) -> bool {
    !waiting.iter().any(|wait| {
        matches!(
            wait,
            Wait::ApiServersObserved
                | Wait::ApiServersUnanswered { .. }
                | Wait::ApiServersDroppingOld { .. }
                | Wait::ApiServersAccepting { .. }
        )
    })
}

/// The instances that answered but no longer do what an earlier step of
/// this rotation confirmed on all of them: accept the new key (confirmed
/// at Trust), sign with it or issue the new issuer (confirmed at Sign).
/// Each named with what it lost.
fn regressions(state: &RotationState, servers: &[ApiServerView]) -> Vec<String> {
    let new = state.key_version();
    let key = state.changes_key();
    let issuer = state
        .issuer()
        .filter(|_| state.changes_issuer())
        .map(|change| &change.to);
    let (trusted, signed) = match state.step() {
        Step::Sign => (true, false),
        Step::RefreshTokens | Step::Retire => (true, true),
        Step::Generate | Step::Trust | Step::Completed => (false, false),
    };
    servers
        .iter()
        .filter(|server| server.unanswered.is_none())
        .filter_map(|server| {
            let mut lost = Vec::new();
            if key && trusted && !server.accepts.contains(&new) {
                lost.push(format!("no longer accepts key {new}"));
            }
            if key
                && signed
                && let Some(signs) = server.signs_with.filter(|signs| *signs != new)
            {
                lost.push(format!("signs with key {signs} again"));
            }
            if signed
                && let (Some(issuer), Some(issues)) = (issuer, server.issues.as_ref())
                && issues != issuer
            {
                lost.push(format!("issues tokens of {issues} again"));
            }
            (!lost.is_empty()).then(|| format!("{} {}", server.name, lost.join(" and ")))
        })
        .collect()
}

/// A test every API server must pass, and the entry reporting how many do.
#[derive(Clone, Copy)]
enum ServerTest<'a> {
    Accepts(KeyVersion),
    StillAccepts(KeyVersion),
    SignsWith(KeyVersion),
    Dropped(KeyVersion),
    AcceptsIssuer(&'a Issuer),
    /// Fresh tokens carry the issuer and the discovery document names it.
    IssuesFor(&'a Issuer),
    RejectsIssuer(&'a Issuer),
}

impl ServerTest<'_> {
    fn holds(self, server: &ApiServerView) -> bool {
        match self {
            ServerTest::Accepts(version) | ServerTest::StillAccepts(version) => {
                server.accepts.contains(&version)
            }
            ServerTest::SignsWith(version) => server.signs_with == Some(version),
            ServerTest::Dropped(version) => !server.accepts.contains(&version),
            ServerTest::AcceptsIssuer(issuer) => server.issuer_reviews.get(issuer) == Some(&true),
            ServerTest::IssuesFor(issuer) => {
                server.issues.as_ref() == Some(issuer)
                    && server.discovery_issuer.as_ref() == Some(issuer)
            }
            // Only an answer that says no counts: an unanswered review
            // confirms nothing.
            ServerTest::RejectsIssuer(issuer) => server.issuer_reviews.get(issuer) == Some(&false),
        }
    }

    fn wait(self, count: usize, total: usize) -> Wait {
        match self {
            ServerTest::Accepts(version) => Wait::ApiServersAccepting {
                version,
                accepting: count,
                total,
            },
            ServerTest::StillAccepts(version) => Wait::ApiServersStillAccepting {
                version,
                accepting: count,
                total,
            },
            ServerTest::SignsWith(version) => Wait::ApiServersSigning {
                version,
                signing: count,
                total,
            },
            ServerTest::Dropped(version) => Wait::ApiServersDroppingOld {
                version,
                dropped: count,
                total,
            },
            ServerTest::AcceptsIssuer(issuer) => Wait::IssuerAccepted {
                issuer: issuer.clone(),
                accepting: count,
                total,
            },
            ServerTest::IssuesFor(issuer) => Wait::IssuerSigning {
                issuer: issuer.clone(),
                issuing: count,
                total,
            },
            ServerTest::RejectsIssuer(issuer) => Wait::IssuerRejected {
                issuer: issuer.clone(),
                rejecting: count,
                total,
            },
        }
    }
}

/// Every API server passes every test, with at least one server observed
/// (none confirms nothing); otherwise one entry per test not passed by all.
fn count_servers(waits: &mut Vec<Wait>, servers: &[ApiServerView], tests: &[ServerTest]) {
    if servers.is_empty() {
        waits.push(Wait::ApiServersObserved);
        return;
    }
    let unanswered: Vec<String> = servers
        .iter()
        .filter_map(|s| {
            s.unanswered
                .as_ref()
                .map(|why| format!("{} ({why})", s.name))
        })
        .collect();
    if !unanswered.is_empty() && !tests.is_empty() {
        waits.push(Wait::ApiServersUnanswered {
            instances: unanswered,
        });
    }
    for test in tests {
        let count = servers.iter().filter(|s| test.holds(s)).count();
        if count < servers.len() {
            waits.push(test.wait(count, servers.len()));
        }
    }
}

/// The time from `since` to `now`, to the nanosecond (a clock gone
/// backwards counts zero): a wait of five seconds never ends in 4.1.
pub(super) fn elapsed_since(since: Option<Timestamp>, now: Timestamp) -> Option<Duration> {
    let since = since?;
    Some(Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO))
}

/// When a wait of `after` from `since` ends, rounded up to the whole
/// second for the status: any `now` still waiting is before it.
fn deadline(since: Timestamp, after: Duration) -> Timestamp {
    let end = jiff::SignedDuration::try_from(after)
        .ok()
        .and_then(|after| since.checked_add(after).ok())
        .unwrap_or(Timestamp::MAX);
    let rounded = end
        .as_second()
        .saturating_add(i64::from(end.subsec_nanosecond() > 0));
    Timestamp::from_second(rounded).unwrap_or(Timestamp::MAX)
}
