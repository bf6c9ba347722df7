//! `cargo xtask image`: OCI images of `ksa-controller` and `ksa`, built with
//! no container daemon and no base image: each is one layer holding its
//! static (musl) binaries under `/usr/local/bin` and nothing else (no
//! shell, no libc, no package manager), run as uid and gid 65532, labelled
//! with the version and the commit. Written as OCI image layouts into
//! `target/image/<name>/` (tagged with the version), which `skopeo copy
//! oci:target/image/ksa-controller:VERSION docker://REGISTRY/...` or
//! `crane push target/image/ksa-controller REGISTRY/...` push as they are.
//!
//! Every blob is written under its SHA-256 and every file in the layer has
//! the commit's time, so the same commit builds the same digests.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use oci_spec::image::{
    ANNOTATION_CREATED, ANNOTATION_DESCRIPTION, ANNOTATION_LICENSES, ANNOTATION_REF_NAME,
    ANNOTATION_REVISION, ANNOTATION_TITLE, ANNOTATION_VERSION, Arch, ConfigBuilder, Descriptor,
    Digest, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, ImageIndex,
    ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os,
    RootFsBuilder, Sha256Digest,
};
use sha2::{Digest as _, Sha256};

/// The user and group every image runs as: not root, and the uid the
/// controller's Deployment sets (`controller/src/manifests.rs`).
pub const USER: &str = "65532:65532";
/// Where the binaries are in the image.
pub const BIN_DIR: &str = "usr/local/bin";
/// The Rust target of the static binaries.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// One image to build.
#[derive(Debug, Clone)]
pub struct Image {
    /// The image's name, and the directory of its layout.
    pub name: String,
    pub description: String,
    /// The binaries it holds, by name: the first is the entrypoint.
    pub binaries: Vec<(String, Vec<u8>)>,
}

/// Where an image comes from: the version, the commit and the commit's time.
#[derive(Debug, Clone)]
pub struct Provenance {
    pub version: String,
    pub revision: String,
    /// RFC 3339.
    pub created: String,
    /// Seconds since the epoch, the same instant: every file's mtime.
    pub created_epoch: u64,
}

/// The variable through which the end-to-end tests find the image layouts
/// (the chart's controller runs from its image on a real node).
pub const ENV: &str = "KSA_IMAGE_DIR";

/// Builds the images (`run`); returns the variable that tells the tests
/// where their layouts are.
pub fn environment() -> Result<(&'static str, PathBuf)> {
    let started = std::time::Instant::now();
    run()?;
    eprintln!("image: built in {:.0?}", started.elapsed());
    Ok((ENV, crate::root().join("target").join("image")))
}

/// Builds the static binaries and writes and checks both images.
pub fn run() -> Result<()> {
    let release = build_static(&["ksa-controller", "ksa-cli"], &["ksa-controller", "ksa"])?;
    let binary = |name: &str| -> Result<(String, Vec<u8>)> {
        Ok((name.to_owned(), read_static(&release, name)?))
    };
    let provenance = provenance()?;
    let images = [
        Image {
            name: "ksa-controller".into(),
            description: "ksa-controller: rotates the Kubernetes service-account signing key \
                          (KSASigningKeyRotation); also the KEP-740 external signer"
                .into(),
            binaries: vec![binary("ksa-controller")?],
        },
        Image {
            name: "ksa".into(),
            description: "ksa: rotation commands, status and token verification".into(),
            binaries: vec![binary("ksa")?],
        },
    ];
    for image in &images {
        let dir = layout_dir(&image.name);
        let manifest = write_layout(&dir, image, &provenance)?;
        let checked = verify_layout(&dir)?;
        eprintln!(
            "image {}:{} ({manifest}) in {}: entrypoint {:?}, user {}, files {:?}, version {:?}, revision {:?}",
            image.name,
            checked.ref_name,
            dir.display(),
            checked.entrypoint,
            checked.user,
            checked.files,
            checked.labels.get(ANNOTATION_VERSION),
            checked.labels.get(ANNOTATION_REVISION),
        );
    }
    eprintln!(
        "push with: skopeo copy oci:target/image/ksa-controller:{v} docker://REGISTRY/ksa-controller:{v}\n\
         \x20       or: crane push target/image/ksa-controller REGISTRY/ksa-controller:{v}",
        v = provenance.version
    );
    Ok(())
}

