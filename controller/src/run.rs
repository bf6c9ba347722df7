//! `ksa-controller run`: leader election, then the controller loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use futures::StreamExt as _;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::cluster::TargetCluster;
use kube::ResourceExt as _;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use tracing::Instrument as _;

use crate::reconcile::{self, Context};
use crate::shard::{Claim, Shard};

#[derive(Parser, Debug, Clone)]
pub struct RunArgs {
    /// Only watch this namespace (default: all).
    #[arg(long, env = "KSA_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// This controller's shard, one of several controllers in one admin
    /// cluster: its leader Lease is ksa-controller-leader-NAME, its logs
    /// carry `shard`, and it claims each rotation before it acts on it
    /// (a Lease ROTATION-shard-claim), so that two shards never act on one
    /// rotation (docs/controller.md, Fleets and shards).
    #[arg(long, env = "KSA_SHARD", value_name = "NAME")]
    pub shard: Option<String>,
    /// With --shard: reconcile only the rotations of the namespaces this
    /// Kubernetes label selector selects now, e.g. `ksa.dev/shard=a`, or
    /// `!ksa.dev/shard` for the shard of every namespace not labelled.
    #[arg(
        long,
        env = "KSA_NAMESPACE_SELECTOR",
        value_name = "SELECTOR",
        requires = "shard",
        conflicts_with = "namespace"
    )]
    pub namespace_selector: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "KSA_LEADER_NAMESPACE", default_value = "ksa-system")]
    pub leader_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration in seconds: how soon a replica takes over from a dead leader.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// How to log: `text` or `json` (one object a line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KSA_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Where to serve /livez, /readyz, /metrics and the JWKS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: std::net::SocketAddr,
    #[command(flatten)]
    pub oidc: OidcArgs,
    #[command(flatten)]
    pub audit: crate::audit::AuditArgs,
}

/// Where outside verifiers read each rotation's keys.
#[derive(clap::Args, Debug, Clone)]
pub struct OidcArgs {
    /// The public base URL of the OIDC endpoint, as outside verifiers reach
    /// it: each rotation's documents are published under
    /// URL/NAMESPACE/NAME, and Trust waits until they are read there.
    /// Unset: no endpoint.
    #[arg(long, value_name = "URL")]
    pub oidc_public_url: Option<String>,
    /// Where to serve the OIDC endpoint.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub oidc_addr: std::net::SocketAddr,
    /// The endpoint's certificate chain (PEM), reloaded when it changes.
    #[arg(long, value_name = "FILE", requires = "oidc_tls_key_file")]
    pub oidc_tls_cert_file: Option<std::path::PathBuf>,
    /// The endpoint's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "oidc_tls_cert_file")]
    pub oidc_tls_key_file: Option<std::path::PathBuf>,
    /// Serve the endpoint over plain HTTP (behind a TLS-terminating proxy).
    #[arg(long, conflicts_with = "oidc_tls_cert_file")]
    pub oidc_insecure_http: bool,
    /// CA certificates (PEM) to read the public URL with, as an outsider
    /// does, besides the system's.
    #[arg(long, value_name = "FILE")]
    pub oidc_ca_file: Option<std::path::PathBuf>,
    /// The directory below which rotations' `spec.publish.directory` paths
    /// lie. Unset: directory sinks are refused.
    #[arg(long, value_name = "DIR")]
    pub publish_root: Option<std::path::PathBuf>,
    /// A host (`host` or `host:port`) rotations may publish to and read
    /// from (`spec.publish.s3`, public URLs). Repeat for more. None: bucket
    /// sinks are refused.
    #[arg(long = "publish-host", value_name = "HOST")]
    pub publish_hosts: Vec<String>,
    /// How long outside verifiers may cache the documents
    /// (`Cache-Control: max-age`); Trust waits it out once every location
    /// serves the new key.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::publish::DEFAULT_MAX_AGE_SECONDS)]
    pub publish_max_age_seconds: u32,
}

