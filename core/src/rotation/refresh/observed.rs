//! The `wait` policy's refreshes, observed: which pods' kubelets must ask
//! for a new token, and whether the API server's audit stream shows that
//! each has.
//!
//! No Kubernetes API shows a kubelet's token refresh except the API
//! server's audit stream: each refresh is a `create` of
//! `serviceaccounts/token` by `system:node:NODE`, bound to the pod's uid
//! (what the controller's audit webhook records, `ksa-controller`'s
//! `audit` module). These rules decide on what it recorded:
//!
//! - A pod must refresh when it holds a bound token from before
//!   RefreshTokens began (Sign confirmed: every API server signs with the
//!   new key): the same pods the window waits for ([`must_refresh`]),
//!   whatever the window says. A pod created or started since holds a
//!   new-key token already.
//! - It has refreshed when a TokenRequest bound to its uid was received at
//!   or after RefreshTokens began plus the clock skew allowed (the audit
//!   stream's times are the API server's clock, the step's start is ksa's):
//!   that request was signed with the new key ([`refreshed`]).
//! - RefreshTokens ends as soon as every such pod still there has
//!   refreshed. The window stays the bound: audit events can be dropped (a
//!   full batch buffer, a controller restart), so when it passes with pods
//!   unseen the step ends as it did without the feed, and the controller
//!   warns, naming them (`RefreshNotObserved`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Horizon, Pod, fresh_by_age, holds_token};
use crate::rotation::MAX_NAMED;

/// The kubelet refreshes the audit stream showed, for the pods that must
/// refresh: what [`Observed::kubelet_refreshes`](crate::rotation::Observed::kubelet_refreshes) carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletRefreshes {
    /// Pods holding a bound token from before RefreshTokens.
    pub pods: u64,
    /// Of those, the pods whose kubelet was seen asking for a new token.
    pub seen: u64,
    /// The first few not seen (`namespace/name`), at most [`MAX_NAMED`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen: Vec<String>,
}

impl KubeletRefreshes {
    /// Whether every pod that must refresh was seen refreshing.
    pub fn all_seen(&self) -> bool {
        self.seen >= self.pods
    }

    /// How many pods were not seen refreshing.
    pub fn unseen_count(&self) -> u64 {
        self.pods.saturating_sub(self.seen)
    }

    /// Counts `pod` (one that [`must_refresh`]), seen or not.
    pub fn record(&mut self, pod: &Pod<'_>, seen: bool) {
        self.pods = self.pods.saturating_add(1);
        if seen {
            self.seen = self.seen.saturating_add(1);
        } else if self.unseen.len() < MAX_NAMED {
            self.unseen.push(format!("{}/{}", pod.namespace, pod.name));
        }
    }
}

