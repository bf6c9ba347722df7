//! `cargo xtask bench`: runs the criterion benchmarks, the in-browser wasm
//! benchmark and the CLI timings and, in the same run, the reference each is
//! measured against, and writes
//! `target/bench/report.json` and `target/bench/report.md`.
//!
//! Ratios come from numbers measured side by side in one run: the machines
//! are shared and noisy, so absolute numbers from different runs mean little.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// OpenSSL's single-core RSA-2048 sign/s and verify/s.
fn openssl_rsa2048(seconds: u32) -> Result<(f64, f64)> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "rsa2048"])
        .output()
        .context("running `openssl speed` (install the openssl package)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "rsa 2048 bits 0.000754s 0.000023s   1326.0  43661.0": the last two
    // numbers are sign/s and verify/s.
    let line = text
        .lines()
        .find(|l| l.starts_with("rsa") && l.contains("2048 bits"))
        .with_context(|| format!("no RSA-2048 line in `openssl speed` output:\n{text}"))?;
    let rates: Vec<f64> = line
        .split_whitespace()
        .filter(|w| !w.ends_with('s'))
        .filter_map(|w| w.parse().ok())
        .collect();
    match rates[..] {
        [.., sign, verify] => Ok((sign, verify)),
        _ => bail!("cannot read rates from {line:?}"),
    }
}

/// The median time of one criterion benchmark, in nanoseconds.
fn criterion_median_ns(target: &Path, id: &str) -> Result<f64> {
    let path = target.join("criterion").join(id).join("new/estimates.json");
    let estimates: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    estimates["median"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("no median in {}", path.display()))
}

pub fn result(name: &str, value: f64, unit: &str, reference: Option<(&str, f64)>) -> Value {
    let (reference, reference_value) = reference.unzip();
    json!({
        "name": name,
        "value": round(value),
        "unit": unit,
        "reference": reference,
        "reference_value": reference_value.map(round),
        "ratio": reference_value.map(|r| round(value / r)),
    })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn run(quick: bool) -> Result<()> {
    let root = crate::root();
    let target = root.join("target");
    let seconds = if quick { 2 } else { 10 };
    // OpenSSL runs before and after criterion and the better of the two is
    // the reference: the machine is shared, and a reference measured in a
    // slow moment would flatter every ratio.
    eprintln!("$ openssl speed -seconds {seconds} rsa2048");
    let before = openssl_rsa2048(seconds)?;
    let mut bench = crate::cargo();
    bench.args([
        "bench",
        "-p",
        "ksa-core",
        "--features",
        "rust-crypto",
        "--bench",
        "tokens",
        "--",
    ]);
    if quick {
        bench.args(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    crate::run(&mut bench)?;
    eprintln!("$ openssl speed -seconds {seconds} rsa2048");
    let after = openssl_rsa2048(seconds)?;
    let (openssl_sign, openssl_verify) = (before.0.max(after.0), before.1.max(after.1));

    let per_second = |id: &str| criterion_median_ns(&target, id).map(|ns| 1e9 / ns);
    let results = vec![
        result(
            "core.mint_rs256",
            per_second("tokens/mint_rs256")?,
            "ops/s",
            Some(("openssl speed rsa2048 sign/s", openssl_sign)),
        ),
        result(
            "core.verify_rs256",
            per_second("tokens/verify_rs256")?,
            "ops/s",
            Some(("openssl speed rsa2048 verify/s", openssl_verify)),
        ),
        result(
            "core.raw_sign_rs256_aws_lc",
            per_second("tokens/raw_sign_rs256")?,
            "ops/s",
            Some(("openssl speed rsa2048 sign/s", openssl_sign)),
        ),
        result(
            "core.mint_es256",
            per_second("tokens/mint_es256")?,
            "ops/s",
            None,
        ),
        result(
            "core.verify_es256",
            per_second("tokens/verify_es256")?,
            "ops/s",
            None,
        ),
        result(
            "core.verify_rs256_rust_crypto",
            per_second("tokens/verify_rs256_rust_crypto")?,
            "ops/s",
            Some(("openssl speed rsa2048 verify/s", openssl_verify)),
        ),
        result(
            "core.keygen_rsa2048_ms",
            criterion_median_ns(&target, "keygen/rsa2048")? / 1e6,
            "ms",
            None,
        ),
    ];
    write_report(&target.join("bench"), results)?;
    wasm(quick, per_second("tokens/verify_rs256")?)?;
    signer(quick)?;
    cli(quick)?;
    crate::scale::run(quick)
}

/// `signer.tokenrequest_ratio` and `signer.sign_p99_ms`: the release signer
/// beside kube-apiserver's own key files, on real control planes.
fn signer(quick: bool) -> Result<()> {
    let root = crate::root();
    let control_plane = crate::control_plane::ensure()?;
    crate::run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "ksa-controller",
        "-p",
        "ksa-tests",
        "--bin",
        "ksa-controller",
        "--bin",
        "ksa-bench-signer",
    ]))?;
    let seconds = if quick { "3" } else { "10" };
    let measured = run_json(
        Command::new(root.join("target/release/ksa-bench-signer"))
            .arg(seconds)
            .env(crate::control_plane::ENV, &control_plane),
    )?;
    let number = |field: &str| number(&measured, field);
    write_report(
        &root.join("target/bench"),
        vec![
            result(
                "signer.tokenrequest_ratio",
                number("signer_per_s")?,
                "TokenRequests/s",
                Some(("kube-apiserver key files", number("key_files_per_s")?)),
            ),
            result(
                "signer.sign_p50_ms",
                number("sign_p50_ms")?,
                "ms at 200/s",
                None,
            ),
            result(
                "signer.sign_p99_ms",
                number("sign_p99_ms")?,
                "ms at 200/s",
                Some(("target", 2.0)),
            ),
        ],
    )
}

