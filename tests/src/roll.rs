//! The order in which API server instances are given key sets, checked as
//! it happens: no instance is asked to take a step's key set before every
//! instance serves the key set of the step before.
//!
//! The key sets of a rotation from N to N+1 come in this order: signing
//! N trusting N (Completed), signing N trusting N and N+1 (Trust), signing
//! N+1 trusting both (Sign), signing N+1 trusting N+1 (Retire, then
//! Completed). The rotation asks for the next only once it has seen every
//! instance serve the current one; a roll-out that restarts instances one
//! at a time with the newest key set (as a Deployment or kubelet does)
//! would otherwise hand an instance a key set two steps ahead of another
//! one's: tokens signed with N+1 before every instance trusts it, or N
//! dropped while an instance still signs with it.

use std::fmt;

use crate::ApiServerKeys;

/// A key set as a line of text: the signing key's kid and the trusted
/// ones', shortened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetId(String);

impl KeySetId {
    pub fn of(keys: &ApiServerKeys) -> KeySetId {
        let short = |kid: &ksa_core::KeyId| kid.as_str().chars().take(8).collect::<String>();
        let trusted: Vec<String> = keys.public.iter().map(|k| short(k.kid())).collect();
        KeySetId(format!(
            "signs with {}, trusts {}",
            short(keys.signing.kid()),
            trusted.join(" ")
        ))
    }
}

impl fmt::Display for KeySetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an instance is doing, by the index of its key set in
/// [`RollLog`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ready, and listed in the `kubernetes` EndpointSlice (one instance:
    /// ready) with this key set.
    Serving(usize),
    /// Started with this key set, not ready yet; or stopped.
    Starting(usize),
    Stopped,
}

/// Every key set asked of the instances of one control plane, in order,
/// with each instance's state, checked at every ask.
#[derive(Debug, Clone)]
pub struct RollLog {
    key_sets: Vec<KeySetId>,
    instances: Vec<State>,
    names: Vec<String>,
    asks: usize,
    violations: Vec<String>,
    /// One line per ask: which instance, which key set, what every
    /// instance was serving then.
    pub history: Vec<String>,
}

impl RollLog {
    /// Instances named `names`, none started yet.
    pub fn new(names: Vec<String>) -> RollLog {
        RollLog {
            key_sets: Vec::new(),
            instances: vec![State::Stopped; names.len()],
            names,
            asks: 0,
            violations: Vec::new(),
            history: Vec::new(),
        }
    }

    fn index(&mut self, key_set: KeySetId) -> usize {
        match self.key_sets.iter().position(|k| *k == key_set) {
            Some(index) => index,
            None => {
                self.key_sets.push(key_set);
                self.key_sets.len() - 1
            }
        }
    }

    /// Instance `instance` is (re)started with `key_set` it already ran,
    /// or at the control plane's start: nothing is asked of it.
    pub fn starting(&mut self, instance: usize, key_set: KeySetId) {
        let index = self.index(key_set);
        self.instances[instance] = State::Starting(index);
    }

    /// Instance `instance` is asked to run `key_set` instead of the one it
    /// runs: checks that every instance, itself included, serves the key
    /// set before it (or this one), and records a violation otherwise.
    pub fn ask(&mut self, instance: usize, key_set: KeySetId, seconds: f64) {
        let index = self.index(key_set);
        self.asks += 1;
        let mut serving = Vec::new();
        for (other, state) in self.instances.iter().enumerate() {
            let name = &self.names[other];
            let problem = match *state {
                State::Serving(current) if current + 1 >= index => None,
                State::Serving(current) => Some(format!(
                    "served key set #{current} ({})",
                    self.key_sets[current]
                )),
                State::Starting(current) => Some(format!(
                    "was not serving yet (starting with key set #{current})"
                )),
                State::Stopped => Some("was stopped".to_owned()),
            };
            serving.push(match state {
                State::Serving(current) => format!("{name}: #{current}"),
                _ => format!("{name}: -"),
            });
            if let Some(problem) = problem {
                self.violations.push(format!(
                    "at {seconds:.1}s {} was asked to run key set #{index} ({}) while {name} {problem}",
                    self.names[instance], self.key_sets[index]
                ));
            }
        }
        self.history.push(format!(
            "{seconds:>6.1}s {} asked to run #{index} ({}); serving: {}",
            self.names[instance],
            self.key_sets[index],
            serving.join(", ")
        ));
        self.instances[instance] = State::Starting(index);
    }

    /// Instance `instance` is ready with the key set it was started with.
    pub fn serving(&mut self, instance: usize) {
        if let State::Starting(index) = self.instances[instance] {
            self.instances[instance] = State::Serving(index);
        }
    }

    pub fn stopped(&mut self, instance: usize) {
        self.instances[instance] = State::Stopped;
    }

    /// How many times an instance was asked to run another key set.
    pub fn asks(&self) -> usize {
        self.asks
    }

    /// Each ask made before every instance served the key set before it.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> KeySetId {
        KeySetId(text.to_owned())
    }

    fn three() -> RollLog {
        let mut log = RollLog::new(vec!["a".into(), "b".into(), "c".into()]);
        for instance in 0..3 {
            log.starting(instance, id("one"));
            log.serving(instance);
        }
        log
    }

    /// Rolls `key_set` onto every instance in order, each served before
    /// the next.
    fn roll(log: &mut RollLog, key_set: &str) {
        for instance in 0..3 {
            log.ask(instance, id(key_set), 0.0);
            log.serving(instance);
        }
    }

    #[test]
    fn a_roll_out_step_by_step_is_in_order() {
        let mut log = three();
        for step in ["trust", "sign", "retire"] {
            roll(&mut log, step);
        }
        assert_eq!(log.asks(), 9);
        assert_eq!(log.violations(), [] as [String; 0]);
        assert_eq!(log.history.len(), 9);
    }

    #[test]
    fn the_next_step_asked_mid_roll_is_a_violation() {
        let mut log = three();
        log.ask(0, id("trust"), 0.0);
        log.serving(0);
        // The step after Trust, before b and c were asked to trust.
        log.ask(1, id("sign"), 1.5);
        assert_eq!(
            log.violations(),
            [
                "at 1.5s b was asked to run key set #2 (sign) while b served key set #0 (one)",
                "at 1.5s b was asked to run key set #2 (sign) while c served key set #0 (one)",
            ]
        );
    }

    #[test]
    fn an_instance_not_serving_yet_has_not_confirmed() {
        let mut log = three();
        log.ask(0, id("trust"), 0.0);
        log.serving(0);
        log.ask(1, id("trust"), 0.0);
        log.serving(1);
        log.ask(2, id("trust"), 0.0);
        // c is still starting when a is asked to sign.
        log.ask(0, id("sign"), 2.0);
        assert_eq!(
            log.violations(),
            [
                "at 2.0s a was asked to run key set #2 (sign) while c was not serving yet (starting with key set #1)"
            ]
        );
        log.stopped(1);
        log.ask(2, id("sign"), 3.0);
        assert!(
            log.violations()
                .iter()
                .any(|v| v == "at 3.0s c was asked to run key set #2 (sign) while b was stopped")
        );
    }
}
