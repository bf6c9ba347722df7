//! Which status lines `rotate --wait` and `status --watch` print, decided on
//! plain values.
//!
//! Both follow the rotation resource with a watch. A watch does not deliver
//! every state the resource went through: while an API server restarts (a
//! hosted roll-out restarts them at Trust and at Retire) the watch is away,
//! and when it comes back it re-lists and delivers only the current state,
//! again. [`Progress`] turns that stream of observed states into the status
//! lines of the rotation, each printed exactly once and in order:
//!
//! - a state already printed (a re-list) or older than one printed (a stale
//!   read) prints nothing;
//! - a state that skipped steps prints the lines of the skipped steps first.
//!   The three numbers of a status line are a function of the target version
//!   and the step (`RotationState::versions`), so the line of a step the
//!   rotation passed through is rebuilt by the core exactly as it was, and
//!   marked [`Line::reconstructed`] so the caller can say so outside the
//!   line;
//! - `Generate` and `Trust` confirm the same numbers and so have the same
//!   line: it is printed once.
//!
//! Where the lines begin is the one thing a follower must know from outside:
//! - [`Progress::started`]: the caller started the rotation from the
//!   completed state of the version before, so the rotation passed through
//!   every step from `Generate` on, whatever the watch first shows; every
//!   line is printed, from the first.
//! - [`Progress::joined`]: the caller joined a rotation it did not start
//!   (`status --watch`). Steps before the first state it sees are not
//!   reconstructed: nothing says they were not printed by whoever started
//!   the rotation, and a follower that prints history it did not see would
//!   print it again on every invocation. Printing starts at the first state
//!   seen. Exception: when that first state is the completed state of the
//!   version before (the controller had not picked up the new target yet),
//!   the start is known after all, and every line is printed as for
//!   `started`.

use std::fmt;

use ksa_core::KeyVersion;
use ksa_core::rotation::{IssuerChange, RotationState, Step};

/// One status line to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The SPEC line, byte for byte.
    pub text: String,
    /// The steps whose line this is (`Generate` and `Trust` share one).
    pub steps: Vec<Step>,
    /// Rebuilt from a step the rotation passed through while the watch was
    /// away, not read from the resource.
    pub reconstructed: bool,
}

impl Line {
    /// What to say, outside the status line, about a reconstructed line.
    pub fn note(&self) -> Option<String> {
        self.reconstructed.then(|| {
            let steps = self
                .steps
                .iter()
                .map(Step::to_string)
                .collect::<Vec<_>>()
                .join(" and ");
            format!(
                "(not observed: the rotation passed through step {steps} while the watch was away, as during an API server restart; its status line above is reconstructed from the step)"
            )
        })
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// How far the printed lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Printed {
    /// Nothing printed, and where the rotation started is unknown.
    Unknown,
    /// Nothing printed; the rotation started from the completed state
    /// before it, so it passes through every step.
    FromStart,
    /// Every line up to and including this step's is printed.
    Through(Step),
}

/// The status lines of one rotation (a key, an issuer or both), from
/// observed states. A rotation that changes the key prints the key line
/// (SPEC section 2); one that changes the issuer, the issuer line (SPEC
/// section 10); one that changes both, both, key line first, each when it
/// changes.
#[derive(Clone, Debug)]
pub struct Progress {
    /// A state of the rotation followed (any step: only what identifies the
    /// rotation is used).
    rotation: RotationState,
    printed: Printed,
    /// The last line printed of each kind: key, issuer.
    last_text: [Option<String>; 2],
}

impl Progress {
    /// A follower of the rotation to key version `target` that the caller
    /// started from the completed state of `target - 1`: every line is
    /// printed.
    pub fn started(target: KeyVersion) -> Progress {
        Progress::started_rotation(key_rotation(target))
    }

    /// A follower of the rotation `rotation` is a state of, which the
    /// caller started from the completed state before it.
    pub fn started_rotation(rotation: RotationState) -> Progress {
        Progress {
            rotation,
            printed: Printed::FromStart,
            last_text: [None, None],
        }
    }

    /// A follower of the rotation to key version `target` that the caller
    /// did not start: lines are printed from the first state seen on.
    pub fn joined(target: KeyVersion) -> Progress {
        Progress::joined_rotation(key_rotation(target))
    }

