//! The krew manifest `cli/krew/ksa.yaml`, installed by the real krew (built
//! from its Go module with `cargo xtask krew`, found through
//! `KSA_KREW_DIR`) from an archive in the layout `cargo xtask dist` writes
//! (`ksa`, `kubectl-ksa`, `kubectl_complete-ksa` and `LICENSE` at its top),
//! made here of this workspace's debug binaries, with the manifest's amd64
//! `sha256` filled in as `cargo xtask dist` fills it. Then, with only krew's
//! `bin` directory and kubectl 1.36.3 on the PATH, as a user would:
//! `kubectl ksa --version`, `kubectl plugin list`, and completion of
//! `kubectl ksa` once the plugin's directory is on the PATH, as the
//! manifest's caveats say. A manifest whose `sha256` is not the archive's
//! is refused, so krew checks it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use ksa_tests::ksa_binary;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The files of the archive, in the layout `cargo xtask dist` writes.
const ARCHIVE_FILES: [&str; 4] = ["ksa", "kubectl-ksa", "kubectl_complete-ksa", "LICENSE"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `krew`, or an error that says how to build it.
fn krew() -> Result<PathBuf> {
    let dir = std::env::var_os("KSA_KREW_DIR")
        .map(PathBuf::from)
        .context(
            "KSA_KREW_DIR is not set: the krew manifest test needs krew. Run it with `cargo xtask \
             e2e`, which builds it from the Go module pinned in xtask/krew/ and sets it (or \
             `cargo xtask krew`, which prints the directory)",
        )?;
    let krew = dir.join("krew");
    ensure!(
        krew.is_file(),
        "{} has no krew; run `cargo xtask krew` to build it",
        dir.display()
    );
    Ok(krew)
}

/// The candidates of `kubectl __complete` output (each line before its
/// tab and help), without the directive line.
fn candidates(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|line| !line.starts_with(':'))
        .map(|line| line.split('\t').next().unwrap_or(line))
        .collect()
}

/// A user's machine in a temporary directory: a home, a krew root, and
/// a PATH of krew's `bin` directory and kubectl only (no directory of this
/// workspace's build).
struct Machine {
    _dir: tempfile::TempDir,
    home: PathBuf,
    krew_root: PathBuf,
    kubectl_dir: PathBuf,
}

