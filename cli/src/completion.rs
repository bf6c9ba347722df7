//! Completion of `kubectl ksa <TAB>`. kubectl (1.26 and later) completes a
//! plugin's arguments by running `kubectl_complete-ksa ARGS... CURRENT`
//! (the words after `kubectl ksa`, the last one the word being completed)
//! and reading Cobra's `__complete` protocol: one candidate a line,
//! `value<TAB>description`, then `:DIRECTIVE`. `ksa completions SHELL`
//! serves the shells directly; this serves kubectl.
//!
//! The candidates are read from the same clap command as the parser, so
//! they cannot drift from the flags `ksa` accepts.

use std::ffi::OsStr;
use std::time::Duration;

use clap::Command;
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

/// How long completing a namespace may ask the cluster: a TAB that hangs
/// is worse than one that offers nothing.
const NAMESPACE_PATIENCE: Duration = Duration::from_secs(2);

/// `--context`: the contexts of the kubeconfig (`$KUBECONFIG`, else
/// `~/.kube/config`) that start with what was typed.
pub fn complete_context(current: &OsStr) -> Vec<CompletionCandidate> {
    matching(crate::connection::context_names(), current)
}

/// `--namespace`: the namespaces of the current context's cluster, asked
/// for at most [`NAMESPACE_PATIENCE`].
pub fn complete_namespace(current: &OsStr) -> Vec<CompletionCandidate> {
    matching(
        crate::connection::namespace_names(NAMESPACE_PATIENCE),
        current,
    )
}

fn matching(names: Vec<String>, current: &OsStr) -> Vec<CompletionCandidate> {
    let current = current.to_string_lossy();
    names
        .into_iter()
        .filter(|name| name.starts_with(current.as_ref()))
        .map(CompletionCandidate::new)
        .collect()
}

/// The variable the completion scripts set to ask ksa for candidates.
pub const ENV_VAR: &str = "KSA_COMPLETE";

/// Cobra's directives (`cobra.ShellCompDirective`).
pub mod directive {
    /// Let the shell complete file names too.
    pub const DEFAULT: u8 = 0;
    /// No space after the candidate (`jsonpath=` goes on).
    pub const NO_SPACE: u8 = 2;
    /// No file names: the candidates are all there is.
    pub const NO_FILE_COMP: u8 = 4;
}

/// One candidate, and what `--help` says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub value: String,
    pub help: Option<String>,
}

/// The candidates for the last of `words` (the words after `ksa`, the last
/// one being completed; it may be empty), and Cobra's directive.
pub fn candidates(command: &Command, words: &[String]) -> (Vec<Candidate>, u8) {
    let (current, before) = match words.split_last() {
        Some((current, before)) => (current.as_str(), before),
        None => ("", &[][..]),
    };
    let mut command = command;
    let mut pending_value: Option<&clap::Arg> = None;
    let mut positionals = 0;
    for word in before {
        if pending_value.take().is_some() {
            continue;
        }
        if let Some(name) = word.strip_prefix("--") {
            if !name.contains('=') {
                pending_value = long_flag(command, name).filter(|arg| takes_value(arg));
            }
        } else if let Some(short) = word.strip_prefix('-').filter(|s| s.len() == 1) {
            let short = short.chars().next().unwrap_or_default();
            pending_value = command
                .get_arguments()
                .find(|arg| arg.get_short() == Some(short))
                .filter(|arg| takes_value(arg));
        } else if let Some(sub) = command.find_subcommand(word) {
            command = sub;
            positionals = 0;
        } else {
            positionals += 1;
        }
    }
    let starts = |value: &str| value.starts_with(current);
    if let Some(arg) = pending_value {
        return values_of(arg, current);
    }
    if current.starts_with('-') {
        let flags = command
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .filter_map(|arg| {
                Some(Candidate {
                    value: format!("--{}", arg.get_long()?),
                    help: arg.get_help().map(first_line),
                })
            })
            .filter(|c| starts(&c.value))
            .collect();
        return (flags, directive::NO_FILE_COMP);
    }
    if command.has_subcommands() {
        let subcommands = command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .filter(|sub| starts(sub.get_name()))
            .map(|sub| Candidate {
                value: sub.get_name().to_owned(),
                help: sub.get_about().map(first_line),
            })
            .collect();
        return (subcommands, directive::NO_FILE_COMP);
    }
    match command.get_positionals().nth(positionals) {
        Some(arg) => values_of(arg, current),
        None => (Vec::new(), directive::DEFAULT),
    }
}

