//! One module per command family; [`run`] dispatches.

mod keys;
pub(crate) mod preflight;
pub(crate) mod rotation;
mod status;
mod token;

use crate::Outcome;
use crate::args::{Cli, Command, CredentialsCommand, UpdateCommand};
use crate::output::finish;

pub fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Update {
            what:
                UpdateCommand::Credentials {
                    which: CredentialsCommand::KsaSigningKey { action },
                },
        } => rotation::run(action.into()),
        Command::Update {
            what:
                UpdateCommand::Credentials {
                    which: CredentialsCommand::KsaIssuer { action },
                },
        } => rotation::run(action.into()),
        Command::Status { command } => status::run(command),
        Command::Version { output } => version(output),
        Command::Keys { command } => keys::run(command),
        Command::Token { command } => token::run(command),
        Command::Man { out } => {
            std::fs::create_dir_all(&out)?;
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(command, &out)?;
            Ok(crate::exit::DONE)
        }
        Command::Completions { shell } => {
            // Generated into memory first: clap_complete panics when its
            // writer fails, as stdout does when closed.
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "ksa", &mut script);
            finish(&String::from_utf8_lossy(&script))
        }
    }
}

/// `ksa version`.
fn version(output: crate::args::Format) -> Outcome {
    let json = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("KSA_COMMIT"),
        "commitDate": env!("KSA_COMMIT_DATE"),
        "target": env!("KSA_TARGET"),
    });
    let text = match output {
        crate::args::Format::Text => format!(
            "ksa {} (commit {}, {}, {})",
            env!("CARGO_PKG_VERSION"),
            env!("KSA_COMMIT"),
            env!("KSA_COMMIT_DATE"),
            env!("KSA_TARGET")
        ),
        crate::args::Format::Json => serde_json::to_string_pretty(&json)?,
        crate::args::Format::Yaml => serde_saphyr::to_string(&json)?,
    };
    finish(&text)
}
