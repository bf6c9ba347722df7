//! Builds a test component from the Go module pinned in `xtask/<dir>/go.mod`
//! (a `tool` directive; the one place its version is written) into
//! `<cache>/<dir>/<version>/<binary>`, reused when present: SeaweedFS's
//! `weed` (the S3 server the outside-verifier tests publish into) and
//! `helm` (the chart's tests).
//!
//! Only the Go module proxy is reached: the source comes from the module,
//! nothing else is downloaded.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// One Go-built component.
pub struct GoTool {
    /// Its directory under `xtask/` and under the cache.
    pub dir: &'static str,
    /// The binary's name.
    pub binary: &'static str,
    /// The module `go.mod` requires, whose version names the build.
    pub module: &'static str,
    /// The package built.
    pub package: &'static str,
    /// The variable through which tests find the binary's directory.
    pub env: &'static str,
    /// A `-X` setting the version is stamped with (`None`: none).
    pub version_variable: Option<&'static str>,
}

/// SeaweedFS's `weed`, the S3-compatible server.
pub const SEAWEEDFS: GoTool = GoTool {
    dir: "seaweedfs",
    binary: "weed",
    module: "github.com/seaweedfs/seaweedfs",
    package: "github.com/seaweedfs/seaweedfs/weed",
    env: "KSA_SEAWEEDFS_DIR",
    version_variable: None,
};

/// `helm`, which `helm version` reports as its release would.
pub const HELM: GoTool = GoTool {
    dir: "helm",
    binary: "helm",
    module: "helm.sh/helm/v4",
    package: "helm.sh/helm/v4/cmd/helm",
    env: "KSA_HELM_DIR",
    version_variable: Some("helm.sh/helm/v4/internal/version.version"),
};

impl GoTool {
    fn module_dir(&self) -> PathBuf {
        crate::root().join("xtask").join(self.dir)
    }

    /// The version `go.mod` requires the module at.
    fn version(&self) -> Result<String> {
        let path = self.module_dir().join("go.mod");
        let go_mod = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        go_mod
            .lines()
            .map(str::trim)
            .map(|line| line.strip_prefix("require ").unwrap_or(line))
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(self.module)).then(|| words.next().map(str::to_owned))?
            })
            .with_context(|| format!("{} is not required in {}", self.module, path.display()))
    }

    /// Returns the directory holding the binary, building it when the
    /// cache lacks it.
    pub fn ensure(&self) -> Result<PathBuf> {
        let name = self.binary;
        let version = self.version()?;
        let dir = crate::control_plane::cache_root()
            .join(self.dir)
            .join(&version);
        let binary = dir.join(name);
        if binary.is_file() {
            eprintln!("{name}: cached in {}", dir.display());
            return Ok(dir);
        }
        match Command::new("go").arg("version").output() {
            Ok(out) if out.status.success() => {
                eprintln!("{name}: {}", String::from_utf8_lossy(&out.stdout).trim())
            }
            _ => bail!(
                "the Go toolchain is needed to build {name} and `go` was not found on PATH; \
                 install Go 1.26 or newer (Debian: apt-get install golang, or from go.dev) and run again"
            ),
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let started = Instant::now();
        let partial = dir.join(format!("{name}.partial"));
        let mut ldflags = "-s -w".to_owned();
        if let Some(variable) = self.version_variable {
            ldflags.push_str(&format!(" -X {variable}={version}"));
        }
        let status = Command::new("go")
            .current_dir(self.module_dir())
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
            .arg(&partial)
            .arg(self.package)
            .status()
            .context("running go build")?;
        if !status.success() {
            bail!(
                "go build {} failed ({status}); the Go module proxy must be reachable \
                 (GOPROXY={}), see the output above",
                self.package,
                std::env::var("GOPROXY").unwrap_or_else(|_| "default".into())
            );
        }
        std::fs::rename(&partial, &binary)?;
        eprintln!(
            "{name}: {version} built in {:.0?} into {}",
            started.elapsed(),
            dir.display()
        );
        Ok(dir)
    }

    /// Builds the binary when the cache lacks it; returns the variable that
    /// tells the tests where.
    pub fn environment(&self) -> Result<(&'static str, PathBuf)> {
        Ok((self.env, self.ensure()?))
    }
}