    /// Like [`Progress::joined`], of the rotation `rotation` is a state of.
    pub fn joined_rotation(rotation: RotationState) -> Progress {
        Progress {
            rotation,
            printed: Printed::Unknown,
            last_text: [None, None],
        }
    }

    /// Whether `observed` is a state of the rotation followed.
    pub fn follows(&self, observed: &RotationState) -> bool {
        self.rotation.same_rotation(observed)
    }

    /// Whether the completed line has been printed: the follower is done.
    pub fn is_done(&self) -> bool {
        self.printed == Printed::Through(Step::Completed)
    }

    /// The lines to print, in order, now that `observed` was read.
    pub fn lines_for(&mut self, observed: &RotationState) -> Vec<Line> {
        let target = self.rotation.key_version();
        let (reached, observed_step) = if self.follows(observed) {
            (observed.step(), Some(observed.step()))
        } else if observed.key_version() > target {
            // Versions never decrease and one rotation runs at a time, so
            // a later version means the rotation followed completed; its
            // completed line was not observed.
            (Step::Completed, None)
        } else {
            // The rotation before (the controller has not picked up the
            // request yet): nothing of it is printed. Its completed state
            // says where the rotation followed starts.
            let version_before = if self.rotation.changes_key() {
                observed.key_version().next() == Some(target)
            } else {
                observed.key_version() == target
            };
            if self.printed == Printed::Unknown && observed.is_completed() && version_before {
                self.printed = Printed::FromStart;
            }
            return Vec::new();
        };
        let first = match self.printed {
            Printed::Unknown => reached,
            Printed::FromStart => Step::Generate,
            Printed::Through(step) if step >= reached => return Vec::new(),
            Printed::Through(step) => after(step),
        };
        let mut lines: Vec<Line> = Vec::new();
        for step in steps_between(first, reached) {
            let Some(state) = self.rotation.at_step(step) else {
                continue;
            };
            let reconstructed = Some(step) != observed_step;
            for (kind, text) in texts(&state).into_iter().enumerate() {
                let Some(text) = text else { continue };
                if self.last_text[kind].as_deref() == Some(text.as_str()) {
                    // The same line as the step before (Generate and
                    // Trust): printed once, as observed if either was.
                    if let Some(line) = lines.iter_mut().rev().find(|line| line.text == text) {
                        line.steps.push(step);
                        line.reconstructed &= reconstructed;
                    }
                    continue;
                }
                self.last_text[kind] = Some(text.clone());
                lines.push(Line {
                    text,
                    steps: vec![step],
                    reconstructed,
                });
            }
        }
        self.printed = Printed::Through(reached);
        lines
    }
}

/// A state of the key rotation to `target` (its completed state: what
/// identifies the rotation is the same at every step).
fn key_rotation(target: KeyVersion) -> RotationState {
    RotationState::settled(target)
}

/// The lines of `state` that its rotation prints: the key line when it
/// changes the key, the issuer line when it changes the issuer (the
/// kubeadm loop prints the same).
pub(crate) fn texts(state: &RotationState) -> [Option<String>; 2] {
    let key = state.changes_key().then(|| state.status_line().to_string());
    let changes_issuer = state.issuer().is_some_and(IssuerChange::changes);
    let issuer = state
        .issuer_status_line()
        .filter(|_| changes_issuer)
        .map(|line| line.to_string());
    [key, issuer]
}

/// The step after `step` (`Completed` stays).
fn after(step: Step) -> Step {
    steps_between(step, Step::Completed)
        .nth(1)
        .unwrap_or(Step::Completed)
}

/// The steps from `first` to `last`, both included, in rotation order.
fn steps_between(first: Step, last: Step) -> impl Iterator<Item = Step> {
    Step::ROTATION
        .into_iter()
        .chain([Step::Completed])
        .filter(move |step| (first..=last).contains(step))
}

/// How long each step took, from what the states a follower sees record
/// (each state says when its step began): a note when a step ends, and a
/// summary once the rotation completes. For people, on stderr.
#[derive(Debug, Default)]
pub struct Timings {
    /// The step last seen and when it began.
    current: Option<(Step, jiff::Timestamp)>,
    /// When the first step seen began.
    first: Option<jiff::Timestamp>,
    done: Vec<(String, jiff::SignedDuration)>,
}

impl Timings {
    /// Takes in a state seen; returns the note of the steps that ended
    /// since the last one (`Trust took 1m 3s`), if any.
    pub fn observe(&mut self, observed: &RotationState) -> Option<String> {
        let (step, began) = (observed.step(), observed.step_started_at()?);
        match self.current {
            Some((seen, since)) if step > seen => {
                let took = began.duration_since(since);
                // Steps the watch missed ended within the same time: named
                // together.
                let ended: Vec<String> = Step::ROTATION
                    .iter()
                    .filter(|s| **s >= seen && **s < step)
                    .map(ToString::to_string)
                    .collect();
                let ended = ended.join(" and ");
                self.current = Some((step, began));
                let note = format!("{ended} took {}", friendly(took));
                self.done.push((ended, took));
                Some(note)
            }
            Some(_) => None,
            None => {
                self.current = Some((step, began));
                self.first = Some(began);
                None
            }
        }
    }

