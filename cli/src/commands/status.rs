//! `ksa status decode`.

use ksa_core::issuer::{self, IssuerStatusLine};

use crate::args::StatusCommand;
use crate::{Failure, Outcome};

pub fn run(command: StatusCommand) -> Outcome {
    match command {
        StatusCommand::Decode { text, output } => {
            let text = super::input(text, "status line")?;
            let value = if issuer::is_issuer_line(&text) {
                decoded_issuer(&issuer::parse(&text).map_err(Failure::bad_input)?)
            } else {
                decoded(&ksa_core::status::parse(&text).map_err(Failure::bad_input)?)
            };
            super::finish(&super::data(&value, output)?)
        }
    }
}

/// The JSON form of a status line.
pub fn decoded(line: &ksa_core::status::StatusLine) -> serde_json::Value {
    serde_json::json!({
        "keyVersion": line.key_version,
        "status": line.status(),
        "reason": line.reason.as_str(),
        "tokenVersion": line.versions.token_version(),
        "privateKeyVersion": line.versions.private_key_version(),
        "publicKeyVersions": line.versions.public_key_versions(),
    })
}

/// The JSON form of an issuer status line (SPEC section 10).
pub fn decoded_issuer(line: &IssuerStatusLine) -> serde_json::Value {
    serde_json::json!({
        "issuer": line.issuer,
        "status": line.completed,
        "reason": line.reason(),
        "tokenIssuer": line.issuers.token_issuer(),
        "signingIssuer": line.issuers.signing_issuer(),
        "acceptedIssuers": line.issuers.accepted_issuers(),
        "steps": line.steps(),
    })
}
