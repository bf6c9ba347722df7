//! The order in which API server instances are given their configuration,
//! checked as it happens: no instance is asked to take a step before every
//! instance serves the step before.
//!
//! A configuration moves along two lines, each checked on its own. The key
//! sets of a rotation from N to N+1 come in this order: signing N trusting
//! N (Completed), signing N trusting N and N+1 (Trust), signing N+1
//! trusting both (Sign), signing N+1 trusting N+1 (Retire, then
//! Completed). The issuer flags of a rotation from A to B (SPEC section
//! 10): `[A]`, `[A, B]` (Trust; `--api-audiences` pinned), `[B, A]`
//! (Sign), `[B]` (Retire). The rotation asks for the next only once it
//! has seen every instance serve the current one; a roll-out that restarts
//! instances one at a time with the newest configuration (as a Deployment
//! or kubelet does) would otherwise hand an instance a step two ahead of
//! another one's: tokens signed with N+1 (or carrying `iss` B) before
//! every instance accepts them, or N (or A) dropped while an instance
//! still signs with it.
//!
//! Each line is checked on its own, so that a key set and issuer flags
//! that reach an instance in two restarts (the key Secret and the
//! workload's args written one after the other) are one step, not two.

use std::fmt;

use crate::control_plane::{InstanceSpec, Signing};

/// What an instance runs, as two lines of text: its key set (the signing
/// key's kid and the trusted ones', shortened; or the external signer) and
/// its issuer flags (`--service-account-issuer` values in order, and
/// `--api-audiences` when set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    key_set: String,
    issuers: String,
}

impl SpecId {
    pub fn of(spec: &InstanceSpec) -> SpecId {
        let key_set = match &spec.signing {
            Signing::KeyFiles(keys) => {
                let short =
                    |kid: &ksa_core::KeyId| kid.as_str().chars().take(8).collect::<String>();
                let trusted: Vec<String> = keys.public.iter().map(|k| short(k.kid())).collect();
                format!(
                    "signs with {}, trusts {}",
                    short(keys.signing.kid()),
                    trusted.join(" ")
                )
            }
            Signing::External(socket) => {
                format!("signs through the signer at {}", socket.display())
            }
        };
        let mut issuers = format!("issuers {}", spec.issuers.join(" "));
        if let Some(audiences) = &spec.api_audiences {
            issuers.push_str(&format!(", api-audiences {audiences}"));
        }
        if !spec.extra_flags.is_empty() {
            issuers.push_str(&format!(", {}", spec.extra_flags.join(" ")));
        }
        SpecId { key_set, issuers }
    }
}

impl fmt::Display for SpecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.key_set, self.issuers)
    }
}

/// A configuration's place on each line: the index of its key set and of
/// its issuer flags, each in the order first asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    key_set: usize,
    issuers: usize,
}

/// What an instance is doing, by the index of its configuration in
/// [`RollLog`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ready, and listed in the `kubernetes` EndpointSlice (one instance:
    /// ready) with this configuration.
    Serving(usize),
    /// Started with this configuration, not ready yet; or stopped.
    Starting(usize),
    Stopped,
}

/// Every configuration asked of the instances of one control plane, in
/// order, with each instance's state, checked at every ask.
#[derive(Debug, Clone)]
pub struct RollLog {
    specs: Vec<(SpecId, Place)>,
    key_sets: Vec<String>,
    issuer_flags: Vec<String>,
    instances: Vec<State>,
    names: Vec<String>,
    asks: usize,
    violations: Vec<String>,
    /// One line per ask: which instance, which configuration, what every
    /// instance was serving then.
    pub history: Vec<String>,
}

/// The index of `item` in `seen`, appended when new.
fn index_of(seen: &mut Vec<String>, item: &str) -> usize {
    match seen.iter().position(|s| s == item) {
        Some(index) => index,
        None => {
            seen.push(item.to_owned());
            seen.len() - 1
        }
    }
}

