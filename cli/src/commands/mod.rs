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
        Command::Rotate(args) => rotation::run(args.into()),
        Command::Plan(args) => rotation::run(args.into()),
        Command::Status {
            command: Some(command),
            ..
        } => status::run(command),
        Command::Status {
            command: None,
            args,
        } => rotation::run(rotation::Request::status(args, false)),
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
fn version(output: crate::args::Output) -> Outcome {
    let json = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "commit": env!("KSA_COMMIT"),
        "commitDate": env!("KSA_COMMIT_DATE"),
        "target": env!("KSA_TARGET"),
    });
    let text = crate::output::render(&output, &json, || {
        Ok(format!(
            "ksa {} (commit {}, {}, {})",
            env!("CARGO_PKG_VERSION"),
            env!("KSA_COMMIT"),
            env!("KSA_COMMIT_DATE"),
            env!("KSA_TARGET")
        ))
    })?;
    finish(&text)
}
