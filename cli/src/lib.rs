//! `ksa`: rotate a cluster's service-account signing key like `gkectl update
//! credentials ksa-signing-key`, and decode, verify and mint service-account
//! tokens.
//!
//! Flags are parsed by clap ([`args`]); each command lives in
//! [`commands`]. Errors are printed once, with their cause chain, and mapped
//! to the documented exit codes ([`Failure`]).

pub mod args;
pub mod commands;
pub mod completion;
pub mod config;
pub mod connection;
pub mod fetch;
pub mod input;
pub mod kubeadm;
mod output;
pub mod plan;
pub mod progress;
pub mod prompt;

use std::process::ExitCode;

/// Exit codes, as `--help` documents them.
pub mod exit {
    pub const DONE: u8 = 0;
    /// Also: `token verify` found the token invalid.
    pub const FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const BUSY: u8 = 3;
    /// The check could not be made (a JWKS URL could not be fetched or
    /// used) or its result could not be written: nothing is known.
    pub const CANNOT_CHECK: u8 = 4;
    /// `--wait` gave up at its timeout; the rotation goes on.
    pub const STILL_RUNNING: u8 = 5;
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn bad_input(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: exit::BAD_INPUT,
            error: error.into(),
        }
    }

    pub fn cannot_check(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: exit::CANNOT_CHECK,
            error: error.into(),
        }
    }

    pub fn still_running(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: exit::STILL_RUNNING,
            error: error.into(),
        }
    }

    pub fn busy(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: exit::BUSY,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure {
            code: exit::FAILED,
            error: error.into(),
        }
    }
}

pub type Outcome = Result<u8, Failure>;

pub fn main() -> ExitCode {
    let invoked_as = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let mut command = <args::Cli as clap::CommandFactory>::command();
    if invoked_as.starts_with("kubectl-ksa") {
        command = command.bin_name("kubectl ksa");
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = match command.try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if e.use_stderr() && output::json_in_args(&argv) => {
            output::print_json_error(&e.render().to_string(), exit::BAD_INPUT);
            return ExitCode::from(exit::BAD_INPUT);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::DONE
            });
        }
    };
    let json_errors = output::json_in_matches(&matches);
    let cli = match <args::Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let filter = if cli.verbose {
        "info,ksa_cli=debug,ksa_kube=debug"
    } else {
        "error,kube_client=off"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KSA_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            // Nothing more can be shown; the code stays what it was.
            if output::is_stdout_closed(&failure.error) {
                return ExitCode::from(failure.code);
            }
            if json_errors {
                output::print_json_error(&output::chain(&failure.error), failure.code);
            } else {
                eprintln!("error: {}", output::chain(&failure.error));
            }
            ExitCode::from(failure.code)
        }
    }
}
