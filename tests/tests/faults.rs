//! Faults injected into full rotations on a real control plane of three
//! kube-apiserver instances: the controller SIGKILLed as each step begins
//! and in the middle of the long steps, a kube-apiserver instance and etcd
//! killed and restarted mid-rotation, and the leading replica killed so
//! that its standby takes over. After every rotation the cluster is checked
//! end to end, the rotation's four numbers are checked at every status the
//! API server recorded, the prober (reviewing on every instance) must have
//! seen no valid token rejected, and no instance may have been asked to
//! take a step before every instance served the one before.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use futures::{Stream, StreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use ksa_core::KeyVersion;
use ksa_core::rotation::{RotationState, Step};
use ksa_kube::api::{KSASigningKeyRotation, RotationStatus};
use ksa_kube::keystore::KeyStore;
use ksa_kube::refresh::token_kid;
use ksa_tests::cluster::QuickBackoff;
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{CLUSTER, NAMESPACE, Scenario, create_fleet};
use ksa_tests::zoo::Zoo;
use ksa_tests::{FIRST_REPLICA, Installation, loopback_addr};
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::sync::{mpsc, watch};

/// Where the many workloads live whose refresh the controller is killed in.
const FLEET: &str = "fleet";
const FLEET_SECRETS: usize = 400;
const FLEET_DEPLOYMENTS: usize = 8;
const RESTART_ANNOTATION: &str = ksa_kube::refresh::RESTART_ANNOTATION;
/// Generous: a rotation here takes well under a minute.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(300);

/// When a fault is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// The first status of this step of the rotation.
    StepBegins(Step),
    /// Some, not all, fleet legacy Secrets re-minted with the new key.
    LegacySecretsPartlyRefreshed,
    /// A fleet Deployment restarted for the new key, the step not done.
    RolloutStarted,
}

/// The process a fault kills (SIGKILL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// SIGKILL the controller and start it again (same pod name, as a
    /// container restart keeps it).
    Controller,
    /// SIGKILL the leading replica of two; the other must take over within
    /// the lease duration. The killed one is started again as standby.
    Leader,
    /// SIGKILL a kube-apiserver instance (one no client is pointed at)
    /// and start it again.
    ApiServer,
    /// SIGKILL etcd and start it again on the same data.
    Etcd,
}

/// A fault that was injected, for the report.
#[derive(Debug)]
struct Injected {
    rotation: u64,
    fault: Kill,
    trigger: Trigger,
    /// The state it hit, in words.
    detail: String,
}

/// The latest counts of a watched kind of object by a key of each.
type Tally = watch::Receiver<BTreeMap<String, usize>>;

/// Watches every object of `api` and keeps a count of them by `key`. Each
/// event computes the key of one object only, so the counts keep up with a
/// refresh that writes hundreds of objects a second.
fn tally<K>(api: Api<K>, key: fn(&K) -> Option<String>) -> (Tally, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (sender, receiver) = watch::channel(BTreeMap::new());
    let events = watcher(api, watcher::Config::default()).backoff(QuickBackoff);
    let name = |object: &K| object.meta().name.clone().unwrap_or_default();
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        // The key of each object by name; a re-list fills `listing`, which
        // replaces it when the list is done.
        let mut keys: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut listing = BTreeMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(object)) => {
                    listing.insert(name(&object), key(&object));
                    continue;
                }
                Ok(watcher::Event::InitDone) => keys = std::mem::take(&mut listing),
                Ok(watcher::Event::Apply(object)) => {
                    keys.insert(name(&object), key(&object));
                }
                Ok(watcher::Event::Delete(object)) => {
                    keys.remove(&name(&object));
                }
                Err(_) => continue,
            }
            let mut counts = BTreeMap::new();
            for key in keys.values().flatten() {
                *counts.entry(key.clone()).or_insert(0) += 1;
            }
            sender.send_replace(counts);
        }
    });
    (receiver, task)
}

/// The steps the controller logged entering in this piece of its log.
fn steps_confirmed(log: &str) -> Vec<Step> {
    log.lines()
        .filter(|line| line.contains("step confirmed") && line.contains(CLUSTER))
        .filter_map(|line| {
            let name = line.split_once(" to=")?.1.split_whitespace().next()?;
            Step::ROTATION
                .into_iter()
                .chain([Step::Completed])
                .find(|step| step.to_string() == name)
        })
        .collect()
}