/// The possible values of `arg` that start with `current`; with none
/// (a path, a URL), the shell's file names.
fn values_of(arg: &clap::Arg, current: &str) -> (Vec<Candidate>, u8) {
    // Values only the environment knows (contexts, namespaces).
    if let Some(completer) = arg.get::<ArgValueCompleter>() {
        let values = completer
            .complete(OsStr::new(current))
            .into_iter()
            .map(|candidate| Candidate {
                value: candidate.get_value().to_string_lossy().into_owned(),
                help: candidate.get_help().map(first_line),
            })
            .collect();
        return (values, directive::NO_FILE_COMP);
    }
    let values: Vec<Candidate> = arg
        .get_possible_values()
        .into_iter()
        .filter(|v| !v.is_hide_set() && v.get_name().starts_with(current))
        .map(|v| Candidate {
            value: v.get_name().to_owned(),
            help: v.get_help().map(first_line),
        })
        .collect();
    if arg.get_possible_values().is_empty() {
        (values, directive::DEFAULT)
    } else if !values.is_empty() && values.iter().all(|v| v.value.ends_with('=')) {
        (values, directive::NO_FILE_COMP | directive::NO_SPACE)
    } else {
        (values, directive::NO_FILE_COMP)
    }
}

fn long_flag<'a>(command: &'a Command, name: &str) -> Option<&'a clap::Arg> {
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(name))
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_action().takes_values()
}

fn first_line(help: &clap::builder::StyledStr) -> String {
    help.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Cobra's protocol: candidates, then the directive.
pub fn render(candidates: &[Candidate], directive: u8) -> String {
    let mut out = String::new();
    for candidate in candidates {
        out.push_str(&candidate.value);
        if let Some(help) = &candidate.help {
            out.push('\t');
            out.push_str(help);
        }
        out.push('\n');
    }
    out.push_str(&format!(":{directive}\n"));
    out
}

/// `kubectl_complete-ksa ARGS...` (a leading `__complete`, as a Cobra
/// plugin's script passes it on, is skipped).
pub fn main() -> std::process::ExitCode {
    let mut words: Vec<String> = std::env::args().skip(1).collect();
    if words.first().map(String::as_str) == Some("__complete") {
        words.remove(0);
    }
    let mut command = <crate::args::Cli as clap::CommandFactory>::command();
    command.build();
    let (candidates, directive) = candidates(&command, &words);
    // kubectl reads it all; a closed pipe leaves nothing to say.
    let _ = crate::output::print(&render(&candidates, directive));
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(line: &str) -> (Vec<String>, u8) {
        let mut command = <crate::args::Cli as clap::CommandFactory>::command();
        command.build();
        let words: Vec<String> = line.split(' ').map(str::to_owned).collect();
        let (candidates, directive) = candidates(&command, &words);
        (candidates.into_iter().map(|c| c.value).collect(), directive)
    }

    #[test]
    fn subcommands_flags_and_values_are_completed() {
        let (values, directive) = complete("");
        assert!(values.contains(&"update".to_owned()) && values.contains(&"keys".to_owned()));
        assert!(
            !values.contains(&"man".to_owned()),
            "hidden commands stay hidden"
        );
        assert_eq!(directive, directive::NO_FILE_COMP);
        assert_eq!(complete("up").0, ["update"]);
        assert_eq!(
            complete("update credentials ksa-").0,
            ["ksa-signing-key", "ksa-issuer"]
        );
        let (flags, _) = complete("update credentials ksa-signing-key rotate --con");
        assert_eq!(flags, ["--config", "--context", "--controller-namespace"]);
        assert_eq!(
            complete("update credentials ksa-signing-key status -o ").0,
            ["text", "wide", "json", "yaml", "jsonpath="]
        );
        assert_eq!(
            complete("version -o ").0,
            ["text", "json", "yaml", "jsonpath="]
        );
        assert_eq!(complete("keys generate --algorithm E").0, ["ES256"]);
        assert_eq!(
            complete("status -o jsonp"),
            (
                vec!["jsonpath=".to_owned()],
                directive::NO_FILE_COMP | directive::NO_SPACE
            )
        );
        // A path: the shell's file names.
        assert_eq!(
            complete("update credentials ksa-signing-key status --config u"),
            (vec![], directive::DEFAULT)
        );
        assert_eq!(complete("completions f").0, ["fish"]);
    }

    #[test]
    fn the_output_is_cobras_protocol() {
        let candidates = [
            Candidate {
                value: "json".into(),
                help: None,
            },
            Candidate {
                value: "update".into(),
                help: Some("Change cluster credentials".into()),
            },
        ];
        assert_eq!(
            render(&candidates, directive::NO_FILE_COMP),
            "json\nupdate\tChange cluster credentials\n:4\n"
        );
    }
}
