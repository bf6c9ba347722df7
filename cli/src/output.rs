//! Writing to the terminal: errors with their chain, a closed stdout,
//! colour, and text from tokens shown without control characters.

use std::borrow::Cow;
use std::io::IsTerminal as _;

/// `error: outer: cause: root cause`, each cause once.
pub fn chain(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Stdout was closed by its reader (`ksa ... | head`). The command exits
/// quietly with the code it had: a closed stdout never turns a failure into
/// a success.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed before all output was written")]
pub struct StdoutClosed;

/// Whether the error is (or was caused by) [`StdoutClosed`].
pub fn is_stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<StdoutClosed>())
}

/// Text from a token or a key set, shown as it is when every character is
/// printable, else quoted with Rust's escapes (`"a\nb"`), so that a claim
/// can never start a line of its own, move the cursor or reverse the text.
pub fn shown(text: &str) -> Cow<'_, str> {
    let printable = |c: char| matches!(c, '"' | '\'' | '\\') || c.escape_debug().len() == 1;
    if text.chars().all(printable) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("{text:?}"))
    }
}

/// Colour only on a terminal, and never with NO_COLOR set.
pub fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn paint(text: &str, code: &str) -> String {
    if color() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn printable_text_is_shown_as_it_is() {
        for text in [
            "system:serviceaccount:ci:builder",
            "https://a.example/x?y=\"z\"",
            "café",
        ] {
            assert_eq!(shown(text), text);
        }
    }

    #[test]
    fn control_and_bidi_characters_are_escaped() {
        assert_eq!(shown("a\nb"), r#""a\nb""#);
        assert_eq!(shown("\u{1b}[2Kok\r"), r#""\u{1b}[2Kok\r""#);
        assert_eq!(shown("\u{202e}gnp.exe"), r#""\u{202e}gnp.exe""#);
    }
}
