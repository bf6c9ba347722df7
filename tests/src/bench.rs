//! What the scale benchmarks (`ksa-bench-refresh`, `ksa-bench-rollout`)
//! share: a real control plane whose API server audits every request of
//! the controller's user, ksa installed on it, and one rotation driven by
//! `ksa rotate` and the real `ksa-controller`, measured from outside: its
//! time, the controller's API requests (the audit log), peak memory
//! (`VmHWM`) and CPU (`/proc`), and the times of its step changes (its log).
//! `ksa-bench-fleet` audits its admin cluster the same way
//! ([`audit_flags`], [`audited_requests`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use jiff::Timestamp;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey};
use ksa_core::rotation::Step;
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::refresh;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::install::CONTROLLER_USER;
use crate::{
    ApiServerKeys, ControlPlane, FIRST_REPLICA, HostedApiServer, Installation, ksa_binary,
};

/// The rotation's (and its namespace's) name.
pub const NAMESPACE: &str = "user-cluster-1";

/// Logs every request of the controller's user, once each, as metadata.
fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
  users: [{CONTROLLER_USER}]
- level: None
"
    )
}

/// The kube-apiserver flags that audit every request of the controller's
/// user, once each, into `dir/audit.log` (JSON, one event per line), and
/// that log's path.
pub fn audit_flags(dir: &std::path::Path) -> Result<(Vec<String>, PathBuf)> {
    let policy = dir.join("audit-policy.yaml");
    let audit_log = dir.join("audit.log");
    std::fs::write(&policy, audit_policy())?;
    Ok((
        vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", audit_log.display()),
            "--audit-log-format=json".into(),
            "--audit-log-mode=blocking".into(),
        ],
        audit_log,
    ))
}

/// When each request in an audit log of [`audit_flags`] was received, in
/// the log's order (none before the log exists).
pub fn audited_requests(audit_log: &std::path::Path) -> Result<Vec<Timestamp>> {
    let log = std::fs::read_to_string(audit_log).unwrap_or_default();
    log.lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line)?;
            event["requestReceivedTimestamp"]
                .as_str()
                .context("an audit event without requestReceivedTimestamp")?
                .parse()
                .context("an audit event's requestReceivedTimestamp")
        })
        .collect()
}

/// ksa installed on an audited control plane, ready to rotate.
#[allow(missing_debug_implementations, reason = "holds running processes")]
pub struct RotationBench {
    pub plane: Arc<Mutex<ControlPlane>>,
    pub client: kube::Client,
    pub installation: Installation,
    /// The signing key the cluster starts with.
    pub key: PrivateKey,
    audit_log: PathBuf,
    config: PathBuf,
    kubeconfig: PathBuf,
    _hosted: HostedApiServer,
    _dir: tempfile::TempDir,
}

/// One rotation, measured.
#[derive(Debug)]
pub struct RotationRun {
    pub seconds: f64,
    pub controller_peak_rss_mib: f64,
    pub controller_cpu_seconds: f64,
    /// When each request the controller made from `ksa rotate` to
    /// Completed was received (the API server's audit log).
    pub api_requests: Vec<Timestamp>,
    /// The controller's log lines of this rotation.
    pub log: String,
}

impl RotationRun {
    /// When the controller logged its first line containing all of `parts`.
    pub fn first_logged(&self, parts: &[&str]) -> Result<Timestamp> {
        logged_at(&self.log, parts)
            .next()
            .with_context(|| format!("the controller never logged {parts:?}"))
    }

    /// When it logged its last line containing all of `parts`.
    pub fn last_logged(&self, parts: &[&str]) -> Result<Timestamp> {
        logged_at(&self.log, parts)
            .last()
            .with_context(|| format!("the controller never logged {parts:?}"))
    }

    /// How many requests the controller made from `from` to `to`.
    pub fn api_requests_between(&self, from: Timestamp, to: Timestamp) -> u64 {
        self.api_requests
            .iter()
            .filter(|t| (from..=to).contains(t))
            .count() as u64
    }

    /// When the rotation entered `step`.
    pub fn entered(&self, step: Step) -> Result<Timestamp> {
        self.first_logged(&["step confirmed", &format!("to={step}")])
    }
}

/// The timestamps of the log lines that contain all of `parts`.
fn logged_at<'a>(log: &'a str, parts: &'a [&str]) -> impl Iterator<Item = Timestamp> + 'a {
    log.lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
}

