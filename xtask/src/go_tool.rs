//! Builds a test component from the Go module pinned in `xtask/<dir>/go.mod`
//! (a `tool` directive; the one place its version is written) into
//! `<cache>/<dir>/<version>/<binary>`, reused when present: SeaweedFS's
//! `weed` (the S3 server the outside-verifier tests publish into),
//! `helm` (the chart's tests) and `krew` (the krew manifest's test).
//!
//! Only the Go module proxy is reached: the source comes from the module,
//! nothing else is downloaded.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::control_plane;

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

/// `krew`, the kubectl plugin manager, stamped with its release tag as
/// krew's own release build does (`hack/make-binaries.sh`).
pub const KREW: GoTool = GoTool {
    dir: "krew",
    binary: "krew",
    module: "sigs.k8s.io/krew",
    package: "sigs.k8s.io/krew/cmd/krew",
    env: "KSA_KREW_DIR",
    version_variable: Some("sigs.k8s.io/krew/internal/version.gitTag"),
};

impl GoTool {
    /// Returns the directory holding the binary, building it when the
    /// cache lacks it (with the control plane's `go build`).
    pub fn ensure(&self) -> Result<PathBuf> {
        let name = self.binary;
        let version = control_plane::pinned(&control_plane::read_go_mod(self.dir)?, self.module)?;
        let dir = control_plane::cache_root().join(self.dir).join(&version);
        if dir.join(name).is_file() {
            eprintln!("{name}: cached in {}", dir.display());
            return Ok(dir);
        }
        let started = Instant::now();
        let mut ldflags = "-s -w".to_owned();
        if let Some(variable) = self.version_variable {
            ldflags.push_str(&format!(" -X {variable}={version}"));
        }
        let binary = control_plane::Binary {
            name,
            package: self.package,
        };
        control_plane::go_build(self.dir, &binary, &ldflags, &dir)?;
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
