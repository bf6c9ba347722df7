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
pub mod jsonpath;
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
    // `KSA_COMPLETE=SHELL ksa ...` (its own name, so that a `COMPLETE` set for
    // another tool never turns a rotation into a completion): the shell asking for candidates (the
    // script of `ksa completions SHELL`); answered, and nothing else runs.
    clap_complete::env::CompleteEnv::with_factory(<args::Cli as clap::CommandFactory>::command)
        .var(completion::ENV_VAR)
        .complete();
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
    let argv = kubectl_verbosity(std::env::args_os().collect());
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
    let filter = log_filter(cli.verbosity.unwrap_or(0));
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

/// kubectl's `-v N` (a level after a space) as clap reads it, `-v=N`; and
/// `-vN` too. `-v` followed by anything but a number stays `-v` alone.
pub fn kubectl_verbosity(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let is_level = |text: &str| {
        !text.is_empty() && text.len() <= 2 && text.bytes().all(|b| b.is_ascii_digit())
    };
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        // After `--`, everything is an argument.
        if arg == "--" {
            out.push(arg);
            out.extend(args);
            break;
        }
        match arg.to_str() {
            Some(flag @ ("-v" | "--v" | "--verbose"))
                if args
                    .peek()
                    .and_then(|next| next.to_str())
                    .is_some_and(is_level) =>
            {
                let level = args.next().unwrap_or_default();
                let mut joined = std::ffi::OsString::from(format!("{flag}="));
                joined.push(level);
                out.push(joined);
            }
            Some(text) if text.strip_prefix("-v").is_some_and(is_level) => {
                out.push(format!("-v={}", &text[2..]).into());
            }
            _ => out.push(arg),
        }
    }
    out
}

/// The tracing filter of a kubectl-style level: 0 errors only; 1
/// warnings; 2 what ksa does; 3 and 4 (`-v` alone) ksa's own debug lines;
/// 5 and 6 the Kubernetes client's too (each request); 7 and up everything,
/// to trace.
pub fn log_filter(level: u8) -> &'static str {
    match level {
        0 => "error,kube_client=off",
        1 => "warn,kube_client=off",
        2 => "info,kube_client=off",
        3 | 4 => "info,ksa_cli=debug,ksa_kube=debug",
        5 | 6 => {
            "info,ksa_cli=debug,ksa_kube=debug,ksa_core=debug,kube_client=debug,kube_runtime=debug"
        }
        _ => "trace",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<std::ffi::OsString> {
        line.split(' ').map(Into::into).collect()
    }

    #[test]
    fn kubectls_verbosity_forms_become_one() {
        assert_eq!(
            kubectl_verbosity(args("ksa -v 6 version")),
            args("ksa -v=6 version")
        );
        assert_eq!(
            kubectl_verbosity(args("ksa version --v 8")),
            args("ksa version --v=8")
        );
        assert_eq!(
            kubectl_verbosity(args("ksa -v6 version")),
            args("ksa -v=6 version")
        );
        for unchanged in [
            "ksa -v version",
            "ksa -v=3 version",
            "ksa --v=3 version",
            "ksa token decode -v -",
            "ksa status decode -- -v 6",
        ] {
            assert_eq!(
                kubectl_verbosity(args(unchanged)),
                args(unchanged),
                "{unchanged}"
            );
        }
    }

    #[test]
    fn levels_widen_the_log() {
        assert_eq!(log_filter(0), "error,kube_client=off");
        // `-v` alone, as before levels.
        assert_eq!(log_filter(4), "info,ksa_cli=debug,ksa_kube=debug");
        assert!(log_filter(6).contains("kube_client=debug"));
        assert_eq!(log_filter(9), "trace");
        let filters: Vec<&str> = (0..=10).map(log_filter).collect();
        for filter in filters {
            assert!(
                tracing_subscriber::EnvFilter::try_new(filter).is_ok(),
                "{filter}"
            );
        }
    }
}
