//! The files a kubeadm control plane reads, in its pki directory: one key
//! pair per version (`sa-vN.key`, 0600, and `sa-vN.pub`), and kubeadm's own
//! `sa.key`/`sa.pub`, imported as version 1 and, once a rotation completes,
//! replaced by the new key (kubeadm reads them when a control-plane node
//! joins or is upgraded).
//!
//! `sa-vN.pub` holds the public key of `sa-vN.key` first; version 1's also
//! holds every other key of kubeadm's `sa.pub`, which kube-apiserver
//! trusted before the first rotation and keeps trusting until version 1 is
//! retired. Every write is atomic: a hidden temporary file in
//! the same directory, fsynced, renamed over the target, directory fsynced.

use crate::input::MAX_INPUT;
use crate::input::read_limited;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use ksa_core::KeyVersion;
use ksa_core::key::{PrivateKey, PublicKey, parse_pem, public_keys_to_pem};

/// Writes `bytes` to `path` atomically with `mode`, so a crash leaves the old
/// contents or the new, never a mix. The temporary name starts with a dot:
/// kubelet ignores hidden files in its manifests directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The first private key in a PEM file.
fn read_private_key(path: &Path) -> Result<PrivateKey> {
    let text = read_limited(path, MAX_INPUT)?;
    parse_pem(&text)
        .with_context(|| path.display().to_string())?
        .private_keys()
        .next()
        .cloned()
        .with_context(|| format!("{} holds no private key", path.display()))
}

/// The key files of one pki directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    pub dir: PathBuf,
}

impl PkiDir {
    pub fn key_path(&self, version: KeyVersion) -> PathBuf {
        self.dir.join(format!("sa-v{version}.key"))
    }

    pub fn pub_path(&self, version: KeyVersion) -> PathBuf {
        self.dir.join(format!("sa-v{version}.pub"))
    }

    /// kubeadm's signing key, `sa.key`.
    pub fn kubeadm_key(&self) -> Result<PrivateKey> {
        let path = self.dir.join("sa.key");
        read_private_key(&path).context("is --pki-dir a kubeadm pki directory?")
    }

    /// Imports kubeadm's `sa.key`/`sa.pub` as version 1: `sa-v1.pub`
    /// holds the public key of `sa.key` and then every other key of
    /// `sa.pub` (kube-apiserver trusts all of them), so none stops being
    /// trusted before version 1 is retired.
    pub fn import_kubeadm_key(&self) -> Result<()> {
        let key = self.kubeadm_key()?;
        let sa_pub = self.dir.join("sa.pub");
        let mut public = vec![key.public_key().clone()];
        match read_limited(&sa_pub, MAX_INPUT) {
            Ok(text) => {
                let keys = parse_pem(&text).with_context(|| {
                    format!(
                        "{} is kubeadm's public key file: it must hold PEM keys, as kube-apiserver reads it",
                        sa_pub.display()
                    )
                })?;
                for other in keys.public_keys() {
                    if !public.contains(other) {
                        public.push(other.clone());
                    }
                }
            }
            // kube-apiserver cannot be trusting a file that is not there.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        write_atomic(
            &self.pub_path(KeyVersion::FIRST),
            public_keys_to_pem(&public).as_bytes(),
            0o644,
        )?;
        write_atomic(
            &self.key_path(KeyVersion::FIRST),
            key.to_pem().as_bytes(),
            0o600,
        )
    }

    /// Checks that key pair `version` is there for a manifest to name:
    /// `sa-vN.key` holds a private key and `sa-vN.pub` starts with its
    /// public key. An API server pointed at a file that is missing or is
    /// not the right key does not start, or rejects every token.
    pub fn check_key_pair(&self, version: KeyVersion) -> Result<()> {
        let recover = format!(
            "copy sa-v{version}.key and sa-v{version}.pub into {} from the control-plane node where this \
             rotation ran (or from a backup), then run the same command again; no manifest was changed",
            self.dir.display()
        );
        let (key_path, pub_path) = (self.key_path(version), self.pub_path(version));
        for path in [&key_path, &pub_path] {
            if !path.is_file() {
                anyhow::bail!(
                    "{} does not exist (or is not a file), and the rotation needs key {version}: {recover}",
                    path.display()
                );
            }
        }
        let key = read_private_key(&key_path)
            .with_context(|| format!("{} is not key {version}: {recover}", key_path.display()))?;
        let text = read_limited(&pub_path, MAX_INPUT)?;
        let first_public = parse_pem(&text)
            .with_context(|| format!("{}: {recover}", pub_path.display()))?
            .public_keys()
            .next()
            .cloned();
        if first_public.as_ref() != Some(key.public_key()) {
            anyhow::bail!(
                "{} does not match {}: its first key must be the public key of the private key; {recover}",
                pub_path.display(),
                key_path.display()
            );
        }
        Ok(())
    }

    /// The private key of every stored version (`sa-vN.key`).
    pub fn stored(&self) -> Result<BTreeMap<KeyVersion, PrivateKey>> {
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
        {
            let name = entry?.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.strip_prefix("sa-v"))
                .and_then(|n| n.strip_suffix(".key"))
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|v| *v > 0)
            else {
                continue;
            };
            let version = KeyVersion::new(version);
            found.insert(version, self.private_key(version)?);
        }
        Ok(found)
    }

    pub fn private_key(&self, version: KeyVersion) -> Result<PrivateKey> {
        read_private_key(&self.key_path(version))
    }

    pub fn public_keys(&self) -> Result<BTreeMap<KeyVersion, PublicKey>> {
        Ok(self
            .stored()?
            .into_iter()
            .map(|(version, key)| (version, key.public_key().clone()))
            .collect())
    }

    /// Stores key `version`: `sa-vN.key` (0600) and `sa-vN.pub` (0644).
    pub fn store(&self, version: KeyVersion, key: &PrivateKey) -> Result<()> {
        write_atomic(
            &self.pub_path(version),
            key.public_key().to_pem().as_bytes(),
            0o644,
        )?;
        write_atomic(&self.key_path(version), key.to_pem().as_bytes(), 0o600)
    }

    /// Deletes key `version`; nothing to do when it is gone already.
    pub fn delete(&self, version: KeyVersion) -> Result<()> {
        for path in [self.key_path(version), self.pub_path(version)] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("deleting {}", path.display()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes `key` kubeadm's `sa.key`/`sa.pub`, replacing the retired one.
    pub fn make_kubeadm_key(&self, key: &PrivateKey) -> Result<()> {
        write_atomic(
            &self.dir.join("sa.pub"),
            key.public_key().to_pem().as_bytes(),
            0o644,
        )?;
        write_atomic(&self.dir.join("sa.key"), key.to_pem().as_bytes(), 0o600)
    }
}
