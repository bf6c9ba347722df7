//! The status line of SPEC section 2, formatted and parsed byte for byte:
//!
//! ```text
//! State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}
//! ```
//!
//! The parser also accepts the line broken over several lines after `is -`
//! and after each comma (including inside the message), as operators paste it
//! from a terminal.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::issuer::{self, IssuerStatusLineError};
use crate::rotation::{InvariantViolation, KeyVersions, RotationState, Step};
use crate::{KeyVersion, MAX_INPUT_BYTES};

const PREFIX: &str = "State of KSASigningKeyRotation with KSASigningKeyVersion ";
const PROCESSED: &str = "KSASigningKeyRotationProcessedReason";
const COMPLETED: &str = "KSASigningKeyRotationCompleted";
const REASON_STEM: &str = "KSASigningKeyRotation";
/// A rotation the resource asks for that the controller has not taken up
/// yet: not completed.
pub const REQUESTED: &str = "KSASigningKeyRotationRequestedReason";
/// A rotation the resource asks for that the controller refused to start
/// (the refusal is in the status's `waitingFor`): not completed.
pub const REFUSED: &str = "KSASigningKeyRotationRefusedReason";

/// The reason of a status line. Only `Completed` comes with `status: True`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum StatusReason {
    /// `KSASigningKeyRotationProcessedReason`: a rotation is under way.
    Processed,
    /// `KSASigningKeyRotationCompleted`.
    Completed,
    /// Another `KSASigningKeyRotation...` reason, for a failed or blocked step.
    Other(String),
}

impl StatusReason {
    pub fn as_str(&self) -> &str {
        match self {
            StatusReason::Processed => PROCESSED,
            StatusReason::Completed => COMPLETED,
            StatusReason::Other(other) => other,
        }
    }

    /// `status: True` only when completed.
    pub fn status(&self) -> bool {
        *self == StatusReason::Completed
    }
}

impl From<StatusReason> for String {
    fn from(reason: StatusReason) -> String {
        reason.as_str().to_owned()
    }
}

impl TryFrom<String> for StatusReason {
    type Error = StatusLineError;

    fn try_from(reason: String) -> Result<Self, Self::Error> {
        match reason.as_str() {
            PROCESSED => Ok(StatusReason::Processed),
            COMPLETED => Ok(StatusReason::Completed),
            other
                if other.len() > REASON_STEM.len()
                    && other.starts_with(REASON_STEM)
                    && other.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Ok(StatusReason::Other(reason))
            }
            _ => Err(StatusLineError::UnknownReason(reason)),
        }
    }
}

/// A parsed status line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatusLine {
    /// The `KSASigningKeyVersion`: the version being rotated to.
    pub key_version: KeyVersion,
    pub reason: StatusReason,
    pub versions: KeyVersions,
}

impl StatusLine {
    pub fn status(&self) -> bool {
        self.reason.status()
    }

    /// The rotation steps this line can describe: `Completed` for a completed
    /// line, otherwise the steps whose confirmed numbers the message carries
    /// (`Generate` and `Trust` confirm the same numbers, so both are named).
    pub fn steps(&self) -> Vec<Step> {
        RotationState::steps_confirming(self.key_version, &self.versions)
            .into_iter()
            .filter(|step| (*step == Step::Completed) == self.status())
            .collect()
    }

    /// The line decoded, as JSON: the numbers and what they mean, the
    /// steps it can describe included. What `ksa status decode` prints and
    /// the browser's `decodeStatus` returns ([`decode`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "keyVersion": self.key_version,
            "status": self.status(),
            "reason": self.reason.as_str(),
            "tokenVersion": self.versions.token_version(),
            "privateKeyVersion": self.versions.private_key_version(),
            "publicKeyVersions": self.versions.public_key_versions(),
            "steps": self.steps(),
        })
    }

    /// The message: the three numbers as compact JSON, keys in fixed order.
    pub fn message(&self) -> String {
        let public = self
            .versions
            .public_key_versions()
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",");
        format!(
            r#"{{"tokenVersion":{},"privateKeyVersion":{},"publicKeyVersions":[{}]}}"#,
            self.versions.token_version(),
            self.versions.private_key_version(),
            public
        )
    }
}

impl fmt::Display for StatusLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{} is - status: {}, reason: {}, message:{}",
            self.key_version,
            if self.status() { "True" } else { "False" },
            self.reason.as_str(),
            self.message()
        )
    }
}

