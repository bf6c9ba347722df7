//! `ksa token decode | verify | mint`.

use std::path::PathBuf;

use anyhow::Context as _;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::parse_pem;
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{
    self, BoundToken, Claims, Expectations, NoExpiry, ObjectRef, TokenError, TokenKind, Verified,
};

use crate::args::{DataFormat, MintKind, Output, TokenCommand};
use crate::output::{is_stdout_closed, paint, shown};
use crate::{Failure, Outcome};

pub fn run(command: TokenCommand) -> Outcome {
    match command {
        TokenCommand::Decode { token, output } => decode(token, output),
        TokenCommand::Verify {
            token,
            jwks,
            public_key,
            rotation,
            namespace,
            kube,
            issuer,
            audience,
            at,
            allow_no_exp,
            output,
        } => {
            let token = crate::input::argument(token, "token")?;
            let rotation_keys = match &rotation {
                Some(name) => Some(rotation_keys(name, namespace.as_deref(), &kube)?),
                None => None,
            };
            let trusted = with_versions(
                trusted_keys(&jwks, &public_key, rotation_keys.is_some())?,
                rotation_keys.as_deref().unwrap_or_default(),
            );
            let at = match at {
                Some(text) => parse_time(&text)?,
                None => jiff::Timestamp::now().as_second(),
            };
            let (keys, refused) = KeySet::load_usable(trusted, &AwsLc::new());
            for key in &refused {
                eprintln!(
                    "warning: skipped key {}: {}",
                    shown(key.kid.as_str()),
                    key.error
                );
            }
            if keys.is_empty() {
                return Err(Failure::cannot_check(anyhow::anyhow!(
                    "none of the {} trusted key(s) could be loaded (see the warnings); \
                     the token was not checked",
                    refused.len()
                )));
            }
            let expect = Expectations {
                issuers: issuer,
                audiences: audience,
                ..Expectations::at(at)
            };
            let no_expiry = if allow_no_exp {
                NoExpiry::Allow
            } else {
                NoExpiry::Refuse
            };
            verify(&token, &keys, &expect, no_expiry, &output)
        }
        TokenCommand::Mint { key, kind, output } => mint(&key, kind, &output),
    }
}

/// The keys of rotation `name` (`--rotation`), each with its version, read
/// from its key Secrets in the admin cluster. When they cannot be read the
/// token is not checked (4): the verdict would lack what was asked for.
fn rotation_keys(
    name: &str,
    namespace: Option<&str>,
    kube: &crate::args::KubeArgs,
) -> Result<Vec<TrustedKey>, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let connection = crate::connection::Connection::open(kube).await?;
        let namespace = namespace.unwrap_or(&connection.config.default_namespace);
        let store = ksa_kube::keystore::KeyStore::new(connection.client.clone(), namespace, name);
        let keys = store.public_keys().await.map_err(|error| {
            let error = match error {
                ksa_kube::Error::Kube(error) => connection.unreachable(error).error,
                other => anyhow::Error::new(other),
            };
            Failure::cannot_check(error.context(format!(
                "reading the key versions of rotation {namespace}/{name} (--rotation); the token \
                 was not checked"
            )))
        })?;
        if keys.is_empty() {
            eprintln!(
                "warning: rotation {namespace}/{name} has no key Secrets \
                 ({name}-signing-key-vN): no key version is known from it"
            );
        }
        Ok(keys
            .into_iter()
            .map(|(version, key)| TrustedKey::derived(key).with_version(version))
            .collect())
    })
}

/// The version a key file's name gives, as ksa names the key files of a
/// kubeadm pki directory: `sa-v2.pub`, `sa-v2.key`.
fn version_of_file(path: &std::path::Path) -> Option<ksa_core::KeyVersion> {
    let name = path.file_name()?.to_str()?;
    let number = name
        .strip_prefix("sa-v")?
        .strip_suffix(".pub")
        .or_else(|| name.strip_prefix("sa-v")?.strip_suffix(".key"))?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(ksa_core::KeyVersion::new)
}