/// Builds `binaries` of `packages` as release static (musl) binaries for
/// [`TARGET`]; returns the directory they are in.
pub(crate) fn build_static(packages: &[&str], binaries: &[&str]) -> Result<PathBuf> {
    crate::run(Command::new("rustup").args(["target", "add", TARGET]))
        .context("installing the musl target (rustup must be on PATH)")?;
    // aws-lc (the crypto of kube's TLS and of the core) is C: it is compiled
    // for musl with musl-gcc.
    if Command::new("musl-gcc").arg("--version").output().is_err() {
        bail!(
            "musl-gcc was not found on PATH: the static binaries need it to compile aws-lc; \
             install it (Debian: apt-get install musl-tools) and run again"
        );
    }
    // Built outside the checkout, as the fuzz targets are: a clean clone
    // reuses the release dependencies (kube, tokio and aws-lc for musl,
    // a quarter of an hour cold) and builds only ksa's own crates again.
    let target_dir = crate::control_plane::cache_root().join("image-target");
    let mut build = crate::cargo();
    build
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for package in packages {
        build.args(["-p", package]);
    }
    for binary in binaries {
        build.args(["--bin", binary]);
    }
    crate::run(build.env("CC_x86_64_unknown_linux_musl", "musl-gcc"))?;
    Ok(target_dir.join(TARGET).join("release"))
}

/// Reads the binary `name` that [`build_static`] wrote into `dir`, and
/// checks that it is static.
pub(crate) fn read_static(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure_static(&bytes).with_context(|| format!("{} is not static", path.display()))?;
    Ok(bytes)
}

/// The version of the workspace and the commit checked out.
pub(crate) fn provenance() -> Result<Provenance> {
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git")
            .current_dir(crate::root())
            // Only reads: no index refresh written into the repository.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .args(args)
            .output()
            .context("running git")?;
        ensure!(out.status.success(), "git {args:?} failed");
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let revision = git(&["rev-parse", "HEAD"])?;
    if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        eprintln!(
            "warning: the work tree has uncommitted changes; what is built is labelled with {revision}"
        );
    }
    Ok(Provenance {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        created: git(&["show", "-s", "--format=%cI", "HEAD"])?,
        created_epoch: git(&["show", "-s", "--format=%ct", "HEAD"])?
            .parse()
            .context("the commit time")?,
        revision,
    })
}

/// Fails unless `elf` is an ELF executable that asks for no dynamic loader
/// (a static or static-pie binary), so it runs in an image with no libc.
pub fn ensure_static(elf: &[u8]) -> Result<()> {
    use object::read::elf::{ElfFile64, FileHeader as _, ProgramHeader as _};
    let file = ElfFile64::<object::Endianness>::parse(elf).context("not a 64-bit ELF file")?;
    let endian = file.endian();
    let headers = file
        .elf_header()
        .program_headers(endian, elf)
        .context("reading the ELF program headers")?;
    if let Some(header) = headers
        .iter()
        .find(|h| h.p_type(endian) == object::elf::PT_INTERP)
    {
        let loader = header
            .data(endian, elf)
            .map(|d| String::from_utf8_lossy(d).trim_end_matches('\0').to_owned())
            .unwrap_or_default();
        bail!("it is linked dynamically (its loader is {loader})");
    }
    Ok(())
}

/// The hex SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn digest_of(bytes: &[u8]) -> Result<Digest> {
    let hex: Sha256Digest = sha256(bytes).parse()?;
    Ok(hex.into())
}

/// Writes `bytes` as a blob of the layout in `dir`; returns its descriptor.
fn write_blob(dir: &Path, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor> {
    let hex = sha256(bytes);
    let path = dir.join("blobs").join("sha256").join(&hex);
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(Descriptor::new(
        media_type,
        bytes.len() as u64,
        digest_of(bytes)?,
    ))
}

/// JSON with its object keys sorted, so that the same image is the same
/// bytes (the specification's maps are `HashMap`s).
fn canonical_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value)?;
    Ok(serde_json::to_vec(&sort_keys(value))?)
}

fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sort_keys).collect())
        }
        other => other,
    }
}

/// The layer: `usr/local/bin/` and the binaries in it, owned by root and
/// executable by all, dated `mtime`. Returns the tar and its gzip.
fn layer(binaries: &[(String, Vec<u8>)], mtime: u64) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut prefix = String::new();
    for part in BIN_DIR.split('/') {
        prefix.push_str(part);
        prefix.push('/');
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_path(&prefix)?;
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(0);
        header.set_cksum();
        tar.append(&header, std::io::empty())?;
    }
    for (name, bytes) in binaries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_path(format!("{BIN_DIR}/{name}"))?;
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        tar.append(&header, bytes.as_slice())?;
    }
    let tar = tar.into_inner()?;
    let gzip = gzip(&tar)?;
    Ok((tar, gzip))
}

