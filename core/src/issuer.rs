//! The service-account token issuer of SPEC section 10: the issuer a
//! cluster's bound tokens carry (`iss`), the three values that say where an
//! issuer rotation stands, and its status line, formatted and parsed byte
//! for byte:
//!
//! ```text
//! State of KSAIssuerRotation with KSAIssuer https://b.example is - status: True, reason: KSAIssuerRotationCompleted, message:{"tokenIssuer":"https://b.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example"]}
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::MAX_INPUT_BYTES;
use crate::rotation::Step;

/// The longest issuer accepted. kube-apiserver sets no limit, but an issuer
/// goes into every token, flag and status line; real ones are well under.
pub const MAX_ISSUER_BYTES: usize = 512;

/// An issuer as kube-apiserver's `--service-account-issuer` takes it and a
/// token's `iss` carries it, compared byte for byte (no normalisation:
/// `https://a.example` and `https://a.example/` are two issuers).
///
/// Any issuer a cluster already uses is accepted ([`Issuer::new`]: printable
/// ASCII, no blanks, not empty); an issuer ksa rotates *to* must also be an
/// `https` URL with a host and no query, fragment or credentials
/// ([`Issuer::target`]), which is what OIDC discovery requires.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Issuer(String);

/// Why a text is not an issuer, or not one to rotate to.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum IssuerError {
    #[error("the issuer is empty")]
    Empty,
    #[error("the issuer is {len} bytes; at most {MAX_ISSUER_BYTES} are accepted")]
    TooLong { len: usize },
    #[error(
        "the issuer holds a blank, a control character or a non-ASCII character; an issuer is a URL"
    )]
    NotPrintable,
    #[error("the issuer {issuer:?} is not a URL ({problem}); give one like https://issuer.example")]
    NotUrl { issuer: String, problem: String },
    #[error("the issuer {issuer:?} is not https; OIDC discovery requires an https issuer")]
    NotHttps { issuer: String },
    #[error("the issuer {issuer:?} has no host")]
    NoHost { issuer: String },
    #[error("the issuer {issuer:?} has a query or a fragment; an OIDC issuer has neither")]
    QueryOrFragment { issuer: String },
    #[error("the issuer {issuer:?} has a user name or password in it")]
    Credentials { issuer: String },
}