fn restarted_for(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(RESTART_ANNOTATION)
        .cloned()
}

/// Every status the rotation resource takes, in order, each checked
/// against the invariants of SPEC section 2 and against the one before.
struct StatusFeed {
    statuses: mpsc::UnboundedReceiver<RotationStatus>,
    violations: Arc<Mutex<Vec<String>>>,
    checked: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StatusFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StatusFeed {
    fn spawn(client: kube::Client) -> StatusFeed {
        let api: Api<KSASigningKeyRotation> = Api::namespaced(client, NAMESPACE);
        let events = watcher(
            api,
            watcher::Config::default().fields(&format!("metadata.name={CLUSTER}")),
        )
        .backoff(QuickBackoff)
        .applied_objects();
        let (sender, statuses) = mpsc::unbounded_channel();
        let violations = Arc::new(Mutex::new(Vec::new()));
        let checked = Arc::new(Mutex::new(0));
        let task = tokio::spawn(check_statuses(
            events,
            sender,
            violations.clone(),
            checked.clone(),
        ));
        StatusFeed {
            statuses,
            violations,
            checked,
            task,
        }
    }

    fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    fn checked(&self) -> u64 {
        self.checked.lock().map(|c| *c).unwrap_or_default()
    }
}

async fn check_statuses(
    events: impl Stream<Item = Result<KSASigningKeyRotation, watcher::Error>>,
    sender: mpsc::UnboundedSender<RotationStatus>,
    violations: Arc<Mutex<Vec<String>>>,
    checked: Arc<Mutex<u64>>,
) {
    let mut events = std::pin::pin!(events);
    let mut previous: Option<RotationState> = None;
    while let Some(event) = events.next().await {
        let rotation = match event {
            Ok(rotation) => rotation,
            Err(error) => {
                eprintln!("status watch: {error}; resuming");
                continue;
            }
        };
        let Some(status) = rotation.status else {
            continue;
        };
        let mut found = Vec::new();
        // Loading the state checks the numbers themselves: private key
        // and token versions trusted, public versions ascending.
        match status.state() {
            Err(error) => found.push(format!("{}: {error}", status.status_line)),
            Ok(state) => {
                if let Some(before) = &previous {
                    if state.key_version() < before.key_version() {
                        found.push(format!(
                            "key version went down from {} to {}",
                            before.key_version(),
                            state.key_version()
                        ));
                    }
                    if let Err(error) = before.versions().check_transition(&state.versions()) {
                        found.push(format!("{} -> {}: {error}", before.step(), state.step()));
                    }
                }
                previous = Some(state);
            }
        }
        if let Ok(mut list) = violations.lock() {
            list.extend(found);
        }
        if let Ok(mut count) = checked.lock() {
            *count += 1;
        }
        let _ = sender.send(status);
    }
}

/// The cluster under test and the watches the faults are timed by.
struct Bench {
    scenario: Scenario,
    store: KeyStore,
    statuses: StatusFeed,
    fleet_kids: Tally,
    fleet_restarts: Tally,
    /// Every kind of pod, refreshed through the faults too.
    zoo: Zoo,
    _watches: Vec<tokio::task::JoinHandle<()>>,
    /// Where each controller replica serves, by identity.
    replicas: BTreeMap<String, std::net::SocketAddr>,
    injected: Vec<Injected>,
}

impl Bench {
    async fn start() -> Result<Bench> {
        let scenario = Scenario::start_ha().await?;
        let client = scenario.client.clone();
        let secrets: Vec<String> = (0..FLEET_SECRETS).map(|i| format!("robot-{i}")).collect();
        let deployments: Vec<String> = (0..FLEET_DEPLOYMENTS)
            .map(|i| format!("service-{i}"))
            .collect();
        create_fleet(
            &client,
            FLEET,
            "robot",
            &secrets.iter().map(String::as_str).collect::<Vec<_>>(),
            &deployments.iter().map(String::as_str).collect::<Vec<_>>(),
            2,
        )
        .await?;
        let mut zoo = Zoo::create(&scenario.plane, &client).await?;
        zoo.operate(NAMESPACE, CLUSTER);
        let (fleet_kids, kids_task) =
            tally(Api::<Secret>::namespaced(client.clone(), FLEET), token_kid);
        let (fleet_restarts, restarts_task) = tally(
            Api::<Deployment>::namespaced(client.clone(), FLEET),
            restarted_for,
        );
        let first_addr = scenario.installation.http_addr;
        Ok(Bench {
            scenario,
            store: KeyStore::new(client.clone(), NAMESPACE, CLUSTER),
            statuses: StatusFeed::spawn(client),
            fleet_kids,
            fleet_restarts,
            zoo,
            _watches: vec![kids_task, restarts_task],
            replicas: BTreeMap::from([(FIRST_REPLICA.to_owned(), first_addr)]),
            injected: Vec::new(),
        })
    }

