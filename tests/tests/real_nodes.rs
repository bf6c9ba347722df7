//! On real nodes (issue 31): containerd, runc and the kubelet run the pods,
//! which read the service-account tokens their kubelet projects into them
//! and present them to the API server: through the `kubernetes` Service, or,
//! where the one API server instance is rolled, at its address
//! ([`node::reach_api_server_directly`] says why).
//! Each test runs in namespaces of its own ([`node::enter`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::KeySpec;
use ksa_tests::cluster::{create_namespace, create_service_account};
use ksa_tests::hosted::APISERVER_CONTAINER;
use ksa_tests::netns::Netns;
use ksa_tests::node::{self, Presentations, ReaderLogs, RealNode};
use ksa_tests::scenario::{APISERVER_DEPLOYMENT, APPS, CLUSTER, Scenario};
use ksa_tests::{ApiServerKeys, ControlPlane, ISSUER, InstanceSpec, Signing, eventually};
use kube::api::{Api, ListParams, PostParams};

/// How long pods may take to start on a loaded machine.
const PODS_WITHIN: Duration = Duration::from_secs(180);

/// The presentations of every token reader pod of `app` in `namespace`
/// on `node`, by pod name.
async fn presentations(
    client: &kube::Client,
    node: &RealNode,
    namespace: &str,
    app: &str,
) -> Result<Vec<(String, Presentations)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut all = Vec::new();
    for pod in pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
    {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let lines = node.container_log(namespace, &name, "reader")?;
        if let Some(last) = Presentations::last(&lines) {
            all.push((name, last));
        }
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_on_a_real_node_presents_its_projected_token_through_the_service() -> Result<()> {
    if let Netns::Ran(outcome) = node::enter()? {
        return outcome;
    }
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let spec = InstanceSpec::new(Signing::KeyFiles(ApiServerKeys::single(key.clone())));
    let mut plane = ControlPlane::start_for_nodes(spec, Vec::new()).await?;
    plane.start_controller_manager()?;
    plane.start_scheduler(&[])?;
    let node = RealNode::start(&plane, 0).await?;
    let client = plane.client().await?;
    create_namespace(&client, "apps").await?;
    create_service_account(&client, "apps", "app").await?;
    Api::<Deployment>::namespaced(client.clone(), "apps")
        .create(
            &PostParams::default(),
            &node::token_reader_deployment("reader", "app", 2),
        )
        .await?;
    let kid = key.kid().to_string();
    let seen = eventually(
        "two readers, each with 3 tokens accepted",
        PODS_WITHIN,
        || async {
            let seen = presentations(&client, &node, "apps", "reader").await?;
            ensure!(
                seen.len() == 2,
                "{} readers have presented: {seen:?}",
                seen.len()
            );
            for (pod, p) in &seen {
                ensure!(p.accepted >= 3, "{pod}: {p:?}");
            }
            Ok(seen)
        },
    )
    .await?;
    for (pod, p) in &seen {
        ensure!(p.rejected == 0, "{pod}: a token was rejected: {p:?}");
        ensure!(
            p.kid == kid,
            "{pod} presented kid {} rather than {kid}",
            p.kid
        );
    }
    eprintln!("presentations: {seen:?}");
    Ok(())
}

/// The kid in a JWT's header.
fn kid_of(token: &str) -> Result<String> {
    Ok(ksa_core::token::decode(token)?
        .header
        .kid
        .unwrap_or_default())
}

/// The issuer the test rotates to.
const NEW_ISSUER: &str = "https://issuer-b.example";

/// What the token readers of a node presented while something ran.
struct Followed {
    logs: Arc<std::sync::Mutex<ReaderLogs>>,
    follower: tokio::task::JoinHandle<()>,
}

impl Followed {
    /// Follows every reader's log on `node` (a replaced pod's too, to its
    /// last line), from now on.
    fn start(node: &RealNode) -> Followed {
        let logs = Arc::new(std::sync::Mutex::new(ReaderLogs::new(node)));
        let follower = {
            let logs = logs.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(mut logs) = logs.lock() {
                        let _ = logs.poll();
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Followed { logs, follower }
    }

    /// Every reader container's last counts, by log path.
    fn poll(&self) -> Result<std::collections::BTreeMap<std::path::PathBuf, Presentations>> {
        self.logs
            .lock()
            .map_err(|_| anyhow::anyhow!("the reader logs' lock is poisoned"))?
            .poll()
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// The totals of every reader container seen: containers, presentations,
/// accepted, rejected, unanswered.
fn totals(all: &std::collections::BTreeMap<std::path::PathBuf, Presentations>) -> [u64; 5] {
    let sum = |f: fn(&Presentations) -> u64| all.values().map(f).sum();
    [
        all.len() as u64,
        sum(|p| p.count),
        sum(|p| p.accepted),
        sum(|p| p.rejected),
        sum(|p| p.unavailable),
    ]
}

/// Runs `ksa` with `args` (a rotation with `--wait`), fails with the
/// controller's log when it fails, and says how long it took.
fn rotate(scenario: &Scenario, what: &str, args: &[&str]) -> Result<()> {
    let started = Instant::now();
    let rotate = scenario.ksa(args)?;
    ensure!(
        rotate.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&rotate.stderr),
        scenario.installation.controller_log()
    );
    eprintln!("{what} took {:.1?}", started.elapsed());
    Ok(())
}

/// Waits until the three readers of `app` present, accepted, a token of
/// a key other than `old_kid` issued by `issuer`; returns its kid.
async fn readers_present(
    client: &kube::Client,
    node: &RealNode,
    old_kid: &str,
    issuer: &str,
) -> Result<String> {
    eventually(
        &format!("every reader presents a new key's token issued by {issuer}"),
        PODS_WITHIN,
        || async {
            let seen = presentations(client, node, APPS, "reader").await?;
            ensure!(seen.len() == 3, "{seen:?}");
            ensure!(
                seen.iter()
                    .all(|(_, p)| p.kid != old_kid && p.issuer == issuer && p.status == "201"),
                "{seen:?}"
            );
            Ok(seen[0].1.kid.clone())
        },
    )
    .await
}

/// The claims of the token in each projected volume of every running
/// reader pod: (pod, volume, kid, issuer).
async fn reader_token_files(
    client: &kube::Client,
    node: &RealNode,
) -> Result<Vec<(String, String, String, String)>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
    let mut found = Vec::new();
    for pod in pods
        .list(&ListParams::default().labels("app=reader"))
        .await?
    {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        for (volume, token) in node.projected_tokens(&uid)? {
            let claims = ksa_core::token::decode(&token)?;
            found.push((
                name.clone(),
                volume,
                kid_of(&token)?,
                claims.claims.iss.clone().unwrap_or_default(),
            ));
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_files_stay_accepted_across_a_key_rotation_and_an_issuer_rotation_that_restart_pods()
-> Result<()> {
    if let Netns::Ran(outcome) = node::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    let scenario = Scenario::start_on_a_real_node_with_apiserver_workload().await?;
    let node = scenario.real_node.as_ref().context("no real node")?;
    let client = scenario.client.clone();
    // The API server workload whose issuer args the issuer rotation
    // rewrites; Sign follows Trust after 5 s.
    std::fs::write(
        &scenario.config,
        format!(
            "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\ngkeOnPremVersion: 1.16.0-gke.669\n\
             enableAdvancedCluster: false\nksaSigningKeyRotation:\n  apiServerWorkload: \
             {{kind: Deployment, name: {APISERVER_DEPLOYMENT}, container: {APISERVER_CONTAINER}}}\n  \
             trustLeadTimeSeconds: 5\n"
        ),
    )?;
    let mut readers = node::token_reader_deployment("reader", "app", 3);
    node::reach_api_server_directly(&mut readers, &scenario.plane.lock().await.server_url())?;
    Api::<Deployment>::namespaced(client.clone(), APPS)
        .create(&PostParams::default(), &readers)
        .await?;
    let first_kid = scenario.first_key.kid().to_string();
    eventually(
        "three readers, each with a token accepted",
        PODS_WITHIN,
        || async {
            let seen = presentations(&client, node, APPS, "reader").await?;
            ensure!(
                seen.len() == 3
                    && seen
                        .iter()
                        .all(|(_, p)| p.accepted >= 1 && p.issuer == ISSUER),
                "{seen:?}"
            );
            Ok(())
        },
    )
    .await?;
    eprintln!("cluster and readers ready in {:.1?}", clock.elapsed());
    let followed = Followed::start(node);

    // 1. The key, pods restarted.
    rotate(
        &scenario,
        "the key rotation",
        &[
            "update",
            "credentials",
            "ksa-signing-key",
            "rotate",
            "--skip-prompt",
            "--accept-outside-legacy-tokens",
            "--wait",
            "--timeout",
            "10m",
        ],
    )?;
    let new_kid = readers_present(&client, node, &first_kid, ISSUER).await?;
    let after_key = totals(&followed.poll()?);

    // 2. The issuer, pods restarted again.
    rotate(
        &scenario,
        "the issuer rotation",
        &[
            "update",
            "credentials",
            "ksa-issuer",
            "rotate",
            "--issuer",
            NEW_ISSUER,
            "--skip-prompt",
            "--wait",
            "--timeout",
            "10m",
        ],
    )?;
    let kid = readers_present(&client, node, &first_kid, NEW_ISSUER).await?;
    ensure!(
        kid == new_kid,
        "the issuer rotation changed the key: {new_kid} -> {kid}"
    );
    let all = followed.poll()?;
    let [containers, total, accepted, rejected, unanswered] = totals(&all);
    eprintln!(
        "token readers: {containers} containers, {total} presentations: {accepted} accepted, \
         {rejected} rejected, {unanswered} unanswered (after the key rotation: {} containers, {} \
         presentations, {} accepted, {} rejected, {} unanswered); kid {first_kid} -> {new_kid}, \
         issuer {ISSUER} -> {NEW_ISSUER}; {:.1?} in all",
        after_key[0],
        after_key[1],
        after_key[2],
        after_key[3],
        after_key[4],
        clock.elapsed()
    );
    ensure!(rejected == 0, "presentations were rejected: {all:?}");
    // Three readers, replaced by each rotation.
    ensure!(
        after_key[0] >= 6 && containers >= 9,
        "the readers were not replaced by each rotation: {all:?}"
    );
    // After Retire, no running reader's token file holds the retired key
    // or the retired issuer.
    let files = reader_token_files(&client, node).await?;
    ensure!(files.len() >= 3, "token files: {files:?}");
    for (pod, volume, kid, issuer) in &files {
        ensure!(
            *kid == new_kid && issuer == NEW_ISSUER,
            "{pod}: volume {volume} holds a token of kid {kid}, issuer {issuer}, not of \
             {new_kid}, {NEW_ISSUER}"
        );
    }
    Ok(())
}

/// The lifetime of the token the kubelet refresh test's reader holds: the
/// shortest the API server issues.
const REFRESHED_TOKEN_SECONDS: u64 = 600;

/// When the controller first logged a line with all of `parts` (its lines
/// begin with their time).
fn controller_logged(log: &str, parts: &[&str]) -> Option<jiff::Timestamp> {
    log.lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .find_map(|line| line.split_whitespace().next()?.parse().ok())
}

/// The kid and the issue time of a token.
fn kid_and_iat(token: &str) -> Result<(String, jiff::Timestamp)> {
    let decoded = ksa_core::token::decode(token)?;
    let iat = decoded.claims.iat.context("the token has no iat")?;
    Ok((
        decoded.header.kid.unwrap_or_default(),
        jiff::Timestamp::from_second(iat)?,
    ))
}

/// The `wait` policy with its refreshes observed (`tokenRefresh.observe:
/// AuditWebhook`): the API server, given the audit webhook Secret the
/// controller wrote, tells the controller of the kubelet's TokenRequest,
/// and RefreshTokens ends on it, not by the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_wait_policy_refresh_tokens_ends_when_the_kubelets_refresh_is_observed_not_by_the_window()
-> Result<()> {
    if let Netns::Ran(outcome) = node::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    let scenario = Scenario::start_on_a_real_node().await?;
    let node = scenario.real_node.as_ref().context("no real node")?;
    let client = scenario.client.clone();
    std::fs::write(
        &scenario.config,
        format!(
            "apiVersion: v1\nkind: UserCluster\nname: {CLUSTER}\ngkeOnPremVersion: 1.16.0-gke.669\n\
             enableAdvancedCluster: false\nksaSigningKeyRotation:\n  tokenRefresh: {{policy: wait, observe: AuditWebhook}}\n"
        ),
    )?;
    // Only the reader holds a bound token, of 600 s: `web`, whose default
    // token lives an hour, would hold the window that long (and its image
    // is no node's).
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), APPS);
    deployments.delete("web", &Default::default()).await?;
    let mut reader = node::token_reader_deployment("reader", "app", 1);
    node::with_projected_token(&mut reader, REFRESHED_TOKEN_SECONDS as i64)?;
    node::reach_api_server_directly(&mut reader, &scenario.plane.lock().await.server_url())?;
    deployments.create(&PostParams::default(), &reader).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
    let old_kid = scenario.first_key.kid().to_string();
    let (pod, uid) = eventually(
        "the reader presents its token, web's pod gone",
        PODS_WITHIN,
        || async {
            let all = pods.list(&ListParams::default()).await?.items;
            ensure!(
                all.len() == 1,
                "pods: {:?}",
                all.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
            );
            let seen = presentations(&client, node, APPS, "reader").await?;
            ensure!(seen.len() == 1 && seen[0].1.accepted >= 1, "{seen:?}");
            Ok((
                all[0].metadata.name.clone().unwrap_or_default(),
                all[0].metadata.uid.clone().unwrap_or_default(),
            ))
        },
    )
    .await?;
    let token_file = || -> Result<(String, jiff::Timestamp)> {
        let tokens = node.projected_tokens(&uid)?;
        kid_and_iat(tokens.get(node::TOKEN_VOLUME).context("no token volume")?)
    };
    let (kid, issued) = token_file()?;
    ensure!(
        kid == old_kid,
        "the reader's token is of {kid}, not {old_kid}"
    );
    eprintln!(
        "cluster and reader ready in {:.1?}; its token was issued at {issued}",
        clock.elapsed()
    );
    let followed = Followed::start(node);

    let mut rotate = scenario.ksa_process(&[
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--skip-prompt",
        "--accept-outside-legacy-tokens",
        "--wait",
        "--timeout",
        "30m",
    ])?;
    // As an operator does once the rotation asked for its feed: the API
    // server gets the controller's audit webhook Secret.
    scenario
        .mount_audit_webhook(Duration::from_secs(120))
        .await
        .with_context(|| scenario.installation.controller_log())?;
    eprintln!(
        "the API server posts its audit events to the controller, {:.1?} in",
        clock.elapsed()
    );
    // The first time the file was seen to hold another key's token, and
    // that token's issue time (when the kubelet asked for it).
    let mut refreshed: Option<(jiff::Timestamp, String, jiff::Timestamp)> = None;
    let status = loop {
        if let Some(status) = rotate.try_wait()? {
            break status;
        }
        if refreshed.is_none()
            && let Ok((kid, iat)) = token_file()
            && kid != old_kid
        {
            eprintln!("the kubelet refreshed the token: kid {kid}, issued at {iat}");
            refreshed = Some((jiff::Timestamp::now(), kid, iat));
        }
        ensure!(
            clock.elapsed() < Duration::from_secs(30 * 60),
            "the rotation did not end in 30 minutes"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let output = rotate.wait_with_output()?;
    let log = scenario.installation.controller_log();
    ensure!(
        status.success(),
        "rotate failed: {}\n{log}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (seen_at, new_kid, new_iat) =
        refreshed.context("the rotation completed and the kubelet never refreshed the token")?;
    let began = controller_logged(&log, &["step confirmed", "to=RefreshTokens"])
        .context("the controller never logged RefreshTokens")?;
    let ended = controller_logged(&log, &["step confirmed", "from=RefreshTokens", "to=Retire"])
        .context("the controller never logged RefreshTokens' end")?;
    let secs = |from: jiff::Timestamp, to: jiff::Timestamp| (to - from).get_seconds();
    let model = ksa_core::rotation::kubelet_refresh_window(REFRESHED_TOKEN_SECONDS, Duration::ZERO);
    // Where the window ksa waited out before would have closed: from
    // RefreshTokens' start, with the clock skew the rotation allows.
    let window = ksa_core::rotation::kubelet_refresh_window(
        REFRESHED_TOKEN_SECONDS,
        ksa_core::rotation::Policy::default().clock_skew,
    );
    let window_end = began + jiff::SignedDuration::try_from(window)?;
    eprintln!(
        "observed: the kubelet requested the new token {} s after issue; RefreshTokens ended \
         {} s after that request ({} s after the refresh was seen in the pod's file), {} s after \
         it began; the window would have ended {} s after it began ({} s after issue), {} s \
         later than RefreshTokens did",
        secs(issued, new_iat),
        secs(new_iat, ended),
        secs(seen_at, ended),
        secs(began, ended),
        window.as_secs(),
        secs(issued, window_end),
        secs(ended, window_end),
    );
    eprintln!(
        "kubelet refresh of a {REFRESHED_TOKEN_SECONDS} s token issued at {issued}: requested \
         {} s after issue (80%: {} s), seen in the pod's file {} s after issue; the model: by {} \
         s after issue (80% + slack), plus skew. RefreshTokens began {} s after issue, ended {} \
         s after it began ({} s after the file was refreshed); {:.1?} in all",
        secs(issued, new_iat),
        REFRESHED_TOKEN_SECONDS * 8 / 10,
        secs(issued, seen_at),
        model.as_secs(),
        secs(issued, began),
        secs(began, ended),
        secs(seen_at, ended),
        clock.elapsed()
    );
    // The pod was not restarted, and the kubelet refreshed its token
    // before ksa's step ended, within the model's window.
    let now = pods.get(&pod).await?;
    ensure!(
        now.metadata.uid.as_deref() == Some(uid.as_str()),
        "the reader pod was replaced"
    );
    let restarts: i32 = now
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    ensure!(
        restarts == 0,
        "the reader's container restarted {restarts} times"
    );
    // It ended on the kubelet's request: after it (the token in the file
    // is seen by a poll each second, so to within that), soon after it,
    // and well before the window.
    ensure!(
        new_kid != old_kid && new_iat <= ended && secs(seen_at, ended) >= -2,
        "RefreshTokens ended at {ended}, before the kubelet refreshed the token (requested at \
         {new_iat}, seen in the file at {seen_at})"
    );
    ensure!(
        secs(new_iat, ended) <= 60,
        "RefreshTokens ended {} s after the kubelet's request: not on the observation",
        secs(new_iat, ended)
    );
    ensure!(
        secs(ended, window_end) >= 60,
        "RefreshTokens ended {} s before the window would have: not on the observation",
        secs(ended, window_end)
    );
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), ksa_tests::scenario::NAMESPACE);
    let unseen: Vec<String> = events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RefreshNotObserved"))
        .filter_map(|e| e.message)
        .collect();
    ensure!(unseen.is_empty(), "the refresh went unseen: {unseen:?}");
    ensure!(
        secs(issued, seen_at) <= model.as_secs() as i64,
        "the kubelet refreshed the token {} s after issue, later than the model's {} s",
        secs(issued, seen_at),
        model.as_secs()
    );
    let (kid, _) = token_file()?;
    ensure!(kid == new_kid, "the file went back to {kid}");
    let last = eventually("the reader presents the new token", PODS_WITHIN, || async {
        let all = followed.poll()?;
        let last = all.values().next().cloned().context("no reader log")?;
        ensure!(last.kid == new_kid && last.status == "201", "{last:?}");
        Ok(all)
    })
    .await?;
    let [containers, total, accepted, rejected, unanswered] = totals(&last);
    eprintln!(
        "token reader: {containers} container, {total} presentations: {accepted} accepted, \
         {rejected} rejected, {unanswered} unanswered"
    );
    ensure!(rejected == 0 && containers == 1, "{last:?}");
    Ok(())
}

/// Where `cargo xtask image` wrote its image layouts (`target/image/`),
/// which `cargo xtask e2e` and `ci` build and set.
const IMAGE_DIR_ENV: &str = "KSA_IMAGE_DIR";
/// The registry the README's blocks name, as the tests fill it in.
const REGISTRY: &str = "registry.example";
/// The namespace the README installs the chart in.
const RELEASE_NAMESPACE: &str = "ksa-system";

/// The README image block's `skopeo copy oci:LAYOUT:TAG docker://REF`:
/// the layout (under [`IMAGE_DIR_ENV`]), its tag and the reference it is
/// pushed as (`REGISTRY` filled in).
fn readme_image_push(block: &str) -> Result<(std::path::PathBuf, String, String)> {
    let line = block
        .lines()
        .find(|l| l.starts_with("skopeo copy "))
        .context("the README's image block has no `skopeo copy` line")?;
    let mut words = line.split_whitespace().skip(2);
    let (Some(from), Some(to)) = (words.next(), words.next()) else {
        bail!("the README's `{line}` names no source and destination");
    };
    let (layout, tag) = from
        .strip_prefix("oci:target/image/")
        .and_then(|l| l.rsplit_once(':'))
        .with_context(|| format!("{from} is not oci:target/image/NAME:TAG"))?;
    let reference = to
        .strip_prefix("docker://")
        .with_context(|| format!("{to} is not docker://REFERENCE"))?
        .replace("REGISTRY", REGISTRY);
    let dir = std::env::var_os(IMAGE_DIR_ENV).map(std::path::PathBuf::from).context(
        "KSA_IMAGE_DIR is not set: the chart test on a real node runs the controller's image. Run \
         it with `cargo xtask e2e` (or `ci`), which builds it (`cargo xtask image`) and sets it",
    )?;
    let layout = dir.join(layout);
    ensure!(
        layout.join("index.json").is_file(),
        "{} is no image layout: run `cargo xtask image`",
        layout.display()
    );
    Ok((layout, tag.to_owned(), reference))
}

/// The chart's controller pods, once `count` of them run and are ready on
/// `node`, from the template restarted for `restarted_for` when given.
async fn chart_pods(
    client: &kube::Client,
    node: &RealNode,
    count: usize,
    restarted_for: Option<&str>,
) -> Result<Vec<Pod>> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    eventually(
        &format!("{count} controller pods ready on {}", node.name),
        PODS_WITHIN,
        || async {
            let deployment = deployments
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .next()
                .context("the chart made no Deployment")?;
            let labels = deployment
                .spec
                .and_then(|s| s.selector.match_labels)
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let all = pods
                .list(&ListParams::default().labels(&labels))
                .await?
                .items;
            let ready: Vec<Pod> = all
                .iter()
                .filter(|pod| {
                    pod.metadata.deletion_timestamp.is_none()
                        && pod
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                        && restarted_for.is_none_or(|version| {
                            pod.metadata
                                .annotations
                                .as_ref()
                                .and_then(|a| a.get(ksa_kube::refresh::RESTART_ANNOTATION))
                                .is_some_and(|v| v == version)
                        })
                })
                .cloned()
                .collect();
            let statuses: Vec<_> = all
                .iter()
                .map(|p| {
                    let status = p.status.as_ref();
                    (
                        p.metadata.name.clone().unwrap_or_default(),
                        status.and_then(|s| s.phase.clone()).unwrap_or_default(),
                        status
                            .and_then(|s| s.container_statuses.as_ref())
                            .map(|c| c.iter().filter(|c| c.ready).count())
                            .unwrap_or_default(),
                    )
                })
                .collect();
            ensure!(ready.len() == count, "{statuses:?}");
            Ok(ready)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_image_installed_by_the_chart_rotates_a_key_on_a_real_node() -> Result<()> {
    use ksa_core::rotation::Step;
    use ksa_kube::api::KSASigningKeyRotation;
    use ksa_tests::readme::{
        helm, install_block, readme_install_blocks, run_readme_block, workspace,
    };
    use ksa_tests::scenario::NAMESPACE;
    if let Netns::Ran(outcome) = node::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    helm()?;
    let blocks = readme_install_blocks()?;
    let (layout, tag, reference) = readme_image_push(install_block(&blocks, "cargo xtask image")?)?;
    let chart_block = install_block(&blocks, "helm install")?.replace("REGISTRY", REGISTRY);
    let key_block = install_block(&blocks, "ksa keys import")?;
    let key = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let spec = InstanceSpec::new(Signing::KeyFiles(ApiServerKeys::single(key.clone())));
    let mut plane = ControlPlane::start_for_nodes(spec, Vec::new()).await?;
    plane.start_controller_manager()?;
    plane.start_scheduler(&[])?;
    let node = RealNode::start(&plane, 0).await?;
    let client = plane.client().await?;
    let dir = plane.dir().to_owned();

    // The image the README pushes, into the node's containerd as the
    // reference it pushes it as (no registry here).
    let archive = dir.join("ksa-controller-image.tar");
    let tarred = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()?;
    ensure!(tarred.success(), "archiving {} failed", layout.display());
    let (base, reference_tag) = reference
        .rsplit_once(':')
        .context("the pushed reference has no tag")?;
    ensure!(
        reference_tag == tag,
        "the README pushes {tag} as {reference}"
    );
    node.import_image(&archive, base)?;

    // What the README takes as there, as tests/tests/helm.rs sets it up.
    let work = dir.join("operator");
    std::fs::create_dir_all(&work)?;
    std::fs::copy(plane.kubeconfig_path(), work.join("admin.kubeconfig"))?;
    std::fs::write(work.join("user-cluster.yaml"), format!("name: {CLUSTER}\n"))?;
    std::fs::write(work.join("sa.key"), key.to_pem().as_bytes())?;
    std::fs::write(
        work.join("sa.pub"),
        ksa_core::key::public_keys_to_pem(&[key.public_key().clone()]),
    )?;
    std::os::unix::fs::symlink(workspace().join("charts"), work.join("charts"))?;
    create_namespace(&client, NAMESPACE).await?;
    tokio::task::block_in_place(|| run_readme_block(&work, &chart_block, None))?;
    let pods = chart_pods(&client, &node, 2, None).await?;
    for pod in &pods {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone());
        ensure!(
            image.as_deref() == Some(reference.as_str()),
            "a controller pod runs {image:?}, not {reference}"
        );
    }
    eprintln!(
        "the chart's controller pods ready on {} in {:.1?}",
        node.name,
        clock.elapsed()
    );

    // The hosted roll-out of the key Secret; then the README's key block
    // (`rotate` asks; the operator answers yes).
    let plane = Arc::new(tokio::sync::Mutex::new(plane));
    let _hosted = ksa_tests::HostedApiServer::spawn(
        plane.clone(),
        client.clone(),
        NAMESPACE,
        &format!("{CLUSTER}-apiserver-keys"),
        None,
    );
    let started = Instant::now();
    tokio::task::block_in_place(|| run_readme_block(&work, key_block, Some("y\n")))?;
    let rotations: Api<KSASigningKeyRotation> = Api::namespaced(client.clone(), NAMESPACE);
    eventually(
        "the rotation through the chart's controller completes",
        Duration::from_secs(600),
        || async {
            let state = rotations.get(CLUSTER).await?.state()?;
            ensure!(
                state.step() == Step::Completed && state.key_version().get() == 2,
                "at {} of key {}",
                state.step(),
                state.key_version()
            );
            Ok(())
        },
    )
    .await?;
    eprintln!(
        "the key rotation by the controller in its image took {:.1?}",
        started.elapsed()
    );
    // The rotation restarted the controller's own pods (they held tokens
    // of key 1): the ones running now hold the new key's tokens, from
    // their kubelet.
    let pods = chart_pods(&client, &node, 2, Some("2")).await?;
    let retired = key.kid().to_string();
    for pod in &pods {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let tokens = node.projected_tokens(&uid)?;
        ensure!(!tokens.is_empty(), "{:?} holds no token", pod.metadata.name);
        for (volume, token) in tokens {
            ensure!(
                kid_of(&token)? != retired,
                "{:?}: volume {volume} holds a token of the retired key",
                pod.metadata.name
            );
        }
    }
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        RELEASE_NAMESPACE,
    )
    .get(ksa_controller::run::LEADER_LEASE)
    .await?;
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    ensure!(
        pods.iter()
            .any(|p| p.metadata.name.as_deref() == Some(holder.as_str())),
        "the leader Lease is held by {holder}, not one of the controller's pods"
    );
    eprintln!("{:.1?} in all", clock.elapsed());
    Ok(())
}