impl fmt::Display for KubeletRefreshes {
    /// `2 of 3 pods seen refreshing their token (not seen: apps/a)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} pods seen refreshing their token",
            self.seen, self.pods
        )?;
        if !self.unseen.is_empty() {
            write!(f, " (not seen: {}", self.unseen.join(", "))?;
            let more = self.unseen_count().saturating_sub(self.unseen.len() as u64);
            if more > 0 {
                write!(f, " and {more} more")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// Whether `pod`'s kubelet must ask for a new token before RefreshTokens
/// can end: it holds a bound token that predates the step (by its
/// creation and start, never by the window: the window is what the
/// observation replaces).
pub fn must_refresh(pod: &Pod<'_>, horizon: &Horizon<'_>) -> bool {
    holds_token(pod).is_ok() && fresh_by_age(pod, horizon).is_none()
}

/// From when a TokenRequest is taken for a new-key token: RefreshTokens'
/// start plus the clock skew allowed between ksa and the API servers.
pub fn refreshed_from(horizon: &Horizon<'_>) -> Timestamp {
    let skew = i64::try_from(horizon.skew.as_secs()).unwrap_or(i64::MAX);
    horizon
        .since
        .as_second()
        .checked_add(skew)
        .and_then(|s| Timestamp::from_second(s).ok())
        .map(|t| {
            // Keep the step's own sub-second part.
            t.checked_add(Duration::from_nanos(u64::from(
                horizon.since.subsec_nanosecond().unsigned_abs(),
            )))
            .unwrap_or(t)
        })
        .unwrap_or(Timestamp::MAX)
}

/// Whether the TokenRequest received at `received` for a pod refreshed its
/// token with the new key.
pub fn refreshed(received: Timestamp, horizon: &Horizon<'_>) -> bool {
    received >= refreshed_from(horizon)
}

/// The refreshes of `pods` (every pod of the cluster, or a page of them),
/// given the latest TokenRequest received for each pod uid that the audit
/// stream showed (`requests`).
pub fn tally<'a>(
    pods: impl IntoIterator<Item = &'a Pod<'a>>,
    requests: &BTreeMap<String, Timestamp>,
    horizon: &Horizon<'_>,
    into: &mut KubeletRefreshes,
) {
    for pod in pods {
        if !must_refresh(pod, horizon) {
            continue;
        }
        let seen = requests
            .get(pod.uid)
            .is_some_and(|received| refreshed(*received, horizon));
        into.record(pod, seen);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{at, horizon, pod};
    use super::*;

    fn requests(pairs: &[(&str, i64)]) -> BTreeMap<String, Timestamp> {
        pairs
            .iter()
            .map(|(uid, offset)| ((*uid).to_owned(), at(*offset)))
            .collect()
    }

    fn run(pods: &[Pod<'static>], seen: &[(&str, i64)]) -> KubeletRefreshes {
        let mut tally_ = KubeletRefreshes::default();
        tally(pods, &requests(seen), &horizon(100), &mut tally_);
        tally_
    }

    #[test]
    fn a_pod_from_before_the_step_refreshed_after_it_plus_skew_counts() {
        let old = Pod {
            uid: "a",
            ..pod("a")
        };
        // Skew is 60 s: at 60 s exactly it counts, one second before not.
        assert_eq!(run(std::slice::from_ref(&old), &[("a", 60)]).seen, 1);
        let late = run(std::slice::from_ref(&old), &[("a", 59)]);
        assert_eq!((late.pods, late.seen), (1, 0));
        assert_eq!(late.unseen, vec!["apps/a".to_owned()]);
        // A request before the step (the token it holds) is not a refresh.
        assert_eq!(run(std::slice::from_ref(&old), &[("a", -500)]).seen, 0);
        assert!(!run(std::slice::from_ref(&old), &[]).all_seen());
    }

    #[test]
    fn a_request_for_another_pods_uid_does_not_count() {
        let a = Pod {
            uid: "a",
            ..pod("a")
        };
        let b = Pod {
            uid: "b",
            ..pod("b")
        };
        let tally_ = run(&[a, b], &[("b", 300), ("c", 300)]);
        assert_eq!((tally_.pods, tally_.seen), (2, 1));
        assert_eq!(tally_.unseen, vec!["apps/a".to_owned()]);
        assert!(!tally_.all_seen());
    }

    #[test]
    fn pods_created_or_started_since_the_step_or_holding_no_token_need_no_refresh() {
        let created = Pod {
            uid: "c",
            created: Some(at(5)),
            started: Some(at(6)),
            ..pod("created")
        };
        let started = Pod {
            uid: "s",
            // Started past the skew allowance: the kubelet asked since.
            started: Some(at(70)),
            ..pod("started")
        };
        let no_token = Pod {
            uid: "n",
            token_seconds: None,
            ..pod("no-token")
        };
        let finished = Pod {
            uid: "f",
            phase: super::super::Phase::Succeeded,
            ..pod("finished")
        };
        let mirror = Pod {
            uid: "m",
            mirror: true,
            ..pod("mirror")
        };
        let tally_ = run(&[created, started, no_token, finished, mirror], &[]);
        assert_eq!(tally_, KubeletRefreshes::default());
        assert!(tally_.all_seen(), "nothing to wait for");
    }

    #[test]
    fn the_window_having_passed_does_not_make_a_pod_seen() {
        // The observation is what the kubelet did, not what the clock
        // says: long past the window, an unseen pod stays unseen.
        let old = Pod {
            uid: "a",
            token_seconds: Some(600),
            ..pod("a")
        };
        let mut tally_ = KubeletRefreshes::default();
        tally(
            std::slice::from_ref(&old),
            &BTreeMap::new(),
            &horizon(100_000),
            &mut tally_,
        );
        assert_eq!((tally_.pods, tally_.seen), (1, 0));
    }

    #[test]
    fn only_the_first_few_unseen_are_named_and_the_rest_counted() {
        let names: Vec<String> = (0..MAX_NAMED + 3).map(|i| format!("p{i}")).collect();
        let pods: Vec<Pod<'_>> = names
            .iter()
            .map(|name| Pod {
                name,
                uid: name,
                ..pod("x")
            })
            .collect();
        let mut tally_ = KubeletRefreshes::default();
        tally(&pods, &BTreeMap::new(), &horizon(100), &mut tally_);
        assert_eq!(tally_.pods, (MAX_NAMED + 3) as u64);
        assert_eq!(tally_.unseen.len(), MAX_NAMED);
        assert!(tally_.to_string().ends_with(" and 3 more)"), "{tally_}");
        assert!(
            tally_
                .to_string()
                .starts_with(&format!("0 of {} pods seen", MAX_NAMED + 3))
        );
    }

    #[test]
    fn refreshed_from_is_the_step_start_plus_skew_and_saturates() {
        let h = horizon(0);
        assert_eq!(refreshed_from(&h), at(60));
        let forever = Horizon {
            skew: Duration::MAX,
            ..h
        };
        assert_eq!(refreshed_from(&forever), Timestamp::MAX);
        assert!(!refreshed(at(1_000_000), &forever));
    }
}
