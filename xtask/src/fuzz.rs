//! `cargo xtask fuzz [--seconds N]`: each libFuzzer target of `fuzz/` for N
//! seconds (default 60), from the seeds in `fuzz/seeds/<target>` and the
//! corpus earlier runs grew in `fuzz/corpus/<target>`. libFuzzer needs a
//! nightly toolchain; without one this says so and fuzzes nothing (the same
//! properties run on stable with proptest in every test run).
//!
//! Targets run without a sanitizer (all of ksa is safe Rust): what they
//! find is panics, inputs slower than 10 s, and more than 1 GiB of memory.
//! A failure leaves its input in `fuzz/artifacts/<target>/`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{describe, root, tools};

const TARGETS: [&str; 5] = ["status_line", "token", "jwks", "pem", "config"];

fn nightly_installed() -> bool {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("nightly"))
}

/// `cargo-fuzz`, run by nightly cargo.
fn cargo_fuzz(bin: &std::path::Path) -> Command {
    let mut command = Command::new(bin.join("cargo-fuzz"));
    command
        .arg("fuzz")
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .env_remove("CARGO")
        .current_dir(root());
    command
}

pub fn run(seconds: u64) -> Result<()> {
    if !nightly_installed() {
        eprintln!(
            "no nightly toolchain (`rustup toolchain list`): fuzzing skipped; \
             the parsers' proptest properties ran on stable"
        );
        return Ok(());
    }
    let bin = tools::cargo_fuzz_bin()?;
    // Built outside the checkout, so a clean clone reuses the dependencies
    // (ten minutes of kube, tokio and aws-lc built with coverage flags).
    let target_dir = crate::control_plane::cache_root().join("fuzz-target");
    let build = |command: &mut Command| {
        command
            .args(["--sanitizer", "none", "--target-dir"])
            .arg(&target_dir);
    };
    let mut command = cargo_fuzz(&bin);
    command.arg("build");
    build(&mut command);
    crate::run(&mut command)?;
    let logs = root().join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    let mut runs = Vec::new();
    for target in TARGETS {
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let log = logs.join(format!("{target}.log"));
        let file = std::fs::File::create(&log)?;
        let mut command = cargo_fuzz(&bin);
        command.arg("run");
        build(&mut command);
        command
            .arg(target)
            .arg(&corpus)
            .arg(root().join("fuzz/seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-timeout=10", "-rss_limit_mb=1024", "-max_len=65536"])
            .stdout(file.try_clone()?)
            .stderr(file);
        eprintln!("$ {} (log: {})", describe(&command), log.display());
        let status = command
            .status()
            .with_context(|| format!("could not start {}", describe(&command)))?;
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = output.lines().rev().take(30).collect();
            bail!(
                "fuzz target {target} failed ({status}); the input is in fuzz/artifacts/{target}/\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        runs.push((target, executions(&output)));
    }
    println!("| target | inputs tried in {seconds} s | panics |\n|---|---|---|");
    for (target, count) in &runs {
        println!(
            "| {target} | {} | 0 |",
            count.map_or("?".into(), |n| n.to_string())
        );
    }
    Ok(())
}

/// The run count of libFuzzer's closing line, `Done N runs in S second(s)`.
fn executions(output: &str) -> Option<u64> {
    output
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("Done ")?.split(' ').next()?.parse().ok())
}