impl OidcArgs {
    /// The settings rotations publish with, and how to serve the endpoint
    /// (None: no endpoint).
    pub fn settings(
        &self,
    ) -> Result<(
        crate::publish::Settings,
        Option<crate::serve::OidcTransport>,
    )> {
        let public_ca = match &self.oidc_ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --oidc-ca-file {}", path.display()))?,
            ),
            None => None,
        };
        let transport = match (&self.oidc_tls_cert_file, &self.oidc_tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::serve::OidcTransport::Https {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if self.oidc_insecure_http => Some(crate::serve::OidcTransport::InsecureHttp),
            _ => None,
        };
        if self.oidc_public_url.is_some() && transport.is_none() {
            anyhow::bail!(
                "--oidc-public-url needs --oidc-tls-cert-file and --oidc-tls-key-file (or \
                 --oidc-insecure-http behind a TLS-terminating proxy)"
            );
        }
        let settings = crate::publish::Settings {
            public_url: self.oidc_public_url.clone(),
            public_ca,
            root: self.publish_root.clone(),
            allowed_hosts: self.publish_hosts.clone(),
            max_age_seconds: self.publish_max_age_seconds,
            // Set by `run` once the sealing key is loaded.
            sealer: None,
        };
        Ok((settings, transport))
    }
}

pub use crate::logging::LogFormat;

/// Logs to stderr in `format`, filtered by `KSA_LOG`, else `RUST_LOG`,
/// else `info,kube=warn` ([`crate::logging`]).
pub fn init_tracing(format: LogFormat) -> Result<()> {
    crate::logging::init(format)
}

/// Completes on SIGTERM (what a kubelet sends) or Ctrl-C.
pub async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        Some(()) = async { terminate.as_mut()?.recv().await } => {}
    }
}

/// How often `/readyz` asks the API server whether it answers, and how
/// long an answer may take.
const READINESS_PERIOD: Duration = Duration::from_secs(10);
const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps `ready` true exactly while the API server answers `/version`:
/// a replica that cannot reach it can neither reconcile nor serve what
/// was published, and should leave its Service's endpoints.
async fn track_readiness(client: kube::Client, ready: Arc<std::sync::atomic::AtomicBool>) {
    loop {
        let answered = tokio::time::timeout(READINESS_TIMEOUT, client.apiserver_version())
            .await
            .is_ok_and(|version| version.is_ok());
        let was = ready.swap(answered, std::sync::atomic::Ordering::Relaxed);
        if was != answered {
            tracing::info!(
                ready = answered,
                "the API server {}",
                if answered {
                    "answers"
                } else {
                    "does not answer"
                }
            );
        }
        tokio::time::sleep(READINESS_PERIOD).await;
    }
}

/// How long one reconcile may run: half of what `/livez` allows, so that a
/// reconcile held by a silent API server ends, and is retried, long before
/// the controller would be restarted.
pub const RECONCILE_TIMEOUT: Duration =
    Duration::from_secs(crate::liveness::RECONCILE_BOUND.as_secs() / 2);

/// How often the series of rotations that are gone are removed.
const PRUNE_PERIOD: Duration = Duration::from_secs(30);

/// One reconcile, as the controller runs it: in a span that names the
/// rotation (each line it logs carries its namespace and name), counted
/// and timed by rotation, and watched by `/livez`.
async fn observed(
    resource: Arc<KSASigningKeyRotation>,
    sharded: Arc<Sharded>,
) -> crate::Result<Action> {
    let Sharded { ctx, shard } = &*sharded;
    let ctx = ctx.clone();
    let namespace = resource.namespace().unwrap_or_default();
    let name = resource.name_any();
    let labels = crate::serve::RotationLabels::new(&namespace, &name);
    let span = tracing::info_span!("reconcile", namespace = %namespace, name = %name);
    let started = Instant::now();
    let running = ctx.liveness.reconciling(&resource, started);
    // A shard's check counts as the loop's activity for `/livez`: a shard
    // whose rotations are all another's is not stuck.
    if let Some(shard) = &shard {
        match not_ours(shard, &resource, &namespace, &name).await {
            Ok(None) => {}
            Ok(Some(action)) => {
                // Another shard's, or none's: its audit posts are not ours
                // to record, nor its token to keep.
                if let Some(audit) = &ctx.audit {
                    audit.feeds.forget(&namespace, &name);
                }
                return Ok(action);
            }
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "cannot read or write the rotation's shard claim; retrying");
                return Err(error);
            }
        }
    }
    // Bounded, so that a cluster that never answers cannot hold the
    // reconcile until /livez restarts the controller for every rotation;
    // the state is saved before each effect and every effect is
    // idempotent, so a pass cut off here resumes in the next.
    let result = match tokio::time::timeout(
        RECONCILE_TIMEOUT,
        reconcile::reconcile(resource, ctx.clone()).instrument(span),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(crate::Error::ReconcileTimedOut {
            seconds: RECONCILE_TIMEOUT.as_secs(),
        }),
    };
    drop(running);
    let failed = result.as_ref().is_err_and(|error| !error.is_stale_read());
    ctx.metrics.reconciled(&labels, started.elapsed(), failed);
    result
}

