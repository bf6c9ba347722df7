//! Builds `helm` (which the chart's tests render and install `charts/ksa`
//! with) from the Go module pinned in `xtask/helm/go.mod` (a `tool`
//! directive; the one place its version is written) into
//! `<cache>/helm/<version>/helm`, reused when present.
//!
//! Only the Go module proxy is reached: the source comes from the module,
//! nothing else is downloaded.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The variable through which tests find `helm`.
pub const ENV: &str = "KSA_HELM_DIR";

const MODULE: &str = "helm.sh/helm/v4";
const PACKAGE: &str = "helm.sh/helm/v4/cmd/helm";

fn module_dir() -> PathBuf {
    crate::root().join("xtask").join("helm")
}

/// The version `xtask/helm/go.mod` requires Helm at.
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

/// Returns the directory holding `helm`, building it when the cache lacks
/// it.
pub fn ensure() -> Result<PathBuf> {
    let version = version()?;
    let dir = crate::control_plane::cache_root()
        .join("helm")
        .join(&version);
    let binary = dir.join("helm");
    if binary.is_file() {
        eprintln!("helm: cached in {}", dir.display());
        return Ok(dir);
    }
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => {
            eprintln!("helm: {}", String::from_utf8_lossy(&out.stdout).trim())
        }
        _ => bail!(
            "the Go toolchain is needed to build helm and `go` was not found on PATH; \
             install Go 1.26 or newer (Debian: apt-get install golang, or from go.dev) and run again"
        ),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    let partial = dir.join("helm.partial");
    // `helm version` prints what its release build would.
    let ldflags = format!("-s -w -X helm.sh/helm/v4/internal/version.version={version}");
    let status = Command::new("go")
        .current_dir(module_dir())
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0")
        .args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
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
        "helm: {version} built in {:.0?} into {}",
        started.elapsed(),
        dir.display()
    );
    Ok(dir)
}

/// Builds `helm` when the cache lacks it; returns the variable that tells
/// the tests where.
pub fn environment() -> Result<(&'static str, PathBuf)> {
    Ok((ENV, ensure()?))
}
