//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo
//! does. Each subcommand prints the commands it runs.
//!
//! - `ci`: set up what the tests need, then fmt, clippy (native and wasm32),
//!   `cargo deny`, every test, end-to-end included, and 20 s of fuzzing per
//!   target. `.ci/run` calls exactly this.
//! - `setup`: the set-up part alone: the rustup target, Debian packages
//!   (Chromium, chromedriver, binaryen, libseccomp-dev, nftables),
//!   wasm-bindgen-cli, the control plane, kwok, SeaweedFS (`seaweedfs`,
//!   from `xtask/seaweedfs/`), helm, krew and the real nodes' components.
//! - `wasm`: build `ksa-wasm` for browsers into `wasm/www/pkg/`, within its
//!   size budget.
//! - `serve-inspector`: build it and serve the inspector page on loopback.
//! - `man`: man pages for every `ksa` command into `target/man`.
//! - `manifests`: write `deploy/` (CRD, RBAC, Deployment) from the Rust types,
//!   and the chart's CRD.
//! - `control-plane`: build etcd, kube-apiserver, kube-controller-manager and
//!   kube-scheduler from the pinned Go modules in `xtask/control-plane/`, and
//!   kwok from `xtask/kwok/`, into the cache.
//! - `e2e`: the end-to-end tests against the real control plane.
//! - `image`: OCI images of `ksa-controller` and `ksa` (static, non-root,
//!   no shell) into `target/image/`, with no container daemon.
//! - `dist`: the release archive of the static `ksa`, `kubectl-ksa` and
//!   `kubectl_complete-ksa`, its `.sha256`, and the krew manifest filled in
//!   for it, into `target/dist/` (`--base-url URL`: where the archive will
//!   be downloaded from).
//! - `helm`: build `helm` from `xtask/helm/` into the cache (`setup` does).
//! - `krew`: build `krew` from `xtask/krew/` into the cache (`setup` does).
//! - `node`: build what the tests' real nodes run (containerd, runc, the
//!   CNI plugins, the kubelet, kube-proxy) and their test images (the
//!   control plane's kube-apiserver among them) into the cache (`setup` does, beside the control plane; see `xtask/src/node.rs`).
//! - `demo`: the README's main job: a local control plane, ksa installed,
//!   one full rotation with its status lines.
//! - `bench [--quick]`: criterion benchmarks and their reference numbers,
//!   written to `target/bench/report.json` and `report.md`; `bench scale`
//!   runs only the scale part (legacy refresh at 1k/5k/10k Secrets, its
//!   chart), `bench fleet` only its fleet part (N user clusters at once).
//! - `fuzz [--seconds N]`: each libFuzzer target for N seconds (nightly).
//! - `deny`: `cargo deny check` of licenses, bans, sources and advisories
//!   (`deny.toml`).

