//! The harness playing a hosted control plane: the API server "pods" mount
//! the key Secret the controller writes, and are restarted with it when it
//! changes, one at a time, each ready before the next, as a Deployment
//! roll-out would. Like a Deployment it rolls out the newest Secret: the
//! Secret is read again before each instance is restarted.

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
    /// Watches `namespace/secret` (keys `sa.key`, `sa.pub`) and rolls it
    /// out to the kube-apiserver instances whenever it names a different
    /// key set.
    pub fn spawn(
        plane: Arc<Mutex<ControlPlane>>,
        client: kube::Client,
        namespace: &str,
        secret: &str,
    ) -> HostedApiServer {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let secret = secret.to_owned();
        let task = tokio::spawn(async move {
            let mut rolling = false;
            loop {
                if !rolling {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                rolling = false;
                let Ok(Some(found)) = api.get_opt(&secret).await else {
                    continue;
                };
                let Some(keys) = keys_of(&found) else {
                    continue;
                };
                match plane.lock().await.roll_one(&keys).await {
                    Ok(restarted) => rolling = restarted,
                    Err(error) => eprintln!("hosted control plane: restart failed: {error:#}"),
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