impl RollLog {
    /// Instances named `names`, none started yet.
    pub fn new(names: Vec<String>) -> RollLog {
        RollLog {
            specs: Vec::new(),
            key_sets: Vec::new(),
            issuer_flags: Vec::new(),
            instances: vec![State::Stopped; names.len()],
            names,
            asks: 0,
            violations: Vec::new(),
            history: Vec::new(),
        }
    }

    fn index(&mut self, spec: SpecId) -> usize {
        if let Some(index) = self.specs.iter().position(|(s, _)| *s == spec) {
            return index;
        }
        let place = Place {
            key_set: index_of(&mut self.key_sets, &spec.key_set),
            issuers: index_of(&mut self.issuer_flags, &spec.issuers),
        };
        self.specs.push((spec, place));
        self.specs.len() - 1
    }

    /// Instance `instance` is (re)started with `spec` it already ran, or at
    /// the control plane's start: nothing is asked of it.
    pub fn starting(&mut self, instance: usize, spec: SpecId) {
        let index = self.index(spec);
        self.instances[instance] = State::Starting(index);
    }

    /// Why an instance serving configuration `current` has not confirmed
    /// the step before `asked`, on either line; `None` when it has.
    fn behind(&self, current: usize, asked: usize) -> Option<String> {
        let (now, next) = (self.specs[current].1, self.specs[asked].1);
        let mut lines = Vec::new();
        if now.key_set + 1 < next.key_set {
            lines.push(format!(
                "key set #{} ({}), two or more before #{} ({})",
                now.key_set, self.key_sets[now.key_set], next.key_set, self.key_sets[next.key_set]
            ));
        }
        if now.issuers + 1 < next.issuers {
            lines.push(format!(
                "issuer flags #{} ({}), two or more before #{} ({})",
                now.issuers,
                self.issuer_flags[now.issuers],
                next.issuers,
                self.issuer_flags[next.issuers]
            ));
        }
        (!lines.is_empty()).then(|| lines.join(" and "))
    }

    /// Instance `instance` is asked to run `spec` instead of what it runs:
    /// checks that every instance, itself included, serves the step before
    /// it (or this one) on both lines, and records a violation otherwise.
    pub fn ask(&mut self, instance: usize, spec: SpecId, seconds: f64) {
        let index = self.index(spec);
        self.asks += 1;
        let mut serving = Vec::new();
        for (other, state) in self.instances.iter().enumerate() {
            let name = &self.names[other];
            let problem = match *state {
                State::Serving(current) => self
                    .behind(current, index)
                    .map(|lines| format!("served #{current}: {lines}")),
                State::Starting(current) => {
                    Some(format!("was not serving yet (starting with #{current})"))
                }
                State::Stopped => Some("was stopped".to_owned()),
            };
            serving.push(match state {
                State::Serving(current) => format!("{name}: #{current}"),
                _ => format!("{name}: -"),
            });
            if let Some(problem) = problem {
                self.violations.push(format!(
                    "at {seconds:.1}s {} was asked to run #{index} ({}) while {name} {problem}",
                    self.names[instance], self.specs[index].0
                ));
            }
        }
        self.history.push(format!(
            "{seconds:>6.1}s {} asked to run #{index} ({}); serving: {}",
            self.names[instance],
            self.specs[index].0,
            serving.join(", ")
        ));
        self.instances[instance] = State::Starting(index);
    }

    /// Instance `instance` is ready with the configuration it was started
    /// with.
    pub fn serving(&mut self, instance: usize) {
        if let State::Starting(index) = self.instances[instance] {
            self.instances[instance] = State::Serving(index);
        }
    }

    pub fn stopped(&mut self, instance: usize) {
        self.instances[instance] = State::Stopped;
    }

    /// How many times an instance was asked to run another configuration.
    pub fn asks(&self) -> usize {
        self.asks
    }

