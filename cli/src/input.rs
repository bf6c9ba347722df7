//! Reading what the user gives: arguments that may come on stdin, files
//! never read past a stated limit, durations.
//!
//! A file's size on disk says nothing about how much a read returns:
//! `/dev/zero`, `/dev/urandom`, a FIFO or a process substitution report a
//! size of 0 and never end. So every read counts the bytes it gets and stops
//! one byte past the limit, whatever the file says about itself.

use std::io::{IsTerminal as _, Read};
use std::path::Path;

use crate::Failure;

/// Why a file could not be read within its limit.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "{what} holds more than {limit} bytes, the most ksa reads; \
         pass the file itself (not a device or a stream that does not end), \
         and check it is the file you meant"
    )]
    TooLarge { what: String, limit: u64 },
}

impl InputError {
    /// Whether the file was not there at all.
    pub fn is_not_found(&self) -> bool {
        matches!(self, InputError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The contents of `path`, refused when it holds more than `limit` bytes.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let what = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| InputError::Read {
        what: what.clone(),
        source,
    })?;
    read_limited_from(file, &what, limit)
}

/// Everything `reader` yields, refused when it is more than `limit` bytes;
/// `what` names the source in errors (a path, or "stdin").
pub fn read_limited_from(reader: impl Read, what: &str, limit: u64) -> Result<Vec<u8>, InputError> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| InputError::Read {
            what: what.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge {
            what: what.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// Largest input read from an argument, a file or stdin.
pub(crate) const MAX_INPUT: u64 = ksa_core::MAX_INPUT_BYTES as u64;

/// The text of an argument that may be `-` (stdin) or absent (stdin when it
/// is not a terminal).
pub fn argument(arg: Option<String>, what: &str) -> Result<String, Failure> {
    match arg.as_deref() {
        Some("-") | None => {
            if arg.is_none() && std::io::stdin().is_terminal() {
                return Err(Failure::bad_input(anyhow::anyhow!(
                    "no {what} given; pass it as an argument or pipe it in with -"
                )));
            }
            let bytes = read_limited_from(
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
        read_limited_from(std::io::stdin().lock(), "stdin", MAX_INPUT)
    } else {
        read_limited(std::path::Path::new(path), MAX_INPUT)
    };
    read.map_err(Failure::bad_input)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_one_byte_past_the_limit_of_an_endless_source() {
        let endless = std::io::repeat(0);
        let error = read_limited_from(endless, "zeros", 16).expect_err("refused");
        assert!(matches!(error, InputError::TooLarge { limit: 16, .. }));
        assert!(error.to_string().contains("zeros holds more than 16 bytes"));
    }

    #[test]
    fn reads_up_to_the_limit() {
        let bytes = read_limited_from(&[7u8; 16][..], "sixteen", 16).expect("fits");
        assert_eq!(bytes.len(), 16);
    }
}