impl Issuer {
    /// An issuer a cluster may already use: any printable ASCII text
    /// without blanks, as kube-apiserver accepts it.
    pub fn new(text: impl Into<String>) -> Result<Issuer, IssuerError> {
        let text = text.into();
        if text.is_empty() {
            return Err(IssuerError::Empty);
        }
        if text.len() > MAX_ISSUER_BYTES {
            return Err(IssuerError::TooLong { len: text.len() });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IssuerError::NotPrintable);
        }
        Ok(Issuer(text))
    }

    /// An issuer to rotate to: also an `https` URL with a host and no
    /// query, fragment or credentials.
    pub fn target(text: impl Into<String>) -> Result<Issuer, IssuerError> {
        let issuer = Issuer::new(text)?;
        let text = issuer.as_str();
        let url = url::Url::parse(text).map_err(|e| IssuerError::NotUrl {
            issuer: text.to_owned(),
            problem: e.to_string(),
        })?;
        let owned = || text.to_owned();
        if url.scheme() != "https" {
            return Err(IssuerError::NotHttps { issuer: owned() });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(IssuerError::NoHost { issuer: owned() });
        }
        // `Url` drops an empty query or fragment ("?", "#"): look at the text.
        if text.contains(['?', '#']) {
            return Err(IssuerError::QueryOrFragment { issuer: owned() });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(IssuerError::Credentials { issuer: owned() });
        }
        Ok(issuer)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Issuer {
    type Error = IssuerError;

    fn try_from(text: String) -> Result<Issuer, IssuerError> {
        Issuer::new(text)
    }
}

impl From<Issuer> for String {
    fn from(issuer: Issuer) -> String {
        issuer.0
    }
}

impl std::str::FromStr for Issuer {
    type Err = IssuerError;

    fn from_str(text: &str) -> Result<Issuer, IssuerError> {
        Issuer::new(text)
    }
}

/// `tokenIssuer`, `signingIssuer` and `acceptedIssuers`, in the order the
/// status message prints them.
///
/// Architecture invariant: a value of this type always satisfies SPEC
/// section 10: `acceptedIssuers` is not empty, has no issuer twice, starts
/// with the signing issuer (as the flags do) and holds the token issuer.
/// [`IssuerState::new`] is the only constructor; deserialization goes
/// through it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawIssuerState", rename_all = "camelCase")]
pub struct IssuerState {
    token_issuer: Issuer,
    signing_issuer: Issuer,
    accepted_issuers: Vec<Issuer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawIssuerState {
    token_issuer: Issuer,
    signing_issuer: Issuer,
    accepted_issuers: Vec<Issuer>,
}

impl TryFrom<RawIssuerState> for IssuerState {
    type Error = IssuerViolation;

    fn try_from(raw: RawIssuerState) -> Result<IssuerState, IssuerViolation> {
        IssuerState::new(raw.token_issuer, raw.signing_issuer, raw.accepted_issuers)
    }
}

/// Which invariant of SPEC section 10 a set of issuers breaks.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum IssuerViolation {
    #[error("acceptedIssuers is empty")]
    NoAcceptedIssuers,
    #[error("acceptedIssuers names {0} twice")]
    Duplicate(Issuer),
    #[error("acceptedIssuers must start with the signing issuer {0}, as the flags do")]
    SigningIssuerNotFirst(Issuer),
    #[error("tokenIssuer {0} is not in acceptedIssuers")]
    TokenIssuerNotAccepted(Issuer),
    #[error("issuer {0} came back into acceptedIssuers after it was retired")]
    Readmitted(Issuer),
    #[error("{what} went back from {from} to {to}")]
    WentBack {
        what: &'static str,
        from: Issuer,
        to: Issuer,
    },
}

impl IssuerState {
    pub fn new(
        token_issuer: Issuer,
        signing_issuer: Issuer,
        accepted_issuers: Vec<Issuer>,
    ) -> Result<IssuerState, IssuerViolation> {
        let Some(first) = accepted_issuers.first() else {
            return Err(IssuerViolation::NoAcceptedIssuers);
        };
        if *first != signing_issuer {
            return Err(IssuerViolation::SigningIssuerNotFirst(signing_issuer));
        }
        for (i, issuer) in accepted_issuers.iter().enumerate() {
            if accepted_issuers[..i].contains(issuer) {
                return Err(IssuerViolation::Duplicate(issuer.clone()));
            }
        }
        if !accepted_issuers.contains(&token_issuer) {
            return Err(IssuerViolation::TokenIssuerNotAccepted(token_issuer));
        }
        Ok(IssuerState {
            token_issuer,
            signing_issuer,
            accepted_issuers,
        })
    }

    /// One issuer everywhere: a cluster at rest.
    pub fn settled(issuer: Issuer) -> IssuerState {
        IssuerState {
            token_issuer: issuer.clone(),
            signing_issuer: issuer.clone(),
            accepted_issuers: vec![issuer],
        }
    }

    pub fn token_issuer(&self) -> &Issuer {
        &self.token_issuer
    }

    pub fn signing_issuer(&self) -> &Issuer {
        &self.signing_issuer
    }

    pub fn accepted_issuers(&self) -> &[Issuer] {
        &self.accepted_issuers
    }

    /// Checks that `next` may follow `self` in a rotation from `from` to
    /// `to`: neither the token nor the signing issuer goes back from `to`
    /// to `from`, and `from` does not come back once retired. (An issuer
    /// leaves `acceptedIssuers` only once both others moved past it: a
    /// state that breaks that cannot be built.)
    pub fn check_transition(
        &self,
        next: &IssuerState,
        from: &Issuer,
        to: &Issuer,
    ) -> Result<(), IssuerViolation> {
        for (what, before, after) in [
            ("tokenIssuer", &self.token_issuer, &next.token_issuer),
            ("signingIssuer", &self.signing_issuer, &next.signing_issuer),
        ] {
            if before == to && after == from && from != to {
                return Err(IssuerViolation::WentBack {
                    what,
                    from: before.clone(),
                    to: after.clone(),
                });
            }
        }
        if from != to
            && !self.accepted_issuers.contains(from)
            && next.accepted_issuers.contains(from)
        {
            return Err(IssuerViolation::Readmitted(from.clone()));
        }
        Ok(())
    }
}

const PREFIX: &str = "State of KSAIssuerRotation with KSAIssuer ";
const PROCESSED: &str = "KSAIssuerRotationProcessedReason";
const COMPLETED: &str = "KSAIssuerRotationCompleted";

/// The issuer rotation's status line (SPEC section 10).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IssuerStatusLine {
    /// The `KSAIssuer`: the issuer being rotated to.
    pub issuer: Issuer,
    /// `status: True` and `KSAIssuerRotationCompleted` when completed;
    /// `status: False` and `KSAIssuerRotationProcessedReason` otherwise.
    pub completed: bool,
    pub issuers: IssuerState,
}