/// `bytes` compressed with gzip, with no file name and mtime 0 in the
/// header: the same bytes each time.
pub(crate) fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gzip.write_all(bytes)?;
    Ok(gzip.finish()?)
}

/// Writes `image` as an OCI image layout in `dir` (replacing what is
/// there), tagged with the version; returns the manifest's digest.
pub fn write_layout(dir: &Path, image: &Image, provenance: &Provenance) -> Result<Digest> {
    ensure!(!image.binaries.is_empty(), "an image needs a binary");
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("blobs").join("sha256"))?;
    let labels = HashMap::from([
        (ANNOTATION_VERSION.to_owned(), provenance.version.clone()),
        (ANNOTATION_REVISION.to_owned(), provenance.revision.clone()),
        (ANNOTATION_CREATED.to_owned(), provenance.created.clone()),
        (ANNOTATION_TITLE.to_owned(), image.name.clone()),
        (ANNOTATION_DESCRIPTION.to_owned(), image.description.clone()),
        (
            ANNOTATION_LICENSES.to_owned(),
            env!("CARGO_PKG_LICENSE").to_owned(),
        ),
    ]);
    let (tar, gzip) = layer(&image.binaries, provenance.created_epoch)?;
    let layer = write_blob(dir, MediaType::ImageLayerGzip, &gzip)?;
    let entrypoint = format!("/{BIN_DIR}/{}", image.binaries[0].0);
    let config = ImageConfigurationBuilder::default()
        .created(provenance.created.clone())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .user(USER)
                .entrypoint(vec![entrypoint])
                .labels(labels.clone())
                .build()?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![digest_of(&tar)?.to_string()])
                .build()?,
        )
        .history(vec![
            HistoryBuilder::default()
                .created(provenance.created.clone())
                .created_by(format!("cargo xtask image ({} static binaries)", TARGET))
                .build()?,
        ])
        .build()?;
    let config = write_blob(dir, MediaType::ImageConfig, &canonical_json(&config)?)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(vec![layer])
        .annotations(labels)
        .build()?;
    let mut manifest = write_blob(dir, MediaType::ImageManifest, &canonical_json(&manifest)?)?;
    let digest = manifest.digest().clone();
    manifest.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_owned(),
        provenance.version.clone(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()?;
    std::fs::write(dir.join("index.json"), canonical_json(&index)?)?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    std::fs::write(dir.join("oci-layout"), canonical_json(&layout)?)?;
    Ok(digest)
}

/// What [`verify_layout`] read from an image layout.
#[derive(Debug)]
pub struct Checked {
    /// The tag of its one manifest.
    pub ref_name: String,
    pub user: String,
    pub entrypoint: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Every path in the layer, directories with a trailing `/`.
    pub files: Vec<String>,
}

/// Reads a blob of the layout and checks its size and digest.
fn read_blob(dir: &Path, descriptor: &Descriptor) -> Result<Vec<u8>> {
    let digest = descriptor.digest();
    ensure!(
        digest.algorithm().as_ref() == "sha256",
        "blob {digest} is not SHA-256"
    );
    let path = dir.join("blobs").join("sha256").join(digest.digest());
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        bytes.len() as u64 == descriptor.size(),
        "blob {digest} is {} bytes, its descriptor says {}",
        bytes.len(),
        descriptor.size()
    );
    let actual = sha256(&bytes);
    ensure!(
        actual == digest.digest(),
        "blob {digest} has digest sha256:{actual}"
    );
    Ok(bytes)
}

