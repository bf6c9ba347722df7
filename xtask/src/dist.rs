//! `cargo xtask dist`: the release archive of the kubectl plugin and its
//! krew manifest, into `target/dist/`:
//!
//! - `ksa-vVERSION-x86_64-unknown-linux-musl.tar.gz`: the static (musl)
//!   `ksa`, `kubectl-ksa` and `kubectl_complete-ksa`, and `LICENSE`, at its
//!   top, owned by root, each dated with the commit's time, so that the
//!   same commit builds the same bytes;
//! - the same name with `.sha256`: its SHA-256, as `sha256sum` writes it;
//! - `ksa.yaml`: `cli/krew/ksa.yaml` with this archive's `sha256` (and, with
//!   `--base-url URL`, its `uri`, `URL/ARCHIVE`), and only the platforms
//!   built here.
//!
//! `kubectl krew install --manifest=target/dist/ksa.yaml
//! --archive=target/dist/ksa-v...tar.gz` installs it from there.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::image;

/// The binaries of the archive, built from `ksa-cli`: `ksa`, the kubectl
/// plugin, and what kubectl runs to complete the plugin's arguments.
pub const BINARIES: [&str; 3] = ["ksa", "kubectl-ksa", "kubectl_complete-ksa"];
/// The license file, at the top of the repository and of the archive.
pub const LICENSE: &str = "LICENSE";
/// The repository's krew manifest, which `run` fills in.
pub const MANIFEST: &str = "cli/krew/ksa.yaml";

/// A krew platform: the `os` and `arch` of its selector's `matchLabels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    pub os: &'static str,
    pub arch: &'static str,
}

/// The platform of [`image::TARGET`], the one target built.
pub const PLATFORM: Platform = Platform {
    os: "linux",
    arch: "amd64",
};

