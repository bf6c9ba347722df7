//! `cargo xtask wasm`: builds `ksa-wasm` for browsers into `wasm/www/pkg/`,
//! where the inspector page loads it, and holds it to its size budget.
//!
//! cargo (profile `wasm`: opt-level z, fat LTO, abort on panic) →
//! `wasm-opt -Oz` when binaryen is installed → `wasm-bindgen --target web`
//! at the locked version → gzip size checked against the budget.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, root, run, tools};

/// The most the optimized module may weigh, gzipped.
pub const BUDGET_GZIP_BYTES: usize = 200 * 1024;

/// The built package.
#[derive(Debug)]
pub struct Package {
    pub wasm_bytes: usize,
    pub gzip_bytes: usize,
}

/// The WebAssembly features rustc emits for wasm32 by default, which
/// binaryen 108 (Debian 12) must be told it may keep.
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-reference-types",
    "--enable-multivalue",
];

pub fn build() -> Result<Package> {
    let bin = tools::wasm_bindgen_bin()?;
    run(cargo().args([
        "build",
        "-p",
        "ksa-wasm",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]))?;
    let built = target_dir().join("wasm32-unknown-unknown/wasm/ksa_wasm.wasm");
    // wasm-opt runs before wasm-bindgen: binaryen 108 breaks the externref
    // table that wasm-bindgen's glue fills in at start-up.
    let input = if Path::new(tools::WASM_OPT).exists() {
        let optimized = built.with_extension("opt.wasm");
        run(Command::new(tools::WASM_OPT)
            .args(["-O3", "--strip-debug", "--strip-producers"])
            .args(WASM_FEATURES)
            .arg(&built)
            .arg("-o")
            .arg(&optimized))?;
        optimized
    } else {
        eprintln!(
            "note: {} not found; the module is not optimized",
            tools::WASM_OPT
        );
        built
    };
    let dir = root().join("wasm/www/pkg");
    run(Command::new(bin.join("wasm-bindgen"))
        .args(["--target", "web", "--out-name", "ksa_wasm", "--out-dir"])
        .arg(&dir)
        .arg(&input))?;
    let module = dir.join("ksa_wasm_bg.wasm");
    let bytes = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
    let package = Package {
        wasm_bytes: bytes.len(),
        gzip_bytes: gzip_len(&bytes)?,
    };
    eprintln!(
        "{}: {} bytes, {} bytes gzipped (budget {BUDGET_GZIP_BYTES})",
        module.display(),
        package.wasm_bytes,
        package.gzip_bytes
    );
    if package.gzip_bytes > BUDGET_GZIP_BYTES {
        bail!(
            "the wasm module is {} bytes gzipped, over its budget of {BUDGET_GZIP_BYTES}",
            package.gzip_bytes
        );
    }
    Ok(package)
}

fn gzip_len(bytes: &[u8]) -> Result<usize> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?.len())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// The in-browser tests of `ksa-wasm` (wasm-bindgen-test in headless
/// Chromium, through chromedriver).
pub fn browser_tests() -> Result<()> {
    let bin = tools::wasm_bindgen_bin()?;
    run(cargo()
        .args([
            "test",
            "-p",
            "ksa-wasm",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            bin.join("wasm-bindgen-test-runner"),
        )
        .env("CHROMEDRIVER", tools::CHROMEDRIVER))
}