/// Why a status line could not be parsed; each names what was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusLineError {
    #[error("status line is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("expected the status line to start with {PREFIX:?}")]
    MissingPrefix,
    #[error("expected {expected:?} after {after}")]
    Expected {
        expected: &'static str,
        after: &'static str,
    },
    #[error("KSASigningKeyVersion {0:?} is not a positive whole number")]
    BadKeyVersion(String),
    #[error("status {0:?} is neither True nor False")]
    BadStatus(String),
    #[error("reason {0:?} is not a KSASigningKeyRotation reason")]
    UnknownReason(String),
    #[error(
        "status {status} does not fit reason {reason}; status is True exactly when the reason is {COMPLETED}"
    )]
    StatusReasonMismatch { status: bool, reason: String },
    #[error(
        "message is not {{\"tokenVersion\":N,\"privateKeyVersion\":N,\"publicKeyVersions\":[N,...]}}: {0}"
    )]
    BadMessage(String),
    #[error("message breaks an invariant: {0}")]
    Invariant(#[from] InvariantViolation),
    #[error(
        "a completed rotation to version {key_version} must have every number at {key_version}, found {message}"
    )]
    NotCompleted {
        key_version: KeyVersion,
        message: String,
    },
    #[error("unexpected text after the message: {0:?}")]
    TrailingText(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Message {
    token_version: KeyVersion,
    private_key_version: KeyVersion,
    public_key_versions: Vec<KeyVersion>,
}

impl std::str::FromStr for StatusLine {
    type Err = StatusLineError;

    fn from_str(text: &str) -> Result<StatusLine, StatusLineError> {
        parse(text)
    }
}

/// Why [`decode`] refused a text: it is neither status line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error(transparent)]
    Key(#[from] StatusLineError),
    #[error(transparent)]
    Issuer(#[from] IssuerStatusLineError),
}

/// Decodes either status line ksa writes, on one line or several: a key
/// rotation's (SPEC section 2) or an issuer rotation's (section 10), told
/// apart by its prefix, into its JSON form ([`StatusLine::to_json`],
/// [`IssuerStatusLine::to_json`](crate::issuer::IssuerStatusLine::to_json)).
///
/// Architecture invariant: the one decoded form, which the CLI's `status
/// decode` and the wasm `decodeStatus` both return.
pub fn decode(text: &str) -> Result<serde_json::Value, DecodeError> {
    if issuer::is_issuer_line(text) {
        Ok(issuer::parse(text)?.to_json())
    } else {
        Ok(parse(text)?.to_json())
    }
}

/// Parses a status line, on one line or broken over several.
pub fn parse(text: &str) -> Result<StatusLine, StatusLineError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(StatusLineError::TooLarge {
            len: text.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    // Line breaks and runs of blanks count as one space, wherever they are.
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = joined
        .strip_prefix(PREFIX)
        .ok_or(StatusLineError::MissingPrefix)?;
    let (version, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let key_version = version
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .map(KeyVersion::new)
        .ok_or_else(|| StatusLineError::BadKeyVersion(version.to_owned()))?;
    let rest = expect(rest, "is - status: ", "KSASigningKeyVersion")?;
    let (status, rest) = rest.split_once(',').ok_or(StatusLineError::Expected {
        expected: ",",
        after: "the status",
    })?;
    let status = match status {
        "True" => true,
        "False" => false,
        other => return Err(StatusLineError::BadStatus(other.to_owned())),
    };
    let rest = expect(rest.trim_start(), "reason: ", "the status")?;
    let (reason, rest) = rest.split_once(',').ok_or(StatusLineError::Expected {
        expected: ",",
        after: "the reason",
    })?;
    let reason = StatusReason::try_from(reason.to_owned())?;
    if reason.status() != status {
        return Err(StatusLineError::StatusReasonMismatch {
            status,
            reason: reason.as_str().to_owned(),
        });
    }
    let message = expect(rest.trim_start(), "message:", "the reason")?;
    // The message holds no strings, so blanks inside it are line breaks.
    let message: String = message.chars().filter(|c| *c != ' ').collect();
    let mut stream = serde_json::Deserializer::from_str(&message).into_iter::<Message>();
    let parsed = match stream.next() {
        Some(Ok(parsed)) => parsed,
        Some(Err(e)) => return Err(StatusLineError::BadMessage(e.to_string())),
        None => return Err(StatusLineError::BadMessage("the message is empty".into())),
    };
    let trailing = &message[stream.byte_offset()..];
    if !trailing.is_empty() {
        return Err(StatusLineError::TrailingText(trailing.to_owned()));
    }
    let versions = KeyVersions::new(
        parsed.token_version,
        parsed.private_key_version,
        parsed.public_key_versions,
    )?;
    let line = StatusLine {
        key_version,
        reason,
        versions,
    };
    if line.status() && line.versions != KeyVersions::settled(key_version) {
        return Err(StatusLineError::NotCompleted {
            key_version,
            message: line.message(),
        });
    }
    Ok(line)
}

fn expect<'a>(
    text: &'a str,
    expected: &'static str,
    after: &'static str,
) -> Result<&'a str, StatusLineError> {
    text.strip_prefix(expected)
        .ok_or(StatusLineError::Expected { expected, after })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN_PROGRESS: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: False, reason: KSASigningKeyRotationProcessedReason, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[1,2]}"#;
    const COMPLETED_LINE: &str = r#"State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{"tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[2]}"#;

    #[test]
    fn spec_examples_parse_and_round_trip_byte_for_byte() {
        for text in [IN_PROGRESS, COMPLETED_LINE] {
            let line = parse(text).expect("the SPEC example parses");
            assert_eq!(line.to_string(), text);
        }
        let line = parse(IN_PROGRESS).expect("parses");
        assert!(!line.status());
        assert_eq!(line.reason, StatusReason::Processed);
        assert_eq!(
            line.versions.public_key_versions(),
            [KeyVersion::new(1), KeyVersion::new(2)]
        );
        assert!(parse(COMPLETED_LINE).expect("parses").status());
    }

    #[test]
    fn a_line_names_the_steps_its_numbers_confirm() {
        assert_eq!(parse(IN_PROGRESS).expect("parses").steps(), [Step::Retire]);
        assert_eq!(
            parse(COMPLETED_LINE).expect("parses").steps(),
            [Step::Completed]
        );
        let trust = IN_PROGRESS.replace(
            r#""tokenVersion":2,"privateKeyVersion":2,"publicKeyVersions":[1,2]"#,
            r#""tokenVersion":1,"privateKeyVersion":1,"publicKeyVersions":[1]"#,
        );
        assert_eq!(
            parse(&trust).expect("parses").steps(),
            [Step::Generate, Step::Trust]
        );
        // Numbers no step confirms (a line from another tool) name no step.
        let odd = trust.replace("KSASigningKeyVersion 2", "KSASigningKeyVersion 3");
        assert_eq!(parse(&odd).expect("parses").steps(), []);
    }

    #[test]
    fn accepts_lines_broken_as_operators_paste_them() {
        let broken = "State of KSASigningKeyRotation with KSASigningKeyVersion 2 is -\n  status: False,\n  reason: KSASigningKeyRotationProcessedReason,\n  message:{\"tokenVersion\":2,\n\"privateKeyVersion\":2,\n\"publicKeyVersions\":[1,\n2]}\n";
        assert_eq!(parse(broken).expect("parses").to_string(), IN_PROGRESS);
        let crlf = COMPLETED_LINE
            .replace(", ", ",\r\n")
            .replace("is - ", "is -\r\n");
        assert_eq!(parse(&crlf).expect("parses").to_string(), COMPLETED_LINE);
    }

    #[test]
    fn every_bad_line_gets_a_precise_error() {
        type Check = fn(&StatusLineError) -> bool;
        let cases: [(&str, Check); 9] = [
            ("", |e| matches!(e, StatusLineError::MissingPrefix)),
            (
                &IN_PROGRESS.replace("Version 2 is", "Version x is"),
                |e| matches!(e, StatusLineError::BadKeyVersion(v) if v == "x"),
            ),
            (
                &IN_PROGRESS.replace("status: False", "status: Maybe"),
                |e| matches!(e, StatusLineError::BadStatus(s) if s == "Maybe"),
            ),
            (
                &IN_PROGRESS.replace("ProcessedReason", "Processed Reason"),
                |e| matches!(e, StatusLineError::UnknownReason(_)),
            ),
            (&IN_PROGRESS.replace("status: False", "status: True"), |e| {
                matches!(e, StatusLineError::StatusReasonMismatch { .. })
            }),
            (&IN_PROGRESS.replace("[1,2]", "[2,1]"), |e| {
                matches!(
                    e,
                    StatusLineError::Invariant(InvariantViolation::NotAscending(_))
                )
            }),
            (
                &IN_PROGRESS.replace("\"tokenVersion\":2", "\"tokenVersion\":3"),
                |e| {
                    matches!(
                        e,
                        StatusLineError::Invariant(InvariantViolation::TokenVersionNotTrusted(3))
                    )
                },
            ),
            (&COMPLETED_LINE.replace("[2]", "[1,2]"), |e| {
                matches!(e, StatusLineError::NotCompleted { .. })
            }),
            (
                &format!("{IN_PROGRESS} extra"),
                |e| matches!(e, StatusLineError::TrailingText(t) if t == "extra"),
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).expect_err(text);
            assert!(expected(&error), "{text:?} gave {error:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn unknown_members_and_other_reasons() {
        let extra = IN_PROGRESS.replace("[1,2]}", "[1,2],\"x\":1}");
        assert!(matches!(parse(&extra), Err(StatusLineError::BadMessage(_))));
        let blocked = IN_PROGRESS.replace("ProcessedReason", "BlockedReason");
        let line = parse(&blocked).expect("other KSASigningKeyRotation reasons parse");
        assert_eq!(line.reason.as_str(), "KSASigningKeyRotationBlockedReason");
        assert_eq!(line.to_string(), blocked);
    }
}
