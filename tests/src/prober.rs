//! The prober: while a rotation runs, it keeps requesting tokens and
//! reviewing them (TokenReview), and reviews again every token issued
//! earlier and the legacy Secret token. Every review is sent to every API
//! server instance, since a client may reach any of them: a token one
//! instance rejects is rejected. It counts every token that should have
//! been accepted and was not: the number that must stay zero.
//!
//! "Should be accepted": a token whose key version the rotation has not
//! begun to retire and, when ksa has changed the issuer, whose issuer it
//! has not begun to retire either (the rotation's state, from the rotation
//! resource or a kubeadm control plane's state file, says which: until
//! Retire every accepted issuer, from Retire on the signing one only; so a
//! token taken before an issuer rotation stays protected until the
//! rotation has refreshed tokens and retires its issuer). Legacy tokens
//! are re-read from their Secret, since re-minting replaces them; they
//! carry the legacy issuer, which no issuer rotation touches.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use ksa_core::rotation::{RotationState, Step};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::LABEL_KEY_VERSION;
use kube::api::{Api, ListParams};
use tokio::sync::Mutex;

use crate::InstanceClient;

/// What the prober saw.
#[derive(Debug, Default, Clone)]
pub struct ProbeStats {
    pub tokens_issued: u64,
    /// Reviews answered, one per instance asked.
    pub reviews: u64,
    /// Tokens that should have been accepted and were rejected, described.
    pub wrongly_rejected: Vec<String>,
    /// Requests that failed because the API server was restarting.
    pub unavailable: u64,
}

#[derive(Debug)]
pub struct Prober {
    stats: Arc<Mutex<ProbeStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where to probe.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub namespace: String,
    pub service_account: String,
    pub legacy_secret: String,
    pub rotation: RotationSource,
}

/// Where the rotation's state and its keys' kids are read.
#[derive(Debug, Clone)]
pub enum RotationSource {
    /// A `KSASigningKeyRotation` and its key store Secrets.
    Resource { namespace: String, name: String },
    /// A kubeadm control plane: `ksa-rotation.json` and `sa-vN.pub`.
    StateFile { pki_dir: PathBuf },
}

impl Prober {
    /// Requests tokens and reads the rotation through `client`; sends
    /// every review to each of `instances`.
    pub fn spawn(
        client: kube::Client,
        instances: Vec<InstanceClient>,
        target: ProbeTarget,
    ) -> Prober {
        Prober::spawn_with_admin(client.clone(), client, instances, target)
    }

    /// Like [`Prober::spawn`], for a user cluster apart from the admin
    /// cluster: requests tokens and reads the legacy Secret through
    /// `client` (the user cluster), and reads the rotation and its key
    /// store through `admin`.
    pub fn spawn_with_admin(
        client: kube::Client,
        admin: kube::Client,
        instances: Vec<InstanceClient>,
        target: ProbeTarget,
    ) -> Prober {
        let stats = Arc::new(Mutex::new(ProbeStats::default()));
        let shared = stats.clone();
        let task = tokio::spawn(async move {
            let mut tokens: Vec<String> = Vec::new();
            let mut kid_versions: BTreeMap<String, u64> = BTreeMap::new();
            let probe = Probe {
                client: &client,
                admin: &admin,
                instances: &instances,
                target: &target,
                stats: &shared,
            };
            loop {
                probe.once(&mut tokens, &mut kid_versions).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        Prober { stats, task }
    }

    pub async fn stats(&self) -> ProbeStats {
        self.stats.lock().await.clone()
    }
}

/// Whose tokens must be accepted now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Protected {
    /// The key versions.
    versions: Vec<u64>,
    /// The issuers; `None` when ksa never changed the issuer (any `iss`
    /// the API servers were started with is fine then).
    issuers: Option<Vec<String>>,
}

impl Protected {
    /// Whether a token of key version `version` with issuer `iss` must be
    /// accepted.
    fn covers(&self, version: Option<u64>, iss: &str, is_legacy: bool) -> bool {
        let issuer_kept = is_legacy
            || self
                .issuers
                .as_ref()
                .is_none_or(|issuers| issuers.iter().any(|i| i == iss));
        version.is_some_and(|v| self.versions.contains(&v)) && issuer_kept
    }
}

/// The issuers whose tokens must be accepted in `state`: until Retire
/// every accepted one, from Retire on the signing one (as with key
/// versions); `None` when ksa never changed the issuer.
fn protected_issuers(state: &RotationState) -> Option<Vec<String>> {
    let issuers = state.issuers()?;
    Some(if state.step() == Step::Retire {
        vec![issuers.signing_issuer().to_string()]
    } else {
        issuers
            .accepted_issuers()
            .iter()
            .map(ToString::to_string)
            .collect()
    })
}

/// The key versions and issuers whose tokens must be accepted now.
async fn protected(client: &kube::Client, target: &ProbeTarget) -> Option<Protected> {
    let (namespace, name) = match &target.rotation {
        RotationSource::Resource { namespace, name } => (namespace, name),
        RotationSource::StateFile { pki_dir } => {
            let bytes = std::fs::read(pki_dir.join("ksa-rotation.json")).ok()?;
            let state: RotationState = serde_json::from_slice(&bytes).ok()?;
            let versions = if state.step() == Step::Retire {
                vec![state.key_version().get()]
            } else {
                let versions = state.versions();
                versions
                    .public_key_versions()
                    .iter()
                    .map(|v| v.get())
                    .collect()
            };
            return Some(Protected {
                versions,
                issuers: protected_issuers(&state),
            });
        }
    };
    let api: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), namespace);
    let Ok(Some(rotation)) = api.get_opt(name).await else {
        return None;
    };
    // The issuers as the resource's state records them (the status's key
    // numbers below are the confirmed ones, as before).
    let issuers = rotation
        .state()
        .ok()
        .and_then(|state| protected_issuers(&state));
    let status = rotation.status?;
    let versions = if status.step == ksa_core::rotation::Step::Retire {
        vec![status.key_version]
    } else {
        status.public_key_versions
    };
    Some(Protected { versions, issuers })
}

