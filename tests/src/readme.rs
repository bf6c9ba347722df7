//! The install guide (docs/install.md) as the end-to-end tests run it: its shell
//! blocks, run as an operator would paste them, with the workspace's `ksa`,
//! the control plane's kubectl and `helm` (built from its Go module by
//! `cargo xtask helm`, found through `KSA_HELM_DIR`) on the PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail, ensure};

use crate::ksa_binary;

/// The workspace's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// `helm`, or an error that says how to build it.
pub fn helm() -> Result<PathBuf> {
    let dir = std::env::var_os("KSA_HELM_DIR")
        .map(PathBuf::from)
        .context(
            "KSA_HELM_DIR is not set: the chart tests need helm. Run them with `cargo xtask e2e`, \
         which builds it from the Go module pinned in xtask/helm/ and sets it (or `cargo xtask \
         helm`, which prints the directory)",
        )?;
    let helm = dir.join("helm");
    ensure!(
        helm.is_file(),
        "{} has no helm; run `cargo xtask helm` to build it",
        dir.display()
    );
    Ok(helm)
}

/// A `helm` command that reads and writes none of the user's repositories,
/// configuration or cache (its homes under the temporary directory).
pub fn helm_command() -> Result<std::process::Command> {
    let mut command = std::process::Command::new(helm()?);
    let home = std::env::temp_dir();
    command
        .env("HELM_CONFIG_HOME", home.join("ksa-helm-config"))
        .env("HELM_CACHE_HOME", home.join("ksa-helm-cache"))
        .env("HELM_DATA_HOME", home.join("ksa-helm-data"));
    Ok(command)
}

/// The shell blocks of the install guide (docs/install.md, which README's
/// "A first rotation" sums up), in order.
pub fn readme_install_blocks() -> Result<Vec<String>> {
    let section = std::fs::read_to_string(workspace().join("docs/install.md"))
        .context("reading docs/install.md")?;
    Ok(section
        .split("```sh\n")
        .skip(1)
        .filter_map(|block| block.split_once("\n```").map(|(code, _)| code.to_owned()))
        .collect())
}

/// The one Install block that holds `marker`.
pub fn install_block<'a>(blocks: &'a [String], marker: &str) -> Result<&'a str> {
    let mut found = blocks.iter().filter(|b| b.contains(marker));
    match (found.next(), found.next()) {
        (Some(block), None) => Ok(block),
        _ => bail!("docs/install.md must have exactly one block with `{marker}`"),
    }
}

/// Runs a block of the README in a shell, as an operator would paste it:
/// in `dir`, with kubectl (1.36.3, built with the control plane), helm
/// and this workspace's `ksa` and `kubectl-ksa` first on the PATH, and
/// `KUBECONFIG` the admin kubeconfig. `HOME` is `dir`, so that no
/// user's kubectl or helm configuration is read. With `answer`, the
/// block runs on a terminal (`script`) that is given `answer` as typed
/// input, for a command that asks.
pub fn run_readme_block(dir: &Path, block: &str, answer: Option<&str>) -> Result<String> {
    let ksa_dir = ksa_binary("ksa")?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let kubectl_dir = crate::control_plane_binaries()?;
    let helm_dir = helm()?.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = std::env::join_paths([kubectl_dir, helm_dir, ksa_dir].into_iter().chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let script = format!("set -euo pipefail\nset -x\n{block}");
    let mut command = match answer {
        None => {
            let mut bash = Command::new("bash");
            bash.args(["-c", &script]).stdin(Stdio::null());
            bash
        }
        Some(_) => {
            let file = dir.join("block.sh");
            std::fs::write(&file, &script)?;
            let mut on_terminal = Command::new("script");
            on_terminal
                .args(["--quiet", "--return", "--command"])
                .arg(format!("bash {}", file.display()))
                .arg("/dev/null")
                .stdin(Stdio::piped());
            on_terminal
        }
    };
    let mut child = command
        .current_dir(dir)
        .env("PATH", path)
        .env("HOME", dir)
        .env("KUBECONFIG", dir.join("admin.kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting bash")?;
    if let (Some(answer), Some(mut stdin)) = (answer, child.stdin.take()) {
        use std::io::Write as _;
        stdin.write_all(answer.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{printed}");
    ensure!(
        out.status.success(),
        "the README block failed ({}):\n{block}\n---\n{printed}",
        out.status
    );
    Ok(printed)
}