    /// Each ask made before every instance served the step before it.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Prints the history; an error names every ask made before every
    /// instance served the step before it; otherwise, how many asks.
    pub fn check(&self) -> anyhow::Result<usize> {
        eprintln!("roll-outs:\n{}", self.history.join("\n"));
        if !self.violations.is_empty() {
            anyhow::bail!(
                "instances were asked to take a step before every instance served the one before:\n{}",
                self.violations.join("\n")
            );
        }
        Ok(self.asks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key_set: &str, issuers: &str) -> SpecId {
        SpecId {
            key_set: key_set.to_owned(),
            issuers: issuers.to_owned(),
        }
    }

    fn keys(key_set: &str) -> SpecId {
        id(key_set, "A")
    }

    fn three() -> RollLog {
        let mut log = RollLog::new(vec!["a".into(), "b".into(), "c".into()]);
        for instance in 0..3 {
            log.starting(instance, keys("one"));
            log.serving(instance);
        }
        log
    }

    /// Rolls `spec` onto every instance in order, each served before the
    /// next.
    fn roll(log: &mut RollLog, spec: &SpecId) {
        for instance in 0..3 {
            log.ask(instance, spec.clone(), 0.0);
            log.serving(instance);
        }
    }

    #[test]
    fn a_roll_out_step_by_step_is_in_order() {
        let mut log = three();
        for step in ["trust", "sign", "retire"] {
            roll(&mut log, &keys(step));
        }
        assert_eq!(log.asks(), 9);
        assert_eq!(log.violations(), [] as [String; 0]);
        assert_eq!(log.history.len(), 9);
    }

    #[test]
    fn the_next_step_asked_mid_roll_is_a_violation() {
        let mut log = three();
        log.ask(0, keys("trust"), 0.0);
        log.serving(0);
        // The step after Trust, before b and c were asked to trust.
        log.ask(1, keys("sign"), 1.5);
        assert_eq!(
            log.violations(),
            [
                "at 1.5s b was asked to run #2 (sign; A) while b served #0: key set #0 (one), two or more before #2 (sign)",
                "at 1.5s b was asked to run #2 (sign; A) while c served #0: key set #0 (one), two or more before #2 (sign)",
            ]
        );
    }

    #[test]
    fn an_instance_not_serving_yet_has_not_confirmed() {
        let mut log = three();
        log.ask(0, keys("trust"), 0.0);
        log.serving(0);
        log.ask(1, keys("trust"), 0.0);
        log.serving(1);
        log.ask(2, keys("trust"), 0.0);
        // c is still starting when a is asked to sign.
        log.ask(0, keys("sign"), 2.0);
        assert_eq!(
            log.violations(),
            [
                "at 2.0s a was asked to run #2 (sign; A) while c was not serving yet (starting with #1)"
            ]
        );
        log.stopped(1);
        log.ask(2, keys("sign"), 3.0);
        assert!(
            log.violations()
                .iter()
                .any(|v| v == "at 3.0s c was asked to run #2 (sign; A) while b was stopped")
        );
    }

    #[test]
    fn issuer_steps_are_checked_like_key_steps() {
        let mut log = three();
        roll(&mut log, &id("one", "A B"));
        log.ask(0, id("one", "B A"), 1.0);
        log.serving(0);
        // Retire while b and c still sign with A.
        log.ask(1, id("one", "B"), 2.0);
        assert_eq!(
            log.violations(),
            [
                "at 2.0s b was asked to run #3 (one; B) while b served #1: issuer flags #1 (A B), two or more before #3 (B)",
                "at 2.0s b was asked to run #3 (one; B) while c served #1: issuer flags #1 (A B), two or more before #3 (B)",
            ]
        );
    }

    #[test]
    fn a_key_set_and_issuer_flags_reaching_an_instance_apart_are_one_step() {
        // The key Secret is read before the workload's args are written:
        // a first instance gets Trust's key set with the old flags, then
        // both.
        let mut log = three();
        log.ask(0, id("trust", "A"), 0.0);
        log.serving(0);
        for instance in 0..3 {
            log.ask(instance, id("trust", "A B"), 1.0);
            log.serving(instance);
        }
        roll(&mut log, &id("sign", "B A"));
        roll(&mut log, &id("retire", "B"));
        assert_eq!(log.violations(), [] as [String; 0]);
        assert_eq!(log.asks(), 10);
    }
}