impl IssuerStatusLine {
    /// The message: the three values as compact JSON, keys in fixed order.
    pub fn message(&self) -> String {
        // The struct's fields are in the message's order. Serializing
        // strings cannot fail; JSON escapes only `"` and `\` of an issuer.
        serde_json::to_string(&self.issuers).unwrap_or_default()
    }

    pub fn reason(&self) -> &'static str {
        if self.completed { COMPLETED } else { PROCESSED }
    }

    /// The line decoded, as JSON: the issuers and what they mean, the steps
    /// it can describe included (see [`crate::status::decode`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "issuer": self.issuer,
            "status": self.completed,
            "reason": self.reason(),
            "tokenIssuer": self.issuers.token_issuer(),
            "signingIssuer": self.issuers.signing_issuer(),
            "acceptedIssuers": self.issuers.accepted_issuers(),
            "steps": self.steps(),
        })
    }

    /// The rotation steps this line can describe: `Completed` for a
    /// completed line, otherwise the steps whose confirmed issuers the
    /// message carries (`Generate` and `Trust` confirm the same ones).
    pub fn steps(&self) -> Vec<Step> {
        if self.completed {
            return vec![Step::Completed];
        }
        let to = &self.issuer;
        // The issuer rotated away from: the other accepted one, or the
        // token issuer before the new one is accepted anywhere.
        let Some(from) = self
            .issuers
            .accepted_issuers
            .iter()
            .chain([&self.issuers.token_issuer])
            .find(|issuer| *issuer != to)
        else {
            return Vec::new();
        };
        let (a, b) = (from.clone(), to.clone());
        let at = |step| match step {
            Step::Generate | Step::Trust => IssuerState::new(a.clone(), a.clone(), vec![a.clone()]),
            Step::Sign => IssuerState::new(a.clone(), a.clone(), vec![a.clone(), b.clone()]),
            Step::RefreshTokens => {
                IssuerState::new(a.clone(), b.clone(), vec![b.clone(), a.clone()])
            }
            Step::Retire | Step::Completed => {
                IssuerState::new(b.clone(), b.clone(), vec![b.clone(), a.clone()])
            }
        };
        Step::ROTATION
            .into_iter()
            .filter(|step| at(*step).is_ok_and(|state| state == self.issuers))
            .collect()
    }
}

/// Whether `text` is an issuer status line rather than a key one (by its
/// start), so that one command or function can decode both.
pub fn is_issuer_line(text: &str) -> bool {
    text.trim_start().starts_with(PREFIX.trim_end())
}

impl fmt::Display for IssuerStatusLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{} is - status: {}, reason: {}, message:{}",
            self.issuer,
            if self.completed { "True" } else { "False" },
            self.reason(),
            self.message()
        )
    }
}

