//! One module per command family; [`run`] dispatches.

mod keys;
pub(crate) mod plan;
pub(crate) mod preflight;
pub(crate) mod rotation;
mod status;
mod token;

use std::io::IsTerminal as _;

use crate::args::{Cli, Command, CredentialsCommand, DataFormat, UpdateCommand};
use crate::output::{StdoutClosed, is_stdout_closed};
use crate::{Failure, Outcome};

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

/// Largest input read from an argument, a file or stdin.
pub(crate) const MAX_INPUT: u64 = ksa_core::MAX_INPUT_BYTES as u64;

/// The text of an argument that may be `-` (stdin) or absent (stdin when it
/// is not a terminal).
pub fn input(arg: Option<String>, what: &str) -> Result<String, Failure> {
    match arg.as_deref() {
        Some("-") | None => {
            if arg.is_none() && std::io::stdin().is_terminal() {
                return Err(Failure::bad_input(anyhow::anyhow!(
                    "no {what} given; pass it as an argument or pipe it in with -"
                )));
            }
            let bytes = crate::input::read_limited_from(
                std::io::stdin().lock(),
                &format!("the {what} on stdin"),
                MAX_INPUT,
            )
            .map_err(Failure::bad_input)?;
            String::from_utf8(bytes).map_err(|_| {
                Failure::bad_input(anyhow::anyhow!("the {what} on stdin is not UTF-8 text"))
            })
        }
        Some(text) => Ok(text.to_owned()),
    }
}

/// Reads a file (or stdin for `-`), refusing more than [`MAX_INPUT`] bytes
/// however the file describes its size.
pub fn read_file(path: &str) -> Result<Vec<u8>, Failure> {
    let read = if path == "-" {
        crate::input::read_limited_from(std::io::stdin().lock(), "stdin", MAX_INPUT)
    } else {
        crate::input::read_limited(std::path::Path::new(path), MAX_INPUT)
    };
    read.map_err(Failure::bad_input)
}

/// Prints to stdout. A closed stdout is a [`StdoutClosed`] failure with
/// the code [`exit::FAILED`](crate::exit::FAILED), which `main` reports
/// quietly; a command whose result is already a success uses [`finish`].
pub fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let write = || -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    write().map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::from(StdoutClosed)
        } else {
            Failure::from(anyhow::Error::new(e).context("writing to stdout"))
        }
    })
}

/// Prints a successful command's output and exits [`exit::DONE`]: a reader
/// that closed stdout early (`ksa ... | head`) had what it wanted, as in
/// ripgrep.
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

pub fn finish(text: &str) -> Outcome {
    match print(text) {
        Err(failure) if !is_stdout_closed(&failure.error) => Err(failure),
        _ => Ok(crate::exit::DONE),
    }
}

/// Data as JSON or YAML.
pub fn data(value: &impl serde::Serialize, format: DataFormat) -> Result<String, Failure> {
    Ok(match format {
        DataFormat::Json => serde_json::to_string_pretty(value)?,
        DataFormat::Yaml => serde_saphyr::to_string(value)?,
    })
}

/// Parses a duration such as `30m`, `2h` or `1h30m`.
pub fn duration(text: &str, flag: &str) -> Result<std::time::Duration, Failure> {
    let parsed: jiff::SignedDuration = text.parse().map_err(|e| {
        Failure::bad_input(anyhow::anyhow!(
            "{flag}: {text:?} is not a duration such as 30m or 2h ({e})"
        ))
    })?;
    std::time::Duration::try_from(parsed)
        .map_err(|_| Failure::bad_input(anyhow::anyhow!("{flag}: {text:?} must not be negative")))
}
