//! Following a product issuer rotation end to end: `ksa ... rotate
//! --wait` run beside a follower that polls the rotation resource, notes
//! each step as it is entered, and checks on every instance what each
//! step's confirmation says (SPEC section 10) as soon as the step after it
//! is seen.

use std::collections::BTreeSet;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ksa_core::KeyVersion;
use ksa_core::key::PrivateKey;
use ksa_core::rotation::{RotationState, Step};
use ksa_kube::api::KSASigningKeyRotation;
use ksa_kube::keystore::KeyStore;
use kube::api::Api;

use super::{
    A, APP, ROTATION_TIMEOUT, discovery_issuers, ensure_all, issued_issuers, mint_token, retrying,
    verdicts,
};
use crate::scenario::{APPS, CLUSTER, NAMESPACE};
use crate::{Installation, InstanceClient};

/// Runs a command to its end without blocking the runtime: the harness's
/// players (the roll-out, the prober) run on it meanwhile.
pub async fn run(command: std::process::Command) -> Result<Output> {
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(command.output().await?)
}

pub fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What every instance must do once a step of an issuer rotation from
/// `from` to `to` is confirmed (SPEC section 10), asked of each instance on
/// its own.
#[derive(Clone)]
#[allow(
    missing_debug_implementations,
    reason = "kube::Client prints nothing useful"
)]
pub struct Confirmations {
    pub client: kube::Client,
    pub instances: Vec<InstanceClient>,
    pub from: &'static str,
    pub to: &'static str,
    /// The key every instance trusts until Retire: tokens minted up to
    /// then are signed with it, so a verdict depends on the issuer alone.
    pub old_key: PrivateKey,
    /// The key version the cluster signs with after Retire (the same as
    /// the old key's when the rotation keeps the key).
    pub new_version: KeyVersion,
    /// A token of `from` with the default audience, taken before the
    /// rotation.
    pub early: String,
}

impl Confirmations {
    /// Each instance's verdict on a token of `issuer` signed with `key`, of
    /// the audience the instances take as their own (pinned to A).
    async fn minted_verdicts(&self, issuer: &str, key: &PrivateKey) -> Result<Vec<bool>> {
        retrying(&format!("TokenReview of a token of {issuer}"), || async {
            let token = mint_token(&self.client, APPS, APP, issuer, &[A], key).await?;
            verdicts(&self.instances, &token).await
        })
        .await
    }

    async fn early_verdicts(&self) -> Result<Vec<bool>> {
        retrying("TokenReview of the early token", || {
            verdicts(&self.instances, &self.early)
        })
        .await
    }

    /// Checks on every instance what the confirmation of `step` says;
    /// returns what held.
    async fn check(&self, step: Step) -> Result<String> {
        let (from, to) = (self.from, self.to);
        match step {
            Step::Trust => {
                // From Trust on every instance accepts `to`; until Retire
                // `from` too (Sign, the next roll-out, keeps it).
                let accepts_to = self.minted_verdicts(to, &self.old_key).await?;
                ensure_all(&accepts_to, &true, &format!("Trust: a token of {to}"))?;
                let accepts_from = self.minted_verdicts(from, &self.old_key).await?;
                ensure_all(&accepts_from, &true, &format!("Trust: a token of {from}"))?;
                let early = self.early_verdicts().await?;
                ensure_all(&early, &true, "Trust: the token taken before the rotation")?;
                Ok(format!(
                    "each instance accepts {to}, {from} and the token taken before"
                ))
            }
            Step::Sign => {
                let issued = retrying("TokenRequest", || {
                    issued_issuers(&self.instances, APPS, APP)
                })
                .await?;
                ensure_all(&issued, &to.to_owned(), "Sign: the iss of a fresh token")?;
                let discovered =
                    retrying("discovery", || discovery_issuers(&self.instances)).await?;
                ensure_all(&discovered, &to.to_owned(), "Sign: the discovery document")?;
                Ok(format!(
                    "each instance issues iss {to} and its discovery document names it"
                ))
            }
            Step::Retire => {
                let store = KeyStore::new(self.client.clone(), NAMESPACE, CLUSTER);
                let key = retrying("the new key", || async {
                    Ok(store.private_key(self.new_version).await?)
                })
                .await?;
                let accepts_from = self.minted_verdicts(from, &key).await?;
                ensure_all(&accepts_from, &false, &format!("Retire: a token of {from}"))?;
                // The same key with the issuer kept: rejected for the
                // issuer alone.
                let accepts_to = self.minted_verdicts(to, &key).await?;
                ensure_all(&accepts_to, &true, &format!("Retire: a token of {to}"))?;
                let early = self.early_verdicts().await?;
                ensure_all(
                    &early,
                    &false,
                    "Retire: the token taken before the rotation",
                )?;
                Ok(format!(
                    "each instance rejects {from} (and the token taken before) and accepts {to}"
                ))
            }
            _ => Ok(String::new()),
        }
    }
}

