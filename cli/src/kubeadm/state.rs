//! The rotation state of a kubeadm control plane, in `ksa-rotation.json` in
//! its pki directory, written atomically. A run holds an exclusive lock on
//! `ksa-rotation.lock` from start to end, so a second run cannot interleave;
//! a crash releases the lock and leaves a state the next run resumes from.

use crate::input::MAX_INPUT;
use crate::input::read_limited;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ksa_core::rotation::RotationState;

use super::files::write_atomic;
use crate::Failure;

pub const STATE: &str = "ksa-rotation.json";
const LOCK: &str = "ksa-rotation.lock";

/// The state file, read without the lock (`status`).
pub fn read(dir: &Path) -> Result<Option<RotationState>, Failure> {
    let path = dir.join(STATE);
    match read_limited(&path, MAX_INPUT) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a ksa rotation state; restore it from a backup",
                path.display()
            )
        })?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).into()),
    }
}

/// The state file with the lock held; released when dropped.
#[derive(Debug)]
pub struct LockedState {
    dir: PathBuf,
    _lock: File,
}

impl LockedState {
    /// Takes the lock, or refuses (exit 3) when another run holds it.
    pub fn lock(dir: &Path) -> Result<LockedState, Failure> {
        let path = dir.join(LOCK);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(LockedState {
                dir: dir.to_owned(),
                _lock: file,
            }),
            Err(TryLockError::WouldBlock) => Err(Failure::busy(anyhow::anyhow!(
                "another ksa holds {}: a rotation of this control plane is being driven; nothing was changed",
                path.display()
            ))),
            Err(TryLockError::Error(e)) => Err(anyhow::Error::new(e)
                .context(format!("locking {}", path.display()))
                .into()),
        }
    }

    pub fn load(&self) -> Result<Option<RotationState>, Failure> {
        read(&self.dir)
    }

    pub fn save(&self, state: &RotationState) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(state)?;
        write_atomic(&self.dir.join(STATE), &json, 0o644)
    }
}
