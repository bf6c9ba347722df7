//! Edits of kubeadm's static pod manifests: the values of one flag in the
//! container's command list, every other byte left as it was (comments,
//! order, indentation). kubelet restarts the static pod when its manifest
//! changes.
//!
//! A value is written into YAML as it is, so the editor writes only values
//! made of [`SAFE_CHARACTERS`], and a colon only inside a value (an issuer
//! URL's `https://`, a port): a newline would start a new command-line
//! item (a flag of the attacker's choosing), `: `, a final `:` or `#`
//! would change what the YAML means, a comma splits a list flag, a quote
//! or a space changes how kubelet reads the item.

/// Why a manifest could not be edited.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("no `- --{flag}=...` line in the command list; is this a kubeadm static pod manifest?")]
    FlagMissing { flag: String },
    #[error("refusing to write --{flag}={value:?}: {unsafe_character}")]
    UnsafeValue {
        flag: String,
        value: String,
        unsafe_character: UnsafeCharacter,
    },
    #[error("refusing to write an empty --{flag}=")]
    EmptyValue { flag: String },
    #[error("`--{flag}` is already in the command list")]
    FlagPresent { flag: String },
}

/// What a value written into a manifest may be made of, besides ASCII
/// letters and digits.
pub const SAFE_CHARACTERS: &str = "/._-+@";

/// The first character of a value that is not safe in a manifest.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[error(
    "character {character:?} at position {position} is not safe in a manifest flag value \
     (only ASCII letters, digits, {SAFE_CHARACTERS:?} and a colon before the end are)"
)]
pub struct UnsafeCharacter {
    pub character: char,
    /// Counted in characters, from 1.
    pub position: usize,
}

/// Checks that `value` is made of safe characters only (a colon is safe
/// but at the end: the other characters exclude a following blank).
pub fn check_value(value: &str) -> Result<(), UnsafeCharacter> {
    let last = value.chars().count();
    match value.chars().enumerate().find(|(index, c)| {
        let inner_colon = *c == ':' && index + 1 < last;
        !(c.is_ascii_alphanumeric() || SAFE_CHARACTERS.contains(*c) || inner_colon)
    }) {
        Some((index, character)) => Err(UnsafeCharacter {
            character,
            position: index + 1,
        }),
        None => Ok(()),
    }
}

/// Sets the values of `--flag`: the first line naming it becomes one line
/// per value (same indentation), later lines naming it are removed. Every
/// value must pass [`check_value`].
pub fn set_flag(text: &str, flag: &str, values: &[String]) -> Result<String, ManifestError> {
    check_values(flag, values)?;
    let prefix = format!("--{flag}=");
    let mut out = String::with_capacity(text.len() + 64 * values.len());
    let mut replaced = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let names_flag = trimmed
            .strip_prefix("- ")
            .map(|item| item.trim().trim_matches('"').trim_matches('\''))
            .is_some_and(|item| item.starts_with(&prefix));
        if !names_flag {
            out.push_str(line);
            continue;
        }
        if !replaced {
            let indent = &line[..line.len() - trimmed.len()];
            let ending = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
            for value in values {
                out.push_str(&format!("{indent}- {prefix}{value}{ending}"));
            }
            replaced = true;
        }
    }
    if replaced {
        Ok(out)
    } else {
        Err(ManifestError::FlagMissing {
            flag: flag.to_owned(),
        })
    }
}

/// Inserts a `--flag=` line with the values joined by commas (a list
/// flag) after the last line naming `after`, with its indentation. The flag
/// must not be in the list yet, and `after` must be.
pub fn insert_list_flag(
    text: &str,
    after: &str,
    flag: &str,
    values: &[String],
) -> Result<String, ManifestError> {
    check_values(flag, values)?;
    if !flag_values(text, flag).is_empty() {
        return Err(ManifestError::FlagPresent {
            flag: flag.to_owned(),
        });
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let anchor = lines
        .iter()
        .rposition(|line| item_value(line, after).is_some())
        .ok_or_else(|| ManifestError::FlagMissing {
            flag: after.to_owned(),
        })?;
    let line = lines[anchor];
    let indent = &line[..line.len() - line.trim_start().len()];
    let ending = if line.ends_with("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(text.len() + 64);
    for (index, line) in lines.iter().enumerate() {
        out.push_str(line);
        if index == anchor {
            if !line.ends_with('\n') {
                out.push_str(ending);
            }
            out.push_str(&format!("{indent}- --{flag}={}{ending}", values.join(",")));
        }
    }
    Ok(out)
}

/// Refuses an empty or unsafe flag name or value.
fn check_values(flag: &str, values: &[String]) -> Result<(), ManifestError> {
    for value in std::iter::once(flag).chain(values.iter().map(String::as_str)) {
        if value.is_empty() {
            return Err(ManifestError::EmptyValue {
                flag: flag.to_owned(),
            });
        }
        check_value(value).map_err(|unsafe_character| ManifestError::UnsafeValue {
            flag: flag.to_owned(),
            value: value.to_owned(),
            unsafe_character,
        })?;
    }
    Ok(())
}

/// The value of a command-list line `- --flag=VALUE` (quotes dropped).
fn item_value<'a>(line: &'a str, flag: &str) -> Option<&'a str> {
    let item = line.trim_start().strip_prefix("- ")?.trim();
    let item = item.trim_matches('"').trim_matches('\'');
    item.strip_prefix("--")?
        .strip_prefix(flag)?
        .strip_prefix('=')
}

