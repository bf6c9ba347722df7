//! The tools the tests need beyond cargo and Go: Debian packages (Chromium
//! and its WebDriver for the browser tests, binaryen's `wasm-opt`) and
//! `wasm-bindgen-cli` at exactly the version of the `wasm-bindgen` crate in
//! `Cargo.lock`, installed from crates.io into the cache. (The signer's
//! proto is compiled by protox, in Rust: no `protoc`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{cargo, control_plane::cache_root, run};

/// Debian packages and a file each one installs.
const DEBIAN_PACKAGES: [(&str, &str); 3] = [
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("binaryen", "/usr/bin/wasm-opt"),
];

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const WASM_OPT: &str = "/usr/bin/wasm-opt";

/// Installs the Debian packages that are missing (as root, or through sudo).
pub fn ensure_debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let as_root = |program: &str| {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.starts_with(b"0\n"));
        let mut command = Command::new(if root { program } else { "sudo" });
        if !root {
            command.arg(program);
        }
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    let hint = || format!("installing Debian packages {missing:?} (apt-get must work here)");
    run(as_root("apt-get").args(["update", "-qq"])).with_context(hint)?;
    run(as_root("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
    .with_context(hint)
}

/// The version of a package in `Cargo.lock`.
fn locked_version(package: &str) -> Result<String> {
    let lock =
        std::fs::read_to_string(crate::root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock
        .find(&needle)
        .with_context(|| format!("{package} is not in Cargo.lock"))?
        + needle.len();
    let version = lock[start..].split('"').next().unwrap_or_default();
    Ok(version.to_owned())
}

/// The directory holding `wasm-bindgen` and `wasm-bindgen-test-runner` at
/// the locked version, installed from crates.io when missing.
pub fn wasm_bindgen_bin() -> Result<PathBuf> {
    let version = locked_version("wasm-bindgen")?;
    let root = cache_root()
        .join("tools")
        .join(format!("wasm-bindgen-cli-{version}"));
    let bin = root.join("bin");
    if bin.join("wasm-bindgen-test-runner").exists() {
        return Ok(bin);
    }
    // Not --locked: the crate's own lock file names a webpki-roots release
    // the registry mirror here does not carry.
    run(cargo()
        .args(["install", "--quiet", "wasm-bindgen-cli", "--version"])
        .arg(format!("={version}"))
        .arg("--root")
        .arg(&root))
    .context("installing wasm-bindgen-cli from crates.io")?;
    Ok(bin)
}