    /// The summary once the rotation completed: the whole time seen and
    /// each step's.
    pub fn summary(&self) -> Option<String> {
        let (Some(first), Some((Step::Completed, end))) = (self.first, self.current) else {
            return None;
        };
        let steps: Vec<String> = self
            .done
            .iter()
            .map(|(step, took)| format!("{step} {}", friendly(*took)))
            .collect();
        Some(format!(
            "completed in {} ({})",
            friendly(end.duration_since(first)),
            steps.join(", ")
        ))
    }
}

/// A duration as people read it (`1m 3s`; `0s` for a clock gone back).
fn friendly(duration: jiff::SignedDuration) -> String {
    let duration = if duration.is_negative() {
        jiff::SignedDuration::ZERO
    } else {
        jiff::SignedDuration::from_secs(duration.as_secs())
    };
    format!("{duration:#}")
}

#[cfg(test)]
mod tests {

    fn at(version: u64, step: Step, began: &str) -> RotationState {
        serde_json::from_value(serde_json::json!({
            "keyVersion": version, "step": step, "stepStartedAt": began,
        }))
        .expect("a state")
    }

    #[test]
    fn each_step_says_how_long_it_took_and_the_end_sums_up() {
        let mut timings = Timings::default();
        assert_eq!(
            timings.observe(&at(2, Step::Generate, "2026-12-04T10:00:00Z")),
            None
        );
        assert_eq!(
            timings.observe(&at(2, Step::Generate, "2026-12-04T10:00:00Z")),
            None
        );
        assert_eq!(
            timings
                .observe(&at(2, Step::Trust, "2026-12-04T10:00:02Z"))
                .as_deref(),
            Some("Generate took 2s")
        );
        // A step the watch missed is counted in the one seen before it.
        assert_eq!(
            timings
                .observe(&at(2, Step::RefreshTokens, "2026-12-04T10:01:05Z"))
                .as_deref(),
            Some("Trust and Sign took 1m 3s")
        );
        assert_eq!(timings.summary(), None, "not completed yet");
        timings.observe(&at(2, Step::Retire, "2026-12-04T10:03:05Z"));
        timings.observe(&at(2, Step::Completed, "2026-12-04T10:03:35Z"));
        assert_eq!(
            timings.summary().as_deref(),
            Some(
                "completed in 3m 35s (Generate 2s, Trust and Sign 1m 3s, RefreshTokens 2m, Retire 30s)"
            )
        );
    }

    use super::*;

    fn state(version: u64, step: Step) -> RotationState {
        RotationState::at(KeyVersion::new(version), step).expect("a valid state")
    }

    /// The SPEC lines of a rotation from 1 to 2, written out by hand.
    const GENERATE_TRUST: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":1,"privateKeyVersion":1,"publicKeyVersions":[1]}"#;
    const SIGN: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":1,"privateKeyVersion":1,"publicKeyVersions":[1,2]}"#;
    const REFRESH: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":1,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#;
    const RETIRE: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#;
    const COMPLETED: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#;
    const ALL: [&str; 5] = [GENERATE_TRUST, SIGN, REFRESH, RETIRE, COMPLETED];