async fn review(client: &kube::Client, token: &str) -> Result<bool, kube::Error> {
    Ok(crate::cluster::review_token(client, token).await?.is_some())
}

/// Where one round of probing reads, reviews and counts.
struct Probe<'a> {
    client: &'a kube::Client,
    /// Where the rotation resource and its key store are read.
    admin: &'a kube::Client,
    instances: &'a [InstanceClient],
    target: &'a ProbeTarget,
    stats: &'a Mutex<ProbeStats>,
}

fn kid(token: &str) -> String {
    ksa_core::token::decode(token)
        .ok()
        .and_then(|d| d.header.kid)
        .unwrap_or_default()
}

fn iss(token: &str) -> String {
    ksa_core::token::decode(token)
        .ok()
        .and_then(|d| d.claims.iss)
        .unwrap_or_default()
}

/// Learns kid -> version from the key store while the keys exist.
async fn learn_kids(
    client: &kube::Client,
    source: &RotationSource,
    kid_versions: &mut BTreeMap<String, u64>,
) {
    match source {
        RotationSource::Resource { namespace, .. } => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let Ok(list) = secrets
                .list(&ListParams::default().labels(LABEL_KEY_VERSION))
                .await
            else {
                return;
            };
            for secret in list {
                let version = secret
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_KEY_VERSION))
                    .and_then(|v| v.parse().ok());
                let kid = secret
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("ksa.dev/kid"))
                    .cloned();
                if let (Some(version), Some(kid)) = (version, kid) {
                    kid_versions.insert(kid, version);
                }
            }
        }
        RotationSource::StateFile { pki_dir } => {
            let Ok(entries) = std::fs::read_dir(pki_dir) else {
                return;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(version) = name
                    .strip_prefix("sa-v")
                    .and_then(|n| n.strip_suffix(".pub"))
                    .and_then(|n| n.parse().ok())
                else {
                    continue;
                };
                let key = std::fs::read(entry.path())
                    .ok()
                    .and_then(|pem| ksa_core::key::parse_pem(&pem).ok())
                    .and_then(|keys| keys.public_keys().next().cloned());
                if let Some(key) = key {
                    kid_versions.insert(key.kid().as_str().to_owned(), version);
                }
            }
        }
    }
}

