//! `ksa keys generate` and `ksa keys jwks`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::jwk::Jwks;
use ksa_core::key::{Algorithm, KeySpec, PublicKey, parse_pem};

use crate::args::{Alg, KeysCommand};
use crate::{Failure, Outcome};

pub fn run(command: KeysCommand) -> Outcome {
    match command {
        KeysCommand::Generate {
            algorithm,
            bits,
            out,
            force,
        } => generate(algorithm, bits, &out, force),
        KeysCommand::Jwks { files } => {
            let mut keys: Vec<PublicKey> = Vec::new();
            for file in &files {
                let parsed = parse_pem(&super::read_file(file)?)
                    .with_context(|| file.clone())
                    .map_err(Failure::bad_input)?;
                for key in parsed.public_keys() {
                    if !keys.contains(key) {
                        keys.push(key.clone());
                    }
                }
            }
            let jwks = Jwks::from_public_keys(&keys);
            super::print(&serde_json::to_string_pretty(&jwks)?)?;
            Ok(crate::exit::DONE)
        }
    }
}

fn generate(algorithm: Alg, bits: Option<u32>, out: &Path, force: bool) -> Outcome {
    let algorithm = match algorithm {
        Alg::Rs256 => Algorithm::RS256,
        Alg::Es256 => Algorithm::ES256,
    };
    let spec = KeySpec::from_parts(algorithm, bits)
        .context("--bits")
        .map_err(Failure::bad_input)?;
    let key = AwsLc::new().generate(spec)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write(&out.join("sa.key"), key.to_pem().as_bytes(), 0o600, force)?;
    write(
        &out.join("sa.pub"),
        key.public_key().to_pem().as_bytes(),
        0o644,
        force,
    )?;
    super::print(&format!(
        "wrote {} (private, 0600) and {}\nkid: {}",
        out.join("sa.key").display(),
        out.join("sa.pub").display(),
        key.kid()
    ))?;
    Ok(crate::exit::DONE)
}

fn write(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::bad_input(anyhow::anyhow!(
                "{} exists; pass --force to replace it (nothing was written)",
                path.display()
            ))
        } else {
            Failure::from(anyhow::Error::new(e).context(format!("writing {}", path.display())))
        }
    })?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}