    /// Feeds `observed` in turn; every line printed, with whether it was
    /// reconstructed.
    fn run(progress: &mut Progress, observed: &[(u64, Step)]) -> Vec<(String, bool)> {
        observed
            .iter()
            .flat_map(|(version, step)| progress.lines_for(&state(*version, *step)))
            .map(|line| (line.text, line.reconstructed))
            .collect()
    }

    fn observed(texts: &[&str]) -> Vec<(String, bool)> {
        texts.iter().map(|t| ((*t).to_owned(), false)).collect()
    }

    #[test]
    fn a_normal_sequence_prints_each_line_once_as_observed() {
        let mut progress = Progress::started(KeyVersion::new(2));
        let lines = run(
            &mut progress,
            &[
                (1, Step::Completed),
                (2, Step::Generate),
                (2, Step::Trust),
                (2, Step::Sign),
                (2, Step::RefreshTokens),
                (2, Step::Retire),
                (2, Step::Completed),
            ],
        );
        assert_eq!(lines, observed(&ALL));
        assert!(progress.is_done());
    }

    #[test]
    fn the_lines_are_the_cores_for_each_step() {
        for (step, text) in [
            (Step::Generate, GENERATE_TRUST),
            (Step::Trust, GENERATE_TRUST),
            (Step::Sign, SIGN),
            (Step::RefreshTokens, REFRESH),
            (Step::Retire, RETIRE),
            (Step::Completed, COMPLETED),
        ] {
            assert_eq!(texts(&state(2, step))[0].as_deref(), Some(text));
            assert_eq!(state(2, step).status_line().to_string(), text);
        }
        assert_eq!(key_rotation(KeyVersion::FIRST).at_step(Step::Sign), None);
    }

    #[test]
    fn a_skipped_step_is_reconstructed_before_the_observed_one() {
        let mut progress = Progress::started(KeyVersion::new(2));
        let lines = run(&mut progress, &[(2, Step::Trust), (2, Step::RefreshTokens)]);
        assert_eq!(
            lines,
            [
                (GENERATE_TRUST.to_owned(), false),
                (SIGN.to_owned(), true),
                (REFRESH.to_owned(), false),
            ]
        );
    }

    #[test]
    fn two_skipped_steps_are_reconstructed_in_order() {
        let mut progress = Progress::started(KeyVersion::new(2));
        let lines = run(&mut progress, &[(2, Step::Trust), (2, Step::Retire)]);
        assert_eq!(
            lines,
            [
                (GENERATE_TRUST.to_owned(), false),
                (SIGN.to_owned(), true),
                (REFRESH.to_owned(), true),
                (RETIRE.to_owned(), false),
            ]
        );
        // Skipping from Retire straight to Completed too (the restart at
        // Retire): the completed line is observed.
        assert_eq!(
            run(&mut progress, &[(2, Step::Completed)]),
            [(COMPLETED.to_owned(), false)]
        );
    }

    #[test]
    fn the_same_state_delivered_again_prints_nothing() {
        let mut progress = Progress::started(KeyVersion::new(2));
        assert_eq!(
            run(&mut progress, &[(2, Step::Sign)]),
            [(GENERATE_TRUST.to_owned(), true), (SIGN.to_owned(), false)]
        );
        assert_eq!(run(&mut progress, &[(2, Step::Sign), (2, Step::Sign)]), []);
        // Trust after Generate: the same line, printed once.
        let mut progress = Progress::started(KeyVersion::new(2));
        assert_eq!(
            run(&mut progress, &[(2, Step::Generate), (2, Step::Trust)]),
            observed(&[GENERATE_TRUST])
        );
    }

    #[test]
    fn a_stale_state_after_a_newer_one_is_ignored() {
        let mut progress = Progress::started(KeyVersion::new(2));
        let lines = run(
            &mut progress,
            &[
                (2, Step::RefreshTokens),
                (2, Step::Sign),
                (2, Step::Generate),
                (1, Step::Completed),
                (2, Step::Retire),
            ],
        );
        assert_eq!(
            lines,
            [
                (GENERATE_TRUST.to_owned(), true),
                (SIGN.to_owned(), true),
                (REFRESH.to_owned(), false),
                (RETIRE.to_owned(), false),
            ]
        );
        assert!(!progress.is_done());
    }

