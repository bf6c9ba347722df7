//! `ksa-controller run`: leader election, then the controller loop.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Parser, ValueEnum};
use futures::StreamExt as _;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::cluster::TargetCluster;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, watcher};

use crate::reconcile::{self, Context};

#[derive(Parser, Debug, Clone)]
pub struct RunArgs {
    /// Only watch this namespace (default: all).
    #[arg(long, env = "KSA_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "KSA_LEADER_NAMESPACE", default_value = "ksa-system")]
    pub leader_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration in seconds: how soon a replica takes over from a dead leader.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Where to serve /healthz, /readyz, /metrics and the JWKS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: std::net::SocketAddr,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by RUST_LOG (default `info,kube=warn`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
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

/// The leader-election Lease, in `--leader-namespace`.
pub const LEADER_LEASE: &str = "ksa-controller-leader";

pub async fn run(args: RunArgs) -> Result<()> {
    init_tracing(args.log_format);
    let config = kube::Config::infer()
        .await
        .context("finding cluster credentials")?;
    let client = kube::Client::try_from(config.clone())?;
    // Served from the start, so standby replicas serve the JWKS too.
    let metrics = Arc::new(crate::serve::Metrics::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tokio::spawn(crate::serve::serve(
        args.http_addr,
        metrics.clone(),
        client.clone(),
        ready.clone(),
    ));
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let identity = args
        .identity
        .unwrap_or_else(|| format!("ksa-controller-{}", std::process::id()));

    // Setting up reads or creates the Lease: retried while the API server
    // is away (restarting with new keys, say), rather than exiting.
    let leader = loop {
        let built = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEADER_LEASE)
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
        metrics: metrics.clone(),
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
        tracing::info!(%identity, "leading");
        metrics.leader.set(1);
        let api: Api<KSASigningKeyRotation> = match &args.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let controller = Controller::new(api, watcher::Config::default())
            .shutdown_on_signal()
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
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
        tokio::select! {
            () = controller => break,
            () = lost => {
                metrics.leader.set(0);
                tracing::warn!(%identity, "lost leadership; standing by");
            }
        }
    }
    server.abort();
    drop(leading);
    let _ = tokio::time::timeout(Duration::from_secs(2), lease_task).await;
    Ok(())
}