impl RotationBench {
    /// Starts the control plane, lets `prepare` add to it (before ksa is
    /// installed), installs ksa and starts the controller.
    pub async fn start(
        prepare: impl AsyncFnOnce(&mut ControlPlane) -> Result<()>,
    ) -> Result<RotationBench> {
        let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
        let dir = tempfile::tempdir()?;
        let (flags, audit_log) = audit_flags(dir.path())?;
        let mut plane =
            ControlPlane::start_with_flags(ApiServerKeys::single(key.clone()), flags).await?;
        prepare(&mut plane).await?;
        let client = plane.client().await?;
        let mut installation =
            Installation::install(&client, NAMESPACE, NAMESPACE, &key, plane.dir()).await?;
        installation.start_controller(&plane.controller_kubeconfig_path())?;
        let kubeconfig = plane.kubeconfig_path();
        let plane = Arc::new(Mutex::new(plane));
        let hosted = HostedApiServer::spawn(
            plane.clone(),
            client.clone(),
            NAMESPACE,
            &format!("{NAMESPACE}-apiserver-keys"),
            None,
        );
        let config = dir.path().join("user-cluster.yaml");
        std::fs::write(&config, format!("name: {NAMESPACE}\n"))?;
        Ok(RotationBench {
            plane,
            client,
            installation,
            key,
            audit_log,
            config,
            kubeconfig,
            _hosted: hosted,
            _dir: dir,
        })
    }

    /// When each audited request was received, in the log's order.
    fn audited_requests(&self) -> Result<Vec<Timestamp>> {
        audited_requests(&self.audit_log)
    }

    /// Rotates to key version `to` with a fresh controller process (so its
    /// peak memory is this rotation's) and waits until it completes.
    pub async fn rotate(&mut self, to: u64) -> Result<RotationRun> {
        let installation = &mut self.installation;
        installation.kill_replica(FIRST_REPLICA)?;
        installation.start_replica(FIRST_REPLICA, installation.http_addr)?;
        let pid = installation
            .replica_pid(FIRST_REPLICA)
            .context("the controller runs")?;
        let audited_before = self.audited_requests()?.len();
        let log_from = self.installation.controller_log().len();
        let api: Api<KSASigningKeyRotation> = Api::namespaced(self.client.clone(), NAMESPACE);
        let started = Instant::now();
        let rotate = tokio::process::Command::new(ksa_binary("ksa")?)
            .args([
                "update",
                "credentials",
                "ksa-signing-key",
                "rotate",
                "--skip-prompt",
            ])
            .arg("--config")
            .arg(&self.config)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output()
            .await?;
        ensure!(
            rotate.status.success(),
            "ksa rotate: {}",
            String::from_utf8_lossy(&rotate.stderr)
        );
        loop {
            // The API server restarts with new keys meanwhile.
            if let Ok(rotation) = api.get(NAMESPACE).await {
                let state = rotation.state()?;
                if state.step() == Step::Completed && state.key_version().get() == to {
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(1800) {
                bail!(
                    "rotation to {to} did not complete:\n{}",
                    self.installation.controller_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let controller_peak_rss_mib = peak_rss_mib(pid)?;
        let controller_cpu_seconds = cpu_seconds(pid)?;
        // The audit log is written as requests end; the last ones settle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = self.installation.controller_log();
        Ok(RotationRun {
            seconds,
            controller_peak_rss_mib,
            controller_cpu_seconds,
            api_requests: self
                .audited_requests()?
                .get(audited_before..)
                .unwrap_or_default()
                .to_vec(),
            log: log.get(log_from..).unwrap_or_default().to_owned(),
        })
    }
}

/// Merge-patches each object of `api` that `names` names with `patch`,
/// as many at a time as the controller's refresh works on
/// ([`refresh::CONCURRENCY`]): the bare loops the benches set beside it.
pub async fn patch_each<K>(
    api: &Api<K>,
    names: impl Iterator<Item = String>,
    patch: &serde_json::Value,
) -> Result<()>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    futures::stream::iter(names)
        .map(|name| async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
        })
        .buffer_unordered(refresh::CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// User plus system CPU seconds a process has used (`/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces), from field 3 on.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // USER_HZ is 100 on Linux.
    Ok(ticks / 100.0)
}

/// A process's peak resident memory (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")?;
    Ok(kib / 1024.0)
}