    /// Rotates to key version `to` through the CLI, injecting each fault of
    /// `plan` once when its trigger holds; then checks the cluster.
    async fn rotate(&mut self, to: u64, plan: &[(Trigger, Kill)]) -> Result<()> {
        let started = Instant::now();
        let rotate = self.scenario.ksa(&[
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--skip-prompt",
        ])?;
        ensure!(
            rotate.status.success(),
            "rotate to {to}: {}",
            String::from_utf8_lossy(&rotate.stderr)
        );
        let mut pending: Vec<(Trigger, Kill)> = plan.to_vec();
        let mut log_read = self.scenario.installation.controller_log().len();
        let mut new_kid: Option<String> = None;
        let mut step = Step::Generate;
        loop {
            if started.elapsed() > ROTATION_TIMEOUT {
                bail!(
                    "rotation to {to} did not complete in {ROTATION_TIMEOUT:?} (at {step}); faults left: {pending:?}\n{}",
                    self.scenario.installation.controller_log()
                );
            }
            // The next status, or a look at the fleet every 20 ms.
            let status =
                tokio::time::timeout(Duration::from_millis(20), self.statuses.statuses.recv())
                    .await
                    .ok()
                    .flatten();
            // A step begins when its status is seen, or when the
            // controller logs it: a watch resuming after an API server
            // restart re-lists and misses the statuses written meanwhile.
            let mut begun = Vec::new();
            if let Some(status) = status
                && status.key_version == to
                && let Ok(state) = status.state()
            {
                step = step.max(state.step());
                begun.push(state.step());
            }
            let log = self.scenario.installation.controller_log();
            begun.extend(steps_confirmed(log.get(log_read..).unwrap_or_default()));
            log_read = log.len();
            if let Some(latest) = begun.iter().max() {
                step = step.max(*latest);
                eprintln!("{:>6.1?} rotation to {to}: {step}", started.elapsed());
            }
            // The API server restarts during the rotation; a read that
            // fails is tried again on the next look (the timeout above ends
            // a failure that lasts).
            if new_kid.is_none()
                && step > Step::Generate
                && let Ok(keys) = self.store.public_keys().await
            {
                new_kid = keys
                    .get(&KeyVersion::new(to))
                    .map(|k| k.kid().as_str().to_owned());
            }
            let refreshed = new_kid
                .as_ref()
                .and_then(|kid| self.fleet_kids.borrow().get(kid).copied())
                .unwrap_or(0);
            let restarted = self
                .fleet_restarts
                .borrow()
                .get(&to.to_string())
                .copied()
                .unwrap_or(0);
            let due = pending.iter().position(|(trigger, _)| match trigger {
                Trigger::StepBegins(s) => begun.contains(s),
                Trigger::LegacySecretsPartlyRefreshed => refreshed > 0 && refreshed < FLEET_SECRETS,
                Trigger::RolloutStarted => restarted > 0 && step == Step::RefreshTokens,
            });
            if let Some(index) = due {
                let (trigger, fault) = pending.remove(index);
                let detail = format!(
                    "at {step}; watch saw {refreshed}/{FLEET_SECRETS} legacy Secrets and \
                     {restarted}/{FLEET_DEPLOYMENTS} Deployments refreshed"
                );
                self.inject(fault).await?;
                if trigger == Trigger::LegacySecretsPartlyRefreshed {
                    // With the controller dead the count stands still: the
                    // kill really came mid-step.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let after = new_kid
                        .as_ref()
                        .and_then(|kid| self.fleet_kids.borrow().get(kid).copied())
                        .unwrap_or(0);
                    ensure!(
                        after < FLEET_SECRETS,
                        "the kill came after the legacy refresh finished ({after} refreshed)"
                    );
                }
                eprintln!("kill {fault:?} on {trigger:?} {detail}");
                self.injected.push(Injected {
                    rotation: to,
                    fault,
                    trigger,
                    detail,
                });
            }
            if step == Step::Completed {
                ensure!(
                    pending.is_empty(),
                    "rotation to {to} completed before these faults could be injected: {pending:?}"
                );
                break;
            }
        }
        eprintln!("rotation to {to} completed in {:.1?}", started.elapsed());
        self.check_completed(to).await
    }

