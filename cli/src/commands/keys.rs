//! `ksa keys generate` and `ksa keys jwks`.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
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
            super::finish(&serde_json::to_string_pretty(&jwks)?)
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
    let (key_path, pub_path) = (out.join("sa.key"), out.join("sa.pub"));
    if !force {
        for path in [&key_path, &pub_path] {
            refuse_existing(path)?;
        }
    }
    let key = AwsLc::new().generate(spec)?;
    create_private_dir(out)?;
    // Both files are written in full before either is renamed into place, so
    // a failure leaves the old pair (or none), never a mismatched one.
    let private = staged(out, "sa.key", key.to_pem().as_bytes(), PRIVATE_MODE)?;
    let public = staged(out, "sa.pub", key.public_key().to_pem().as_bytes(), 0o644)?;
    if force {
        replace(private, &key_path)?;
        replace(public, &pub_path)?;
    } else {
        place_new(private, &key_path)?;
        if let Err(failure) = place_new(public, &pub_path) {
            // sa.pub appeared since the check: take back our sa.key.
            let _ = std::fs::remove_file(&key_path);
            return Err(failure);
        }
    }
    // Make the renames durable before saying they happened.
    std::fs::File::open(out)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", out.display()))?;
    super::finish(&format!(
        "wrote {} (private, 0600) and {}\nkid: {}",
        key_path.display(),
        pub_path.display(),
        key.kid()
    ))
}

/// The mode of a private key file.
const PRIVATE_MODE: u32 = 0o600;

fn refuse_existing(path: &Path) -> Result<(), Failure> {
    // symlink_metadata: a symlink (even a dangling one) counts as existing.
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(exists(path));
    }
    Ok(())
}

fn exists(path: &Path) -> Failure {
    Failure::bad_input(anyhow::anyhow!(
        "{} exists; pass --force to replace it (nothing was written)",
        path.display()
    ))
}

/// Creates `dir` and any missing parents, each 0700 whatever the umask;
/// directories that already exist are left as they are.
fn create_private_dir(dir: &Path) -> Result<(), Failure> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(path) = next {
        if path.as_os_str().is_empty() || std::fs::symlink_metadata(path).is_ok() {
            break;
        }
        missing.push(path);
        next = path.parent();
    }
    for path in missing.into_iter().rev() {
        let created = std::fs::DirBuilder::new().mode(0o700).create(path);
        match created {
            Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)),
            // Created by someone else meanwhile: leave it as it is.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
        .with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(())
}

/// `contents` written to a new file in `dir` (created exclusively, 0600, then
/// given `mode`) and flushed to disk, ready to be renamed into place.
fn staged(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<tempfile::NamedTempFile, Failure> {
    let context = || format!("writing a new {name} in {}", dir.display());
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))
        .tempfile_in(dir)
        .with_context(context)?;
    // Set on the open file, so the umask cannot change it.
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(context)?;
    file.write_all(contents).with_context(context)?;
    file.as_file().sync_all().with_context(context)?;
    Ok(file)
}

/// Renames a staged file over `path`: a symlink there is replaced, never
/// followed.
fn replace(file: tempfile::NamedTempFile, path: &Path) -> Result<(), Failure> {
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Renames a staged file to `path`, refusing when anything is there.
fn place_new(file: tempfile::NamedTempFile, path: &Path) -> Result<(), Failure> {
    file.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            exists(path)
        } else {
            Failure::from(
                anyhow::Error::new(e.error).context(format!("writing {}", path.display())),
            )
        }
    })?;
    Ok(())
}
