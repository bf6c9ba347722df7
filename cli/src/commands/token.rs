//! `ksa token decode | verify | mint`.

use anyhow::Context as _;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::parse_pem;
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{self, BoundToken, Claims, Expectations, ObjectRef, TokenError};

use crate::args::{Format, MintKind, TokenCommand};
use crate::output::paint;
use crate::{Failure, Outcome};

pub fn run(command: TokenCommand) -> Outcome {
    match command {
        TokenCommand::Decode { token } => decode(token),
        TokenCommand::Verify {
            token,
            jwks,
            public_key,
            issuer,
            audience,
            at,
            output,
        } => {
            let token = super::input(token, "token")?;
            let mut trusted = Vec::new();
            for source in &jwks {
                let text = if source.starts_with("https://") || source.starts_with("http://") {
                    fetch(source)?
                } else {
                    String::from_utf8(super::read_file(source)?)
                        .with_context(|| format!("{source} is not UTF-8"))
                        .map_err(Failure::bad_input)?
                };
                trusted.extend(
                    parse_jwks(&text)
                        .with_context(|| format!("--jwks {source}"))
                        .map_err(Failure::bad_input)?,
                );
            }
            for path in &public_key {
                let keys = parse_pem(&super::read_file(&path.display().to_string())?)
                    .with_context(|| format!("--public-key {}", path.display()))
                    .map_err(Failure::bad_input)?;
                trusted.extend(keys.public_keys().cloned().map(TrustedKey::derived));
            }
            if trusted.is_empty() {
                return Err(Failure::bad_input(anyhow::anyhow!(
                    "no keys to verify against; pass --jwks FILE|URL or --public-key PEM"
                )));
            }
            let at = match at {
                Some(text) => parse_time(&text)?,
                None => jiff::Timestamp::now().as_second(),
            };
            let keys = KeySet::new(trusted, &AwsLc::new())?;
            let expect = Expectations {
                issuers: issuer,
                audiences: audience,
                ..Expectations::at(at)
            };
            verify(&token, &keys, &expect, output)
        }
        TokenCommand::Mint { key, kind } => mint(&key, kind),
    }
}

fn decode(token: Option<String>) -> Outcome {
    let token = super::input(token, "token")?;
    let decoded = token::decode(&token).map_err(Failure::bad_input)?;
    let json = serde_json::json!({
        "verified": false,
        "note": "UNVERIFIED: decoded only; the signature was not checked",
        "kind": decoded.kind(),
        "header": decoded.header,
        "claims": decoded.claims,
    });
    super::print(&serde_json::to_string_pretty(&json)?)?;
    Ok(crate::exit::DONE)
}

fn verify(token: &str, keys: &KeySet, expect: &Expectations, output: Format) -> Outcome {
    match token::verify(token, keys, expect) {
        Ok(verified) => {
            let sa = verified.claims.service_account();
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
                "expires": verified.claims.exp,
            });
            match output {
                Format::Text => {
                    let expires =
                        verified
                            .claims
                            .exp
                            .map_or("never (legacy token)".to_owned(), |exp| {
                                let left = exp - expect.at;
                                let time = jiff::Timestamp::from_second(exp)
                                    .map(|t| t.to_string())
                                    .unwrap_or_default();
                                format!("{time} (in {}s)", left)
                            });
                    super::print(&format!(
                        "{} {} token\n  kid:       {}\n  algorithm: {}\n  issuer:    {}\n  subject:   {}\n  audiences: {}\n  expires:   {}",
                        paint("valid", "32"),
                        serde_json::to_value(verified.kind())
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        verified.kid,
                        verified.algorithm,
                        verified.claims.iss.as_deref().unwrap_or("-"),
                        verified.claims.sub.as_deref().unwrap_or("-"),
                        verified
                            .claims
                            .aud
                            .as_ref()
                            .map_or("-".to_owned(), |a| a.join(", ")),
                        expires,
                    ))?;
                }
                Format::Json => super::print(&serde_json::to_string_pretty(&json)?)?,
                Format::Yaml => super::print(&serde_yaml::to_string(&json)?)?,
            }
            Ok(crate::exit::DONE)
        }
        Err(error) => {
            let json = serde_json::json!({"valid": false, "reason": error.kind(), "error": error.to_string()});
            match output {
                Format::Text => super::print(&format!(
                    "{}: {}: {error}",
                    paint("invalid", "31"),
                    reason(&error)
                ))?,
                Format::Json => super::print(&serde_json::to_string_pretty(&json)?)?,
                Format::Yaml => super::print(&serde_yaml::to_string(&json)?)?,
            }
            Ok(crate::exit::FAILED)
        }
    }
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

fn fetch(url: &str) -> Result<String, Failure> {
    let mut response = ureq::get(url)
        .call()
        .with_context(|| format!("fetching the JWKS from {url}"))?;
    let text = response
        .body_mut()
        .with_config()
        .limit(ksa_core::MAX_INPUT_BYTES as u64)
        .read_to_string()
        .with_context(|| format!("reading the JWKS from {url}"))?;
    Ok(text)
}

fn mint(key_path: &std::path::Path, kind: MintKind) -> Outcome {
    let keys = parse_pem(&super::read_file(&key_path.display().to_string())?)
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
            let lifetime = super::duration(&expiration, "--expiration")?;
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
    super::print(&token::mint(&claims, signer.as_ref())?)?;
    Ok(crate::exit::DONE)
}
