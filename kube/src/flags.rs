//! kube-apiserver's issuer flags, as ksa changes them in an API server
//! container's arguments (the hosted control plane's workload) and, by the
//! same rule, in a kubeadm static pod manifest.
//!
//! - `--service-account-issuer` once per accepted issuer, the signing one
//!   first, where the first such flag was; every other argument kept, in
//!   order, byte for byte.
//! - `--api-audiences`: when unset, kube-apiserver takes the issuers as the
//!   default audiences, so a token requested without an audience would
//!   change audience with the issuer (and one with the old audience would
//!   be rejected after Retire). The first edit pins it to what it
//!   defaulted to (the issuers before the edit), so the default audience
//!   never changes; an `--api-audiences` already set is left alone.

use ksa_core::issuer::Issuer;

/// The flag names, without their leading `--`.
pub const ISSUER: &str = "service-account-issuer";
pub const AUDIENCES: &str = "api-audiences";
const ISSUER_FLAG: &str = "--service-account-issuer";
const AUDIENCES_FLAG: &str = "--api-audiences";

/// The `--api-audiences` values an edit of the issuer flags adds: what
/// kube-apiserver defaults them to now (`issuers`, the issuers before the
/// edit), when `audiences` (its current values) is empty; `None` when it
/// is set, and left alone.
pub fn audiences_to_pin<'a>(issuers: &[&'a str], audiences: &[&str]) -> Option<Vec<&'a str>> {
    audiences.is_empty().then(|| issuers.to_vec())
}

/// Why the arguments cannot be edited. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagsError {
    #[error(
        "no `{ISSUER_FLAG}=...` argument; ksa changes the issuer only of an API server that \
         names its issuer in that form"
    )]
    NoIssuerFlag,
    #[error(
        "`{flag}` is given as a separate argument from its value; write it as `{flag}=VALUE` so \
         ksa can change it"
    )]
    SplitFlag { flag: &'static str },
}

/// The values of `--flag=VALUE` arguments, in order.
pub fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.iter()
        .filter_map(|arg| arg.strip_prefix(flag)?.strip_prefix('='))
        .collect()
}

/// `args` with `issuers` as the issuer flags (see the module
/// documentation), or `None` when they already are.
pub fn with_issuers(
    args: &[String],
    issuers: &[Issuer],
) -> Result<Option<Vec<String>>, FlagsError> {
    for flag in [ISSUER_FLAG, AUDIENCES_FLAG] {
        if args.iter().any(|arg| arg == flag) {
            return Err(FlagsError::SplitFlag { flag });
        }
    }
    let is_issuer = |arg: &String| {
        arg.strip_prefix(ISSUER_FLAG)
            .is_some_and(|rest| rest.starts_with('='))
    };
    let first = args
        .iter()
        .position(is_issuer)
        .ok_or(FlagsError::NoIssuerFlag)?;
    let current = values(args, ISSUER_FLAG);
    let pin = audiences_to_pin(&current, &values(args, AUDIENCES_FLAG));
    let wanted: Vec<&str> = issuers.iter().map(Issuer::as_str).collect();
    if current == wanted && pin.is_none() {
        return Ok(None);
    }
    let mut edited = Vec::with_capacity(args.len() + issuers.len() + 1);
    for (index, arg) in args.iter().enumerate() {
        if index == first {
            edited.extend(
                wanted
                    .iter()
                    .map(|issuer| format!("{ISSUER_FLAG}={issuer}")),
            );
            if let Some(pin) = &pin {
                edited.push(format!("{AUDIENCES_FLAG}={}", pin.join(",")));
            }
        }
        if !is_issuer(arg) {
            edited.push(arg.clone());
        }
    }
    Ok(Some(edited))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn issuers(items: &[&str]) -> Vec<Issuer> {
        items
            .iter()
            .map(|s| Issuer::new(*s).expect("an issuer"))
            .collect()
    }

    #[test]
    fn the_issuer_flags_are_replaced_in_place_and_the_default_audience_is_pinned() {
        let before = args(&[
            "--v=2",
            "--service-account-issuer=https://a.example",
            "--profiling=false",
        ]);
        let trust = with_issuers(
            &before,
            &issuers(&["https://a.example", "https://b.example"]),
        )
        .expect("edits")
        .expect("changes");
        assert_eq!(
            trust,
            args(&[
                "--v=2",
                "--service-account-issuer=https://a.example",
                "--service-account-issuer=https://b.example",
                "--api-audiences=https://a.example",
                "--profiling=false",
            ])
        );
        // Later edits keep the pinned audience.
        let retire = with_issuers(&trust, &issuers(&["https://b.example"]))
            .expect("edits")
            .expect("changes");
        assert_eq!(
            retire,
            args(&[
                "--v=2",
                "--service-account-issuer=https://b.example",
                "--api-audiences=https://a.example",
                "--profiling=false",
            ])
        );
        assert_eq!(
            with_issuers(&retire, &issuers(&["https://b.example"])),
            Ok(None)
        );
    }

    #[test]
    fn an_audience_already_set_is_kept_and_the_old_default_is_the_whole_issuer_list() {
        let set = args(&[
            "--service-account-issuer=https://a.example",
            "--api-audiences=vault",
        ]);
        let edited = with_issuers(&set, &issuers(&["https://b.example"]))
            .expect("edits")
            .expect("changes");
        assert_eq!(
            edited,
            args(&[
                "--service-account-issuer=https://b.example",
                "--api-audiences=vault"
            ])
        );
        let two = args(&[
            "--service-account-issuer=https://a.example",
            "--service-account-issuer=https://z.example",
        ]);
        let edited = with_issuers(&two, &issuers(&["https://b.example"]))
            .expect("edits")
            .expect("changes");
        assert_eq!(
            edited,
            args(&[
                "--service-account-issuer=https://b.example",
                "--api-audiences=https://a.example,https://z.example",
            ])
        );
    }

    #[test]
    fn arguments_ksa_cannot_read_are_refused() {
        let split = args(&["--service-account-issuer", "https://a.example"]);
        assert_eq!(
            with_issuers(&split, &issuers(&["https://b.example"])),
            Err(FlagsError::SplitFlag { flag: ISSUER_FLAG })
        );
        let none = args(&["--v=2", "--service-account-issuer-x=1"]);
        assert_eq!(
            with_issuers(&none, &issuers(&["https://b.example"])),
            Err(FlagsError::NoIssuerFlag)
        );
    }
}
