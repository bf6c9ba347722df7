//! Builds the real control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, and kubectl at the same version
//! for the tests that follow the README) from the Go modules pinned in
//! `xtask/control-plane/go.mod`, and kwok (the node and pod simulator the
//! scale benchmark runs 2,000 Deployments on) from `xtask/kwok/go.mod` — the
//! one place each version is written — into a cache outside the
//! repository, reused when present.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The variable through which tests find the control-plane binaries.
pub const ENV: &str = "KSA_CONTROL_PLANE_DIR";
/// The variable through which tests find `kwok` and its stages.
pub const KWOK_ENV: &str = "KSA_KWOK_DIR";

pub(crate) struct Binary {
    pub(crate) name: &'static str,
    pub(crate) package: &'static str,
}

const BINARIES: [Binary; 5] = [
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
    Binary {
        name: "kube-scheduler",
        package: "k8s.io/kubernetes/cmd/kube-scheduler",
    },
    Binary {
        name: "kubectl",
        package: "k8s.io/kubernetes/cmd/kubectl",
    },
];

const KWOK: Binary = Binary {
    name: "kwok",
    package: "sigs.k8s.io/kwok/cmd/kwok",
};

/// kwok's own "fast" stages, from its module: nodes become Ready at once,
/// pods Running and Ready once scheduled, deleted pods go at once.
const KWOK_STAGES: [&str; 4] = [
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
];

/// The file in the kwok directory holding its stages, as `kwok --config`
/// takes them.
pub const KWOK_STAGES_FILE: &str = "stages.yaml";

fn module_dir(name: &str) -> PathBuf {
    crate::root().join("xtask").join(name)
}

/// The version a module is pinned to in a go.mod.
pub(crate) fn pinned(go_mod: &str, module: &str) -> Result<String> {
    go_mod
        .lines()
        .map(str::trim)
        .map(|line| line.strip_prefix("require ").unwrap_or(line))
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(module)).then(|| words.next().map(str::to_owned))?
        })
        .with_context(|| format!("{module} is not pinned in its go.mod under xtask/"))
}

pub(crate) fn read_go_mod(module: &str) -> Result<String> {
    let path = module_dir(module).join("go.mod");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
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

/// Returns the directory holding the control-plane binaries, building the
/// ones the cache lacks.
pub fn ensure() -> Result<PathBuf> {
    let go_mod = read_go_mod("control-plane")?;
    let kubernetes = pinned(&go_mod, "k8s.io/kubernetes")?;
    let etcd = pinned(&go_mod, "go.etcd.io/etcd/server/v3")?;
    let dir = cache_root()
        .join("control-plane")
        .join(format!("kubernetes-{kubernetes}_etcd-{etcd}"));
    let missing: Vec<&Binary> = BINARIES
        .iter()
        .filter(|b| !dir.join(b.name).is_file())
        .collect();
    if missing.is_empty() {
        eprintln!("control plane: cached in {}", dir.display());
        return Ok(dir);
    }
    let started = Instant::now();
    let ldflags = kubernetes_ldflags(&kubernetes);
    for binary in missing {
        go_build("control-plane", binary, &ldflags, &dir)?;
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

/// Returns the directory holding `kwok` and its stages file, building them
/// when the cache lacks them.
pub fn ensure_kwok() -> Result<PathBuf> {
    let version = pinned(&read_go_mod("kwok")?, "sigs.k8s.io/kwok")?;
    let dir = cache_root().join("kwok").join(format!("kwok-{version}"));
    if dir.join(KWOK.name).is_file() && dir.join(KWOK_STAGES_FILE).is_file() {
        eprintln!("kwok: cached in {}", dir.display());
        return Ok(dir);
    }
    let started = Instant::now();
    go_build("kwok", &KWOK, "-s -w", &dir)?;
    // The stages ship in the module's source, which the build downloaded.
    let source = Command::new("go")
        .current_dir(module_dir("kwok"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .args(["list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/kwok"])
        .output()
        .context("running go list")?;
    if !source.status.success() {
        bail!(
            "go list -m sigs.k8s.io/kwok failed: {}",
            String::from_utf8_lossy(&source.stderr)
        );
    }
    let source = PathBuf::from(String::from_utf8_lossy(&source.stdout).trim());
    let stages = KWOK_STAGES
        .iter()
        .map(|file| {
            let path = source.join(file);
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::write(dir.join(KWOK_STAGES_FILE), stages.join("\n---\n"))?;
    eprintln!(
        "kwok: {version} built in {:.0?} into {}",
        started.elapsed(),
        dir.display()
    );
    Ok(dir)
}

/// `go build`s one binary of a module under `xtask/` into `dir`, static
/// (no cgo).
pub(crate) fn go_build(module: &str, binary: &Binary, ldflags: &str, dir: &Path) -> Result<()> {
    go_build_with(module, binary, ldflags, dir, &Cgo::Off)
}

/// Whether a Go build uses cgo, and with which build tags.
pub(crate) enum Cgo {
    /// `CGO_ENABLED=0`: a static binary.
    Off,
    /// `CGO_ENABLED=1` with these `-tags` (runc: its `nsenter` is C, and
    /// `seccomp` links libseccomp).
    On { tags: &'static str },
}

/// Like [`go_build`], with cgo as `cgo` says.
pub(crate) fn go_build_with(
    module: &str,
    binary: &Binary,
    ldflags: &str,
    dir: &Path,
    cgo: &Cgo,
) -> Result<()> {
    match Command::new("go").arg("version").output() {
        Ok(out) if out.status.success() => {
            eprintln!(
                "{}: {}",
                binary.name,
                String::from_utf8_lossy(&out.stdout).trim()
            )
        }
        _ => bail!(
            "the Go toolchain is needed to build {} and `go` was not found on PATH; \
             install Go 1.26 or newer (Debian: apt-get install golang, or from go.dev) and run again",
            binary.name
        ),
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dir.join(format!("{}.partial", binary.name));
    let mut command = Command::new("go");
    command
        .current_dir(module_dir(module))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .args(["build", "-trimpath", "-ldflags", ldflags]);
    match cgo {
        Cgo::Off => command.env("CGO_ENABLED", "0"),
        Cgo::On { tags } => command.env("CGO_ENABLED", "1").args(["-tags", tags]),
    };
    let status = command
        .arg("-o")
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
    Ok(())
}

/// The `-ldflags` of a Kubernetes binary at `kubernetes`, stamped with its
/// version as a release build is.
pub(crate) fn kubernetes_ldflags(kubernetes: &str) -> String {
    let (major, minor) = kubernetes_major_minor(kubernetes);
    format!(
        "-s -w \
         -X k8s.io/component-base/version.gitVersion={kubernetes} \
         -X k8s.io/component-base/version.gitMajor={major} \
         -X k8s.io/component-base/version.gitMinor={minor} \
         -X k8s.io/component-base/version.gitTreeState=clean \
         -X k8s.io/client-go/pkg/version.gitVersion={kubernetes}"
    )
}

fn kubernetes_major_minor(version: &str) -> (String, String) {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next().unwrap_or("1").to_owned();
    let minor = parts.next().unwrap_or("0").to_owned();
    (major, minor)
}

/// Builds what the tests and benchmarks start (the control plane and kwok)
/// when the cache lacks it; returns the variables that tell them where.
pub fn environment() -> Result<[(&'static str, PathBuf); 2]> {
    Ok([(ENV, ensure()?), (KWOK_ENV, ensure_kwok()?)])
}
