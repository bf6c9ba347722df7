//! Builds SeaweedFS's `weed` (the S3-compatible object store the end-to-end
//! tests publish discovery documents and key sets into, and outside
//! verifiers read from) from the Go module pinned in
//! `xtask/seaweedfs/go.mod` (a `tool` directive; the one place its version
//! is written) into `<cache>/seaweedfs/<version>/weed`, reused when present.
//!
//! Only the Go module proxy is reached: the source comes from the module,
//! nothing else is downloaded. A cold build takes about 7 minutes on two
//! cores.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The variable through which tests find `weed`.
pub const ENV: &str = "KSA_SEAWEEDFS_DIR";

const MODULE: &str = "github.com/seaweedfs/seaweedfs";
const PACKAGE: &str = "github.com/seaweedfs/seaweedfs/weed";

fn module_dir() -> PathBuf {
    crate::root().join("xtask").join("seaweedfs")
}

/// The version `xtask/seaweedfs/go.mod` requires SeaweedFS at.
fn version() -> Result<String> {
    let path = module_dir().join("go.mod");
    let go_mod =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    go_mod
        .lines()
        .map(str::trim)
        .map(|line| line.strip_prefix("require ").unwrap_or(line))
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(MODULE)).then(|| words.next().map(str::to_owned))?
        })
        .with_context(|| format!("{MODULE} is not required in {}", path.display()))
}

/// Returns the directory holding `weed`, building it when the cache lacks
/// it.
pub fn ensure() -> Result<PathBuf> {
    let version = version()?;
    let dir = crate::control_plane::cache_root()
        .join("seaweedfs")
        .join(&version);
    let binary = dir.join("weed");
    if binary.is_file() {
        eprintln!("seaweedfs: cached in {}", dir.display());
        return Ok(dir);
    }
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => {
            eprintln!("weed: {}", String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => bail!(
            "the Go toolchain is needed to build SeaweedFS and `go` was not found on PATH; \
             install Go 1.26 or newer (Debian: apt-get install golang, or from go.dev) and run again"
        ),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    let partial = dir.join("weed.partial");
    let status = Command::new("go")
        .current_dir(module_dir())
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .args(["build", "-trimpath", "-ldflags", "-s -w", "-o"])
        .arg(&partial)
        .arg(PACKAGE)
        .status()
        .context("running go build")?;
    if !status.success() {
        bail!(
            "go build {PACKAGE} failed ({status}); the Go module proxy must be reachable \
             (GOPROXY={}), see the output above",
            std::env::var("GOPROXY").unwrap_or_else(|_| "default".into())
        );
    }
    std::fs::rename(&partial, &binary)?;
    eprintln!(
        "seaweedfs: {version} built in {:.0?} into {}",
        started.elapsed(),
        dir.display()
    );
    Ok(dir)
}

/// Builds `weed` when the cache lacks it; returns the variable that tells
/// the tests where.
pub fn environment() -> Result<(&'static str, PathBuf)> {
    Ok((ENV, ensure()?))
}