/// Steps seen, in order, each with when it was entered
/// (`stepStartedAt`).
pub type StepsSeen = Vec<(Step, Option<jiff::Timestamp>)>;

/// What the test saw of a rotation while the CLI ran it.
#[derive(Debug, Default)]
pub struct Followed {
    /// Each step seen, in order, with when the controller entered it
    /// (`status.stepStartedAt`).
    pub steps: StepsSeen,
    pub started_at: Option<jiff::Timestamp>,
    pub completed_at: Option<jiff::Timestamp>,
    /// When every instance was first seen to accept the new issuer (and
    /// key) at Trust (`status.confirmedAt`), as last seen at Trust.
    pub trust_confirmed_at: Option<jiff::Timestamp>,
    /// Each confirmation checked on every instance.
    pub checked: Vec<String>,
}

impl Followed {
    /// How long each step seen took, from `status.stepStartedAt` to the
    /// next step seen's (a step never seen is inside the one before it).
    pub fn durations(&self) -> String {
        let mut parts = Vec::new();
        for pair in self.steps.windows(2) {
            let [(step, entered), (_, next)] = pair else {
                continue;
            };
            if let (Some(entered), Some(next)) = (entered, next) {
                let seconds = next.duration_since(*entered).as_secs_f64();
                parts.push(format!("{step} {seconds:.1} s"));
            }
        }
        if let (Some(started), Some(completed)) = (self.started_at, self.completed_at) {
            let seconds = completed.duration_since(started).as_secs_f64();
            parts.push(format!("in all {seconds:.1} s"));
        }
        parts.join(", ")
    }

    /// Checks that Sign began no sooner than `lead` after every instance
    /// was seen to accept at Trust, in this rotation. The core counts the
    /// lead time in whole seconds of the clock (`elapsed_since`), so Sign
    /// may begin up to a second short of it; a lead time not waited out
    /// at all (or run from another rotation's confirmation) is far
    /// shorter.
    pub fn check_trust_lead(&self, lead: Duration) -> Result<()> {
        let confirmed = self
            .trust_confirmed_at
            .context("status.confirmedAt was never seen at Trust")?;
        let sign = self
            .steps
            .iter()
            .find(|(step, _)| *step == Step::Sign)
            .and_then(|(_, at)| *at)
            .context("Sign was never seen")?;
        let waited = sign.duration_since(confirmed).as_secs_f64();
        eprintln!("Sign began {waited:.1} s after Trust was confirmed at {confirmed}");
        ensure!(
            waited >= lead.as_secs_f64() - 1.0,
            "Sign began {waited:.1} s after every instance was seen to accept at Trust ({confirmed}), \
             before trustLeadTimeSeconds ({lead:?})"
        );
        Ok(())
    }

    pub fn print(&self, what: &str) {
        let steps: Vec<String> = self.steps.iter().map(|(s, _)| s.to_string()).collect();
        eprintln!("{what}: steps seen {}", steps.join(" -> "));
        eprintln!(
            "{what}: step durations (status.stepStartedAt): {}",
            self.durations()
        );
        for check in &self.checked {
            eprintln!("{what}: {check}");
        }
    }
}

