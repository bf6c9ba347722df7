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
//!   `ctr images import --base-name ksa.test/NAME` takes them; and, once
//!   the control plane is built, `kube-apiserver.tar` and
//!   `kube-controller-manager.tar`: the control plane's own binaries
//!   (static), which the hosted test runs as the pods of a user cluster's
//!   API server Deployment and the kubeadm test as static pods
//!   ([`control_plane_images`]).
//!
//! kube-proxy runs in `nftables` mode: Debian's `nftables` (`nft`) is
//! installed by `cargo xtask setup` with the other Debian packages, and so
//! is `libseccomp-dev` for runc's build.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};

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
    let programs = dir.join(scratch("programs"));
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
        let layout = dir.join(scratch(name));
        write_layout(&layout, &image, &provenance)?;
        write_archive(&layout, &dir.join(format!("{name}.tar")))?;
        std::fs::remove_dir_all(&layout)
            .with_context(|| format!("removing {}", layout.display()))?;
    }
    std::fs::remove_dir_all(&programs)
        .with_context(|| format!("removing {}", programs.display()))?;
    eprintln!(
        "node: images pause and token-reader written in {:.0?} into {}",
        started.elapsed(),
        dir.display()
    );
    Ok(())
}

/// The name of this process's scratch copy of `name` in the shared cache:
/// two set-ups at once (`cargo xtask ci` beside `cargo xtask e2e`) each
/// write their own and rename the result into place, never into one
/// another's files.
fn scratch(name: &str) -> String {
    format!(".{name}.{}.partial", std::process::id())
}

/// Writes the image layout `layout` as a tar archive `to`, its root the
/// layout's (`index.json`, `oci-layout`, `blobs/`), through a scratch file
/// of this process renamed into place.
pub fn write_archive(layout: &Path, to: &Path) -> Result<()> {
    let file_name = to
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name", to.display()))?;
    let partial = to.with_file_name(scratch(file_name));
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

/// The control plane's binaries the real-node tests run in containers:
/// the hosted test's API server pods, the kubeadm test's static pods.
const CONTROL_PLANE_IMAGES: [(&str, &str); 2] = [
    (
        "kube-apiserver",
        "the control plane's kube-apiserver, as the real-node tests run it in pods",
    ),
    (
        "kube-controller-manager",
        "the control plane's kube-controller-manager, as the real-node tests run it in pods",
    ),
];

/// Writes `NODE/images/NAME.tar` for kube-apiserver and
/// kube-controller-manager: OCI image archives (tagged [`IMAGE_TAG`], as
/// `ctr images import --base-name ksa.test/NAME` takes them) of one layer
/// holding the control plane's binary (in `control_plane`, checked static)
/// under `/usr/local/bin`, run as 65532. Each is kept while newer than its
/// binary.
///
/// The layer is not compressed: it is imported into a containerd on the
/// same machine, and gzip of 100 MB in this (unoptimised) build would take
/// minutes.
pub fn control_plane_images(control_plane: &Path, node: &Path) -> Result<()> {
    for (name, description) in CONTROL_PLANE_IMAGES {
        let started = Instant::now();
        let binary = control_plane.join(name);
        let archive = node.join("images").join(format!("{name}.tar"));
        let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if let (Some(image), Some(built)) = (modified(&archive), modified(&binary))
            && image >= built
        {
            eprintln!("node: {name} image cached in {}", archive.display());
            continue;
        }
        let bytes = std::fs::read(&binary).with_context(|| {
            format!(
                "reading {} (run `cargo xtask control-plane` to build it)",
                binary.display()
            )
        })?;
        crate::image::ensure_static(&bytes)
            .with_context(|| format!("{} is not static", binary.display()))?;
        let layout = node.join("images").join(scratch(name));
        write_uncompressed_layout(&layout, name, description, &bytes)?;
        write_archive(&layout, &archive)?;
        std::fs::remove_dir_all(&layout)?;
        eprintln!(
            "node: {name} image written in {:.0?} into {}",
            started.elapsed(),
            archive.display()
        );
    }
    Ok(())
}

/// An OCI image layout in `dir` of one uncompressed layer holding
/// `usr/local/bin/NAME` (`binary`), its entrypoint, run as
/// [`crate::image::USER`], tagged [`IMAGE_TAG`].
fn write_uncompressed_layout(
    dir: &Path,
    name: &str,
    description: &str,
    binary: &[u8],
) -> Result<()> {
    use oci_spec::image::{
        ANNOTATION_DESCRIPTION, ANNOTATION_REF_NAME, ANNOTATION_TITLE, Arch, ConfigBuilder,
        Descriptor, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
        OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
    };
    use std::collections::HashMap;
    ensure!(!name.contains('/'), "{name} is not a file name");
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs)?;
    let write_blob = |media_type: MediaType, bytes: &[u8]| -> Result<Descriptor> {
        let hex = crate::image::sha256(bytes);
        std::fs::write(blobs.join(&hex), bytes)?;
        let digest: Sha256Digest = hex.parse()?;
        Ok(Descriptor::new(media_type, bytes.len() as u64, digest))
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut prefix = String::new();
    for part in crate::image::BIN_DIR.split('/') {
        prefix.push_str(part);
        prefix.push('/');
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_path(&prefix)?;
        header.set_mode(0o755);
        header.set_size(0);
        header.set_cksum();
        tar.append(&header, std::io::empty())?;
    }
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_path(format!("{}/{name}", crate::image::BIN_DIR))?;
    header.set_mode(0o755);
    header.set_size(binary.len() as u64);
    header.set_cksum();
    tar.append(&header, binary)?;
    let tar = tar.into_inner()?;
    let layer = write_blob(MediaType::ImageLayer, &tar)?;
    let labels = HashMap::from([
        (ANNOTATION_TITLE.to_owned(), name.to_owned()),
        (ANNOTATION_DESCRIPTION.to_owned(), description.to_owned()),
    ]);
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .user(crate::image::USER)
                .entrypoint(vec![format!("/{}/{name}", crate::image::BIN_DIR)])
                .labels(labels)
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer.digest().to_string()])
                .build()?,
        )
        .build()?;
    let config = write_blob(MediaType::ImageConfig, &serde_json::to_vec(&config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .build()?;
    let mut manifest = write_blob(MediaType::ImageManifest, &serde_json::to_vec(&manifest)?)?;
    manifest.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_owned(),
        IMAGE_TAG.to_owned(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()?;
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    std::fs::write(dir.join("oci-layout"), serde_json::to_vec(&layout)?)?;
    Ok(())
}

/// Builds the node when the cache lacks it; returns the variable that
/// tells the tests where.
pub fn environment() -> Result<(&'static str, PathBuf)> {
    Ok((ENV, ensure()?))
}
