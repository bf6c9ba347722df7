//! Shards: several controllers in one admin cluster, each reconciling the
//! rotations of the namespaces its label selector selects
//! (`--shard NAME --namespace-selector SELECTOR`), each leader-elected on a
//! Lease of its own (`ksa-controller-leader-NAME`).
//!
//! Which namespaces a shard serves is read from a watch of the Namespaces
//! its selector selects (filtered by the API server), and checked at the
//! start of every reconcile against that watch's store: a rotation whose
//! namespace left the selection is no longer touched.
//!
//! Two shards whose watches disagree for a moment (a namespace relabelled
//! from shard a to shard b, seen by b first) must still never act on one
//! rotation at once. The operation lock cannot tell them apart: its holder
//! names the rotation, not the controller. So each rotation has a claim, a
//! Lease `<rotation>-shard-claim` in its namespace whose holder is
//! `SHARD/REPLICA`. A shard acts on a rotation only in a reconcile that
//! began by taking or renewing the claim (a compare-and-swap on the
//! Lease's resourceVersion), and takes it from another shard only when
//! that shard released it (it saw the namespace leave its selection) or
//! let it lapse: unrenewed for [`CLAIM_SECONDS`], longer than any reconcile
//! may run ([`crate::run::RECONCILE_TIMEOUT`]), so the shard that held it
//! has stopped acting under it. That holds while the claim's calls answer
//! within [`CLAIM_CALLS_TIMEOUT`] (they are cut off there) and the hosts'
//! clocks agree within [`CLAIM_CLOCK_SKEW`]. The claim is between shards:
//! the replicas of one shard are kept apart by its leader election.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::{Expression, Selector};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};

/// The label every claim Lease carries, naming the shard that last took it.
pub const SHARD_LABEL: &str = "ksa.dev/shard";

/// How long a claim holds unrenewed: a minute longer than a reconcile may
/// run, so that a shard that took it before has ended every reconcile it
/// began under it.
pub const CLAIM_SECONDS: i32 = crate::run::RECONCILE_TIMEOUT.as_secs() as i32 + 60;

/// How long the calls that take or renew a claim may take: with a
/// reconcile's [`crate::run::RECONCILE_TIMEOUT`], within [`CLAIM_SECONDS`].
pub const CLAIM_CALLS_TIMEOUT: Duration = Duration::from_secs(20);

/// How far ahead of this shard's clock a claim's renewal may be and still
/// count: the clock skew between the admin cluster's hosts that the claim
/// tolerates (the margin of [`CLAIM_SECONDS`] over a reconcile, less the
/// claim's calls).
pub const CLAIM_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Whether a claim last renewed at `renewed`, for `duration_seconds`, has
/// lapsed at `now`. A claim's Lease is in the rotation's namespace, which
/// its tenant can write: a duration is never taken as longer than
/// [`CLAIM_SECONDS`], and a renewal further in the future than
/// [`CLAIM_CLOCK_SKEW`] is no renewal, so that no written value holds a
/// rotation beyond [`CLAIM_SECONDS`] (SECURITY.md).
fn lapsed(renewed: Option<Timestamp>, duration_seconds: Option<i32>, now: Timestamp) -> bool {
    let Some(renewed) = renewed else {
        return true;
    };
    let (renewed, now) = (renewed.as_second(), now.as_second());
    let seconds = i64::from(
        duration_seconds
            .unwrap_or(CLAIM_SECONDS)
            .clamp(0, CLAIM_SECONDS),
    );
    let skew = CLAIM_CLOCK_SKEW.as_secs() as i64;
    now > renewed.saturating_add(seconds) || renewed > now.saturating_add(skew)
}

/// The name of the claim Lease of `rotation`.
pub fn claim_name(rotation: &str) -> String {
    format!("{rotation}-shard-claim")
}

/// Checks a shard's name: it names the leader Lease
/// (`ksa-controller-leader-NAME`), the claim holders and a label value.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "--shard {name:?} is not a shard name: give 1 to 40 lowercase letters, digits and '-', \
             starting and ending with a letter or digit (it names the Lease ksa-controller-leader-NAME), e.g. --shard a"
        ))
    }
}