/// Why an issuer status line could not be parsed; each names what was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssuerStatusLineError {
    #[error("status line is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("expected the status line to start with {PREFIX:?}")]
    MissingPrefix,
    #[error("expected {expected:?} after {after}")]
    Expected {
        expected: &'static str,
        after: &'static str,
    },
    #[error("KSAIssuer: {0}")]
    BadIssuer(IssuerError),
    #[error("status {0:?} is neither True nor False")]
    BadStatus(String),
    #[error("reason {0:?} is neither {PROCESSED} nor {COMPLETED}")]
    UnknownReason(String),
    #[error("status {status} does not fit reason {reason}")]
    StatusReasonMismatch { status: bool, reason: String },
    #[error(
        "message is not {{\"tokenIssuer\":\"...\",\"signingIssuer\":\"...\",\"acceptedIssuers\":[\"...\"]}}: {0}"
    )]
    BadMessage(String),
    #[error("message breaks an invariant: {0}")]
    Invariant(#[from] IssuerViolation),
    #[error("a completed rotation to {issuer} must have every issuer at {issuer}, found {message}")]
    NotCompleted { issuer: Issuer, message: String },
    #[error("unexpected text after the message: {0:?}")]
    TrailingText(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Message {
    token_issuer: Issuer,
    signing_issuer: Issuer,
    accepted_issuers: Vec<Issuer>,
}

impl std::str::FromStr for IssuerStatusLine {
    type Err = IssuerStatusLineError;

    fn from_str(text: &str) -> Result<IssuerStatusLine, IssuerStatusLineError> {
        parse(text)
    }
}

/// Parses an issuer status line, on one line or broken over several after
/// `is -` and after each comma (including inside the message).
pub fn parse(text: &str) -> Result<IssuerStatusLine, IssuerStatusLineError> {
    use IssuerStatusLineError as E;
    if text.len() > MAX_INPUT_BYTES {
        return Err(E::TooLarge {
            len: text.len(),
            max: MAX_INPUT_BYTES,
        });
    }
    // Issuers hold no blanks, so every run of blanks is one space.
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = joined.strip_prefix(PREFIX).ok_or(E::MissingPrefix)?;
    let (issuer, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let issuer = Issuer::new(issuer).map_err(E::BadIssuer)?;
    let expect = |text: &'static str, after: &'static str, rest: &str| -> Result<String, E> {
        rest.strip_prefix(text)
            .map(str::to_owned)
            .ok_or(E::Expected {
                expected: text,
                after,
            })
    };
    let rest = expect("is - status: ", "KSAIssuer", rest)?;
    let (status, rest) = rest.split_once(',').ok_or(E::Expected {
        expected: ",",
        after: "the status",
    })?;
    let status = match status {
        "True" => true,
        "False" => false,
        other => return Err(E::BadStatus(other.to_owned())),
    };
    let rest = expect("reason: ", "the status", rest.trim_start())?;
    let (reason, rest) = rest.split_once(',').ok_or(E::Expected {
        expected: ",",
        after: "the reason",
    })?;
    let completed = match reason {
        COMPLETED => true,
        PROCESSED => false,
        other => return Err(E::UnknownReason(other.to_owned())),
    };
    if completed != status {
        return Err(E::StatusReasonMismatch {
            status,
            reason: reason.to_owned(),
        });
    }
    let message = expect("message:", "the reason", rest.trim_start())?;
    // The strings of the message hold no blanks: any blank is a line break.
    let message: String = message.chars().filter(|c| *c != ' ').collect();
    let mut stream = serde_json::Deserializer::from_str(&message).into_iter::<Message>();
    let parsed = match stream.next() {
        Some(Ok(parsed)) => parsed,
        Some(Err(e)) => return Err(E::BadMessage(e.to_string())),
        None => return Err(E::BadMessage("the message is empty".into())),
    };
    let trailing = &message[stream.byte_offset()..];
    if !trailing.is_empty() {
        return Err(E::TrailingText(trailing.to_owned()));
    }
    let issuers = IssuerState::new(
        parsed.token_issuer,
        parsed.signing_issuer,
        parsed.accepted_issuers,
    )?;
    let line = IssuerStatusLine {
        issuer,
        completed,
        issuers,
    };
    if completed && line.issuers != IssuerState::settled(line.issuer.clone()) {
        return Err(E::NotCompleted {
            issuer: line.issuer.clone(),
            message: line.message(),
        });
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN_PROGRESS: &str = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: False, reason: KSAIssuerRotationProcessedReason, message:{"tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]}"#;
    const COMPLETED_LINE: &str = r#"State of KSAIssuerRotation with KSAIssuer https://b.example is - status: True, reason: KSAIssuerRotationCompleted, message:{"tokenIssuer":"https://b.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example"]}"#;

    fn issuer(text: &str) -> Issuer {
        Issuer::new(text).expect("an issuer")
    }

    #[test]
    fn spec_examples_parse_and_round_trip_byte_for_byte() {
        for text in [IN_PROGRESS, COMPLETED_LINE] {
            let line = parse(text).expect("the SPEC example parses");
            assert_eq!(line.to_string(), text);
        }
        let line = parse(IN_PROGRESS).expect("parses");
        assert!(!line.completed);
        assert_eq!(line.issuers.token_issuer(), &issuer("https://a.example"));
        assert_eq!(
            line.issuers.accepted_issuers(),
            [issuer("https://b.example"), issuer("https://a.example")]
        );
        assert!(parse(COMPLETED_LINE).expect("parses").completed);
    }

    #[test]
    fn a_line_names_the_steps_its_issuers_confirm() {
        assert_eq!(
            parse(IN_PROGRESS).expect("parses").steps(),
            [Step::RefreshTokens]
        );
        assert_eq!(
            parse(COMPLETED_LINE).expect("parses").steps(),
            [Step::Completed]
        );
        let trust = IN_PROGRESS.replace(
            r#""tokenIssuer":"https://a.example","signingIssuer":"https://b.example","acceptedIssuers":["https://b.example","https://a.example"]"#,
            r#""tokenIssuer":"https://a.example","signingIssuer":"https://a.example","acceptedIssuers":["https://a.example"]"#,
        );
        assert_eq!(
            parse(&trust).expect("parses").steps(),
            [Step::Generate, Step::Trust]
        );
        assert!(is_issuer_line(&format!("  {IN_PROGRESS}")));
        assert!(!is_issuer_line(
            "State of KSASigningKeyRotation with KSASigningKeyVersion 2"
        ));
    }

    #[test]
    fn accepts_lines_broken_as_operators_paste_them() {
        let broken = IN_PROGRESS
            .replace("is - ", "is -\n  ")
            .replace(",", ",\r\n  ");
        assert_eq!(parse(&broken).expect("parses").to_string(), IN_PROGRESS);
    }

    #[test]
    fn every_bad_line_gets_a_precise_error() {
        use IssuerStatusLineError as E;
        type Check = fn(&E) -> bool;
        let cases: [(String, Check); 9] = [
            (String::new(), |e| matches!(e, E::MissingPrefix)),
            (
                IN_PROGRESS.replace("status: False", "status: Maybe"),
                |e| matches!(e, E::BadStatus(s) if s == "Maybe"),
            ),
            (IN_PROGRESS.replace("ProcessedReason", "Blocked"), |e| {
                matches!(e, E::UnknownReason(_))
            }),
            (IN_PROGRESS.replace("status: False", "status: True"), |e| {
                matches!(e, E::StatusReasonMismatch { .. })
            }),
            (
                IN_PROGRESS.replace(
                    r#"["https://b.example","https://a.example"]"#,
                    r#"["https://a.example","https://b.example"]"#,
                ),
                |e| matches!(e, E::Invariant(IssuerViolation::SigningIssuerNotFirst(_))),
            ),
            (
                IN_PROGRESS.replace(r#","https://a.example"]"#, r#","https://b.example"]"#),
                |e| matches!(e, E::Invariant(IssuerViolation::Duplicate(_))),
            ),
            (
                IN_PROGRESS.replace(
                    r#""tokenIssuer":"https://a.example""#,
                    r#""tokenIssuer":"https://c.example""#,
                ),
                |e| matches!(e, E::Invariant(IssuerViolation::TokenIssuerNotAccepted(_))),
            ),
            (
                COMPLETED_LINE.replace(
                    r#"["https://b.example"]"#,
                    r#"["https://b.example","https://a.example"]"#,
                ),
                |e| matches!(e, E::NotCompleted { .. }),
            ),
            (
                format!("{IN_PROGRESS} extra"),
                |e| matches!(e, E::TrailingText(t) if t == "extra"),
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text).expect_err(&text);
            assert!(expected(&error), "{text:?} gave {error:?}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn a_target_issuer_is_an_https_url_with_a_host_and_nothing_else() {
        for good in [
            "https://b.example",
            "https://b.example/",
            "https://oidc.example.com:8443/clusters/prod",
            "https://kubernetes.default.svc.cluster.local",
        ] {
            assert_eq!(Issuer::target(good).expect(good).as_str(), good);
        }
        type Check = fn(&IssuerError) -> bool;
        let bad: [(&str, Check); 9] = [
            ("", |e| matches!(e, IssuerError::Empty)),
            ("http://b.example", |e| {
                matches!(e, IssuerError::NotHttps { .. })
            }),
            ("b.example", |e| matches!(e, IssuerError::NotUrl { .. })),
            ("https://b.example?x=1", |e| {
                matches!(e, IssuerError::QueryOrFragment { .. })
            }),
            ("https://b.example#", |e| {
                matches!(e, IssuerError::QueryOrFragment { .. })
            }),
            ("https://user:pw@b.example", |e| {
                matches!(e, IssuerError::Credentials { .. })
            }),
            ("https://b.example/\nx", |e| {
                matches!(e, IssuerError::NotPrintable)
            }),
            ("https://b.éxample", |e| {
                matches!(e, IssuerError::NotPrintable)
            }),
            (&"https://b.example/".repeat(40), |e| {
                matches!(e, IssuerError::TooLong { .. })
            }),
        ];
        for (text, expected) in bad {
            let error = Issuer::target(text).expect_err(text);
            assert!(expected(&error), "{text:?} gave {error:?}");
        }
        // What a cluster already uses need not be a URL.
        assert!(Issuer::new("kubernetes/serviceaccount").is_ok());
    }

    #[test]
    fn an_issuer_leaves_the_accepted_list_only_after_both_moved_past_it() {
        let (a, b) = (issuer("https://a.example"), issuer("https://b.example"));
        let state = |token: &Issuer, signing: &Issuer, accepted: &[&Issuer]| {
            IssuerState::new(
                token.clone(),
                signing.clone(),
                accepted.iter().map(|i| (*i).clone()).collect(),
            )
            .expect("valid")
        };
        let refresh = state(&a, &b, &[&b, &a]);
        let retire = state(&b, &b, &[&b, &a]);
        let done = IssuerState::settled(b.clone());
        assert!(refresh.check_transition(&retire, &a, &b).is_ok());
        assert!(retire.check_transition(&done, &a, &b).is_ok());
        assert_eq!(
            refresh.check_transition(&done, &a, &b),
            Ok(()),
            "both moved past A in one go"
        );
        // A dropped while tokens still carry it cannot even be built.
        assert_eq!(
            IssuerState::new(a.clone(), b.clone(), vec![b.clone()]),
            Err(IssuerViolation::TokenIssuerNotAccepted(a.clone()))
        );
        assert_eq!(
            done.check_transition(&retire, &a, &b),
            Err(IssuerViolation::Readmitted(a.clone()))
        );
        assert_eq!(
            retire.check_transition(&refresh, &a, &b),
            Err(IssuerViolation::WentBack {
                what: "tokenIssuer",
                from: b.clone(),
                to: a.clone()
            })
        );
    }
}