/// A number a benchmark binary printed.
pub fn number(measured: &Value, field: &str) -> Result<f64> {
    measured[field]
        .as_f64()
        .with_context(|| format!("no {field} in {measured}"))
}

/// Runs a benchmark binary (echoed) and parses the JSON it prints.
pub fn run_json(command: &mut Command) -> Result<Value> {
    eprintln!("$ {}", crate::describe(command));
    let out = command
        .output()
        .with_context(|| format!("running {}", crate::describe(command)))?;
    if !out.status.success() {
        bail!(
            "{} failed:\n{}",
            crate::describe(command),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the output of {}", crate::describe(command)))
}

/// `wasm.verify_rs256`: RS256 verifications per second through the wasm
/// `verifyToken` inside headless Chromium, beside native `core.verify_rs256`
/// from the same run; and the module's gzipped size against its budget.
fn wasm(quick: bool, native_verify_per_second: f64) -> Result<()> {
    let root = crate::root();
    let package = crate::wasm::build()?;
    crate::run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "ksa-tests",
        "--bin",
        "ksa-bench-wasm",
    ]))?;
    let seconds = if quick { "3" } else { "10" };
    let measured = run_json(Command::new(root.join("target/release/ksa-bench-wasm")).arg(seconds))?;
    let per_second = number(&measured, "verify_rs256_per_s")?;
    write_report(
        &root.join("target/bench"),
        vec![
            result(
                "wasm.verify_rs256",
                per_second,
                "ops/s",
                Some(("native core.verify_rs256", native_verify_per_second)),
            ),
            result(
                "wasm.verify_rs256_vs_target",
                per_second,
                "ops/s",
                Some(("target", 3000.0)),
            ),
            result(
                "wasm.module_gzip_bytes",
                package.gzip_bytes as f64,
                "bytes",
                Some(("budget", crate::wasm::BUDGET_GZIP_BYTES as f64)),
            ),
        ],
    )
}

/// `cli.help_ms` and `cli.status_ms`: the release `ksa` timed as an
/// operator runs it, `status` against a local real API server.
fn cli(quick: bool) -> Result<()> {
    let root = crate::root();
    let control_plane = crate::control_plane::ensure()?;
    crate::run(crate::cargo().args([
        "build",
        "--release",
        "-p",
        "ksa-cli",
        "-p",
        "ksa-tests",
        "--bin",
        "ksa",
        "--bin",
        "ksa-bench-cli",
    ]))?;
    let runs = if quick { "10" } else { "50" };
    let medians = run_json(
        Command::new(root.join("target/release/ksa-bench-cli"))
            .arg(root.join("target/release/ksa"))
            .arg(runs)
            .env(crate::control_plane::ENV, &control_plane),
    )?;
    let number = |field: &str| number(&medians, field);
    write_report(
        &root.join("target/bench"),
        vec![
            result(
                "cli.help_ms",
                number("help_ms")?,
                "ms",
                Some(("target", 20.0)),
            ),
            result(
                "cli.status_ms",
                number("status_ms")?,
                "ms",
                Some(("target", 150.0)),
            ),
        ],
    )
}

/// Merges `results` into the report (other subcommands add theirs) and
/// writes it as JSON and as a Markdown table.
pub fn write_report(dir: &Path, results: Vec<Value>) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("report.json");
    let mut all: Vec<Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|report| report["results"].as_array().cloned())
        .unwrap_or_default();
    for new in results {
        all.retain(|old| old["name"] != new["name"]);
        all.push(new);
    }
    all.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({ "results": all }))?,
    )?;

    let mut table = String::from(
        "| benchmark | value | unit | reference | reference value | ratio |\n|---|---:|---|---|---:|---:|\n",
    );
    for r in &all {
        let cell = |v: &Value| match v {
            Value::Null => "".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            cell(&r["name"]),
            cell(&r["value"]),
            cell(&r["unit"]),
            cell(&r["reference"]),
            cell(&r["reference_value"]),
            cell(&r["ratio"]),
        ));
    }
    std::fs::write(dir.join("report.md"), &table)?;
    println!("{table}");
    eprintln!("wrote {}", path.display());
    Ok(())
}