/// Follows the rotation `rotation` is a state of on the resource until it
/// completes, and checks on every instance the confirmation of each of its
/// Trust, Sign and Retire steps as soon as the step after it is seen (each
/// confirmation holds from then to the end of the rotation).
pub async fn follow(
    client: kube::Client,
    rotation: RotationState,
    confirmations: Confirmations,
) -> Result<Followed> {
    let api: Api<KSASigningKeyRotation> = Api::namespaced(client, NAMESPACE);
    let (sender, mut confirmed) = tokio::sync::mpsc::unbounded_channel::<(Step, Step)>();
    // Checks run beside the polling, which must not miss a step.
    let checker = tokio::spawn(async move {
        let mut checked = Vec::new();
        while let Some((step, seen_at)) = confirmed.recv().await {
            let held = confirmations
                .check(step)
                .await
                .with_context(|| format!("{step} confirmed (the rotation at {seen_at})"))?;
            checked.push(format!(
                "{step} confirmed (the rotation seen at {seen_at}): {held}"
            ));
        }
        anyhow::Ok(checked)
    });
    let mut followed = Followed::default();
    let mut sent = BTreeSet::new();
    let started = Instant::now();
    loop {
        ensure!(
            started.elapsed() < ROTATION_TIMEOUT,
            "the rotation did not complete in {ROTATION_TIMEOUT:?}; seen: {:?}",
            followed.steps
        );
        // The kubeconfig's instance restarts too: a failed read is retried;
        // a status that does not load fails at once.
        let state = match api.get_opt(CLUSTER).await {
            Ok(Some(resource)) => Some(
                resource
                    .state()
                    .with_context(|| format!("the rotation's status: {:?}", resource.status))?,
            ),
            _ => None,
        };
        if let Some(state) = state
            && rotation.same_rotation(&state)
        {
            let step = state.step();
            if followed.steps.last().map(|(s, _)| *s) != Some(step) {
                followed.steps.push((step, state.step_started_at()));
            }
            followed.started_at = state.started_at();
            if step == Step::Trust
                && let Some(confirmed) = state.confirmed_at()
            {
                // Confirmed in this rotation, not left from the one before.
                ensure!(
                    state
                        .started_at()
                        .is_some_and(|started| confirmed >= started),
                    "at Trust, status.confirmedAt is {confirmed}, from before this rotation \
                     started ({:?}): the lead time would run from a confirmation of another \
                     rotation",
                    state.started_at()
                );
                followed.trust_confirmed_at = Some(confirmed);
            }
            for done in [Step::Trust, Step::Sign, Step::Retire] {
                if done < step && sent.insert(done) {
                    sender.send((done, step))?;
                }
            }
            if state.is_completed() {
                followed.completed_at = state.completed_at();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sender);
    followed.checked = checker.await??;
    Ok(followed)
}

/// The controller's log, and whether its process still runs (a process
/// that exited and was not reaped yet is a zombie, `Z`).
pub fn controller_report(installation: &Installation) -> String {
    let process = match installation.replica_pid(crate::FIRST_REPLICA) {
        Some(pid) => match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat
                    .rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').next())
                    .unwrap_or("?");
                format!("pid {pid}, state {state}")
            }
            Err(error) => format!("pid {pid}: {error}"),
        },
        None => "not running".to_owned(),
    };
    format!(
        "controller process: {process}\ncontroller log:\n{}",
        installation.controller_log()
    )
}

/// Runs `rotate ... --wait` beside the follower; returns its output, how
/// long it took, and what the follower saw. Before it returns, while the
/// rotation is in progress, `during` runs.
pub async fn rotate_and_follow<F, Fut>(
    command: std::process::Command,
    client: &kube::Client,
    rotation: &RotationState,
    confirmations: Confirmations,
    during: F,
) -> Result<(Output, Duration, Followed)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let follower = tokio::spawn(follow(client.clone(), rotation.clone(), confirmations));
    let clock = Instant::now();
    let cli = tokio::spawn(run(command));
    // Until the controller has picked it up. A status that does not load
    // is no passing state: it fails at once.
    let api: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    let waiting = Instant::now();
    loop {
        let resource = retrying("the rotation resource", || async {
            Ok(api.get(CLUSTER).await?)
        })
        .await?;
        let state = resource
            .state()
            .with_context(|| format!("the rotation's status: {:?}", resource.status))?;
        if rotation.same_rotation(&state) && !state.is_completed() {
            break;
        }
        ensure!(
            waiting.elapsed() < Duration::from_secs(60),
            "the controller did not start the rotation in 60 s; it stands at {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    during().await?;
    let output = cli.await??;
    let elapsed = clock.elapsed();
    if !output.status.success() {
        follower.abort();
        let status = api
            .get(CLUSTER)
            .await
            .map(|r| format!("{:#?}", r.status))
            .unwrap_or_else(|e| format!("(could not read it: {e})"));
        bail!(
            "rotate exited {:?} after {elapsed:.1?}\nstdout:\n{}\nstderr:\n{}\nthe rotation's status now: {status}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        );
    }
    let followed = follower.await??;
    Ok((output, elapsed, followed))
}

/// Prints what `rotate --wait` said and checks its lines: exactly
/// `expected`, each once and in order.
pub fn check_wait_output(output: &Output, expected: &[String], what: &str) {
    let lines = stdout_lines(output);
    eprintln!("{what}: rotate --wait printed:");
    for line in &lines {
        eprintln!("  {line}");
    }
    let err = stderr(output);
    let reconstructed = err
        .lines()
        .filter(|l| l.starts_with("(not observed:"))
        .count();
    eprintln!("{what}: {reconstructed} of the lines reconstructed (not observed by the watch)");
    assert_eq!(
        lines, expected,
        "{what}: rotate --wait printed other lines than SPEC's, once each and in order\nstderr:\n{err}"
    );
}