/// What every reconcile shares, and this controller's shard.
struct Sharded {
    ctx: Arc<Context>,
    shard: Option<Arc<Shard>>,
}

/// How soon a shard looks again at a rotation of a namespace it does not
/// select (a change of the selection reconciles it at once): within the
/// loop's bound of `/livez`, so that a shard whose rotations are all
/// another's is not taken for stuck.
const NOT_SELECTED_RETRY: Duration = Duration::from_secs(300);

/// How soon a shard looks again at a rotation another shard claims.
const CLAIMED_RETRY: Duration = Duration::from_secs(15);

/// Before a shard's reconcile: `Some` (what to do instead) when the
/// rotation is not this shard's to act on now; the claim taken or renewed
/// otherwise ([`crate::shard`]).
async fn not_ours(
    shard: &Shard,
    resource: &KSASigningKeyRotation,
    namespace: &str,
    name: &str,
) -> crate::Result<Option<Action>> {
    if !shard.selects(namespace) {
        // Left alone.
        if shard
            .release(namespace, name)
            .await
            .map_err(ksa_kube::Error::from)?
        {
            tracing::info!(%namespace, %name, shard = %shard.name, "the namespace left this shard: released the rotation, and no longer acts on it");
        } else {
            tracing::debug!(%namespace, %name, "not in this shard's namespaces");
        }
        return Ok(Some(Action::requeue(NOT_SELECTED_RETRY)));
    }
    match shard
        .claim(
            namespace,
            name,
            kube::Resource::owner_ref(resource, &()),
            jiff::Timestamp::now(),
        )
        .await
        .map_err(ksa_kube::Error::from)?
    {
        Claim::Ours => Ok(None),
        Claim::Theirs { holder } => {
            tracing::info!(%namespace, %name, %holder, "another shard claims this rotation; waiting for it to release it");
            Ok(Some(Action::requeue(CLAIMED_RETRY)))
        }
    }
}

/// For `term`: tells `liveness` when the watch has listed the rotations,
/// then removes, every [`PRUNE_PERIOD`], the series and the audit records
/// and token of rotations no longer watched (deleted).
fn watch_progress(
    store: Store<KSASigningKeyRotation>,
    term: u64,
    liveness: Arc<crate::liveness::Liveness>,
    metrics: Arc<crate::serve::Metrics>,
    feeds: Option<crate::audit::AuditFeeds>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !crate::liveness::listed(&store).await {
            return;
        }
        liveness.synced(term, Instant::now());
        tracing::info!(rotations = store.len(), "the watch listed the rotations");
        loop {
            let gone = metrics.retain(|rotation| {
                store
                    .get(&ObjectRef::new(&rotation.name).within(&rotation.namespace))
                    .is_some()
            });
            for rotation in gone {
                tracing::info!(namespace = %rotation.namespace, name = %rotation.name, "removed the metrics of a rotation that is gone");
            }
            let watched = |namespace: &str, name: &str| {
                store.get(&ObjectRef::new(name).within(namespace)).is_some()
            };
            for (namespace, name) in feeds.iter().flat_map(|feeds| feeds.retain(watched)) {
                tracing::info!(%namespace, %name, "forgot the audit records and token of a rotation that is gone");
            }
            tokio::time::sleep(PRUNE_PERIOD).await;
        }
    })
}

/// The leader-election Lease, in `--leader-namespace`; a shard's is
/// `ksa-controller-leader-SHARD`.
pub const LEADER_LEASE: &str = "ksa-controller-leader";

