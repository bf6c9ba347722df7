//! What the CLI says and asks before a rotation starts, for a user
//! cluster and a kubeadm control plane alike.

use std::io::IsTerminal as _;

use ksa_core::rotation::RotationState;

use crate::Failure;

/// What a rotation changes, for messages (both modes).
pub fn describe(started: &RotationState) -> String {
    let key = started
        .changes_key()
        .then(|| format!("key version {}", started.key_version()));
    let issuer = started
        .issuer()
        .filter(|_| started.changes_issuer())
        .map(|change| format!("issuer {} to {}", change.from, change.to));
    key.into_iter()
        .chain(issuer)
        .collect::<Vec<_>>()
        .join(" and ")
}

pub fn confirm(explanation: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "rotate asks for confirmation and there is no terminal; pass --skip-prompt to go ahead (nothing was changed)"
        )));
    }
    eprintln!("{explanation}");
    // dialoguer's y/N on stderr: no by default, an answer ends with Enter.
    let answer = dialoguer::Confirm::new()
        .with_prompt("Proceed?")
        .default(false)
        .wait_for_newline(true)
        .interact_on_opt(&dialoguer::console::Term::stderr());
    match answer {
        Ok(Some(true)) => Ok(()),
        Ok(_) | Err(_) => Err(Failure::bad_input(anyhow::anyhow!(
            "not confirmed; nothing was changed"
        ))),
    }
}