/// Reads the OCI image layout in `dir` as a registry or a runtime would:
/// the layout version, the index's one manifest, its config and layers,
/// each blob's size and digest, and each layer's uncompressed digest
/// against the config's `diff_ids`.
pub fn verify_layout(dir: &Path) -> Result<Checked> {
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("oci-layout"))?)?;
    ensure!(
        layout["imageLayoutVersion"] == "1.0.0",
        "oci-layout is {layout}"
    );
    let index = ImageIndex::from_file(dir.join("index.json"))?;
    let [descriptor] = index.manifests().as_slice() else {
        bail!(
            "the index has {} manifests, not one",
            index.manifests().len()
        );
    };
    ensure!(
        descriptor.media_type() == &MediaType::ImageManifest,
        "the index lists a {}",
        descriptor.media_type()
    );
    let ref_name = descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .context("the manifest has no tag (org.opencontainers.image.ref.name)")?
        .clone();
    let manifest = ImageManifest::from_reader(read_blob(dir, descriptor)?.as_slice())?;
    ensure!(
        manifest.config().media_type() == &MediaType::ImageConfig,
        "the config is a {}",
        manifest.config().media_type()
    );
    let config = ImageConfiguration::from_reader(read_blob(dir, manifest.config())?.as_slice())?;
    let diff_ids = config.rootfs().diff_ids();
    ensure!(
        diff_ids.len() == manifest.layers().len(),
        "{} layers, {} diff_ids",
        manifest.layers().len(),
        diff_ids.len()
    );
    let mut files = Vec::new();
    for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
        ensure!(
            layer.media_type() == &MediaType::ImageLayerGzip,
            "a layer is a {}",
            layer.media_type()
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(read_blob(dir, layer)?.as_slice()).read_to_end(&mut tar)?;
        let uncompressed = format!("sha256:{}", sha256(&tar));
        ensure!(
            &uncompressed == diff_id,
            "a layer's content is {uncompressed}, its diff_id says {diff_id}"
        );
        for entry in tar::Archive::new(tar.as_slice()).entries()? {
            let entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            ensure!(
                matches!(
                    entry.header().entry_type(),
                    tar::EntryType::Regular | tar::EntryType::Directory
                ),
                "{path} is neither a file nor a directory"
            );
            files.push(path);
        }
    }
    let runtime = config.config().clone().unwrap_or_default();
    Ok(Checked {
        ref_name,
        user: runtime.user().clone().unwrap_or_default(),
        entrypoint: runtime.entrypoint().clone().unwrap_or_default(),
        labels: runtime
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        files,
    })
}

/// The directory `cargo xtask image` writes the layout of `name` to.
pub fn layout_dir(name: &str) -> PathBuf {
    crate::root().join("target").join("image").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            version: "0.1.0".into(),
            revision: "0123456789abcdef0123456789abcdef01234567".into(),
            created: "2026-11-30T08:54:00+00:00".into(),
            created_epoch: 1_796_028_840,
        }
    }

    fn image() -> Image {
        Image {
            name: "ksa-controller".into(),
            description: "test".into(),
            binaries: vec![("ksa-controller".into(), b"\x7fELF not really".to_vec())],
        }
    }

    /// The layout holds one manifest, tagged with the version, whose
    /// config runs the binary as 65532 with the version and commit labels,
    /// whose layer holds the binary and its directories only, and every
    /// digest verifies.
    #[test]
    fn the_image_layout_runs_the_binary_as_65532_with_labels_and_nothing_else() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let layout = dir.path().join("ksa-controller");
        write_layout(&layout, &image(), &provenance())?;
        let checked = verify_layout(&layout)?;
        assert_eq!(checked.ref_name, "0.1.0");
        assert_eq!(checked.user, "65532:65532");
        assert_eq!(checked.entrypoint, ["/usr/local/bin/ksa-controller"]);
        assert_eq!(
            checked.labels.get("org.opencontainers.image.version"),
            Some(&"0.1.0".to_owned())
        );
        assert_eq!(
            checked.labels.get("org.opencontainers.image.revision"),
            Some(&provenance().revision)
        );
        assert_eq!(
            checked.files,
            [
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/ksa-controller"
            ]
        );
        Ok(())
    }

    /// Two builds of the same commit are the same bytes.
    #[test]
    fn the_image_is_reproducible() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let first = write_layout(&dir.path().join("a"), &image(), &provenance())?;
        let second = write_layout(&dir.path().join("b"), &image(), &provenance())?;
        assert_eq!(first, second);
        Ok(())
    }

    /// A blob changed after it was written fails the check.
    #[test]
    fn a_tampered_blob_fails_verification() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let layout = dir.path().join("ksa-controller");
        write_layout(&layout, &image(), &provenance())?;
        let index = ImageIndex::from_file(layout.join("index.json"))?;
        let manifest = ImageManifest::from_file(
            layout
                .join("blobs/sha256")
                .join(index.manifests()[0].digest().digest()),
        )?;
        let blob = layout
            .join("blobs/sha256")
            .join(manifest.layers()[0].digest().digest());
        let mut bytes = std::fs::read(&blob)?;
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&blob, bytes)?;
        let error = verify_layout(&layout).expect_err("a changed layer must not verify");
        assert!(format!("{error:#}").contains("has digest"), "{error:#}");
        Ok(())
    }

    /// This test executable is linked against glibc, so it is refused.
    #[test]
    fn a_dynamically_linked_binary_is_refused() -> Result<()> {
        let exe = std::fs::read(std::env::current_exe()?)?;
        let error = ensure_static(&exe).expect_err("a glibc binary is not static");
        assert!(format!("{error:#}").contains("dynamically"), "{error:#}");
        assert!(ensure_static(b"#!/bin/sh\n").is_err());
        Ok(())
    }
}