/// The leader Lease of `shard`.
pub fn leader_lease(shard: Option<&str>) -> String {
    match shard {
        Some(shard) => format!("{LEADER_LEASE}-{shard}"),
        None => LEADER_LEASE.to_owned(),
    }
}

/// The shard flags, checked before anything is read: the selector, parsed.
fn shard_flags(args: &RunArgs) -> Result<Option<kube::core::Selector>> {
    if let Some(name) = &args.shard {
        crate::shard::check_name(name).map_err(anyhow::Error::msg)?;
    }
    args.namespace_selector
        .as_deref()
        .map(crate::shard::parse_selector)
        .transpose()
        .map_err(anyhow::Error::msg)
}

pub async fn run(args: RunArgs) -> Result<()> {
    init_tracing(args.log_format)?;
    let selector = shard_flags(&args)?;
    match args.shard.clone() {
        Some(shard) => {
            let span = tracing::info_span!("shard", shard = %shard);
            lead(args, selector).instrument(span).await
        }
        None => lead(args, selector).await,
    }
}

async fn lead(args: RunArgs, selector: Option<kube::core::Selector>) -> Result<()> {
    let config = kube::Config::infer()
        .await
        .context("finding cluster credentials")?;
    let client = kube::Client::try_from(config.clone())?;
    // The sealing key, before anything is served, read or written for a
    // rotation: every replica serves only what it sealed.
    let sealer = loop {
        match ksa_kube::provenance::Sealer::load_or_create(&client, &args.leader_namespace).await {
            Ok(sealer) => break sealer,
            Err(error) => {
                tracing::warn!(%error, "cannot read the sealing key yet; retrying in 2 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = shutdown_signal() => return Ok(()),
                }
            }
        }
    };
    // Served from the start, so standby replicas serve the JWKS too.
    let metrics = Arc::new(crate::serve::Metrics::default());
    let health = crate::serve::Health::default();
    let (mut publish, oidc) = args.oidc.settings()?;
    publish.sealer = Some(sealer.clone());
    // Both servers serve only what this sealing key sealed, through one cache.
    let published = crate::serve::Published::new(client.clone(), sealer.clone());
    let oidc_server = oidc.map(|transport| {
        let served = crate::serve::serve_oidc(
            args.oidc.oidc_addr,
            transport,
            published.clone(),
            publish.cache_control(),
        );
        tokio::spawn(async move {
            // Rotations wait for the endpoint to serve their keys: say why
            // it does not.
            if let Err(error) = served.await {
                tracing::error!(%error, "the OIDC endpoint stopped; rotations will wait for it");
            }
        })
    });
    let audit = args.audit.settings()?;
    let audit_server = audit.as_ref().map(|(settings, cert, key)| {
        let served = crate::audit::serve(
            args.audit.audit_addr,
            cert.clone(),
            key.clone(),
            settings.feeds.clone(),
        );
        tokio::spawn(async move {
            if let Err(error) = served.await {
                tracing::error!(%error, "the audit webhook endpoint stopped; observed refreshes wait out the window");
            }
        })
    });
    let server = tokio::spawn(crate::serve::serve(
        args.http_addr,
        metrics.clone(),
        published,
        health.clone(),
    ));
    let readiness = tokio::spawn(track_readiness(client.clone(), health.ready.clone()));
    let identity = args
        .identity
        .unwrap_or_else(|| format!("ksa-controller-{}", std::process::id()));

    let lease_name = leader_lease(args.shard.as_deref());
    let shard = args
        .shard
        .clone()
        .map(|name| crate::shard::Shard::new(client.clone(), name, &identity, selector.as_ref()));
    // Setting up reads or creates the Lease: retried while the API server
    // is away (restarting with new keys, say), rather than exiting.
    let leader = loop {
        let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease_name)
            .with_namespace(&args.leader_namespace)
            .with_identity(&identity)
            .with_duration(args.lease_seconds)
            .with_grace(2)
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(error) => {
                tracing::warn!(%error, "cannot set up leader election yet; retrying in 2 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    () = shutdown_signal() => return Ok(()),
                }
            }
        }
    };
    let (mut leading, lease_task) = leader.watch().await;
    let ctx = Arc::new(Context {
        client: client.clone(),
        own: TargetCluster::new(client.clone(), config),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "ksa-controller".into(),
                instance: Some(identity.clone()),
            },
        ),
        backend: ksa_core::crypto::AwsLc::new(),
        sealer,
        metrics: metrics.clone(),
        liveness: health.liveness.clone(),
        publish,
        audit: audit.as_ref().map(|(settings, _, _)| settings.clone()),
        failures: std::sync::Mutex::default(),
    });
    // Lead while the Lease is ours; when it is lost (the API server was
    // away longer than the lease, say), stop reconciling and stand by to
    // take it again. Every decision is re-derived from the resource, so
    // picking up again is safe.
    loop {
        tracing::info!(%identity, "waiting to lead");
        while !*leading.borrow_and_update() {
            leading.changed().await.context("leader election stopped")?;
        }
        tracing::info!(%identity, lease = %lease_name, "leading");
        metrics.leader.set(1);
        if let Some((settings, _, _)) = &audit {
            settings.feeds.lead();
        }
        let api: Api<KSASigningKeyRotation> = match &args.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut controller = Controller::new(api, watcher::Config::default());
        // A shard's namespaces, listed before its first reconcile: a
        // rotation is acted on only while its namespace is selected, and
        // every rotation is looked at again when the selection changes.
        if let Some(shard) = &shard {
            controller = controller.reconcile_all_on(shard.changes());
            shard.listed().await;
        }
        let store = controller.store();
        let term = health.liveness.lead(store.clone(), Instant::now());
        let watched = watch_progress(
            store,
            term,
            health.liveness.clone(),
            metrics.clone(),
            audit
                .as_ref()
                .map(|(settings, _, _)| settings.feeds.clone()),
        );
        let controller = controller
            .shutdown_on_signal()
            .run(
                observed,
                |resource, error, sharded| {
                    reconcile::error_policy(resource, error, sharded.ctx.clone())
                },
                Arc::new(Sharded {
                    ctx: ctx.clone(),
                    shard: shard.clone(),
                }),
            )
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "reconcile error");
                }
            });
        let lost = async {
            while *leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    break;
                }
            }
        };
        let ended = tokio::select! {
            () = controller => true,
            () = lost => false,
        };
        watched.abort();
        health.liveness.stand_by();
        // Only the leader speaks for rotations.
        let _ = metrics.retain(|_| false);
        metrics.leader.set(0);
        // A standby records no audit events: it answers 503 and the API
        // servers retry, on the leader.
        if let Some((settings, _, _)) = &audit {
            settings.feeds.stand_by();
        }
        if ended {
            break;
        }
        tracing::warn!(%identity, "lost leadership; standing by");
    }
    server.abort();
    readiness.abort();
    if let Some(oidc_server) = oidc_server {
        oidc_server.abort();
    }
    if let Some(audit_server) = audit_server {
        audit_server.abort();
    }
    drop(leading);
    let _ = tokio::time::timeout(Duration::from_secs(2), lease_task).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A reconcile held by a silent API server is stopped, and retried,
    /// well before `/livez` calls the controller stuck.
    #[test]
    fn a_reconcile_ends_before_livez_calls_it_stuck() {
        assert!(super::RECONCILE_TIMEOUT * 2 <= crate::liveness::RECONCILE_BOUND);
        assert!(super::RECONCILE_TIMEOUT >= std::time::Duration::from_secs(60));
    }

    /// A shard whose rotations are all another shard's still reconciles
    /// within `/livez`'s loop bound.
    #[test]
    fn a_shard_looks_at_the_rotations_it_does_not_serve_within_the_loop_bound() {
        assert!(super::NOT_SELECTED_RETRY < crate::liveness::LOOP_BOUND);
        assert!(super::CLAIMED_RETRY < crate::liveness::LOOP_BOUND);
    }

    #[test]
    fn a_shard_leads_on_a_lease_of_its_own() {
        assert_eq!(super::leader_lease(None), "ksa-controller-leader");
        assert_eq!(super::leader_lease(Some("a")), "ksa-controller-leader-a");
    }
}