/// The values of `--flag` in the command list, in order.
pub fn flag_values(text: &str, flag: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| item_value(line, flag).map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const APISERVER: &str = "\
apiVersion: v1
kind: Pod
metadata:
  annotations:
    kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint: 10.0.0.2:6443
  name: kube-apiserver
  namespace: kube-system
spec:
  containers:
  - command:
    - kube-apiserver
    - --advertise-address=10.0.0.2
    # keys
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    - --service-account-signing-key-file=/etc/kubernetes/pki/sa.key
    - --service-cluster-ip-range=10.96.0.0/12
    image: registry.k8s.io/kube-apiserver:v1.36.3
";

    #[test]
    fn only_the_flag_lines_change() {
        let values = vec![
            "/etc/kubernetes/pki/sa-v1.pub".to_owned(),
            "/etc/kubernetes/pki/sa-v2.pub".to_owned(),
        ];
        let edited = set_flag(APISERVER, "service-account-key-file", &values).expect("edits");
        let expected = APISERVER.replace(
            "    - --service-account-key-file=/etc/kubernetes/pki/sa.pub\n",
            "    - --service-account-key-file=/etc/kubernetes/pki/sa-v1.pub\n    - --service-account-key-file=/etc/kubernetes/pki/sa-v2.pub\n",
        );
        assert_eq!(edited, expected);
        assert_eq!(flag_values(&edited, "service-account-key-file"), values);
        // Back to one value: the second line goes, nothing else moves.
        let one = vec!["/etc/kubernetes/pki/sa-v2.pub".to_owned()];
        let again = set_flag(&edited, "service-account-key-file", &one).expect("edits");
        assert_eq!(
            again,
            APISERVER.replace("pki/sa.pub", "pki/sa-v2.pub"),
            "every other byte is kept"
        );
        assert_eq!(
            set_flag(APISERVER, "service-account-key-file", &one).expect("edits"),
            again,
            "idempotent"
        );
    }

    #[test]
    fn a_missing_flag_is_an_error_and_crlf_is_kept() {
        assert_eq!(
            set_flag("kind: Pod\n", "service-account-private-key-file", &[]),
            Err(ManifestError::FlagMissing {
                flag: "service-account-private-key-file".into()
            })
        );
        let crlf = "    - --service-account-private-key-file=/a\r\n    - --x=1\r\n";
        assert_eq!(
            set_flag(crlf, "service-account-private-key-file", &["/b".into()]).expect("edits"),
            "    - --service-account-private-key-file=/b\r\n    - --x=1\r\n"
        );
    }

    #[test]
    fn values_that_could_change_the_yaml_are_refused() {
        let flag = "service-account-key-file";
        for (value, character, position) in [
            ("/pki\n    - --authorization-mode=AlwaysAllow", '\n', 5),
            ("/pki\r", '\r', 5),
            ("/p\tki", '\t', 3),
            ("/pki: x", ' ', 6),
            ("/pki:", ':', 5),
            ("/pki #x", ' ', 5),
            ("\"/pki\"", '"', 1),
            ("'/pki'", '\'', 1),
            (" /pki", ' ', 1),
            ("/pki ", ' ', 5),
            ("/a,/b", ',', 3),
            ("/pk\u{e9}", '\u{e9}', 4),
        ] {
            assert_eq!(
                set_flag(APISERVER, flag, &["/ok".into(), value.into()]),
                Err(ManifestError::UnsafeValue {
                    flag: flag.into(),
                    value: value.into(),
                    unsafe_character: UnsafeCharacter {
                        character,
                        position
                    },
                }),
                "{value:?}"
            );
        }
        assert_eq!(
            set_flag(APISERVER, flag, &["/a".into(), String::new()]),
            Err(ManifestError::EmptyValue { flag: flag.into() })
        );
        assert!(set_flag(APISERVER, flag, &["/etc/k8s+x/sa-v1.pub".into()]).is_ok());
        assert!(set_flag(APISERVER, flag, &["https://b.example:8443/x".into()]).is_ok());
    }

    #[test]
    fn issuer_lines_are_set_and_the_audiences_line_is_inserted_after_them() {
        let issuers = vec![
            "https://kubernetes.default.svc.cluster.local".to_owned(),
            "https://b.example".to_owned(),
        ];
        let edited = set_flag(APISERVER, "service-account-issuer", &issuers).expect("edits");
        let edited = insert_list_flag(
            &edited,
            "service-account-issuer",
            "api-audiences",
            &["https://kubernetes.default.svc.cluster.local".to_owned()],
        )
        .expect("inserts");
        assert_eq!(
            edited,
            APISERVER.replace(
                "    - --service-account-issuer=https://kubernetes.default.svc.cluster.local\n",
                "    - --service-account-issuer=https://kubernetes.default.svc.cluster.local\n    \
                 - --service-account-issuer=https://b.example\n    \
                 - --api-audiences=https://kubernetes.default.svc.cluster.local\n",
            )
        );
        assert_eq!(flag_values(&edited, "service-account-issuer"), issuers);
        assert_eq!(
            insert_list_flag(
                &edited,
                "service-account-issuer",
                "api-audiences",
                &["x".into()]
            ),
            Err(ManifestError::FlagPresent {
                flag: "api-audiences".into()
            })
        );
        assert_eq!(
            insert_list_flag(APISERVER, "nope", "api-audiences", &["x".into()]),
            Err(ManifestError::FlagMissing {
                flag: "nope".into()
            })
        );
    }
}