/// `trusted`, each key without a version given the version that a key of
/// the same kid has (among `trusted` and `known`), then the keys of
/// `known` not trusted yet when `trusted` is empty (`--rotation` alone).
fn with_versions(trusted: Vec<TrustedKey>, known: &[TrustedKey]) -> Vec<TrustedKey> {
    let version_of = |kid: &ksa_core::KeyId| {
        trusted
            .iter()
            .chain(known)
            .find(|key| &key.kid == kid && key.version.is_some())
            .and_then(|key| key.version)
    };
    let versioned: Vec<TrustedKey> = trusted
        .iter()
        .map(|key| match (key.version, version_of(&key.kid)) {
            (None, Some(version)) => key.clone().with_version(version),
            _ => key.clone(),
        })
        .collect();
    if versioned.is_empty() {
        known.to_vec()
    } else {
        versioned
    }
}

/// The keys of every `--jwks` (file or URL) and `--public-key`. A file that
/// cannot be read or parsed is bad input (2); a URL that cannot be fetched
/// or does not hold a JWKS means the token cannot be checked (4). None at
/// all is bad input unless `--rotation` supplies them (`from_rotation`).
fn trusted_keys(
    jwks: &[String],
    public_key: &[PathBuf],
    from_rotation: bool,
) -> Result<Vec<TrustedKey>, Failure> {
    let mut trusted = Vec::new();
    for source in jwks {
        if source.starts_with("https://") || source.starts_with("http://") {
            let text = crate::fetch::fetch_jwks(source)
                .context("could not fetch the JWKS (--jwks); the token was not checked")
                .map_err(Failure::cannot_check)?;
            trusted.extend(
                parse_jwks(&text)
                    .with_context(|| format!("--jwks {source}: the token was not checked"))
                    .map_err(Failure::cannot_check)?,
            );
        } else {
            let text = String::from_utf8(crate::input::read_file(source)?)
                .with_context(|| format!("{source} is not UTF-8"))
                .map_err(Failure::bad_input)?;
            trusted.extend(
                parse_jwks(&text)
                    .with_context(|| format!("--jwks {source}"))
                    .map_err(Failure::bad_input)?,
            );
        }
    }
    for path in public_key {
        let keys = parse_pem(&crate::input::read_file(&path.display().to_string())?)
            .with_context(|| format!("--public-key {}", path.display()))
            .map_err(Failure::bad_input)?;
        let version = version_of_file(path);
        trusted.extend(keys.public_keys().cloned().map(|key| {
            let key = TrustedKey::derived(key);
            match version {
                Some(version) => key.with_version(version),
                None => key,
            }
        }));
    }
    if trusted.is_empty() && !from_rotation {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "no keys to verify against; pass --jwks FILE|URL, --public-key PEM or --rotation NAME"
        )));
    }
    Ok(trusted)
}

fn decode(token: Option<String>, output: Output) -> Outcome {
    let token = crate::input::argument(token, "token")?;
    let decoded = token::decode(&token).map_err(Failure::bad_input)?;
    let claims = serde_json::to_value(&decoded.claims)?;
    // The time claims as RFC 3339, beside the claims as the token has them.
    let times: serde_json::Map<String, serde_json::Value> = ["exp", "iat", "nbf"]
        .into_iter()
        .filter_map(|claim| {
            let seconds = claims.get(claim)?.as_i64()?;
            let time = jiff::Timestamp::from_second(seconds).ok()?;
            Some((claim.to_owned(), time.to_string().into()))
        })
        .collect();
    let json = serde_json::json!({
        "verified": false,
        "note": "UNVERIFIED: decoded only; the signature was not checked",
        "kind": decoded.kind(),
        "header": decoded.header,
        "claims": claims,
        "times": times,
    });
    crate::output::finish(&crate::output::render(&output, &json, || {
        crate::output::data(&json, DataFormat::Json)
    })?)
}

fn verify(
    token: &str,
    keys: &KeySet,
    expect: &Expectations,
    no_expiry: NoExpiry,
    output: &Output,
) -> Outcome {
    let (text, code) = match token::verify_with(token, keys, expect, no_expiry) {
        Ok(verified) => (valid(&verified, expect, output)?, crate::exit::DONE),
        Err(error) => (invalid(&error, output)?, crate::exit::FAILED),
    };
    report(&text, code)
}

/// Prints the verdict; whatever happens to stdout, the exit code stays the
/// verdict's: an invalid token exits 1 even when stdout is closed or full.
fn report(text: &str, code: u8) -> Outcome {
    match crate::output::print(text) {
        Ok(()) => Ok(code),
        Err(failure) if is_stdout_closed(&failure.error) => Ok(code),
        Err(failure) if code == crate::exit::DONE => {
            Err(Failure::cannot_check(failure.error.context(
                "the token is valid, but the result could not be written",
            )))
        }
        Err(failure) => Err(Failure {
            code,
            error: failure
                .error
                .context("the token is not valid, and the result could not be written"),
        }),
    }
}

