//! `ksa status decode`.

use crate::args::StatusCommand;
use crate::{Failure, Outcome};

pub fn run(command: StatusCommand) -> Outcome {
    match command {
        StatusCommand::Decode { text } => {
            let text = super::input(text, "status line")?;
            let line = ksa_core::status::parse(&text).map_err(Failure::bad_input)?;
            super::finish(&serde_json::to_string_pretty(&decoded(&line))?)
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
