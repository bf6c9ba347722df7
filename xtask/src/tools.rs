//! The tools the tests need beyond cargo and Go: Debian packages (Chromium
//! and its WebDriver for the browser tests, binaryen's `wasm-opt`,
//! iproute2's `ip` for the three-instance control plane, libseccomp-dev
//! for runc, nftables for kube-proxy on the real nodes, and musl-tools for
//! the images' static binaries) and
//! `wasm-bindgen-cli` at exactly the version of the `wasm-bindgen` crate in
//! `Cargo.lock`, `cargo-fuzz` and `cargo-deny`, installed from crates.io
//! into the cache. (The signer's proto is compiled by protox, in Rust: no
//! `protoc`.)

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::{cargo, control_plane::cache_root, run};

/// Debian packages and a file each one installs.
const DEBIAN_PACKAGES: [(&str, &str); 8] = [
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("binaryen", "/usr/bin/wasm-opt"),
    // `ip`: the addresses of the three-instance control plane, in the
    // test's own network namespace (`unshare` is util-linux, always there).
    ("iproute2", "/sbin/ip"),
    // The font of the benchmark chart.
    ("fonts-dejavu-core", crate::scale::FONT),
    // runc's seccomp support is built against it (`xtask/src/node.rs`).
    ("libseccomp-dev", "/usr/include/seccomp.h"),
    // `nft`, which kube-proxy's nftables mode runs on the real nodes.
    ("nftables", "/usr/sbin/nft"),
    // `musl-gcc`, which compiles aws-lc for the images' static binaries
    // (`cargo xtask image`, which the real-node chart test runs).
    ("musl-tools", "/usr/bin/musl-gcc"),
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
    // Not --locked: the crate's own lock file names a webpki-roots release
    // the registry mirror here does not carry.
    cargo_install(
        "wasm-bindgen-cli",
        &version,
        "wasm-bindgen-test-runner",
        Locked::No,
    )
}

/// `cargo-fuzz`, for `cargo xtask fuzz`.
pub fn cargo_fuzz_bin() -> Result<PathBuf> {
    cargo_install("cargo-fuzz", CARGO_FUZZ_VERSION, "cargo-fuzz", Locked::Yes)
}

/// `cargo-deny`, for the supply-chain check.
pub fn cargo_deny_bin() -> Result<PathBuf> {
    cargo_install("cargo-deny", CARGO_DENY_VERSION, "cargo-deny", Locked::Yes)
}

/// `cargo-nextest`, which runs every test in a process of its own and the
/// end-to-end suites side by side (`cargo test` runs one test binary at a
/// time).
pub fn cargo_nextest_bin() -> Result<PathBuf> {
    cargo_install(
        "cargo-nextest",
        CARGO_NEXTEST_VERSION,
        "cargo-nextest",
        Locked::Yes,
    )
}

const CARGO_NEXTEST_VERSION: &str = "0.9.151";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const CARGO_DENY_VERSION: &str = "0.20.2";

/// Whether `cargo install` uses the crate's own lock file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Locked {
    Yes,
    No,
}

/// The `bin` directory of `package` at `version` in the tools cache,
/// installed from crates.io when `binary` is not there yet.
fn cargo_install(package: &str, version: &str, binary: &str, locked: Locked) -> Result<PathBuf> {
    let root = cache_root()
        .join("tools")
        .join(format!("{package}-{version}"));
    let bin = root.join("bin");
    if bin.join(binary).exists() {
        return Ok(bin);
    }
    let mut command = cargo();
    command
        .args(["install", "--quiet", package, "--version"])
        .arg(format!("={version}"))
        .arg("--root")
        .arg(&root);
    if locked == Locked::Yes {
        command.arg("--locked");
    }
    run(&mut command).with_context(|| format!("installing {package} {version} from crates.io"))?;
    Ok(bin)
}
