//! Builds what a real node of the end-to-end tests runs (issue 31), from
//! Go modules pinned under `xtask/` (the one place each version is
//! written), into `<cache>/node/<versions>/`, reused when present:
//!
//! - `bin/`: containerd, its runc shim and `ctr` (`xtask/containerd/`);
//!   runc (`xtask/runc/`, with cgo: its `nsenter` is C, and with the
//!   `seccomp` tag, linked to Debian's libseccomp: a pod of a `restricted`
//!   namespace asks for the `RuntimeDefault` seccomp profile, which a runc
//!   built without seccomp refuses to apply, so that pod would not start);
//!   the kubelet and kube-proxy at the control plane's Kubernetes version,
//!   from its module (`xtask/control-plane/`, whose build cache they
//!   share).
//! - `cni/`: the CNI plugins bridge, host-local and loopback
//!   (`xtask/cni-plugins/`).
//! - `images/`: two OCI image archives, built here with no registry and no
//!   daemon from the static Go programs of `xtask/node-images/`: the pod
//!   sandbox's `pause` and the `token-reader` workload (it reads its
//!   projected token every second and presents it to the API server), as
//!   `ctr images import --base-name ksa.test/NAME` takes them.
//!
//! kube-proxy runs in `nftables` mode: Debian's `nftables` (`nft`) is
//! installed by `cargo xtask setup` with the other Debian packages, and so
//! is `libseccomp-dev` for runc's build.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::control_plane::{self, Binary, Cgo, cache_root, pinned, read_go_mod};
use crate::image::{Image, Provenance, write_layout};

/// The variable through which tests find the node's directory.
pub const ENV: &str = "KSA_NODE_DIR";

/// The tag of the test images (`ksa.test/pause:1`, `ksa.test/token-reader:1`).
pub const IMAGE_TAG: &str = "1";

/// One Go-built binary of the node.
struct Component {
    /// Its module's directory under `xtask/`.
    module: &'static str,
    binary: Binary,
    /// Where it goes under the node's directory.
    subdir: &'static str,
    cgo: Cgo,
}

const fn component(
    module: &'static str,
    name: &'static str,
    package: &'static str,
    subdir: &'static str,
) -> Component {
    Component {
        module,
        binary: Binary { name, package },
        subdir,
        cgo: Cgo::Off,
    }
}

const CNI: [Component; 3] = [
    component(
        "cni-plugins",
        "bridge",
        "github.com/containernetworking/plugins/plugins/main/bridge",
        "cni",
    ),
    component(
        "cni-plugins",
        "host-local",
        "github.com/containernetworking/plugins/plugins/ipam/host-local",
        "cni",
    ),
    component(
        "cni-plugins",
        "loopback",
        "github.com/containernetworking/plugins/plugins/main/loopback",
        "cni",
    ),
];

const RUNC: Component = Component {
    module: "runc",
    binary: Binary {
        name: "runc",
        package: "github.com/opencontainers/runc",
    },
    subdir: "bin",
    cgo: Cgo::On { tags: "seccomp" },
};

const CONTAINERD: [Component; 3] = [
    component(
        "containerd",
        "containerd",
        "github.com/containerd/containerd/v2/cmd/containerd",
        "bin",
    ),
    component(
        "containerd",
        "containerd-shim-runc-v2",
        "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
        "bin",
    ),
    component(
        "containerd",
        "ctr",
        "github.com/containerd/containerd/v2/cmd/ctr",
        "bin",
    ),
];

const KUBERNETES: [Component; 2] = [
    component(
        "control-plane",
        "kubelet",
        "k8s.io/kubernetes/cmd/kubelet",
        "bin",
    ),
    component(
        "control-plane",
        "kube-proxy",
        "k8s.io/kubernetes/cmd/kube-proxy",
        "bin",
    ),
];

/// The pinned versions, as the node directory is named.
struct Versions {
    containerd: String,
    runc: String,
    cni: String,
    kubernetes: String,
}

impl Versions {
    fn read() -> Result<Versions> {
        Ok(Versions {
            containerd: pinned(
                &read_go_mod("containerd")?,
                "github.com/containerd/containerd/v2",
            )?,
            runc: pinned(&read_go_mod("runc")?, "github.com/opencontainers/runc")?,
            cni: pinned(
                &read_go_mod("cni-plugins")?,
                "github.com/containernetworking/plugins",
            )?,
            kubernetes: pinned(&read_go_mod("control-plane")?, "k8s.io/kubernetes")?,
        })
    }