mod bench;
mod control_plane;
mod dist;
mod fuzz;
mod go_tool;
mod image;
mod node;
mod scale;
mod tools;
mod wasm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("setup") => setup().map(drop),
        Some("control-plane") => {
            for (_, dir) in control_plane::environment()? {
                println!("{}", dir.display());
            }
            Ok(())
        }
        Some("e2e") => e2e(&rest),
        Some("image") => image::run(),
        Some("helm") => go_tool::HELM
            .ensure()
            .map(|dir| println!("{}", dir.display())),
        Some("krew") => go_tool::KREW
            .ensure()
            .map(|dir| println!("{}", dir.display())),
        Some("node") => {
            tools::ensure_debian_packages()?;
            let dir = node::ensure()?;
            node::control_plane_images(&control_plane::ensure()?, &dir)?;
            println!("{}", dir.display());
            Ok(())
        }
        Some("dist") => dist::run(&rest),
        Some("wasm") => wasm::build().map(drop),
        Some("serve-inspector") => serve_inspector(&rest),
        Some("demo") => demo(),
        Some("man") => run(cargo().args([
            "run",
            "--quiet",
            "-p",
            "ksa-cli",
            "--bin",
            "ksa",
            "--",
            "man",
            "target/man",
        ])),
        Some("manifests") => {
            run(cargo().args([
                "run",
                "--quiet",
                "-p",
                "ksa-controller",
                "--",
                "manifests",
                "deploy",
            ]))?;
            // Helm installs a chart's CRDs from `crds/` as they are: the
            // chart carries the generated one.
            std::fs::copy(
                root().join("deploy/crd.yaml"),
                root().join("charts/ksa/crds/ksasigningkeyrotations.yaml"),
            )?;
            Ok(())
        }
        Some("bench") if rest.contains(&"scale") => scale::run(rest.contains(&"--quick")),
        Some("bench") if rest.contains(&"fleet") => scale::fleet(rest.contains(&"--quick")),
        Some("bench") => bench::run(rest.contains(&"--quick")),
        Some("fuzz") => fuzz::run(seconds(&rest, 60)?),
        Some("deny") => deny(),
        _ => {
            eprintln!(
                "usage: cargo xtask <demo | ci | setup | wasm | serve-inspector [--port N] | manifests | man | control-plane | helm | krew | node | image | dist [--base-url URL] | e2e [TEST...] | bench [scale | fleet] [--quick] | fuzz [--seconds N] | deny>"
            );
            std::process::exit(2);
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Runs a command from the workspace root, echoing it, and fails when it does.
pub fn run(command: &mut Command) -> Result<()> {
    command.current_dir(root());
    eprintln!("$ {}", describe(command));
    let started = std::time::Instant::now();
    let status = command
        .status()
        .with_context(|| format!("could not start {}", describe(command)))?;
    // CI's time budget is spent here; each step says what it cost.
    eprintln!("({:.0?} for {})", started.elapsed(), describe(command));
    if !status.success() {
        bail!("{} failed with {status}", describe(command));
    }
    Ok(())
}

pub fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Cargo, as the one that runs xtask. On CI (`CI` set) incremental
/// compilation is off unless asked for: a clean clone builds once, and the
/// incremental caches would only take disk.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    if std::env::var_os("CI").is_some() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        command.env("CARGO_INCREMENTAL", "0");
    }
    command
}

/// Installs what the tests need and returns the variables that tell them
/// where the control plane, kwok, SeaweedFS, helm and krew are.
fn setup() -> Result<Vec<(&'static str, PathBuf)>> {
    run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
        .context("installing the wasm32 target (rustup must be on PATH)")?;
    tools::ensure_debian_packages()?;
    tools::wasm_bindgen_bin()?;
    // The node's components build beside the rest: containerd, runc and
    // the CNI plugins first, then the kubelet and kube-proxy, whose
    // packages the control plane's build has mostly compiled by then.
    let node = std::thread::spawn(node::environment);
    // The images (a release build of the static binaries), for the chart
    // test on a real node, beside the Go builds.
    let image = std::thread::spawn(image::environment);
    let mut environment = control_plane::environment()?.to_vec();
    environment.push(go_tool::SEAWEEDFS.environment()?);
    environment.push(go_tool::HELM.environment()?);
    environment.push(go_tool::KREW.environment()?);
    let node = node
        .join()
        .map_err(|_| anyhow::anyhow!("building the node's components panicked"))??;
    // The images of the control plane's kube-apiserver and
    // kube-controller-manager, built by now.
    node::control_plane_images(&environment[0].1, &node.1)?;
    environment.push(node);
    environment.push(
        image
            .join()
            .map_err(|_| anyhow::anyhow!("building the images panicked"))??,
    );
    Ok(environment)
}

fn ci() -> Result<()> {
    let environment = setup()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The crates that must build for browsers, checked for wasm32.
    clippy_wasm32(&[
        "-p",
        "ksa-core",
        "--no-default-features",
        "--features",
        "rust-crypto",
    ])?;
    clippy_wasm32(&["-p", "ksa-wasm", "--tests"])?;
    deny()?;
    wasm::browser_tests()?;
    // The inspector page test loads the built package.
    wasm::build()?;
    build_binaries()?;
    nothing_to_rebuild()?;
    // Every test, each in a process of its own, as many at once as the
    // machine has cores (the end-to-end suites mostly wait on the control
    // plane); `.config/nextest.toml` ends a test that hangs.
    run(
        Command::new(tools::cargo_nextest_bin()?.join("cargo-nextest"))
            .args([
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--profile",
                "ci",
            ])
            .envs(environment.iter().cloned()),
    )?;
    // nextest runs no doctests.
    run(cargo()
        .args(["test", "--workspace", "--all-features", "--doc"])
        .envs(environment))?;
    fuzz::run(20)
}