    async fn inject(&mut self, fault: Kill) -> Result<()> {
        match fault {
            Kill::Controller => {
                let installation = &mut self.scenario.installation;
                installation.kill_replica(FIRST_REPLICA)?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let addr = installation.http_addr;
                installation.start_replica(FIRST_REPLICA, addr)?;
            }
            Kill::Leader => {
                let client = &self.scenario.client;
                let leader = current_leader(client).await?;
                let killed = Instant::now();
                self.scenario.installation.kill_replica(&leader)?;
                let lease = Duration::from_secs(self.scenario.installation.lease_seconds);
                let successor = loop {
                    match Installation::leader(client).await {
                        Ok(Some(holder)) if holder != leader => break holder,
                        _ => {}
                    }
                    if killed.elapsed() > lease * 2 {
                        bail!(
                            "no replica took over from {leader} in {:?}",
                            killed.elapsed()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                let handover = killed.elapsed();
                eprintln!("{successor} took over from {leader} in {handover:.1?}");
                // The Lease is renewed with 2 s to spare and checked by
                // the standby when it expires: within the lease duration,
                // plus a second for the API calls on a loaded machine.
                ensure!(
                    handover <= lease + Duration::from_secs(1),
                    "hand-over took {handover:?}, more than the {lease:?} lease"
                );
                // The killed replica comes back, as a standby now.
                let addr = self.replicas[&leader];
                self.scenario.installation.start_replica(&leader, addr)?;
            }
            Kill::ApiServer => {
                self.scenario
                    .plane
                    .lock()
                    .await
                    .kill_and_restart_apiserver()
                    .await?;
            }
            Kill::Etcd => {
                self.scenario
                    .plane
                    .lock()
                    .await
                    .kill_and_restart_etcd()
                    .await?;
            }
        }
        Ok(())
    }

    /// A second replica, standing by.
    fn add_replica(&mut self, identity: &str) -> Result<()> {
        let addr = loopback_addr()?;
        self.scenario.installation.start_replica(identity, addr)?;
        self.replicas.insert(identity.to_owned(), addr);
        Ok(())
    }

    /// The rotation to `to` is complete everywhere: one key published and
    /// served, the old key deleted, every legacy token re-minted, every
    /// Deployment restarted, and on the zoo every stale token refreshed and
    /// nothing else touched ([`Zoo::check`]).
    async fn check_completed(&self, to: u64) -> Result<()> {
        let client = &self.scenario.client;
        let rotation = Api::<KSASigningKeyRotation>::namespaced(client.clone(), NAMESPACE)
            .get(CLUSTER)
            .await?;
        let state = rotation.state()?;
        ensure!(
            state.step() == Step::Completed && state.key_version() == KeyVersion::new(to),
            "not completed at {to}: {state:?}"
        );
        let keys = self.store.public_keys().await?;
        ensure!(
            keys.keys().copied().eq([KeyVersion::new(to)]),
            "the key store holds versions {:?}, not just {to}",
            keys.keys().collect::<Vec<_>>()
        );
        let kid = keys[&KeyVersion::new(to)].kid().as_str().to_owned();
        let jwks = client
            .request_text(http::Request::get("/openid/v1/jwks").body(Vec::new())?)
            .await?;
        let served: Vec<String> = ksa_core::jwk::parse_jwks(&jwks)?
            .iter()
            .map(|k| k.kid.as_str().to_owned())
            .collect();
        ensure!(served == [kid.clone()], "the API server serves {served:?}");
        let secrets = Api::<Secret>::namespaced(client.clone(), FLEET)
            .list(&Default::default())
            .await?;
        let stale: Vec<_> = secrets
            .iter()
            .filter(|s| token_kid(s).as_deref() != Some(kid.as_str()))
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        ensure!(stale.is_empty(), "legacy Secrets not re-minted: {stale:?}");
        ensure!(secrets.items.len() == FLEET_SECRETS);
        let deployments = Api::<Deployment>::namespaced(client.clone(), FLEET)
            .list(&Default::default())
            .await?;
        let not_restarted: Vec<_> = deployments
            .iter()
            .filter(|d| restarted_for(d) != Some(to.to_string()))
            .filter_map(|d| d.metadata.name.clone())
            .collect();
        ensure!(
            not_restarted.is_empty(),
            "Deployments not restarted: {not_restarted:?}"
        );
        ensure!(
            self.scenario
                .accepted(&self.scenario.legacy_token().await?)
                .await?,
            "the workload's legacy token is not accepted"
        );
        self.zoo.check(to).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotations_complete_through_crashes_restarts_and_hand_overs() -> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let mut bench = Bench::start().await?;

    // 1 -> 2: the controller dies as each step begins.
    let boundaries: Vec<(Trigger, Kill)> = [
        Step::Generate,
        Step::Trust,
        Step::Sign,
        Step::RefreshTokens,
        Step::Retire,
        Step::Completed,
    ]
    .into_iter()
    .map(|step| (Trigger::StepBegins(step), Kill::Controller))
    .collect();
    bench.rotate(2, &boundaries).await?;
    bench.zoo.ready_for_next(2).await?;

    // 2 -> 3: the controller dies mid-step; the control plane's own
    // processes die while the rotation waits on them.
    let mid_step = [
        (Trigger::StepBegins(Step::Trust), Kill::Etcd),
        (Trigger::StepBegins(Step::Sign), Kill::ApiServer),
        (Trigger::LegacySecretsPartlyRefreshed, Kill::Controller),
        (Trigger::RolloutStarted, Kill::Controller),
        (Trigger::StepBegins(Step::Retire), Kill::Etcd),
    ];
    bench.rotate(3, &mid_step).await?;
    bench.zoo.ready_for_next(3).await?;

    // 3 -> 4: two replicas; the leader dies twice, the second time the
    // replica that took over the first time.
    bench.add_replica("ksa-controller-1")?;
    let hand_overs = [
        (Trigger::StepBegins(Step::Trust), Kill::Leader),
        (Trigger::StepBegins(Step::RefreshTokens), Kill::Leader),
    ];
    bench.rotate(4, &hand_overs).await?;

    let stats = bench.scenario.prober.stats().await;
    let violations = bench.statuses.violations();
    eprintln!("\n| rotation | fault | trigger | state hit |\n|---|---|---|---|");
    for injected in &bench.injected {
        eprintln!(
            "| {} | {:?} | {:?} | {} |",
            injected.rotation, injected.fault, injected.trigger, injected.detail
        );
    }
    eprintln!(
        "faults injected: {}, rotations completed: 3, statuses checked: {}, invariant violations: {}, \
         tokens reviewed: {}, wrongly rejected: {}, requests refused while the API server was down: {}",
        bench.injected.len(),
        bench.statuses.checked(),
        violations.len(),
        stats.reviews,
        stats.wrongly_rejected.len(),
        stats.unavailable
    );
    assert_eq!(
        bench.injected.len(),
        boundaries.len() + mid_step.len() + hand_overs.len(),
        "every planned fault was injected"
    );
    assert!(violations.is_empty(), "invariants broken: {violations:?}");
    // Three rotations, each rolling out three key sets to three instances.
    let asks = bench.scenario.check_roll_outs().await?;
    assert!(asks >= 27, "only {asks} roll-out steps were checked");
    assert!(
        bench.statuses.checked() >= 15,
        "too few statuses seen to mean anything"
    );
    assert!(
        stats.wrongly_rejected.is_empty(),
        "valid tokens were rejected: {:?}",
        stats.wrongly_rejected
    );
    assert!(
        stats.reviews > 100,
        "the prober reviewed too little: {stats:?}"
    );
    Ok(())
}

/// The replica that holds the leader Lease. The API server restarts during
/// a rotation, so a read that fails is tried again for a while.
async fn current_leader(client: &kube::Client) -> Result<String> {
    let started = Instant::now();
    loop {
        match Installation::leader(client).await {
            Ok(Some(holder)) => return Ok(holder),
            outcome if started.elapsed() > Duration::from_secs(30) => {
                bail!("no replica holds the leader Lease after 30 s: {outcome:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
