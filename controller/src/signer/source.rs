//! Where a signer reads its key set, and how it notices a change without a
//! restart: a Secret followed with a watch, or a directory read every
//! `poll` (kubelet updates mounted Secrets by swapping symlinks, and a read
//! of the contents sees that as well as an edit in place).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::watch;

use super::keys::SignerKeys;

/// The key set being served; `None` until the first one loads.
pub type Current = watch::Sender<Option<Arc<SignerKeys>>>;

pub enum KeySource {
    /// `sa.key` and `sa.pub` in a Secret: the one the controller publishes
    /// (`<rotation>-apiserver-keys`).
    Secret {
        client: kube::Client,
        namespace: String,
        name: String,
    },
    /// `sa.key` and `sa.pub` in a directory (a static control plane's pki
    /// directory, or a mounted Secret).
    Directory { dir: PathBuf, poll: Duration },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Secret {
                namespace, name, ..
            } => write!(f, "Secret {namespace}/{name}"),
            KeySource::Directory { dir, .. } => write!(f, "directory {}", dir.display()),
        }
    }
}

impl KeySource {
    /// Follows the source forever, offering every new key set to `current`.
    pub async fn follow(self, current: Current) {
        match self {
            KeySource::Secret {
                client,
                namespace,
                name,
            } => {
                let api = kube::Api::<Secret>::namespaced(client, &namespace);
                let mut secrets = watcher(api, watch_config(&name))
                    .default_backoff()
                    .applied_objects()
                    .boxed();
                while let Some(event) = secrets.next().await {
                    match event {
                        Ok(secret) => {
                            let data = secret.data.unwrap_or_default();
                            let file = |key: &str| data.get(key).map(|b| b.0.clone());
                            offer(&current, file("sa.key"), file("sa.pub"), &name);
                        }
                        Err(error) => {
                            tracing::warn!(%error, secret = %format!("{namespace}/{name}"), "watch failed; retrying");
                        }
                    }
                }
            }
            KeySource::Directory { dir, poll } => {
                let mut last = None;
                loop {
                    let read = |file: &str| std::fs::read(dir.join(file)).ok();
                    let files = (read("sa.key"), read("sa.pub"));
                    if last.as_ref() != Some(&files) {
                        offer(
                            &current,
                            files.0.clone(),
                            files.1.clone(),
                            &dir.display().to_string(),
                        );
                        last = Some(files);
                    }
                    tokio::time::sleep(poll).await;
                }
            }
        }
    }
}

/// The watch of the key Secret: that one name, by field selector, so that
/// its list and watch are requests for that name, which a Role whose rule
/// names only that Secret (`resourceNames`) allows; without the selector
/// they would need every Secret of the namespace.
fn watch_config(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

/// Loads a key set and serves it when it differs from the current one; a
/// bad one is logged and the current one kept.
fn offer(current: &Current, sa_key: Option<Vec<u8>>, sa_pub: Option<Vec<u8>>, origin: &str) {
    let (Some(sa_key), Some(sa_pub)) = (sa_key, sa_pub) else {
        tracing::warn!(
            origin,
            "sa.key or sa.pub is missing; keeping the current key set"
        );
        return;
    };
    match SignerKeys::from_pem(&sa_key, &sa_pub, SystemTime::now()) {
        Ok(keys) => {
            current.send_if_modified(|served| {
                if served.as_ref().is_some_and(|s| s.same_keys(&keys)) {
                    return false;
                }
                tracing::info!(
                    origin,
                    signing = %keys.signing_kid(),
                    trusted = ?keys.trusted_kids(),
                    "serving a new key set"
                );
                *served = Some(Arc::new(keys));
                true
            });
        }
        Err(error) => {
            tracing::warn!(origin, %error, "refusing a key set; keeping the current one");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_key_secret_is_watched_by_its_name_alone() {
        let config = super::watch_config("user-cluster-1-apiserver-keys");
        assert_eq!(
            config.field_selector.as_deref(),
            Some("metadata.name=user-cluster-1-apiserver-keys")
        );
        assert_eq!(config.label_selector, None);
    }
}