/// Parses a Kubernetes label selector as `kubectl -l` takes it:
/// requirements separated by commas, each `key=value`, `key==value`,
/// `key!=value`, `key`, `!key`, `key in (v1,v2)` or `key notin (v1,v2)`.
pub fn parse_selector(text: &str) -> Result<Selector, String> {
    let bad = |what: &str| {
        format!(
            "--namespace-selector {text:?} is not a label selector: {what}; give requirements separated by commas, \
             each key=value, key!=value, key, !key, key in (v1,v2) or key notin (v1,v2), e.g. ksa.dev/shard=a or !ksa.dev/shard"
        )
    };
    let mut expressions = Vec::new();
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad(
            "it is empty (it would select every namespace: leave the flag out instead)",
        ));
    }
    if rest.ends_with(',') {
        return Err(bad("it ends with a comma"));
    }
    while !rest.is_empty() {
        // One requirement: up to a comma outside parentheses.
        let mut depth = 0i32;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let requirement = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("").trim_start();
        expressions.push(requirement_of(requirement).map_err(|what| bad(&what))?);
    }
    Ok(expressions.into_iter().collect())
}

fn requirement_of(text: &str) -> Result<Expression, String> {
    if text.is_empty() {
        return Err("a requirement is empty".to_owned());
    }
    if let Some(key) = text.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Expression::DoesNotExist(key.to_owned()));
    }
    for (operator, make) in [
        (
            "!=",
            Expression::NotEqual as fn(String, String) -> Expression,
        ),
        ("==", Expression::Equal),
        ("=", Expression::Equal),
    ] {
        if let Some((key, value)) = text.split_once(operator) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key)?;
            check_value(value)?;
            return Ok(make(key.to_owned(), value.to_owned()));
        }
    }
    for (operator, set) in [(" notin ", false), (" in ", true)] {
        if let Some((key, values)) = text.split_once(operator) {
            let key = key.trim();
            check_key(key)?;
            let values = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("the values of {key:?} must be in parentheses"))?;
            let values: BTreeSet<String> = values
                .split(',')
                .map(|v| {
                    let v = v.trim();
                    check_value(v).map(|()| v.to_owned())
                })
                .collect::<Result<_, _>>()?;
            return Ok(if set {
                Expression::In(key.to_owned(), values)
            } else {
                Expression::NotIn(key.to_owned(), values)
            });
        }
    }
    check_key(text)?;
    Ok(Expression::Exists(text.to_owned()))
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of
/// at most 63 characters.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    });
    if prefix_ok && !name.is_empty() && check_value(name).is_ok() {
        Ok(())
    } else {
        Err(format!("{key:?} is not a label key"))
    }
}

/// A label value: at most 63 letters, digits, '-', '_' or '.', starting
/// and ending with a letter or digit (or empty).
fn check_value(value: &str) -> Result<(), String> {
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{value:?} is not a label value"))
    }
}

/// This controller's shard.
pub struct Shard {
    pub name: String,
    /// `SHARD/REPLICA`: the claim holder this replica writes.
    pub holder: String,
    /// The namespaces the selector selects now; `None`: every namespace.
    namespaces: Option<Store<Namespace>>,
    /// Counts the changes of the selection.
    changes: tokio::sync::watch::Sender<u64>,
    client: kube::Client,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// Whether a shard may act on a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Its claim is this shard's, taken or renewed now.
    Ours,
    /// Another shard holds it: `holder` is `SHARD/REPLICA`.
    Theirs { holder: String },
}

