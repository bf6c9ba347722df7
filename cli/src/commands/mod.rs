//! One module per command family; [`run`] dispatches.

mod keys;
pub(crate) mod rotation;
mod status;
mod token;

use std::io::{IsTerminal as _, Read as _};

use anyhow::Context as _;

use crate::args::{Cli, Command, CredentialsCommand, UpdateCommand};
use crate::{Failure, Outcome};

pub fn run(cli: Cli) -> Outcome {
    match cli.command {
        Command::Update {
            what:
                UpdateCommand::Credentials {
                    which: CredentialsCommand::KsaSigningKey { action },
                },
        } => rotation::run(action),
        Command::Status { command } => status::run(command),
        Command::Keys { command } => keys::run(command),
        Command::Token { command } => token::run(command),
        Command::Man { out } => {
            std::fs::create_dir_all(&out)?;
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(command, &out)?;
            Ok(crate::exit::DONE)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "ksa", &mut std::io::stdout());
            Ok(crate::exit::DONE)
        }
    }
}

/// Largest input read from an argument, a file or stdin.
const MAX_INPUT: u64 = ksa_core::MAX_INPUT_BYTES as u64;

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
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_INPUT + 1)
                .read_to_string(&mut text)
                .with_context(|| format!("reading the {what} from stdin"))?;
            if text.len() as u64 > MAX_INPUT {
                return Err(Failure::bad_input(anyhow::anyhow!(
                    "the {what} on stdin is larger than {MAX_INPUT} bytes"
                )));
            }
            Ok(text)
        }
        Some(text) => Ok(text.to_owned()),
    }
}

/// Reads a file (or stdin for `-`), capped in size.
pub fn read_file(path: &str) -> Result<Vec<u8>, Failure> {
    if path == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_INPUT + 1)
            .read_to_end(&mut bytes)?;
        return Ok(bytes);
    }
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {path}"))
        .map_err(Failure::bad_input)?
        .len();
    if size > MAX_INPUT {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "{path} is {size} bytes; at most {MAX_INPUT} are accepted"
        )));
    }
    std::fs::read(path)
        .with_context(|| format!("cannot read {path}"))
        .map_err(Failure::bad_input)
}

/// Prints to stdout; a closed pipe surfaces as an io error the caller maps
/// to a quiet exit.
pub fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
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
