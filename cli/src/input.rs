//! Reading files the user names, never more than a stated limit.
//!
//! A file's size on disk says nothing about how much a read returns:
//! `/dev/zero`, `/dev/urandom`, a FIFO or a process substitution report a
//! size of 0 and never end. So every read counts the bytes it gets and stops
//! one byte past the limit, whatever the file says about itself.

use std::io::Read;
use std::path::Path;

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