/// What a valid verdict did not establish, said plainly: a check that was
/// not asked for, and a legacy token's dependence on its Secret.
fn not_checked(verified: &Verified, expect: &Expectations) -> Vec<&'static str> {
    let mut notes = Vec::new();
    if expect.issuers.is_empty() {
        notes.push("the issuer was not checked (pass --issuer to check it)");
    }
    if expect.audiences.is_empty() {
        notes.push("the audience was not checked (pass --audience to check it)");
    }
    if verified.kind() == TokenKind::Legacy {
        notes.push(
            "a legacy token is valid only while its Secret still holds it: kube-apiserver also checks the Secret, which this check cannot see",
        );
    }
    notes
}

fn valid(verified: &Verified, expect: &Expectations, output: &Output) -> Result<String, Failure> {
    let sa = verified.claims.service_account();
    let notes = not_checked(verified, expect);
    let json = serde_json::json!({
        "valid": true,
        "kind": verified.kind(),
        "kid": verified.kid,
        "keyVersion": verified.key_version,
        "algorithm": verified.algorithm,
        "issuer": verified.claims.iss,
        "subject": verified.claims.sub,
        "serviceAccount": sa,
        "audiences": verified.claims.aud,
        "expires": verified.claims.exp.map(|exp| {
            jiff::Timestamp::from_second(exp)
                .map_or_else(|_| serde_json::Value::from(exp), |t| t.to_string().into())
        }),
        "issuerChecked": !expect.issuers.is_empty(),
        "audienceChecked": !expect.audiences.is_empty(),
        "notes": notes,
    });
    crate::output::render(output, &json, || {
        let expires = match (verified.claims.exp, verified.kind()) {
            (Some(exp), _) => expiry(exp, expect.at),
            (None, TokenKind::Legacy) => "never (legacy token)".to_owned(),
            (None, _) => "never (no exp claim; accepted because of --allow-no-exp)".to_owned(),
        };
        let text = |value: Option<&str>| shown(value.unwrap_or("-")).into_owned();
        let notes: String = notes
            .iter()
            .map(|n| format!("\n  note:      {n}"))
            .collect();
        Ok(format!(
            "{} {} token\n  kid:       {}{}\n  algorithm: {}\n  issuer:    {}\n  subject:   {}\n  audiences: {}\n  expires:   {}{}",
            paint("valid", crate::output::GOOD),
            serde_json::to_value(verified.kind())
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            shown(verified.kid.as_str()),
            verified
                .key_version
                .map(|version| format!("\n  key version: {version}"))
                .unwrap_or_default(),
            verified.algorithm,
            text(verified.claims.iss.as_deref()),
            text(verified.claims.sub.as_deref()),
            verified.claims.aud.as_ref().map_or("-".to_owned(), |a| {
                a.iter().map(|a| shown(a)).collect::<Vec<_>>().join(", ")
            }),
            expires,
            notes,
        ))
    })
}

/// `exp` as a time and how far it is from `at`, with no arithmetic that
/// can overflow on hostile values.
fn expiry(exp: i64, at: i64) -> String {
    match (
        jiff::Timestamp::from_second(exp),
        jiff::Timestamp::from_second(at),
    ) {
        (Ok(exp_time), Ok(at_time)) if exp < at => {
            crate::output::time(exp_time, at_time).replace(" ago)", " ago, within the leeway)")
        }
        (Ok(exp_time), Ok(at_time)) => crate::output::time(exp_time, at_time),
        _ => format!("{exp} s since the epoch, out of range"),
    }
}

fn invalid(error: &TokenError, output: &Output) -> Result<String, Failure> {
    let mut message = error.to_string();
    if matches!(error, TokenError::NoExpiry) {
        message.push_str("; pass --allow-no-exp to accept it");
    }
    let json = serde_json::json!({"valid": false, "reason": error.kind(), "error": message});
    crate::output::render(output, &json, || {
        Ok(format!(
            "{}: {}: {}",
            paint("invalid", crate::output::BAD),
            reason(error),
            shown(&message)
        ))
    })
}

