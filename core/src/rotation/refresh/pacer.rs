//! Pacing evictions: one pod of an owner at a time, only while the others
//! are available.

use std::collections::{HashMap, HashSet};

use super::Pace;

/// Picks the evictions of one pass: at most one pod per owner, and none
/// while another pod of that owner is unavailable (its replacement not
/// ready yet), so an evicted workload loses at most one pod at a time to
/// the rotation. Bare pods are not paced.
///
/// It keeps at most `capacity` candidates (the rest wait for a later pass,
/// and the candidates of this one are gone by then) and `capacity` owners
/// with an unavailable pod; past that it cannot tell which owners may lose
/// a pod, and evicts none that is paced.
#[derive(Debug)]
pub struct Pacer<T> {
    unavailable: HashSet<String>,
    overflowed: bool,
    candidates: HashMap<String, T>,
    alone: Vec<T>,
    capacity: usize,
}

impl<T> Pacer<T> {
    pub fn new(capacity: usize) -> Pacer<T> {
        Pacer {
            unavailable: HashSet::new(),
            overflowed: false,
            candidates: HashMap::new(),
            alone: Vec::new(),
            capacity,
        }
    }

    fn room(&self) -> bool {
        self.candidates.len() + self.alone.len() < self.capacity
    }

    /// A pod of `owner` was seen, available or not.
    pub fn see(&mut self, owner: &str, available: bool) {
        if available || self.unavailable.contains(owner) {
            return;
        }
        if self.unavailable.len() < self.capacity {
            self.unavailable.insert(owner.to_owned());
        } else {
            self.overflowed = true;
        }
    }

    /// A stale pod to evict, paced by `pace`.
    pub fn offer(&mut self, pace: Pace<'_>, pod: T) {
        if !self.room() {
            return;
        }
        match pace {
            Pace::Alone => self.alone.push(pod),
            Pace::Owner(owner) => {
                if !self.candidates.contains_key(owner) {
                    self.candidates.insert(owner.to_owned(), pod);
                }
            }
        }
    }

    /// The pods to evict in this pass.
    pub fn evictions(self) -> Vec<T> {
        let mut pods = self.alone;
        if !self.overflowed {
            let unavailable = self.unavailable;
            pods.extend(
                self.candidates
                    .into_iter()
                    .filter(|(owner, _)| !unavailable.contains(owner))
                    .map(|(_, pod)| pod),
            );
        }
        pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_evicts_one_pod_per_owner_while_the_others_are_available() {
        let mut pacer = Pacer::new(100);
        // Owner a: all available; two stale pods, one evicted this pass.
        pacer.see("a", true);
        pacer.offer(Pace::Owner("a"), "a-1");
        pacer.see("a", true);
        pacer.offer(Pace::Owner("a"), "a-2");
        // Owner b: one pod not ready (a replacement): none evicted.
        pacer.see("b", true);
        pacer.offer(Pace::Owner("b"), "b-1");
        pacer.see("b", false);
        // Bare pods are not paced.
        pacer.offer(Pace::Alone, "bare-1");
        pacer.offer(Pace::Alone, "bare-2");
        let mut evictions = pacer.evictions();
        evictions.sort_unstable();
        assert_eq!(evictions, ["a-1", "bare-1", "bare-2"]);
    }

    #[test]
    fn the_pacer_is_bounded() {
        let mut pacer = Pacer::new(3);
        for owner in ["a", "b", "c", "d", "e"] {
            pacer.see(owner, true);
            pacer.offer(Pace::Owner(owner), owner);
        }
        pacer.offer(Pace::Alone, "bare");
        assert_eq!(
            pacer.evictions().len(),
            3,
            "the rest waits for a later pass"
        );
        // Available owners take no room: a later pass reaches new owners.
        let mut pacer = Pacer::new(2);
        for owner in ["a", "b", "c", "d"] {
            pacer.see(owner, true);
        }
        pacer.offer(Pace::Owner("d"), "d-1");
        assert_eq!(pacer.evictions(), ["d-1"]);
        // Too many owners short of a pod to tell: nothing paced is evicted.
        let mut pacer = Pacer::new(2);
        for owner in ["a", "b", "c"] {
            pacer.see(owner, false);
        }
        pacer.offer(Pace::Owner("d"), "d-1");
        pacer.offer(Pace::Alone, "bare");
        assert_eq!(pacer.evictions(), ["bare"]);
    }
}
