//! Kubernetes object names, checked before they go into an API path.
//!
//! kube-rs puts a name into the request path as it is, so a name that
//! holds `/`, `?` or `..` would steer the request to another object: any
//! name that comes from outside (a URL, a rotation's spec) is checked
//! here first.

/// The longest DNS-1123 label: a namespace name.
pub const MAX_LABEL: usize = 63;
/// The longest DNS-1123 subdomain: most object names.
pub const MAX_SUBDOMAIN: usize = 253;

/// An RFC 1123 label (a namespace name): at most 63 of lower-case
/// letters, digits and `-`, starting and ending with a letter or digit.
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= MAX_LABEL && is_label_shaped(name)
}

/// A DNS-1123 subdomain (the name of a Secret, a ConfigMap, a Deployment,
/// a rotation): at most 253 characters of labels joined by `.`.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_SUBDOMAIN && name.split('.').all(is_label_shaped)
}

/// Lower-case letters, digits and `-`, starting and ending with a letter
/// or digit; any length but zero.
fn is_label_shaped(label: &str) -> bool {
    let bytes = label.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for good in ["a", "user-cluster-1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a.b",
            "a/b",
            "..",
            "a?b",
            "a%2Fb",
            "a b",
            "ä",
            &"a".repeat(64),
        ] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        for good in ["a", "a.b", "user-cluster-1", "a-1.b-2.c", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".a",
            "a.",
            "a/b",
            "a?b",
            "a\0",
            "A",
            "-a",
            "a.-b",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}
