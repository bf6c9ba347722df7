//! Writing to the terminal: errors with their chain, a closed stdout,
//! colour, and text from tokens shown without control characters.
//!
//! Colour is `anstyle`'s, written through `anstream`, which drops it when
//! stdout is not a terminal or NO_COLOR is set (CLICOLOR_FORCE forces it).

use std::borrow::Cow;

use anstyle::{AnsiColor, Style};

use crate::args::{DataFormat, Output};
use crate::{Failure, Outcome};

/// `error: outer: cause: root cause`, each cause once.
pub fn chain(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        // kube-rs prints an API error with a debug dump of its Status, and
        // then the Status again as its source: the server's message once.
        if cause.downcast_ref::<kube::core::Status>().is_some()
            || cause.downcast_ref::<Box<kube::core::Status>>().is_some()
        {
            continue;
        }
        let text = match cause.downcast_ref::<kube::Error>() {
            Some(error) => ksa_kube::error::describe(error),
            None => cause.to_string(),
        };
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// An error as `-o json` prints it on stderr, one line of a stable shape:
/// `{"error":{"message":"...","exitCode":2}}`.
pub fn json_error(message: &str, exit_code: u8) -> String {
    serde_json::json!({"error": {"message": message.trim_end(), "exitCode": exit_code}}).to_string()
}

pub fn print_json_error(message: &str, exit_code: u8) {
    eprintln!("{}", json_error(message, exit_code));
}

/// Whether the command that ran asked for `-o json`.
pub fn json_in_matches(matches: &clap::ArgMatches) -> bool {
    let mut matches = matches;
    loop {
        // Set on the command line, not a default (`keys jwks` prints JSON
        // unless told otherwise; its errors stay text unless `-o json`).
        let given = matches!(
            matches
                .try_contains_id("output")
                .ok()
                .and_then(|_| matches.value_source("output")),
            Some(clap::parser::ValueSource::CommandLine)
        );
        let json = given
            && matches
                .try_get_raw("output")
                .ok()
                .flatten()
                .is_some_and(|mut values| values.any(|v| v == "json"));
        if json {
            return true;
        }
        match matches.subcommand() {
            Some((_, sub)) => matches = sub,
            None => return false,
        }
    }
}

/// Whether a command line that clap refused asked for `-o json`: in any of
/// the forms `-o json`, `-ojson`, `-o=json`, `--output json`,
/// `--output=json`.
pub fn json_in_args(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
    args.iter().enumerate().any(|(i, arg)| match *arg {
        "-o" | "--output" => args.get(i + 1) == Some(&"json"),
        _ => matches!(*arg, "-ojson" | "-o=json" | "--output=json"),
    })
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

/// A valid verdict.
pub const GOOD: Style = AnsiColor::Green.on_default();
/// An invalid one.
pub const BAD: Style = AnsiColor::Red.on_default();

/// `text` in `style`; [`print`] keeps the colour only where it belongs.
pub fn paint(text: &str, style: Style) -> String {
    format!("{style}{text}{style:#}")
}

/// A time as ksa prints it: RFC 3339 in UTC with how long ago (or how
/// soon) it is, as kubectl says ages: `2026-11-30T10:00:00Z (5m ago)`.
pub fn time(at: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let seconds = now.as_second().saturating_sub(at.as_second());
    let span = age(seconds.unsigned_abs());
    if seconds >= 0 {
        format!("{at} ({span} ago)")
    } else {
        format!("{at} (in {span})")
    }
}

/// A length of time in one or two units, as kubectl prints ages: `45s`,
/// `5m`, `5m30s`, `3h`, `3h20m`, `2d`, `2d4h` (the second unit only while
/// the first is under 10, truncated). jiff rounds and prints it.
pub fn age(seconds: u64) -> String {
    use jiff::fmt::friendly::{Designator, Spacing, SpanPrinter};
    use jiff::{RoundMode, Span, SpanRound, Unit};
    let (big, small, size) = match seconds {
        0..60 => (Unit::Second, Unit::Second, 1),
        60..3600 => (Unit::Minute, Unit::Second, 60),
        3600..86400 => (Unit::Hour, Unit::Minute, 3600),
        _ => (Unit::Day, Unit::Hour, 86400),
    };
    let smallest = if seconds / size < 10 { small } else { big };
    let rounded = i64::try_from(seconds)
        .ok()
        .and_then(|seconds| Span::new().try_seconds(seconds).ok())
        .and_then(|span| {
            span.round(
                SpanRound::new()
                    .largest(big)
                    .smallest(smallest)
                    .mode(RoundMode::Trunc)
                    .days_are_24_hours(),
            )
            .ok()
        });
    match rounded {
        Some(span) => SpanPrinter::new()
            .designator(Designator::Compact)
            .spacing(Spacing::None)
            .span_to_string(&span),
        // Past jiff's range (hundreds of millennia: a hostile exp).
        None => format!("{}d", seconds / 86400),
    }
}

/// Prints to stdout. A closed stdout is a [`StdoutClosed`] failure with
/// the code [`exit::FAILED`](crate::exit::FAILED), which `main` reports
/// quietly; a command whose result is already a success uses [`finish`].
pub fn print(text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let write = || -> std::io::Result<()> {
        let mut out = anstream::stdout().lock();
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
pub fn finish(text: &str) -> Outcome {
    match print(text) {
        Err(failure) if !is_stdout_closed(&failure.error) => Err(failure),
        _ => Ok(crate::exit::DONE),
    }
}

/// What `-o` asks for: `value` as JSON, YAML or a jsonpath template, or
/// `text()` (for `wide` too, where a command has no wider text).
pub fn render(
    output: &Output,
    value: &impl serde::Serialize,
    text: impl FnOnce() -> Result<String, Failure>,
) -> Result<String, Failure> {
    Ok(match output {
        Output::Text | Output::Wide => text()?,
        Output::Json => serde_json::to_string_pretty(value)?,
        Output::Yaml => serde_saphyr::to_string(value)?,
        Output::JsonPath(template) => template.render(&serde_json::to_value(value)?),
    })
}

/// Rows under upper-case headers, in columns three spaces apart, as
/// kubectl prints tables (`-o wide`).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    // Measured as shown: an escaped cell is longer than its text.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| shown(cell).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(width - cell.chars().count() + 3));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// Data as JSON or YAML.
pub fn data(value: &impl serde::Serialize, format: DataFormat) -> Result<String, Failure> {
    Ok(match format {
        DataFormat::Json => serde_json::to_string_pretty(value)?,
        DataFormat::Yaml => serde_saphyr::to_string(value)?,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn tables_are_kubectls() {
        assert_eq!(
            super::table(
                &["name", "step", "waiting for"],
                &[vec![
                    "user-cluster-1".into(),
                    "Trust".into(),
                    "API servers: 1/3".into()
                ]]
            ),
            "NAME             STEP    WAITING FOR\nuser-cluster-1   Trust   API servers: 1/3\n"
        );
    }

    #[test]
    fn a_kubernetes_error_is_the_servers_message_once_not_a_debug_dump() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "ksasigningkeyrotations.ksa.dev \"c1\" not found",
            "reason": "NotFound",
            "code": 404,
        }))
        .expect("a Status");
        let error = anyhow::Error::new(kube::Error::Api(Box::new(status))).context("reading c1");
        assert_eq!(
            super::chain(&error),
            "reading c1: ksasigningkeyrotations.ksa.dev \"c1\" not found (404 NotFound)"
        );
    }
    use super::shown;

    #[test]
    fn json_errors_have_one_stable_shape() {
        assert_eq!(
            super::json_error("no such file\n", 2),
            r#"{"error":{"exitCode":2,"message":"no such file"}}"#
        );
        let args =
            |line: &str| -> Vec<std::ffi::OsString> { line.split(' ').map(Into::into).collect() };
        for line in [
            "ksa x -o json",
            "ksa x -ojson",
            "ksa x --output=json",
            "ksa -o=json",
        ] {
            assert!(super::json_in_args(&args(line)), "{line}");
        }
        for line in ["ksa x -o yaml", "ksa x json", "ksa x -o"] {
            assert!(!super::json_in_args(&args(line)), "{line}");
        }
    }

    #[test]
    fn times_are_rfc3339_with_how_long_ago() {
        let now: jiff::Timestamp = "2026-11-30T10:05:00Z".parse().expect("time");
        let at = |text: &str| text.parse::<jiff::Timestamp>().expect("time");
        assert_eq!(
            super::time(at("2026-11-30T10:00:00Z"), now),
            "2026-11-30T10:00:00Z (5m ago)"
        );
        assert_eq!(
            super::time(at("2026-11-30T11:05:00Z"), now),
            "2026-11-30T11:05:00Z (in 1h)"
        );
        assert_eq!(super::time(now, now), "2026-11-30T10:05:00Z (0s ago)");
        let ages: Vec<String> = [45, 330, 3540, 12_000, 200_000, 2_000_000]
            .into_iter()
            .map(super::age)
            .collect();
        assert_eq!(ages, ["45s", "5m30s", "59m", "3h20m", "2d7h", "23d"]);
        let edges: Vec<String> = [0, 60, 600, 3600, 86_400, 90_061, u64::MAX]
            .into_iter()
            .map(super::age)
            .collect();
        assert_eq!(
            edges,
            [
                "0s",
                "1m",
                "10m",
                "1h",
                "1d",
                "1d1h",
                &format!("{}d", u64::MAX / 86_400)
            ]
        );
    }

    #[test]
    fn colour_is_anstyles_and_anstream_drops_it_where_it_does_not_belong() {
        let painted = super::paint("valid", super::GOOD);
        assert_eq!(painted, "\u{1b}[32mvalid\u{1b}[0m");
        assert_eq!(anstream::adapter::strip_str(&painted).to_string(), "valid");
    }

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
