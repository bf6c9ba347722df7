//! Builds the real control plane (etcd, kube-apiserver,
//! kube-controller-manager) from the Go modules pinned in
//! `xtask/control-plane/go.mod` — the one place versions are written — into a
//! cache outside the repository, reused when present.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The variable through which tests find the binaries.
pub const ENV: &str = "KSA_CONTROL_PLANE_DIR";

struct Binary {
    name: &'static str,
    package: &'static str,
}

const BINARIES: [Binary; 3] = [
    Binary {
        name: "etcd",
        package: "go.etcd.io/etcd/server/v3",
    },
    Binary {
        name: "kube-apiserver",
        package: "k8s.io/kubernetes/cmd/kube-apiserver",
    },
    Binary {
        name: "kube-controller-manager",
        package: "k8s.io/kubernetes/cmd/kube-controller-manager",
    },
];

fn module_dir() -> PathBuf {
    crate::root().join("xtask/control-plane")
}

/// The version a module is pinned to in go.mod.
fn pinned(go_mod: &str, module: &str) -> Result<String> {
    go_mod
        .lines()
        .map(str::trim)
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(module)).then(|| words.next().map(str::to_owned))?
        })
        .with_context(|| format!("{module} is not pinned in xtask/control-plane/go.mod"))
}

pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KSA_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("ksa")
}

/// Returns the directory holding the three binaries, building them first
/// when the cache lacks them.
pub fn ensure() -> Result<PathBuf> {
    let go_mod = std::fs::read_to_string(module_dir().join("go.mod"))
        .context("reading xtask/control-plane/go.mod")?;
    let kubernetes = pinned(&go_mod, "k8s.io/kubernetes")?;
    let etcd = pinned(&go_mod, "go.etcd.io/etcd/server/v3")?;
    let dir = cache_root()
        .join("control-plane")
        .join(format!("kubernetes-{kubernetes}_etcd-{etcd}"));
    if BINARIES.iter().all(|b| dir.join(b.name).is_file()) {
        eprintln!("control plane: cached in {}", dir.display());
        return Ok(dir);
    }
    let go = Command::new("go").arg("version").output();
    match go {
        Ok(out) if out.status.success() => {
            eprintln!(
                "control plane: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            )
        }
        _ => bail!(
            "the Go toolchain is needed to build the control plane and `go` was not found on PATH; \
             install Go 1.26 or newer (Debian: apt-get install golang, or from go.dev) and run again"
        ),
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let started = Instant::now();
    let (major, minor) = kubernetes_major_minor(&kubernetes);
    let ldflags = format!(
        "-s -w \
         -X k8s.io/component-base/version.gitVersion={kubernetes} \
         -X k8s.io/component-base/version.gitMajor={major} \
         -X k8s.io/component-base/version.gitMinor={minor} \
         -X k8s.io/component-base/version.gitTreeState=clean \
         -X k8s.io/client-go/pkg/version.gitVersion={kubernetes}"
    );
    for binary in &BINARIES {
        let partial = dir.join(format!("{}.partial", binary.name));
        let status = Command::new("go")
            .current_dir(module_dir())
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .args(["build", "-trimpath", "-ldflags", &ldflags, "-o"])
            .arg(&partial)
            .arg(binary.package)
            .status()
            .context("running go build")?;
        if !status.success() {
            bail!(
                "go build {} failed ({status}); the Go module proxy must be reachable \
                 (GOPROXY={}), see the output above",
                binary.package,
                std::env::var("GOPROXY").unwrap_or_else(|_| "default".into())
            );
        }
        std::fs::rename(&partial, dir.join(binary.name))?;
        eprintln!(
            "control plane: built {} ({:.0?} so far)",
            binary.name,
            started.elapsed()
        );
    }
    eprintln!(
        "control plane: Kubernetes {kubernetes}, etcd {etcd} built in {:.0?} into {}",
        started.elapsed(),
        dir.display()
    );
    Ok(dir)
}

fn kubernetes_major_minor(version: &str) -> (String, String) {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("1").to_owned();
    let minor = parts.next().unwrap_or("0").to_owned();
    (major, minor)
}