    #[test]
    fn the_previous_rotation_prints_nothing() {
        let mut progress = Progress::started(KeyVersion::new(3));
        assert_eq!(
            run(&mut progress, &[(2, Step::Completed), (2, Step::Retire)]),
            []
        );
        assert!(!progress.is_done());
    }

    #[test]
    fn a_later_version_means_the_target_completed() {
        let mut progress = Progress::started(KeyVersion::new(2));
        run(&mut progress, &[(2, Step::Retire)]);
        assert_eq!(
            run(&mut progress, &[(3, Step::Sign)]),
            [(COMPLETED.to_owned(), true)]
        );
        assert!(progress.is_done());
        assert_eq!(run(&mut progress, &[(2, Step::Completed)]), []);
    }

    #[test]
    fn joining_mid_rotation_prints_from_the_first_state_seen() {
        let mut progress = Progress::joined(KeyVersion::new(2));
        let lines = run(
            &mut progress,
            &[(2, Step::RefreshTokens), (2, Step::Completed)],
        );
        // Nothing before RefreshTokens; Retire, skipped after it, is.
        assert_eq!(
            lines,
            [
                (REFRESH.to_owned(), false),
                (RETIRE.to_owned(), true),
                (COMPLETED.to_owned(), false),
            ]
        );
        assert!(progress.is_done());
    }

    #[test]
    fn joining_a_completed_rotation_prints_its_completed_line() {
        let mut progress = Progress::joined(KeyVersion::new(2));
        assert_eq!(
            run(&mut progress, &[(2, Step::Completed)]),
            observed(&[COMPLETED])
        );
        assert!(progress.is_done());
    }

    #[test]
    fn joining_before_the_controller_picked_the_target_up_prints_every_line() {
        let mut progress = Progress::joined(KeyVersion::new(2));
        let lines = run(&mut progress, &[(1, Step::Completed), (2, Step::Sign)]);
        assert_eq!(
            lines,
            [(GENERATE_TRUST.to_owned(), true), (SIGN.to_owned(), false)]
        );
    }

    #[test]
    fn the_note_names_the_steps_and_stays_out_of_the_line() {
        let mut progress = Progress::started(KeyVersion::new(2));
        let lines = progress.lines_for(&state(2, Step::Sign));
        let note = lines[0].note().expect("reconstructed");
        assert!(note.contains("step Generate and Trust"), "{note}");
        assert!(note.contains("not observed"), "{note}");
        assert_eq!(lines[0].to_string(), GENERATE_TRUST);
        assert_eq!(lines[1].note(), None);
    }

    #[test]
    fn any_order_of_observations_prints_a_prefix_of_the_lines_in_order() {
        // Every sequence of up to four observations of the rotation 1 -> 2
        // (including repeats, stale reads and the previous state) prints
        // the lines in order, none twice, none past the newest step seen.
        let states: Vec<(u64, Step)> = [(1, Step::Completed)]
            .into_iter()
            .chain(
                Step::ROTATION
                    .into_iter()
                    .chain([Step::Completed])
                    .map(|s| (2, s)),
            )
            .collect();
        let mut sequences: Vec<Vec<(u64, Step)>> = vec![Vec::new()];
        for _ in 0..4 {
            sequences = sequences
                .iter()
                .flat_map(|seq| {
                    states.iter().map(move |s| {
                        let mut next = seq.clone();
                        next.push(*s);
                        next
                    })
                })
                .collect();
            for sequence in &sequences {
                let newest = sequence
                    .iter()
                    .filter(|(v, _)| *v == 2)
                    .map(|(_, s)| *s)
                    .max();
                let expected = newest.map_or(0, |step| match step {
                    Step::Generate | Step::Trust => 1,
                    Step::Sign => 2,
                    Step::RefreshTokens => 3,
                    Step::Retire => 4,
                    Step::Completed => 5,
                });
                let lines = run(&mut Progress::started(KeyVersion::new(2)), sequence);
                let texts: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
                assert_eq!(texts, ALL[..expected], "{sequence:?}");
                // A line is marked observed only if a state with it was
                // delivered.
                for (text, reconstructed) in &lines {
                    let seen = sequence
                        .iter()
                        .any(|(v, s)| *v == 2 && state(2, *s).status_line().to_string() == *text);
                    assert!(*reconstructed || seen, "{sequence:?} {text}");
                }
            }
        }
    }
}