fn reason(error: &TokenError) -> &'static str {
    match error.kind() {
        "expired" => "expired",
        "not_yet_valid" => "not yet valid",
        "bad_signature" => "bad signature",
        "unknown_kid" => "unknown kid",
        "algorithm_not_allowed" | "algorithm_key_mismatch" => "algorithm not allowed",
        "wrong_issuer" => "wrong issuer",
        "wrong_audience" => "wrong audience",
        "no_expiry" => "no expiry",
        _ => "malformed",
    }
}

fn parse_time(text: &str) -> Result<i64, Failure> {
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(seconds);
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_second())
        .map_err(|e| {
            Failure::bad_input(anyhow::anyhow!(
                "--at {text:?}: not RFC 3339 or seconds since the epoch ({e})"
            ))
        })
}

fn mint(key_path: &std::path::Path, kind: MintKind, output: &Output) -> Outcome {
    let keys = parse_pem(&crate::input::read_file(&key_path.display().to_string())?)
        .with_context(|| format!("--key {}", key_path.display()))
        .map_err(Failure::bad_input)?;
    let key = keys.private_keys().next().ok_or_else(|| {
        Failure::bad_input(anyhow::anyhow!(
            "--key {} holds no private key",
            key_path.display()
        ))
    })?;
    let claims = match kind {
        MintKind::Legacy {
            namespace,
            service_account,
            uid,
            secret,
        } => Claims::legacy(
            &namespace,
            &ObjectRef {
                name: service_account,
                uid,
            },
            &secret,
        ),
        MintKind::Bound {
            issuer,
            audience,
            namespace,
            service_account,
            uid,
            expiration,
        } => {
            let lifetime = crate::input::duration(&expiration, "--expiration")?;
            BoundToken {
                issuer,
                audiences: audience,
                namespace,
                service_account: ObjectRef {
                    name: service_account,
                    uid,
                },
                pod: None,
                node: None,
                secret: None,
                issued_at: jiff::Timestamp::now().as_second(),
                lifetime_seconds: i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
                jti: uuid::Uuid::new_v4().to_string(),
            }
            .claims()
            .map_err(Failure::bad_input)?
        }
    };
    let signer = AwsLc::new().signing_key(key)?;
    let minted = token::mint(&claims, signer.as_ref())?;
    let json = serde_json::json!({
        "token": minted,
        "kid": key.kid().to_string(),
        "expires": claims.exp.and_then(|exp| jiff::Timestamp::from_second(exp).ok()).map(|t| t.to_string()),
    });
    let text = crate::output::render(output, &json, || Ok(minted.clone()))?;
    crate::output::finish(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksa_core::KeyVersion;
    use ksa_core::crypto::AwsLc;
    use ksa_core::key::KeySpec;

    #[test]
    fn ksas_key_file_names_give_the_version() {
        let version = |name: &str| version_of_file(std::path::Path::new(name)).map(|v| v.get());
        assert_eq!(version("/etc/kubernetes/pki/sa-v2.pub"), Some(2));
        assert_eq!(version("sa-v13.key"), Some(13));
        for name in [
            "sa.pub",
            "sa-v.pub",
            "sa-v0.pub",
            "sa-v2.pem",
            "sa-v2x.pub",
            "my-sa-v2.pub",
        ] {
            assert_eq!(version(name), None, "{name}");
        }
    }

    #[test]
    fn a_key_takes_the_version_a_key_of_its_kid_has() {
        let backend = AwsLc::new();
        let key = |_| {
            backend
                .generate(KeySpec::EcP256)
                .expect("a key")
                .public_key()
                .clone()
        };
        let (one, two) = (key(1), key(2));
        // From a JWKS: no versions.
        let from_jwks = vec![
            TrustedKey::derived(one.clone()),
            TrustedKey::derived(two.clone()),
        ];
        let known = [TrustedKey::derived(two.clone()).with_version(KeyVersion::new(2))];
        let keys = with_versions(from_jwks.clone(), &known);
        let versions: Vec<Option<u64>> = keys.iter().map(|k| k.version.map(|v| v.get())).collect();
        assert_eq!(versions, [None, Some(2)]);
        // Nothing else trusted: the rotation's keys.
        assert_eq!(with_versions(Vec::new(), &known), known.to_vec());
        // Nothing known: as they were.
        assert_eq!(with_versions(from_jwks.clone(), &[]), from_jwks);
    }
}
