//! The harness playing a hosted control plane: the API server "pod" mounts
//! the key Secret the controller writes, and is restarted with it when it
//! changes, as a Deployment roll-out would.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use ksa_core::key::parse_pem;
use kube::api::Api;
use tokio::sync::Mutex;

use crate::{ApiServerKeys, ControlPlane};

/// A running roll-out loop; stops when dropped.
#[derive(Debug)]
pub struct HostedApiServer {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostedApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostedApiServer {
    /// Watches `namespace/secret` (keys `sa.key`, `sa.pub`) and restarts
    /// kube-apiserver whenever it names a different key set.
    pub fn spawn(
        plane: Arc<Mutex<ControlPlane>>,
        client: kube::Client,
        namespace: &str,
        secret: &str,
    ) -> HostedApiServer {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let secret = secret.to_owned();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Ok(Some(found)) = api.get_opt(&secret).await else {
                    continue;
                };
                let Some(keys) = keys_of(&found) else {
                    continue;
                };
                let mut plane = plane.lock().await;
                let same = plane.keys().is_some_and(|running| {
                    running.signing.kid() == keys.signing.kid()
                        && running
                            .public
                            .iter()
                            .map(|k| k.kid())
                            .eq(keys.public.iter().map(|k| k.kid()))
                });
                if !same && let Err(error) = plane.restart_apiserver(keys).await {
                    eprintln!("hosted control plane: restart failed: {error:#}");
                }
            }
        });
        HostedApiServer { task }
    }
}

fn keys_of(secret: &Secret) -> Option<ApiServerKeys> {
    let data = secret.data.as_ref()?;
    let signing = parse_pem(&data.get("sa.key")?.0)
        .ok()?
        .private_keys()
        .next()?
        .clone();
    let public = parse_pem(&data.get("sa.pub")?.0)
        .ok()?
        .public_keys()
        .cloned()
        .collect();
    Some(ApiServerKeys { signing, public })
}
