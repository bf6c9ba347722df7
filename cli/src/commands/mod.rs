//! One module per command family; [`run`] dispatches.

mod fleet;
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
            // The script of `KSA_COMPLETE=SHELL ksa`: the shell asks ksa for
            // the candidates, so contexts and namespaces complete too.
            use clap_complete::env::EnvCompleter as _;
            let mut script = Vec::new();
            let (var, bin) = (crate::completion::ENV_VAR, "ksa");
            let written = match shell {
                clap_complete::Shell::Bash => {
                    clap_complete::env::Bash.write_registration(var, bin, bin, bin, &mut script)
                }
                clap_complete::Shell::Zsh => {
                    clap_complete::env::Zsh.write_registration(var, bin, bin, bin, &mut script)
                }
                clap_complete::Shell::Fish => {
                    clap_complete::env::Fish.write_registration(var, bin, bin, bin, &mut script)
                }
                clap_complete::Shell::Elvish => {
                    clap_complete::env::Elvish.write_registration(var, bin, bin, bin, &mut script)
                }
                clap_complete::Shell::PowerShell => clap_complete::env::Powershell
                    .write_registration(var, bin, bin, bin, &mut script),
                other => {
                    return Err(crate::Failure::bad_input(anyhow::anyhow!(
                        "no completion script for {other}"
                    )));
                }
            };
            written?;
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
