//! The documentation agrees with itself: README's "A first rotation" is
//! the install guide's commands (which `tests/tests/helm.rs` runs as
//! written), and every relative link of README.md and docs/ reaches a file
//! of the repository.

use std::path::Path;

use anyhow::{Context as _, Result, ensure};
use ksa_tests::readme::workspace;

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(workspace().join(path)).with_context(|| format!("reading {path}"))
}

/// The commands of the `sh` blocks of `text` (a line continued with `\`
/// joined, comments and blank lines dropped, runs of spaces made one).
fn commands(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for block in text.split("```sh\n").skip(1) {
        let Some((code, _)) = block.split_once("\n```") else {
            continue;
        };
        let joined = code.replace("\\\n", " ");
        for line in joined.lines() {
            let command = line.split(" #").next().unwrap_or_default();
            let command = command.split_whitespace().collect::<Vec<_>>().join(" ");
            if !command.is_empty() && !command.starts_with('#') {
                found.push(command);
            }
        }
    }
    found
}

/// The section of `text` under the heading `## title`.
fn section<'a>(text: &'a str, title: &str) -> Option<&'a str> {
    text.split("\n## ")
        .find(|s| s.starts_with(&format!("{title}\n")))
}

#[test]
fn the_readme_first_rotation_is_the_install_guide_in_short() -> Result<()> {
    let readme = read("README.md")?;
    let short = commands(
        section(&readme, "A first rotation").context("README has no \"A first rotation\"")?,
    );
    ensure!(
        short.len() >= 5,
        "README's first rotation has too few commands: {short:?}"
    );
    // The guide names the cluster through variables its first line sets.
    let guide: Vec<String> = commands(&read("docs/install.md")?)
        .into_iter()
        .map(|c| {
            c.replace("$NS", "user-cluster-1")
                .replace("$NAME", "user-cluster-1")
        })
        .collect();
    let missing: Vec<&String> = short.iter().filter(|c| !guide.contains(c)).collect();
    ensure!(
        missing.is_empty(),
        "README's \"A first rotation\" runs commands docs/install.md does not (so no test runs \
         them): {missing:#?}\nthe guide's: {guide:#?}"
    );
    Ok(())
}

#[test]
fn every_relative_link_of_the_docs_reaches_a_file() -> Result<()> {
    let root = workspace();
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page)?;
        let dir = page.parent().unwrap_or(Path::new("."));
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split_once(')'))
        {
            let link = target.0;
            if link.starts_with("http") || link.starts_with('#') || link.starts_with("mailto:") {
                continue;
            }
            let file = link.split('#').next().unwrap_or_default();
            if !dir.join(file).exists() {
                broken.push(format!("{}: {link}", page.display()));
            }
        }
    }
    ensure!(broken.is_empty(), "links to nothing: {broken:#?}");
    Ok(())
}