impl Machine {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let home = dir.path().join("home");
        let krew_root = home.join(".krew");
        std::fs::create_dir_all(&home)?;
        Ok(Self {
            home,
            krew_root,
            kubectl_dir: ksa_tests::control_plane_binaries()?,
            _dir: dir,
        })
    }

    /// Where krew installs the plugin's files: `kubectl_complete-ksa` is
    /// there, beside `kubectl-ksa`.
    fn plugin_dir(&self) -> PathBuf {
        self.krew_root
            .join("store")
            .join("ksa")
            .join(format!("v{VERSION}"))
    }

    /// Runs `program` with only this machine's environment: `extra_path`
    /// after krew's `bin` and kubectl's directory on the PATH.
    fn run(&self, program: &Path, args: &[&str], extra_path: &[PathBuf]) -> Result<Output> {
        let path: OsString = std::env::join_paths(
            [self.krew_root.join("bin"), self.kubectl_dir.clone()]
                .iter()
                .chain(extra_path),
        )?;
        let out = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("KREW_ROOT", &self.krew_root)
            // krew would otherwise ask GitHub for a newer release.
            .env("KREW_NO_UPGRADE_CHECK", "1")
            // The platform whose sha256 is filled in, whatever this machine is.
            .env("KREW_OS", "linux")
            .env("KREW_ARCH", "amd64")
            .output()
            .with_context(|| format!("running {}", program.display()))?;
        eprintln!(
            "$ {} {}\n{}{}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out)
    }

    /// `krew install` of `archive` by `manifest`, as a plugin's
    /// maintainer tries a release before publishing it.
    fn krew_install(&self, krew: &Path, manifest: &Path, archive: &Path) -> Result<Output> {
        let manifest = format!("--manifest={}", manifest.display());
        let archive = format!("--archive={}", archive.display());
        self.run(krew, &["install", &manifest, &archive], &[])
    }

    fn kubectl(&self, args: &[&str], extra_path: &[PathBuf]) -> Result<String> {
        let out = self.run(&self.kubectl_dir.join("kubectl"), args, extra_path)?;
        ensure!(
            out.status.success(),
            "kubectl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }
}

/// The release archive's layout, of the debug binaries, as
/// `ksa-vVERSION-x86_64-unknown-linux-musl.tar.gz` in `dir`.
fn make_archive(dir: &Path) -> Result<PathBuf> {
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging)?;
    for name in ARCHIVE_FILES {
        let source = match name {
            "LICENSE" => workspace().join(name),
            binary => ksa_binary(binary)?,
        };
        std::fs::copy(&source, staging.join(name))
            .with_context(|| format!("copying {}", source.display()))?;
    }
    let archive = dir.join(format!("ksa-v{VERSION}-x86_64-unknown-linux-musl.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&staging)
        .args(ARCHIVE_FILES)
        .status()
        .context("running tar")?;
    ensure!(status.success(), "tar failed ({status})");
    Ok(archive)
}

/// `cli/krew/ksa.yaml` with the linux/amd64 platform's `sha256` set, as
/// JSON (which krew reads as the YAML it is).
fn manifest_with_sha256(sha256: &str) -> Result<String> {
    let path = workspace().join("cli/krew/ksa.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut manifest: Value = serde_saphyr::from_str(&text)?;
    let platform = manifest["spec"]["platforms"]
        .as_array_mut()
        .context("the manifest has no platforms")?
        .iter_mut()
        .find(|p| {
            let labels = &p["selector"]["matchLabels"];
            labels["os"] == "linux" && labels["arch"] == "amd64"
        })
        .context("the manifest has no linux/amd64 platform")?;
    platform["sha256"] = sha256.into();
    Ok(serde_json::to_string_pretty(&manifest)?)
}

#[test]
fn krew_installs_the_plugin_and_kubectl_runs_and_completes_it() -> Result<()> {
    let krew = krew()?;
    let machine = Machine::new()?;
    let work = tempfile::tempdir()?;
    let archive = make_archive(work.path())?;
    let sha256 = format!("{:x}", Sha256::digest(std::fs::read(&archive)?));

    // A digest that is not the archive's: krew refuses, installing nothing.
    let wrong = format!(
        "{}{}",
        &sha256[..63],
        if sha256.ends_with('0') { '1' } else { '0' }
    );
    let wrong_manifest = work.path().join("wrong.yaml");
    std::fs::write(&wrong_manifest, manifest_with_sha256(&wrong)?)?;
    let refused = machine.krew_install(&krew, &wrong_manifest, &archive)?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && stderr.contains("checksum does not match"),
        "krew installed an archive whose sha256 is not the manifest's ({}): {stderr}",
        refused.status
    );
    ensure!(
        !machine.krew_root.join("bin/kubectl-ksa").exists(),
        "a refused install left kubectl-ksa in krew's bin"
    );

    let manifest = work.path().join("ksa.yaml");
    std::fs::write(&manifest, manifest_with_sha256(&sha256)?)?;
    let installed = machine.krew_install(&krew, &manifest, &archive)?;
    ensure!(
        installed.status.success(),
        "krew install failed ({}): {}",
        installed.status,
        String::from_utf8_lossy(&installed.stderr)
    );

    let version = machine.kubectl(&["ksa", "--version"], &[])?;
    ensure!(
        version.starts_with(&format!("ksa {VERSION} ")),
        "kubectl ksa --version printed {version:?}, not version {VERSION}"
    );

    let plugins = machine.kubectl(&["plugin", "list"], &[])?;
    let linked = machine.krew_root.join("bin").join("kubectl-ksa");
    ensure!(
        plugins.lines().any(|line| Path::new(line.trim()) == linked),
        "kubectl plugin list does not name {}:\n{plugins}",
        linked.display()
    );

    // Without the plugin's directory on the PATH kubectl has nothing to
    // complete `kubectl ksa` with; with it, as the caveats say, it has.
    let without = machine.kubectl(&["__complete", "ksa", "upd"], &[])?;
    ensure!(
        !candidates(&without).contains(&"update"),
        "kubectl completed `kubectl ksa upd` without kubectl_complete-ksa on the PATH:\n{without}"
    );
    let plugin_dir = machine.plugin_dir();
    ensure!(
        plugin_dir.join("kubectl_complete-ksa").is_file(),
        "krew did not install kubectl_complete-ksa into {}",
        plugin_dir.display()
    );
    let completed = machine.kubectl(&["__complete", "ksa", "upd"], &[plugin_dir])?;
    ensure!(
        candidates(&completed).contains(&"update"),
        "kubectl __complete ksa upd did not offer `update`:\n{completed}"
    );
    Ok(())
}