impl Probe<'_> {
    async fn once(&self, tokens: &mut Vec<String>, kid_versions: &mut BTreeMap<String, u64>) {
        let (client, admin, target, stats) = (self.client, self.admin, self.target, self.stats);
        learn_kids(admin, &target.rotation, kid_versions).await;
        let fresh = crate::cluster::request_token(
            client,
            &target.namespace,
            &target.service_account,
            Vec::new(),
            3600,
        )
        .await;
        match fresh {
            Ok(token) => {
                tokens.push(token);
                stats.lock().await.tokens_issued += 1;
            }
            Err(_) => stats.lock().await.unavailable += 1,
        }
        // Keep the earliest tokens (from before the rotation) and the latest.
        if tokens.len() > 40 {
            tokens.drain(10..tokens.len() - 30);
        }
        let legacy: Api<Secret> = Api::namespaced(client.clone(), &target.namespace);
        let legacy_token = legacy
            .get_opt(&target.legacy_secret)
            .await
            .ok()
            .flatten()
            .and_then(|s| {
                s.data?
                    .get("token")
                    .map(|t| String::from_utf8_lossy(&t.0).into_owned())
            });
        let candidates = tokens
            .iter()
            .cloned()
            .map(|t| (t, false))
            .chain(legacy_token.map(|t| (t, true)));
        for (token, is_legacy) in candidates.collect::<Vec<_>>() {
            let Some(before) = protected(admin, target).await else {
                continue;
            };
            let version = kid_versions.get(&kid(&token)).copied();
            let issuer = iss(&token);
            let must_accept = before.covers(version, &issuer, is_legacy);
            // Every instance at once, so that a round takes as long with
            // three as with one.
            let verdicts = futures::future::join_all(
                self.instances
                    .iter()
                    .map(|instance| review(&instance.client, &token)),
            )
            .await;
            let mut rejected_by = Vec::new();
            {
                let mut stats = stats.lock().await;
                for (instance, verdict) in self.instances.iter().zip(verdicts) {
                    match verdict {
                        Ok(accepted) => {
                            stats.reviews += 1;
                            if !accepted {
                                rejected_by.push(instance.url.as_str());
                            }
                        }
                        Err(_) => stats.unavailable += 1,
                    }
                }
            }
            if rejected_by.is_empty() || !must_accept {
                continue;
            }
            // Re-check: the rotation may have moved on, or the legacy
            // Secret been re-minted, between reading and reviewing.
            let Some(after) = protected(admin, target).await else {
                continue;
            };
            let still_protected = after.covers(version, &issuer, is_legacy);
            let replaced = is_legacy
                && legacy
                    .get_opt(&target.legacy_secret)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.data?.get("token").map(|t| t.0 != token.as_bytes()))
                    .unwrap_or(false);
            if still_protected && !replaced {
                stats.lock().await.wrongly_rejected.push(format!(
                    "{} token of key version {version:?} and issuer {issuer} rejected by {} while versions {:?} and issuers {} are accepted",
                    if is_legacy { "legacy" } else { "bound" },
                    rejected_by.join(" and "),
                    after.versions,
                    after
                        .issuers
                        .as_ref()
                        .map_or_else(|| "as started".to_owned(), |i| format!("{i:?}")),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: &str) -> RotationState {
        serde_json::from_value(serde_json::json!({
            "keyVersion": 1,
            "step": step,
            "issuer": {"from": "https://a.example", "to": "https://b.example"},
            "changesKey": false,
        }))
        .expect("an issuer rotation state")
    }

    #[test]
    fn a_token_of_the_old_issuer_is_protected_until_retire() {
        let (a, b) = ("https://a.example", "https://b.example");
        for (step, protects_a) in [
            ("Trust", true),
            ("Sign", true),
            ("RefreshTokens", true),
            ("Retire", false),
            ("Completed", false),
        ] {
            let protected = Protected {
                versions: vec![1],
                issuers: protected_issuers(&state(step)),
            };
            assert_eq!(protected.covers(Some(1), a, false), protects_a, "{step}");
            // B is protected as soon as it is accepted: from Sign on (at
            // Trust the confirmed issuers are still A's alone).
            assert_eq!(
                protected.covers(Some(1), b, false),
                step != "Trust",
                "{step}"
            );
            // Legacy tokens carry the legacy issuer, which no issuer
            // rotation touches; an unknown key version is never protected.
            assert!(protected.covers(Some(1), "kubernetes/serviceaccount", true));
            assert!(!protected.covers(None, b, false));
        }
    }

    #[test]
    fn without_an_issuer_change_any_issuer_is_protected() {
        let settled: RotationState =
            serde_json::from_value(serde_json::json!({"keyVersion": 1, "step": "Completed"}))
                .expect("a settled state");
        let protected = Protected {
            versions: vec![1],
            issuers: protected_issuers(&settled),
        };
        assert_eq!(protected.issuers, None);
        assert!(protected.covers(Some(1), "https://whatever.example", false));
        assert!(!protected.covers(Some(2), "https://whatever.example", false));
    }
}
