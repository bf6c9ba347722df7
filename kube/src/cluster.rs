//! The user cluster: how to reach it, and what its API servers are doing.
//!
//! Every step is confirmed by asking each API server instance itself (from
//! the `kubernetes` EndpointSlices), through [`crate::probe`]: which keys its
//! `/openid/v1/jwks` serves, which key and issuer a fresh TokenRequest it
//! answers carries, which issuer its discovery document names, and whether
//! its TokenReview accepts a token carrying an issuer.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksa_core::crypto::SigningKey;
use ksa_core::instances::{Announcement, Instance, instances};
use ksa_core::jwk::parse_jwks;
use ksa_core::key::PublicKey;
use ksa_core::rotation::{ApiServerView, Observation, Observed, Policy, RotationState};
use ksa_core::{KeyId, KeyVersion};
use kube::api::{Api, ListParams};

use crate::api::ClusterRef;
use crate::error::{Error, Result};
use crate::kubeconfig::{InlineKubeconfig, KubeconfigProblem};
use crate::{probe, refresh};

/// How long one request to one API server instance may take to connect,
/// or to be answered (none of them watches).
pub const INSTANCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The label of every kube-apiserver identity Lease.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity=kube-apiserver";

/// An identity Lease's peer address, only as an `ip:port` (IPv6 in
/// brackets): anything else (a host name, a path, a text of any length)
/// counts as no address, so it is never dialled nor copied into a status.
fn peer_address(text: &str) -> Option<String> {
    text.parse::<std::net::SocketAddr>()
        .ok()
        .map(|address| address.to_string())
}

/// Why an instance that announces itself with no address is not asked.
const UNADDRESSABLE: &str = "it announces itself with no address, and the kubernetes \
     EndpointSlice does not list enough instances to account for it; if an instance is gone for \
     good, delete its identity Lease";