/// `--seconds N` among the arguments, or `default`.
fn seconds(args: &[&str], default: u64) -> Result<u64> {
    match args.iter().position(|a| *a == "--seconds") {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .context("--seconds takes a whole number of seconds"),
    }
}

/// `cargo deny check`: licenses, bans and sources always; advisories
/// against the advisory database copy in the cargo home when one is there
/// (this machine reaches package registries only, so it is never fetched).
fn deny() -> Result<()> {
    let bin = tools::cargo_deny_bin()?;
    let mut checks = vec!["licenses", "bans", "sources"];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    let database = cargo_home.join("advisory-dbs");
    let has_database = std::fs::read_dir(&database).is_ok_and(|mut d| d.next().is_some());
    if has_database {
        checks.push("advisories");
    } else {
        eprintln!(
            "no advisory database in {}: advisories not checked (copy one there to check them)",
            database.display()
        );
    }
    // Every crate of the lock file, for every target, so that cargo-deny
    // can run offline (and never reach for an advisory database online).
    run(cargo().args(["fetch", "--locked"]))?;
    run(Command::new(bin.join("cargo-deny"))
        .args(["deny", "--offline", "check", "--hide-inclusion-graph"])
        .args(&checks)
        .env_remove("CARGO"))
}

fn clippy_wasm32(package: &[&str]) -> Result<()> {
    run(cargo().arg("clippy").args(package).args([
        "--target",
        "wasm32-unknown-unknown",
        "--",
        "-D",
        "warnings",
    ]))
}

/// A second build with nothing changed must build nothing: a build script
/// that watches a path that does not exist (or a file it writes itself)
/// makes every `cargo build` rebuild its crate. Run right after a build.
fn nothing_to_rebuild() -> Result<()> {
    let output = cargo()
        .args([
            "build",
            "-p",
            "ksa-cli",
            "-p",
            "ksa-controller",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo build")?;
    anyhow::ensure!(output.status.success(), "cargo build failed");
    let rebuilt: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact" && message["fresh"] == false)
        .map(|message| message["package_id"].to_string())
        .collect();
    anyhow::ensure!(
        rebuilt.is_empty(),
        "a build with nothing changed rebuilt {}: a build script watches a path that changes or does not exist",
        rebuilt.join(", ")
    );
    println!("a second build with nothing changed built nothing");
    Ok(())
}

/// The end-to-end tests run `ksa` and `ksa-controller` as processes.
fn build_binaries() -> Result<()> {
    run(cargo().args(["build", "-p", "ksa-cli", "-p", "ksa-controller"]))
}

fn e2e(filters: &[&str]) -> Result<()> {
    let mut environment = control_plane::environment()?.to_vec();
    environment.push(go_tool::SEAWEEDFS.environment()?);
    environment.push(go_tool::HELM.environment()?);
    environment.push(go_tool::KREW.environment()?);
    let node = node::environment()?;
    node::control_plane_images(&environment[0].1, &node.1)?;
    environment.push(node);
    environment.push(image::environment()?);
    // The inspector page test loads the built package.
    wasm::build()?;
    build_binaries()?;
    run(cargo()
        .args(["test", "-p", "ksa-tests", "--"])
        .args(filters)
        .envs(environment))
}

fn serve_inspector(args: &[&str]) -> Result<()> {
    wasm::build()?;
    run(cargo()
        .args([
            "run",
            "--quiet",
            "-p",
            "ksa-tests",
            "--bin",
            "ksa-inspector",
            "--",
        ])
        .args(args))
}

fn demo() -> Result<()> {
    let control_plane = control_plane::ensure()?;
    build_binaries()?;
    run(cargo()
        .args(["run", "--quiet", "-p", "ksa-tests", "--bin", "ksa-demo"])
        .env(control_plane::ENV, &control_plane))
}
