//! The user cluster: how to reach it, and what its API servers are doing.
//!
//! Every step is confirmed by asking each API server instance itself (from
//! the `kubernetes` EndpointSlices): which keys its `/openid/v1/jwks` serves,
//! and which key signs a fresh TokenRequest it answers.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksa_core::jwk::parse_jwks;
use ksa_core::key::PublicKey;
use ksa_core::rotation::{ApiServerView, Observed, Policy, RotationState};
use ksa_core::{KeyId, KeyVersion};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

use crate::api::ClusterRef;
use crate::error::{Error, Result};
use crate::kubeconfig::{InlineKubeconfig, KubeconfigProblem};
use crate::refresh;

/// The namespace and name of the service account whose fresh tokens tell
/// which key an API server signs with.
pub const PROBE_NAMESPACE: &str = "kube-system";
pub const PROBE_ACCOUNT: &str = "ksa-rotation-probe";

/// A connection to the user cluster.
#[derive(Clone)]
pub struct TargetCluster {
    pub client: kube::Client,
    config: kube::Config,
}

impl std::fmt::Debug for TargetCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetCluster")
            .field("url", &self.config.cluster_url)
            .finish()
    }
}

impl TargetCluster {
    pub fn new(client: kube::Client, config: kube::Config) -> TargetCluster {
        TargetCluster { client, config }
    }

