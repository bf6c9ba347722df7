//! Which kube-apiserver instances a step must be confirmed on.
//!
//! The `kubernetes` EndpointSlice lists the instances that are ready now:
//! one that is restarting, not ready, hung or cut off drops out of it, and
//! a step confirmed on the others alone is not confirmed. Every
//! kube-apiserver also announces itself with an identity Lease in
//! `kube-system` (APIServerIdentity, GA in 1.31), renewed every 10 s,
//! deleted when it shuts down gracefully, valid for an hour after its last
//! renewal otherwise. Since 1.36 (UnknownVersionInteroperabilityProxy,
//! beta) the Lease carries the address its peers reach it at, the same
//! address the EndpointSlice lists while it is ready.
//!
//! The rule, decided here: a step is confirmed on every instance that is
//! listed or announced. A live announced instance not listed is asked at
//! its announced address; one that announces no address cannot be asked,
//! and holds the step, by name, while it is unaccounted for.

use jiff::Timestamp;

/// An identity Lease of a kube-apiserver, as read from `kube-system`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Announcement {
    /// The Lease's name (`apiserver-…`, a hash of the host name).
    pub lease: String,
    /// Its `kubernetes.io/hostname` label.
    pub host: Option<String>,
    /// Its `kubernetes.io/peer-advertise-address` annotation (`ip:port`).
    pub address: Option<String>,
    /// `spec.renewTime`.
    pub renewed: Option<Timestamp>,
    /// `spec.leaseDurationSeconds`.
    pub duration_seconds: Option<i64>,
}

impl Announcement {
    /// Whether the instance may still be running: its Lease was renewed
    /// within its duration. A Lease with no renewal time or duration is
    /// taken as live: holding a step for an instance that is gone is safe,
    /// confirming without one that runs is not.
    pub fn is_live(&self, now: Timestamp) -> bool {
        match (self.renewed, self.duration_seconds) {
            (Some(renewed), Some(seconds)) => {
                renewed.as_second().saturating_add(seconds.max(0)) > now.as_second()
            }
            _ => true,
        }
    }

    /// How the instance is named in messages.
    pub fn describe(&self) -> String {
        let host = self.host.as_deref().unwrap_or("an unknown host");
        match &self.address {
            Some(address) => format!(
                "kube-apiserver on {host} at {address} (identity Lease kube-system/{})",
                self.lease
            ),
            None => format!(
                "kube-apiserver on {host} (identity Lease kube-system/{})",
                self.lease
            ),
        }
    }
}

/// An instance a step must be confirmed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instance {
    /// Ask it at this address (`host:port`, IPv6 in brackets).
    At(String),
    /// It cannot be asked: it announces itself but no address, and the
    /// EndpointSlice does not account for it. The text names it.
    Unaddressable(String),
}

/// The instances to confirm a step on: every `listed` address (the ready
/// endpoints of the `kubernetes` EndpointSlice, `host:port`), and every
/// live `announced` instance the list does not hold.
///
/// `fallback` is the address the client reaches the cluster at, asked when
/// nothing is listed (a lone instance on loopback, which the EndpointSlice
/// refuses): it stands for one announced instance.
pub fn instances(
    listed: &[String],
    announced: &[Announcement],
    fallback: &str,
    now: Timestamp,
) -> Vec<Instance> {
    let live: Vec<&Announcement> = announced.iter().filter(|a| a.is_live(now)).collect();
    let unaddressable = |a: &&Announcement| Instance::Unaddressable(a.describe());
    if listed.is_empty() {
        if live.len() <= 1 {
            return vec![Instance::At(fallback.to_owned())];
        }
        // Several instances announce themselves and none is ready: each is
        // asked where it says it is (the fallback reaches one of them).
        let mut result = vec![Instance::At(fallback.to_owned())];
        result.extend(live.iter().map(|a| match &a.address {
            Some(address) => Instance::At(address.clone()),
            None => unaddressable(a),
        }));
        return result;
    }
    let mut asked: Vec<String> = listed.to_vec();
    asked.sort();
    asked.dedup();
    let slots = asked.len();
    // Announced with a listed address: accounted for by its slot. With
    // another address: not ready, hung or cut off; asked where it is.
    let mut matched = 0;
    for address in live.iter().filter_map(|a| a.address.as_ref()) {
        if asked[..slots].contains(address) {
            matched += 1;
        } else if !asked.contains(address) {
            asked.push(address.clone());
        }
    }
    let mut result: Vec<Instance> = asked.into_iter().map(Instance::At).collect();
    // Announced with no address: the listed slots no address matched may
    // be theirs. More of them than free slots: which are missing cannot
    // be told, so each is named.
    let silent: Vec<&Announcement> = live
        .iter()
        .copied()
        .filter(|a| a.address.is_none())
        .collect();
    if silent.len() > slots.saturating_sub(matched) {
        let mut names: Vec<Instance> = silent.iter().map(unaddressable).collect();
        names.sort_by_key(|i| format!("{i:?}"));
        result.extend(names);
    }
    result
}