    fn ldflags(&self, module: &str) -> String {
        match module {
            "containerd" => format!(
                "-s -w -X github.com/containerd/containerd/v2/version.Version={}",
                self.containerd
            ),
            "runc" => format!(
                "-s -w -X main.version={}",
                self.runc.trim_start_matches('v')
            ),
            "control-plane" => control_plane::kubernetes_ldflags(&self.kubernetes),
            _ => "-s -w".to_owned(),
        }
    }
}

/// Returns the node's directory, building what the cache lacks; the test
/// images are written afresh each time (a few seconds: Go's build cache
/// keeps their programs).
pub fn ensure() -> Result<PathBuf> {
    let versions = Versions::read()?;
    let dir = cache_root().join("node").join(format!(
        "containerd-{}_runc-{}_cni-{}_kubernetes-{}",
        versions.containerd, versions.runc, versions.cni, versions.kubernetes
    ));
    let started = Instant::now();
    let all = CNI
        .iter()
        .chain([&RUNC])
        .chain(&CONTAINERD)
        .chain(&KUBERNETES);
    let mut built = Vec::new();
    for component in all {
        let into = dir.join(component.subdir);
        if into.join(component.binary.name).is_file() {
            continue;
        }
        let one = Instant::now();
        control_plane::go_build_with(
            component.module,
            &component.binary,
            &versions.ldflags(component.module),
            &into,
            &component.cgo,
        )?;
        eprintln!(
            "node: built {} in {:.0?}",
            component.binary.name,
            one.elapsed()
        );
        built.push(component.binary.name);
    }
    if built.is_empty() {
        eprintln!("node: cached in {}", dir.display());
    } else {
        eprintln!(
            "node: containerd {}, runc {}, CNI plugins {}, kubelet and kube-proxy {} built in {:.0?} into {}",
            versions.containerd,
            versions.runc,
            versions.cni,
            versions.kubernetes,
            started.elapsed(),
            dir.display()
        );
    }
    write_images(&dir.join("images"))?;
    Ok(dir)
}

/// Builds the static programs of `xtask/node-images/` and writes each as an
/// OCI image archive `DIR/NAME.tar` (an image layout, tagged
/// [`IMAGE_TAG`]), through the same layout writer as `cargo xtask image`.
fn write_images(dir: &Path) -> Result<()> {
    let started = Instant::now();
    let programs = dir.join("programs");
    let provenance = Provenance {
        version: IMAGE_TAG.to_owned(),
        revision: "test".to_owned(),
        created: "1970-01-01T00:00:00Z".to_owned(),
        created_epoch: 0,
    };
    for (name, description) in [
        (
            "pause",
            "the pod sandbox of the end-to-end tests' real nodes",
        ),
        (
            "token-reader",
            "presents its projected service-account token to the API server every second",
        ),
    ] {
        control_plane::go_build(
            "node-images",
            &Binary {
                name,
                package: match name {
                    "pause" => "ksa.dev/node-images/pause",
                    _ => "ksa.dev/node-images/token-reader",
                },
            },
            "-s -w",
            &programs,
        )?;
        let path = programs.join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        crate::image::ensure_static(&bytes)
            .with_context(|| format!("{} is not static", path.display()))?;
        let image = Image {
            name: name.to_owned(),
            description: description.to_owned(),
            binaries: vec![(name.to_owned(), bytes)],
        };
        let layout = dir.join(name);
        write_layout(&layout, &image, &provenance)?;
        write_archive(&layout, &dir.join(format!("{name}.tar")))?;
    }
    eprintln!(
        "node: images pause and token-reader written in {:.0?} into {}",
        started.elapsed(),
        dir.display()
    );
    Ok(())
}

/// Writes the image layout `layout` as a tar archive `to`, its root the
/// layout's (`index.json`, `oci-layout`, `blobs/`).
pub fn write_archive(layout: &Path, to: &Path) -> Result<()> {
    let partial = to.with_extension("tar.partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let mut archive = tar::Builder::new(file);
    archive.mode(tar::HeaderMode::Deterministic);
    archive.follow_symlinks(false);
    archive
        .append_dir_all(".", layout)
        .with_context(|| format!("archiving {}", layout.display()))?;
    archive.into_inner()?.sync_all()?;
    std::fs::rename(&partial, to)?;
    Ok(())
}

/// Builds the node when the cache lacks it; returns the variable that
/// tells the tests where.
pub fn environment() -> Result<(&'static str, PathBuf)> {
    Ok((ENV, ensure()?))
}