/// One file of the archive.
#[derive(Debug, Clone)]
pub struct ArchiveFile {
    pub name: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

/// The manifest [`fill_manifest`] wrote, and the platforms it left out.
#[derive(Debug)]
pub struct FilledManifest {
    pub yaml: String,
    /// `os/arch` of each platform of the manifest that was not built.
    pub dropped: Vec<String>,
}

/// Builds the static binaries and writes the archive, its checksum and
/// the manifest into `target/dist/`.
pub fn run(args: &[&str]) -> Result<()> {
    let base_url = base_url(args)?;
    let version = env!("CARGO_PKG_VERSION");
    let root = crate::root();
    // Read before the long build, so that a wrong manifest fails at once.
    let manifest_path = root.join(MANIFEST);
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let license_path = root.join(LICENSE);
    let license = std::fs::read(&license_path)
        .with_context(|| format!("reading {}", license_path.display()))?;
    let name = archive_name(version);
    // Checked against the manifest before the build, with a stand-in digest.
    fill_manifest(&manifest, version, PLATFORM, &"0".repeat(64), None)
        .with_context(|| format!("checking {MANIFEST}"))?;

    let release = image::build_static(&["ksa-cli"], &BINARIES)?;
    let provenance = image::provenance()?;
    let mut files = BINARIES
        .iter()
        .map(|binary| {
            Ok(ArchiveFile {
                name: (*binary).to_owned(),
                mode: 0o755,
                bytes: image::read_static(&release, binary)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    files.push(ArchiveFile {
        name: LICENSE.to_owned(),
        mode: 0o644,
        bytes: license,
    });
    let archive = archive(&files, provenance.created_epoch)?;
    let sha256 = image::sha256(&archive);
    let uri = base_url.map(|url| format!("{}/{name}", url.trim_end_matches('/')));
    let filled = fill_manifest(&manifest, version, PLATFORM, &sha256, uri.as_deref())
        .with_context(|| format!("filling in {MANIFEST}"))?;

    let dist = root.join("target").join("dist");
    std::fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    write(&dist.join(&name), &archive)?;
    write(
        &dist.join(format!("{name}.sha256")),
        format!("{sha256}  {name}\n").as_bytes(),
    )?;
    write(&dist.join("ksa.yaml"), filled.yaml.as_bytes())?;
    for platform in &filled.dropped {
        eprintln!(
            "the manifest leaves out {platform}: this run built {} only",
            image::TARGET
        );
    }
    if uri.is_none() {
        eprintln!(
            "the manifest keeps the uri of {MANIFEST}; pass --base-url URL for where {name} \
             will be downloaded from"
        );
    }
    eprintln!(
        "dist: {name} (sha256 {sha256}, commit {}) and ksa.yaml in {}\n\
         install with: kubectl krew install --manifest=target/dist/ksa.yaml --archive=target/dist/{name}",
        provenance.revision,
        dist.display()
    );
    Ok(())
}

/// `--base-url URL` among the arguments: an http(s) URL, the archive's
/// directory.
fn base_url<'a>(args: &[&'a str]) -> Result<Option<&'a str>> {
    match args {
        [] => Ok(None),
        ["--base-url", url] => {
            ensure!(
                url.starts_with("https://") || url.starts_with("http://"),
                "--base-url takes an https URL, where the archive will be downloaded from \
                 (krew downloads it from URL/ARCHIVE), not {url:?}"
            );
            Ok(Some(url))
        }
        _ => bail!("usage: cargo xtask dist [--base-url URL]"),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The archive's file name, as the manifest's `uri` ends.
pub fn archive_name(version: &str) -> String {
    format!("ksa-v{version}-{}.tar.gz", image::TARGET)
}

/// A gzipped tar of `files` at its top, in this order, each owned by root
/// and dated `mtime`: the same files make the same bytes.
pub fn archive(files: &[ArchiveFile], mtime: u64) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_path(&file.name)?;
        header.set_mode(file.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(file.bytes.len() as u64);
        header.set_cksum();
        tar.append(&header, file.bytes.as_slice())?;
    }
    image::gzip(&tar.into_inner()?)
}

/// The krew manifest `manifest` (YAML) for one archive: the platform
/// `platform` with `sha256`, and `uri` when given (else the manifest's own),
/// and no other platform. Fails unless the manifest is this `version`'s
/// and the platform ships files the archive holds. Every other field is
/// kept; keys are written in sorted order.
pub fn fill_manifest(
    manifest: &str,
    version: &str,
    platform: Platform,
    sha256: &str,
    uri: Option<&str>,
) -> Result<FilledManifest> {
    let mut manifest: Value = serde_saphyr::from_str(manifest).context("parsing it as YAML")?;
    let spec = manifest
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .context("it has no spec")?;
    let expected = format!("v{version}");
    ensure!(
        spec.get("version").and_then(Value::as_str) == Some(expected.as_str()),
        "its spec.version is {}, the workspace's version is {expected}: make them the same",
        spec.get("version").unwrap_or(&Value::Null)
    );
    let platforms = spec
        .get_mut("platforms")
        .and_then(Value::as_array_mut)
        .context("it has no spec.platforms")?;
    let mut dropped = Vec::new();
    platforms.retain(|entry| {
        let labels = &entry["selector"]["matchLabels"];
        let (os, arch) = (&labels["os"], &labels["arch"]);
        let built = os == platform.os && arch == platform.arch;
        if !built {
            dropped.push(format!(
                "{}/{}",
                os.as_str().unwrap_or("?"),
                arch.as_str().unwrap_or("?")
            ));
        }
        built
    });
    let [entry] = platforms.as_mut_slice() else {
        bail!(
            "it has {} platforms for {}/{}, not one",
            platforms.len(),
            platform.os,
            platform.arch
        );
    };
    ensure_ships_archive_files(entry)?;
    let entry = entry
        .as_object_mut()
        .context("a platform is not a mapping")?;
    entry.insert("sha256".into(), sha256.into());
    if let Some(uri) = uri {
        entry.insert("uri".into(), uri.into());
    }
    // A long one-line string (the uri) stays one plain line; the
    // multi-line ones are still literal blocks (`|`), as in the source.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX;
    let yaml =
        serde_saphyr::to_string_with_options(&manifest, options).context("writing the manifest")?;
    Ok(FilledManifest {
        yaml: format!("# Written by `cargo xtask dist` from {MANIFEST}.\n{yaml}"),
        dropped,
    })
}

/// Fails unless every `files[].from` of a platform and its `bin` are files
/// of the archive, which krew would otherwise refuse at install.
fn ensure_ships_archive_files(platform: &Value) -> Result<()> {
    let in_archive = |name: &str| BINARIES.contains(&name) || name == LICENSE;
    let files = platform["files"]
        .as_array()
        .context("the platform has no files")?;
    for file in files {
        let from = file["from"].as_str().context("a file has no from")?;
        ensure!(
            in_archive(from),
            "the platform installs {from}, which the archive does not hold"
        );
    }
    let bin = platform["bin"]
        .as_str()
        .context("the platform has no bin")?;
    ensure!(
        in_archive(bin),
        "the platform's bin is {bin}, which the archive does not hold"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    const SHA256: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const VERSION: &str = env!("CARGO_PKG_VERSION");

    fn repo_manifest() -> Result<String> {
        Ok(std::fs::read_to_string(crate::root().join(MANIFEST))?)
    }

    fn files() -> Vec<ArchiveFile> {
        let mut files: Vec<ArchiveFile> = BINARIES
            .iter()
            .map(|name| ArchiveFile {
                name: (*name).to_owned(),
                mode: 0o755,
                bytes: format!("{name} binary").into_bytes(),
            })
            .collect();
        files.push(ArchiveFile {
            name: LICENSE.into(),
            mode: 0o644,
            bytes: b"Apache License".to_vec(),
        });
        files
    }

    /// What a tar header says of one entry.
    #[derive(Debug, PartialEq)]
    struct Entry {
        path: String,
        mode: u32,
        mtime: u64,
        uid: u64,
        size: u64,
    }

    fn entries(archive: &[u8]) -> Result<Vec<Entry>> {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(archive).read_to_end(&mut tar)?;
        let mut entries = Vec::new();
        for entry in tar::Archive::new(tar.as_slice()).entries()? {
            let entry = entry?;
            let header = entry.header();
            assert_eq!(header.entry_type(), tar::EntryType::Regular);
            entries.push(Entry {
                path: entry.path()?.to_string_lossy().into_owned(),
                mode: header.mode()?,
                mtime: header.mtime()?,
                uid: header.uid()?,
                size: header.size()?,
            });
        }
        Ok(entries)
    }

    /// The binaries and the license at the archive's top, binaries
    /// executable, everything root's and dated with the commit.
    #[test]
    fn the_archive_holds_the_binaries_and_license_at_its_top() -> Result<()> {
        let archive = archive(&files(), 1_796_028_840)?;
        let expected: Vec<Entry> = [
            ("ksa", 0o755, 10),
            ("kubectl-ksa", 0o755, 18),
            ("kubectl_complete-ksa", 0o755, 27),
            ("LICENSE", 0o644, 14),
        ]
        .into_iter()
        .map(|(path, mode, size)| Entry {
            path: path.to_owned(),
            mode,
            mtime: 1_796_028_840,
            uid: 0,
            size,
        })
        .collect();
        assert_eq!(entries(&archive)?, expected);
        Ok(())
    }

    #[test]
    fn the_same_files_make_the_same_archive() -> Result<()> {
        assert_eq!(archive(&files(), 7)?, archive(&files(), 7)?);
        assert_ne!(archive(&files(), 7)?, archive(&files(), 8)?);
        Ok(())
    }

    #[test]
    fn the_archive_name_is_the_end_of_the_manifests_uri() -> Result<()> {
        let manifest: Value = serde_saphyr::from_str(&repo_manifest()?)?;
        let uri = manifest["spec"]["platforms"][0]["uri"]
            .as_str()
            .context("uri")?;
        let name = archive_name(VERSION);
        assert_eq!(
            name,
            format!("ksa-v{VERSION}-x86_64-unknown-linux-musl.tar.gz")
        );
        assert!(uri.ends_with(&format!("/{name}")), "{uri}");
        Ok(())
    }

    /// The amd64 platform gets the digest and the URL; arm64, not built,
    /// is left out and named; every other field is as it was.
    #[test]
    fn the_manifest_is_filled_in_for_the_built_platform_only() -> Result<()> {
        let text = repo_manifest()?;
        let uri = "https://downloads.example/ksa/ksa.tar.gz";
        let filled = fill_manifest(&text, VERSION, PLATFORM, SHA256, Some(uri))?;
        assert_eq!(filled.dropped, ["linux/arm64"]);
        assert!(filled.yaml.starts_with("# Written by `cargo xtask dist`"));

        let mut expected: Value = serde_saphyr::from_str(&text)?;
        let platforms = expected["spec"]["platforms"]
            .as_array_mut()
            .context("platforms")?;
        platforms.truncate(1);
        platforms[0]["sha256"] = SHA256.into();
        platforms[0]["uri"] = uri.into();
        let written: Value = serde_saphyr::from_str(&filled.yaml)?;
        assert_eq!(written, expected);
        assert!(
            filled.yaml.contains(&format!("\n    uri: {uri}\n")),
            "the uri is one plain line:\n{}",
            filled.yaml
        );
        assert!(
            filled.yaml.contains("\n  description: |\n"),
            "{}",
            filled.yaml
        );
        Ok(())
    }

    #[test]
    fn without_a_url_the_manifests_uri_is_kept() -> Result<()> {
        let text = repo_manifest()?;
        let before: Value = serde_saphyr::from_str(&text)?;
        let filled = fill_manifest(&text, VERSION, PLATFORM, SHA256, None)?;
        let written: Value = serde_saphyr::from_str(&filled.yaml)?;
        let platform = &written["spec"]["platforms"][0];
        assert_eq!(platform["uri"], before["spec"]["platforms"][0]["uri"]);
        assert_eq!(platform["sha256"], SHA256);
        Ok(())
    }

    #[test]
    fn a_manifest_of_another_version_is_refused() -> Result<()> {
        let error = fill_manifest(&repo_manifest()?, "0.0.0-other", PLATFORM, SHA256, None)
            .expect_err("the manifest is this version's");
        assert!(format!("{error:#}").contains("v0.0.0-other"), "{error:#}");
        Ok(())
    }

    #[test]
    fn a_manifest_without_the_built_platform_is_refused() -> Result<()> {
        let darwin = Platform {
            os: "darwin",
            arch: "amd64",
        };
        let error = fill_manifest(&repo_manifest()?, VERSION, darwin, SHA256, None)
            .expect_err("no darwin platform");
        assert!(format!("{error:#}").contains("darwin/amd64"), "{error:#}");
        Ok(())
    }

    #[test]
    fn a_platform_installing_a_file_the_archive_lacks_is_refused() -> Result<()> {
        let text = repo_manifest()?.replace("from: kubectl_complete-ksa", "from: completions");
        let error = fill_manifest(&text, VERSION, PLATFORM, SHA256, None)
            .expect_err("completions is not in the archive");
        assert!(format!("{error:#}").contains("completions"), "{error:#}");
        Ok(())
    }

    #[test]
    fn base_url_takes_an_http_url() -> Result<()> {
        assert_eq!(base_url(&[])?, None);
        assert_eq!(
            base_url(&["--base-url", "https://dl.example/v0.1.0"])?,
            Some("https://dl.example/v0.1.0")
        );
        assert!(base_url(&["--base-url", "dl.example"]).is_err());
        assert!(base_url(&["--base-url"]).is_err());
        Ok(())
    }
}