/// Why an imported key is not the one the cluster uses: the instances that
/// do not both sign with it and list it, in words for a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotInUse {
    /// The instances that did not confirm it (each with why, when it did
    /// not answer); empty when no instance answered at all.
    pub instances: Vec<String>,
}

impl std::fmt::Display for NotInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.instances.is_empty() {
            f.write_str("no API server instance answered")
        } else {
            f.write_str(&self.instances.join(", "))
        }
    }
}

/// Whether the cluster signs with and accepts key `version` today, on
/// every instance asked: the rule an import of the cluster's current key
/// must pass (`ksa keys import` before it writes, the controller before it
/// seals). An instance that was not asked, or answered with another key,
/// fails it; so does a cluster where no instance answered.
pub fn in_use_everywhere(
    views: &[crate::rotation::ApiServerView],
    version: crate::KeyVersion,
) -> Result<(), NotInUse> {
    let instances: Vec<String> = views
        .iter()
        .filter(|view| {
            view.unanswered.is_some()
                || !view.accepts.contains(&version)
                || view.signs_with != Some(version)
        })
        .map(|view| match &view.unanswered {
            Some(why) => format!("{} ({why})", view.name),
            None => view.name.clone(),
        })
        .collect();
    if views.is_empty() || !instances.is_empty() {
        return Err(NotInUse { instances });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, accepts: &[u64], signs: Option<u64>) -> crate::rotation::ApiServerView {
        crate::rotation::ApiServerView {
            name: name.to_owned(),
            accepts: accepts.iter().map(|v| crate::KeyVersion::new(*v)).collect(),
            signs_with: signs.map(crate::KeyVersion::new),
            ..crate::rotation::ApiServerView::default()
        }
    }

    #[test]
    fn an_import_is_in_use_only_when_every_instance_signs_with_it_and_lists_it() {
        let one = crate::KeyVersion::FIRST;
        assert_eq!(
            in_use_everywhere(&[view("a", &[1], Some(1)), view("b", &[1], Some(1))], one),
            Ok(())
        );
        let refused = in_use_everywhere(&[view("a", &[1], Some(1)), view("b", &[1], None)], one);
        assert_eq!(
            refused,
            Err(NotInUse {
                instances: vec!["b".into()]
            })
        );
        let refused = in_use_everywhere(&[view("a", &[], Some(1))], one);
        assert_eq!(
            refused,
            Err(NotInUse {
                instances: vec!["a".into()]
            })
        );
        let mut silent = view("c", &[1], Some(1));
        silent.unanswered = Some("it did not answer".into());
        let silent = in_use_everywhere(&[silent], one).map_err(|e| e.to_string());
        assert_eq!(silent, Err("c (it did not answer)".to_owned()));
        let none = in_use_everywhere(&[], one).map_err(|e| e.to_string());
        assert_eq!(none, Err("no API server instance answered".to_owned()));
    }

    const NOW: i64 = 1_800_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("a time in range")
    }

    fn lease(name: &str, address: Option<&str>, renewed_ago: i64) -> Announcement {
        Announcement {
            lease: name.to_owned(),
            host: Some(format!("host-{name}")),
            address: address.map(str::to_owned),
            renewed: Some(at(NOW - renewed_ago)),
            duration_seconds: Some(3600),
        }
    }

    fn listed(addresses: &[&str]) -> Vec<String> {
        addresses.iter().map(|a| (*a).to_owned()).collect()
    }

    fn asked(instances: &[Instance]) -> Vec<&str> {
        instances
            .iter()
            .filter_map(|i| match i {
                Instance::At(a) => Some(a.as_str()),
                Instance::Unaddressable(_) => None,
            })
            .collect()
    }

    #[test]
    fn every_listed_instance_announced_is_asked_once() {
        let slice = listed(&["10.0.0.1:6443", "10.0.0.2:6443"]);
        let leases = [
            lease("a", Some("10.0.0.1:6443"), 5),
            lease("b", Some("10.0.0.2:6443"), 5),
        ];
        let found = instances(&slice, &leases, "https://cluster", at(NOW));
        assert_eq!(asked(&found), ["10.0.0.1:6443", "10.0.0.2:6443"]);
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn an_announced_instance_missing_from_the_slice_is_asked_at_its_address() {
        let slice = listed(&["10.0.0.1:6443", "10.0.0.2:6443"]);
        let leases = [
            lease("a", Some("10.0.0.1:6443"), 5),
            lease("b", Some("10.0.0.2:6443"), 5),
            // Hung: not renewed for ten minutes, still within its hour.
            lease("c", Some("10.0.0.3:6443"), 600),
        ];
        let found = instances(&slice, &leases, "https://cluster", at(NOW));
        assert_eq!(
            asked(&found),
            ["10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.3:6443"]
        );
    }

    #[test]
    fn an_expired_lease_is_an_instance_that_is_gone() {
        let slice = listed(&["10.0.0.1:6443"]);
        let leases = [
            lease("a", Some("10.0.0.1:6443"), 5),
            lease("c", Some("10.0.0.3:6443"), 3601),
        ];
        let found = instances(&slice, &leases, "https://cluster", at(NOW));
        assert_eq!(found, [Instance::At("10.0.0.1:6443".to_owned())]);
    }

    #[test]
    fn a_lone_instance_on_loopback_is_the_cluster_address() {
        // The EndpointSlice refuses loopback addresses: nothing is listed,
        // and the one announced instance is the one the client reaches.
        let leases = [lease("a", Some("192.0.2.7:6443"), 5)];
        let found = instances(&[], &leases, "https://127.0.0.1:6443", at(NOW));
        assert_eq!(found, [Instance::At("https://127.0.0.1:6443".to_owned())]);
    }

    #[test]
    fn leases_without_addresses_are_counted_against_the_list() {
        let slice = listed(&["10.0.0.1:6443", "10.0.0.2:6443"]);
        let two = [lease("a", None, 5), lease("b", None, 5)];
        assert_eq!(
            instances(&slice, &two, "x", at(NOW)).len(),
            2,
            "two announced, two listed: all accounted for"
        );
        let three = [
            lease("a", None, 5),
            lease("b", None, 5),
            lease("c", None, 5),
        ];
        let found = instances(&slice, &three, "x", at(NOW));
        let named: Vec<&Instance> = found
            .iter()
            .filter(|i| matches!(i, Instance::Unaddressable(_)))
            .collect();
        assert_eq!(named.len(), 3, "{found:?}");
        assert!(
            format!("{named:?}").contains("identity Lease kube-system/c"),
            "{named:?}"
        );
    }

    #[test]
    fn a_lease_with_no_renewal_is_taken_as_live() {
        let mut hung = lease("c", Some("10.0.0.3:6443"), 0);
        hung.renewed = None;
        assert!(hung.is_live(at(NOW)));
        let slice = listed(&["10.0.0.1:6443"]);
        let found = instances(&slice, &[hung], "x", at(NOW));
        assert_eq!(asked(&found), ["10.0.0.1:6443", "10.0.0.3:6443"]);
    }

    #[test]
    fn a_huge_duration_does_not_overflow() {
        let mut forever = lease("c", Some("10.0.0.3:6443"), 0);
        forever.duration_seconds = Some(i64::MAX);
        assert!(forever.is_live(at(NOW)));
        forever.duration_seconds = Some(-5);
        assert!(!forever.is_live(at(NOW)));
    }

    proptest::proptest! {
        /// Whatever the slice and the Leases say: every listed address is
        /// asked, every live Lease's address is asked, and something is
        /// always asked.
        #[test]
        fn every_listed_and_every_live_announced_instance_is_asked(
            listed_ids in proptest::collection::vec(0u8..6, 0..5),
            leases in proptest::collection::vec((0u8..6, proptest::bool::ANY, 0i64..7200), 0..6),
        ) {
            let address = |id: u8| format!("10.0.0.{id}:6443");
            let listed: Vec<String> = listed_ids.iter().copied().map(address).collect();
            let announced: Vec<Announcement> = leases
                .iter()
                .enumerate()
                .map(|(n, (id, has_address, ago))| {
                    lease(&format!("l{n}"), has_address.then(|| address(*id)).as_deref(), *ago)
                })
                .collect();
            let found = instances(&listed, &announced, "https://fallback", at(NOW));
            proptest::prop_assert!(!found.is_empty());
            let asked = asked(&found);
            for listed in &listed {
                proptest::prop_assert!(asked.contains(&listed.as_str()));
            }
            let live = announced.iter().filter(|a| a.is_live(at(NOW)));
            if !listed.is_empty() || announced.iter().filter(|a| a.is_live(at(NOW))).count() > 1 {
                for a in live {
                    if let Some(address) = &a.address {
                        proptest::prop_assert!(asked.contains(&address.as_str()), "{found:?}");
                    }
                }
            }
        }
    }
}