    /// The user cluster a rotation names, or the controller's own.
    ///
    /// The kubeconfig Secret is written by whoever may write Secrets in the
    /// rotation's namespace: it goes through [`InlineKubeconfig`], which
    /// refuses anything that would run a command, read a file or
    /// impersonate, and nothing of it reaches kube-rs but its checked
    /// inline fields. Errors name fields, never the Secret's content.
    pub async fn connect(
        own: &TargetCluster,
        admin: &kube::Client,
        namespace: &str,
        cluster: Option<&ClusterRef>,
    ) -> Result<TargetCluster> {
        let Some(cluster) = cluster else {
            return Ok(own.clone());
        };
        let secret_ref = &cluster.kubeconfig_secret;
        let name = format!("{namespace}/{}", secret_ref.name);
        let refused = |problem| Error::Kubeconfig {
            secret: name.clone(),
            problem,
        };
        let secret = Api::<Secret>::namespaced(admin.clone(), namespace)
            .get(&secret_ref.name)
            .await?;
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&secret_ref.key))
            .ok_or_else(|| {
                refused(KubeconfigProblem::MissingDataKey {
                    key: secret_ref.key.clone(),
                })
            })?;
        let config = InlineKubeconfig::parse(&bytes.0)
            .map_err(refused)?
            .to_config();
        let client =
            kube::Client::try_from(config.clone()).map_err(|_| Error::KubeconfigClient {
                secret: name.clone(),
            })?;
        Ok(TargetCluster { client, config })
    }

    /// The issuer the API servers advertise in OIDC discovery.
    pub async fn issuer(&self) -> Result<Option<String>> {
        let request = http::Request::get("/.well-known/openid-configuration").body(Vec::new())?;
        let Ok(text) = self.client.request_text(request).await else {
            return Ok(None);
        };
        let discovery: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::BadResponse {
                what: "OIDC discovery document",
                detail: e.to_string(),
            })?;
        Ok(discovery["issuer"].as_str().map(str::to_owned))
    }

    /// The URL of every API server instance.
    pub async fn api_servers(&self) -> Result<Vec<http::Uri>> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "default");
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
            .await?;
        let mut urls = BTreeSet::new();
        for slice in list {
            let port = slice
                .ports
                .unwrap_or_default()
                .iter()
                .find(|p| p.name.as_deref() == Some("https"))
                .and_then(|p| p.port)
                .unwrap_or(443);
            for endpoint in slice.endpoints {
                if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for address in endpoint.addresses {
                    let host = if address.contains(':') {
                        format!("[{address}]")
                    } else {
                        address
                    };
                    urls.insert(format!("https://{host}:{port}"));
                }
            }
        }
        if urls.is_empty() {
            return Ok(vec![self.config.cluster_url.clone()]);
        }
        urls.into_iter()
            .map(|u| {
                u.parse()
                    .map_err(|e: http::uri::InvalidUri| Error::BadResponse {
                        what: "EndpointSlice address",
                        detail: e.to_string(),
                    })
            })
            .collect()
    }

    /// Makes sure the probe service account exists.
    pub async fn ensure_probe_account(&self) -> Result<()> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), PROBE_NAMESPACE);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(PROBE_ACCOUNT.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// What the step `state` is at needs observed in the user cluster (every
    /// field of [`Observed`] but `stored_keys`, which the caller's key store
    /// knows): the API servers for Trust, Sign and Retire; stale legacy and
    /// bound tokens for RefreshTokens.
    pub async fn observe(
        &self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        state: &RotationState,
        policy: &Policy,
    ) -> Result<Observed> {
        let mut observed = Observed::default();
        let observation = state.observation();
        if observation.api_servers {
            observed.api_servers = self.observe_api_servers(keys, observation.signing).await?;
        }
        // Without the new key in the store nothing can be counted; the
        // driver refuses the state for its missing key.
        if observation.tokens
            && let Some(new) = keys.get(&state.key_version())
        {
            observed.stale_legacy_tokens =
                Some(refresh::count_stale_legacy_secrets(&self.client, new.kid()).await?);
            let since = state.step_started_at().unwrap_or_else(jiff::Timestamp::now);
            if let Some(bound) = refresh::observe_bound_tokens(
                &self.client,
                state.key_version(),
                &policy.bound_token_refresh,
                since,
                policy.clock_skew,
            )
            .await?
            {
                observed.stale_bound_tokens = Some(bound.stale);
                observed.bound_token_holders = bound.holders;
            }
        }
        Ok(observed)
    }

    /// What every API server instance accepts and signs with, in versions
    /// of the key store. Unknown kids are left out.
    pub async fn observe_api_servers(
        &self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        want_signer: bool,
    ) -> Result<Vec<ApiServerView>> {
        let versions: BTreeMap<&KeyId, KeyVersion> =
            keys.iter().map(|(v, k)| (k.kid(), *v)).collect();
        if want_signer {
            self.ensure_probe_account().await?;
        }
        let mut views = Vec::new();
        for url in self.api_servers().await? {
            let mut config = self.config.clone();
            config.cluster_url = url.clone();
            let client = kube::Client::try_from(config)?;
            let request = http::Request::get("/openid/v1/jwks").body(Vec::new())?;
            let mut view = ApiServerView {
                name: url.to_string(),
                ..ApiServerView::default()
            };
            // An instance that does not answer confirms nothing.
            let Ok(text) = client.request_text(request).await else {
                views.push(view);
                continue;
            };
            if let Ok(trusted) = parse_jwks(&text) {
                view.accepts = trusted
                    .iter()
                    .filter_map(|t| versions.get(&t.kid).copied())
                    .collect();
            }
            if want_signer {
                view.signs_with = fresh_token_kid(&client)
                    .await
                    .ok()
                    .and_then(|kid| versions.get(&kid).copied());
            }
            views.push(view);
        }
        Ok(views)
    }
}

/// Requests a fresh token from one API server and returns its kid.
async fn fresh_token_kid(client: &kube::Client) -> Result<KeyId> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), PROBE_NAMESPACE);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let response = api
        .create_token_request(PROBE_ACCOUNT, &PostParams::default(), &request)
        .await?;
    let token = response.status.map(|s| s.token).unwrap_or_default();
    let decoded = ksa_core::token::decode(&token).map_err(|e| Error::BadResponse {
        what: "fresh TokenRequest token",
        detail: e.to_string(),
    })?;
    decoded
        .header
        .kid
        .map(KeyId::new)
        .ok_or_else(|| Error::BadResponse {
            what: "fresh TokenRequest token",
            detail: "it has no kid".into(),
        })
}