/// What to do about an instance that does not answer and will not again.
const GONE_FOR_GOOD: &str =
    "if it is gone for good, delete its identity Lease (kubectl -n kube-system delete lease NAME)";

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

    /// The API server URL the cluster is reached at, for errors.
    pub fn url(&self) -> &http::Uri {
        &self.config.cluster_url
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

    /// The ready addresses (`host:port`) of the `kubernetes` EndpointSlices.
    async fn listed_instances(&self) -> Result<Vec<String>> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "default");
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
            .await?;
        let mut listed = BTreeSet::new();
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
                    listed.insert(format!("{host}:{port}"));
                }
            }
        }
        Ok(listed.into_iter().collect())
    }

    /// The identity Leases every kube-apiserver keeps in `kube-system`
    /// (see [`ksa_core::instances`]). Reading them is not optional: an
    /// instance missing from the EndpointSlice is found only there.
    async fn announced_instances(&self) -> Result<Vec<Announcement>> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-system");
        let list = leases
            .list(&ListParams::default().labels(IDENTITY_LABEL))
            .await
            .map_err(|error| match &error {
                kube::Error::Api(status) if status.code == 403 => Error::IdentityLeasesForbidden,
                _ => Error::from(error),
            })?;
        Ok(list
            .into_iter()
            .map(|lease| {
                let spec = lease.spec.unwrap_or_default();
                Announcement {
                    lease: lease.metadata.name.unwrap_or_default(),
                    host: lease
                        .metadata
                        .labels
                        .and_then(|mut labels| labels.remove("kubernetes.io/hostname")),
                    address: lease
                        .metadata
                        .annotations
                        .and_then(|mut a| a.remove("kubernetes.io/peer-advertise-address"))
                        .and_then(|address| peer_address(&address)),
                    renewed: spec.renew_time.map(|t| t.0),
                    duration_seconds: spec.lease_duration_seconds.map(i64::from),
                }
            })
            .collect())
    }

    /// Every API server instance a step must be confirmed on: those the
    /// EndpointSlice lists and those that announce themselves
    /// ([`ksa_core::instances::instances`]).
    pub async fn api_servers(&self) -> Result<Vec<Instance>> {
        Ok(self.api_servers_announced().await?.0)
    }

    /// [`TargetCluster::api_servers`], and the announcements they came of.
    async fn api_servers_announced(&self) -> Result<(Vec<Instance>, Vec<Announcement>)> {
        let listed = self.listed_instances().await?;
        let announced = self.announced_instances().await?;
        let fallback = self.config.cluster_url.to_string();
        let found = instances(&listed, &announced, &fallback, jiff::Timestamp::now());
        Ok((found, announced))
    }

    /// A client for each API server instance, talking to it alone, or the
    /// name of one that cannot be asked. An instance restarting
    /// mid-request must not hang the pass: each request has
    /// [`INSTANCE_TIMEOUT`] to connect and to be answered.
    pub async fn instance_clients(&self) -> Result<Vec<(String, Option<kube::Client>)>> {
        let mut clients = Vec::new();
        let (found, announced) = self.api_servers_announced().await?;
        for instance in found {
            let address = match instance {
                Instance::At(address) => address,
                Instance::Unaddressable(name) => {
                    clients.push((name, None));
                    continue;
                }
            };
            // Named by its identity Lease too, when it has one.
            let lease = announced
                .iter()
                .find(|a| a.address.as_deref() == Some(address.as_str()))
                .map(|a| {
                    format!(
                        " (on {}, identity Lease kube-system/{})",
                        a.host.as_deref().unwrap_or("an unknown host"),
                        a.lease
                    )
                })
                .unwrap_or_default();
            let url = if address.contains("://") {
                address
            } else {
                format!("https://{address}")
            };
            let uri: http::Uri =
                url.parse()
                    .map_err(|e: http::uri::InvalidUri| Error::BadResponse {
                        what: "API server instance address",
                        detail: e.to_string(),
                    })?;
            let mut config = self.config.clone();
            config.cluster_url = uri.clone();
            config.connect_timeout = Some(INSTANCE_TIMEOUT);
            config.read_timeout = Some(INSTANCE_TIMEOUT);
            config.write_timeout = Some(INSTANCE_TIMEOUT);
            clients.push((
                format!("{uri}{lease}"),
                Some(kube::Client::try_from(config)?),
            ));
        }
        Ok(clients)
    }

    /// What the step `state` is at needs observed in the user cluster (every
    /// field of [`Observed`] but `stored_keys`, which the caller's key store
    /// knows): the API servers for Trust, Sign and Retire; stale legacy and
    /// bound tokens for RefreshTokens.
    ///
    /// `signer` is the key the cluster signs with now
    /// (`state.versions().private_key_version()`): an issuer rotation's
    /// Trust and Retire mint tokens with it to ask each instance whether it
    /// accepts an issuer. Without it no issuer review is made, which
    /// confirms nothing.
    pub async fn observe(
        &self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        state: &RotationState,
        policy: &Policy,
        signer: Option<&dyn SigningKey>,
    ) -> Result<Observed> {
        let mut observed = Observed::default();
        let observation = state.observation();
        if observation.api_servers {
            observed.api_servers = self.observe_api_servers(keys, &observation, signer).await?;
        }
        // Without the new key in the store nothing can be counted; the
        // driver refuses the state for its missing key.
        if observation.tokens
            && let Some(new) = keys.get(&state.key_version())
        {
            let legacy = refresh::observe_legacy_tokens(
                &self.client,
                new.kid(),
                state.step_started_at(),
                policy,
            )
            .await?;
            observed.stale_legacy_tokens = Some(legacy.stale);
            observed.blocked_legacy_tokens = legacy.blocked;
            observed.given_up_legacy_tokens = legacy.given_up;
            let since = state.step_started_at().unwrap_or_else(jiff::Timestamp::now);
            let bound = refresh::observe_bound_tokens(
                &self.client,
                &state.refresh_marker(),
                &policy.bound_token_refresh,
                since,
                policy.clock_skew,
            )
            .await?;
            if policy.bound_token_refresh.waits() {
                observed.longest_bound_token_seconds = Some(bound.longest_stale_token_seconds);
            } else {
                observed.stale_bound_tokens = Some(bound.stale);
                observed.bound_token_holders = bound.holders;
            }
        }
        Ok(observed)
    }

    /// What every API server instance accepts and signs with, in versions
    /// of the key store (unknown kids are left out), and, as `observation`
    /// asks, the issuers it accepts and issues.
    pub async fn observe_api_servers(
        &self,
        keys: &BTreeMap<KeyVersion, PublicKey>,
        observation: &Observation,
        signer: Option<&dyn SigningKey>,
    ) -> Result<Vec<ApiServerView>> {
        let versions: BTreeMap<&KeyId, KeyVersion> =
            keys.iter().map(|(v, k)| (k.kid(), *v)).collect();
        let wants_fresh_token = observation.signing || observation.issuer_signing;
        let reviewing = signer.filter(|_| !observation.issuers_reviewed.is_empty());
        let account_uid = if wants_fresh_token || reviewing.is_some() {
            Some(probe::ensure_probe_account(&self.client).await?)
        } else {
            None
        };
        // One token per issuer for every instance: each instance judges the
        // same tokens.
        let mut probes = Vec::new();
        if let (Some(signer), Some(uid)) = (reviewing, &account_uid) {
            let now = jiff::Timestamp::now();
            for issuer in &observation.issuers_reviewed {
                let token = probe::issuer_probe_token(issuer, uid, signer, now)?;
                probes.push((issuer.clone(), token));
            }
        }
        let mut views = Vec::new();
        for (name, client) in self.instance_clients().await? {
            let mut view = ApiServerView {
                name,
                ..ApiServerView::default()
            };
            // An instance that cannot be asked confirms nothing.
            let Some(client) = client else {
                view.unanswered = Some(UNADDRESSABLE.to_owned());
                views.push(view);
                continue;
            };
            let request = http::Request::get("/openid/v1/jwks").body(Vec::new())?;
            // An instance that does not answer confirms nothing.
            let text = match client.request_text(request).await {
                Ok(text) => text,
                Err(error) => {
                    view.unanswered = Some(format!(
                        "{}; {GONE_FOR_GOOD}",
                        crate::error::describe(&error)
                    ));
                    views.push(view);
                    continue;
                }
            };
            if let Ok(trusted) = parse_jwks(&text) {
                view.accepts = trusted
                    .iter()
                    .filter_map(|t| versions.get(&t.kid).copied())
                    .collect();
            }
            if wants_fresh_token && let Ok(fresh) = probe::fresh_token(&client).await {
                if observation.signing {
                    // By the signature, not the header's word for it.
                    view.signs_with = fresh.signed_with(keys);
                }
                if observation.issuer_signing {
                    view.issues = fresh.iss;
                }
            }
            if observation.issuer_signing {
                view.discovery_issuer = probe::discovery_issuer(&client).await.ok().flatten();
            }
            for (issuer, token) in &probes {
                if let Ok(accepted) = probe::accepts(&client, token).await {
                    view.issuer_reviews.insert(issuer.clone(), accepted);
                }
            }
            views.push(view);
        }
        Ok(views)
    }
}

#[cfg(test)]
mod tests {
    use super::peer_address;

    /// A Lease's address is dialled with the controller's credentials and
    /// quoted in the status: only a socket address is taken.
    #[test]
    fn only_a_socket_address_is_taken_from_a_lease() {
        assert_eq!(
            peer_address("10.0.0.3:6443").as_deref(),
            Some("10.0.0.3:6443")
        );
        assert_eq!(
            peer_address("[fd00::3]:6443").as_deref(),
            Some("[fd00::3]:6443")
        );
        for hostile in [
            "evil.example:443",
            "10.0.0.3:6443/path",
            "10.0.0.3",
            "http://10.0.0.3:6443",
            "10.0.0.3:6443\n",
            &"9".repeat(100_000),
        ] {
            assert_eq!(peer_address(hostile), None, "{hostile:.40}");
        }
    }
}