impl Shard {
    /// The shard `name` of replica `identity`; with a selector, watches
    /// (for as long as the process runs) the namespaces it selects.
    pub fn new(
        client: kube::Client,
        name: String,
        identity: &str,
        selector: Option<&Selector>,
    ) -> Arc<Shard> {
        let holder = format!("{name}/{identity}");
        let (changes, _) = tokio::sync::watch::channel(0u64);
        let Some(selector) = selector else {
            return Arc::new(Shard {
                name,
                holder,
                namespaces: None,
                changes,
                client,
            });
        };
        let (store, writer) = reflector::store::<Namespace>();
        let api: Api<Namespace> = Api::all(client.clone());
        let config = watcher::Config::default().labels(&selector.to_string());
        let shard = Arc::new(Shard {
            name,
            holder,
            namespaces: Some(store.clone()),
            changes,
            client,
        });
        let told = shard.changes.clone();
        let mut seen: Option<BTreeSet<String>> = None;
        let mut listed = false;
        let span = tracing::Span::current();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let mut events = std::pin::pin!(
                    reflector::reflector(writer, watcher(api, config)).default_backoff()
                );
                while let Some(event) = events.next().await {
                    match event {
                        Err(error) => {
                            tracing::warn!(%error, "the watch of this shard's namespaces failed; retrying");
                            continue;
                        }
                        Ok(watcher::Event::InitDone) => listed = true,
                        Ok(_) => {}
                    }
                    if !listed {
                        continue;
                    }
                    let now: BTreeSet<String> = store
                        .state()
                        .iter()
                        .filter_map(|ns| ns.metadata.name.clone())
                        .collect();
                    if seen.as_ref() != Some(&now) {
                        tracing::info!(namespaces = ?now, "this shard's namespaces");
                        seen = Some(now);
                        told.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
            },
            span,
        ));
        shard
    }

    /// Yields each time the selected namespaces change.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.changes.subscribe(), |mut changes| async move {
            changes.changed().await.ok()?;
            Some(((), changes))
        })
    }

    /// Waits until the namespaces are listed (at once without a selector).
    pub async fn listed(&self) {
        // Asked again each second, as `crate::liveness::listed` does: a
        // wait that began early is not always woken (kube-runtime 5.0).
        if let Some(store) = &self.namespaces {
            while tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready())
                .await
                .is_err()
            {}
        }
    }

    /// Whether the selector selects `namespace` now.
    pub fn selects(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|store| store.get(&reflector::ObjectRef::new(namespace)).is_some())
    }

    fn ours(&self, holder: &str) -> bool {
        holder
            .split_once('/')
            .is_some_and(|(shard, _)| shard == self.name)
    }

    /// Takes or renews the claim of `rotation`, or says who holds it.
    /// A new claim is owned by the rotation (`owner`): deleted with it.
    ///
    /// The claim is renewed as of `now`, taken before its calls, and the
    /// reconcile it admits starts after them: so they are bounded by
    /// [`CLAIM_CALLS_TIMEOUT`], and the reconcile ends (at most
    /// [`crate::run::RECONCILE_TIMEOUT`] later) before the claim lapses.
    pub async fn claim(
        &self,
        namespace: &str,
        rotation: &str,
        owner: Option<OwnerReference>,
        now: Timestamp,
    ) -> Result<Claim, kube::Error> {
        tokio::time::timeout(
            CLAIM_CALLS_TIMEOUT,
            self.claim_unbounded(namespace, rotation, owner, now),
        )
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the API server did not answer the claim's calls within {} s",
                    CLAIM_CALLS_TIMEOUT.as_secs()
                ),
            ))))
        })
    }

    async fn claim_unbounded(
        &self,
        namespace: &str,
        rotation: &str,
        owner: Option<OwnerReference>,
        now: Timestamp,
    ) -> Result<Claim, kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let name = claim_name(rotation);
        let at = MicroTime(now);
        let Some(mut lease) = api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(SHARD_LABEL.to_owned(), self.name.clone())].into()),
                    owner_references: owner.map(|owner| vec![owner]),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.holder.clone()),
                    lease_duration_seconds: Some(CLAIM_SECONDS),
                    acquire_time: Some(at.clone()),
                    renew_time: Some(at),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            // Creation is the compare-and-swap between two shards.
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(shard = %self.name, holder = %self.holder, "claimed the rotation");
                    Ok(Claim::Ours)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Claim::Theirs {
                    holder: "another shard, which claimed it meanwhile".to_owned(),
                }),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let lapsed = lapsed(
            spec.renew_time.as_ref().map(|t| t.0),
            spec.lease_duration_seconds,
            now,
        );
        let taken = if holder.is_empty() || self.ours(&holder) {
            false
        } else if lapsed {
            true
        } else {
            return Ok(Claim::Theirs { holder });
        };
        if taken || holder.is_empty() {
            spec.acquire_time = Some(at.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.holder.clone());
        spec.lease_duration_seconds = Some(CLAIM_SECONDS);
        spec.renew_time = Some(at);
        lease
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(SHARD_LABEL.to_owned(), self.name.clone());
        // The resourceVersion read is the compare-and-swap: a shard that
        // renewed or took it meanwhile makes this fail.
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(_) => {
                if holder != self.holder {
                    tracing::info!(shard = %self.name, holder = %self.holder, from = %holder, lapsed = taken, "claimed the rotation");
                }
                Ok(Claim::Ours)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Claim::Theirs {
                holder: if holder.is_empty() {
                    "another shard, which claimed it meanwhile".to_owned()
                } else {
                    holder
                },
            }),
            Err(error) => Err(error),
        }
    }

    /// Releases the claim of `rotation` if this shard holds it: another
    /// shard may take it at once. Returns whether it did.
    pub async fn release(&self, namespace: &str, rotation: &str) -> Result<bool, kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), namespace);
        let name = claim_name(rotation);
        let Some(mut lease) = api.get_opt(&name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| self.ours(h))
        {
            return Ok(false);
        }
        spec.holder_identity = None;
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::SelectorExt as _;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn no_value_a_tenant_writes_into_a_claim_holds_it_longer_than_claim_seconds() {
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let ago = |s: i64| Some(Timestamp::from_second(now.as_second() - s).expect("a time"));
        let claim = i64::from(CLAIM_SECONDS);
        assert!(!lapsed(ago(0), Some(CLAIM_SECONDS), now));
        assert!(!lapsed(ago(claim), None, now));
        assert!(lapsed(ago(claim + 1), Some(CLAIM_SECONDS), now));
        assert!(lapsed(None, Some(CLAIM_SECONDS), now));
        // A longer duration is taken as CLAIM_SECONDS.
        assert!(lapsed(ago(claim + 1), Some(i32::MAX), now));
        assert!(lapsed(ago(1), Some(-5), now));
        // A renewal from a clock a little ahead counts; one far in the
        // future is none.
        let skew = CLAIM_CLOCK_SKEW.as_secs() as i64;
        assert!(!lapsed(ago(-skew), Some(CLAIM_SECONDS), now));
        assert!(lapsed(ago(-skew - 1), Some(CLAIM_SECONDS), now));
        assert!(lapsed(Some(Timestamp::MAX), Some(CLAIM_SECONDS), now));
        // The reconcile a claim admits ends before it lapses.
        assert!(
            CLAIM_CALLS_TIMEOUT + crate::run::RECONCILE_TIMEOUT + CLAIM_CLOCK_SKEW
                <= Duration::from_secs(CLAIM_SECONDS as u64)
        );
    }

    #[test]
    fn selectors_parse_as_kubectl_takes_them() {
        let a = parse_selector("ksa.dev/shard=a").expect("parses");
        assert!(a.matches(&labels(&[("ksa.dev/shard", "a")])));
        assert!(!a.matches(&labels(&[("ksa.dev/shard", "b")])));
        assert!(!a.matches(&labels(&[])));
        let default = parse_selector("!ksa.dev/shard").expect("parses");
        assert!(default.matches(&labels(&[("other", "x")])));
        assert!(!default.matches(&labels(&[("ksa.dev/shard", "a")])));
        let set = parse_selector("ksa.dev/shard in (a, b),env!=test,team").expect("parses");
        assert!(set.matches(&labels(&[("ksa.dev/shard", "b"), ("team", "x")])));
        assert!(!set.matches(&labels(&[
            ("ksa.dev/shard", "b"),
            ("team", "x"),
            ("env", "test")
        ])));
        assert!(!set.matches(&labels(&[("ksa.dev/shard", "c"), ("team", "x")])));
        assert_eq!(
            set.to_string(),
            "ksa.dev/shard in (a,b),env!=test,team",
            "sent to the API server as written"
        );
        let notin = parse_selector("ksa.dev/shard notin (a)").expect("parses");
        assert!(notin.matches(&labels(&[])));
        assert!(!notin.matches(&labels(&[("ksa.dev/shard", "a")])));
        assert_eq!(parse_selector("a==b").expect("parses").to_string(), "a=b");
    }

    #[test]
    fn bad_selectors_are_refused_naming_what_is_wrong() {
        for bad in [
            "",
            " ",
            "a=b,",
            ",a",
            "ksa.dev/shard=a b",
            "Bad_Prefix/x=y",
            "k in a,b",
            "=a",
            "!",
            "k=-a",
            "a=b;c=d",
        ] {
            let error = parse_selector(bad).expect_err(bad);
            assert!(error.contains("--namespace-selector"), "{error}");
            assert!(
                error.contains("ksa.dev/shard=a"),
                "says what to give: {error}"
            );
        }
    }

    #[test]
    fn shard_names_name_a_lease() {
        for good in ["a", "shard-1", "eu-west"] {
            check_name(good).expect(good);
        }
        for bad in ["", "A", "a/b", "-a", "a-", "a_b", &"x".repeat(41)] {
            let error = check_name(bad).expect_err(bad);
            assert!(error.contains("--shard"), "{error}");
        }
    }

    #[test]
    fn a_claim_outlives_every_reconcile_begun_under_it() {
        assert!(
            i64::from(CLAIM_SECONDS)
                > i64::try_from(crate::run::RECONCILE_TIMEOUT.as_secs()).unwrap_or(i64::MAX)
        );
    }
}
