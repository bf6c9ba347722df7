//! Legacy token refresh at scale, for `cargo xtask bench`: on one real
//! control plane, for each size (cumulative: the Secrets of a size stay for
//! the next), it creates legacy token Secrets up to that size, times a bare
//! concurrent update loop over them (the API server's own limit, as the
//! controller's user, so authorized and audited alike), then runs
//! a full rotation with the real `ksa-controller` and measures:
//!
//! - how fast the controller re-minted them (from its log: the RefreshTokens
//!   step confirmed to "re-minted legacy tokens"),
//! - the writes each Secret got during the rotation (a watch counts them),
//! - the controller's peak resident memory (`VmHWM`, a fresh process per
//!   size),
//! - the API requests the controller made for the whole rotation (the API
//!   server's audit log, filtered to the controller's user).
//!
//! Prints one JSON object. Usage: ksa-bench-refresh SIZE...

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::PrivateKey;
use ksa_core::rotation::Step;
use ksa_core::token::{self, Claims, ObjectRef};
use ksa_tests::bench::{RotationBench, RotationRun, patch_each};
use ksa_tests::cluster::{QuickBackoff, create_namespace, create_service_account};
use ksa_tests::install::CONTROLLER_USER;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

const FLEET: &str = "fleet";

fn legacy_secret(name: &str, uid: &str, jwt: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(BTreeMap::from([
                (
                    "kubernetes.io/service-account.name".to_owned(),
                    "robot".to_owned(),
                ),
                (
                    "kubernetes.io/service-account.uid".to_owned(),
                    uid.to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/service-account-token".into()),
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(jwt.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

/// Creates Secrets `robot-{from}`..`robot-{to - 1}` holding a legacy token
/// of `key`, as the token controller would have filled them.
async fn create_secrets(
    client: &kube::Client,
    uid: &str,
    key: &PrivateKey,
    from: usize,
    to: usize,
) -> Result<()> {
    let signer = AwsLc::new().signing_key(key)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), FLEET);
    let account = ObjectRef {
        name: "robot".into(),
        uid: uid.into(),
    };
    let secrets: Vec<Secret> = (from..to)
        .map(|i| {
            let name = format!("robot-{i}");
            let jwt = token::mint(&Claims::legacy(FLEET, &account, &name), signer.as_ref())?;
            Ok(legacy_secret(&name, uid, &jwt))
        })
        .collect::<Result<_>>()?;
    futures::stream::iter(secrets)
        .map(|secret| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &secret).await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Patches every fleet Secret once, as many at a time as the controller
/// re-mints, with a value made in advance as long as a token: the API
/// server's update rate, no signing. The value differs in each `round`: a
/// patch that changes nothing is not written to etcd, and would flatter
/// the loop. `client` is the controller's user, so the API server
/// authorizes, admits and audits these requests as it does the
/// controller's: the admission guards let that user change only
/// `data.token`, so the loop writes its value there (the rotation then
/// re-mints every one). Returns Secrets per second.
async fn bare_update_loop(
    client: &kube::Client,
    size: usize,
    token_len: usize,
    round: u64,
) -> Result<f64> {
    let api: Api<Secret> = Api::namespaced(client.clone(), FLEET);
    let value = format!("{round:x>token_len$}");
    let patch = json!({"data": {"token": base64::engine::general_purpose::STANDARD.encode(value)}});
    let started = Instant::now();
    patch_each(&api, (0..size).map(|i| format!("robot-{i}")), &patch).await?;
    Ok(size as f64 / started.elapsed().as_secs_f64())
}

/// Writes seen to each fleet Secret, by name.
type WriteCounts = std::sync::Arc<std::sync::Mutex<BTreeMap<String, u64>>>;

/// Counts writes to each fleet Secret from now on.
fn count_writes(client: &kube::Client) -> (WriteCounts, tokio::task::JoinHandle<()>) {
    let counts = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let shared = counts.clone();
    let api: Api<Secret> = Api::namespaced(client.clone(), FLEET);
    let task = tokio::spawn(async move {
        // Events after the initial list are writes.
        let events = watcher(api, watcher::Config::default()).backoff(QuickBackoff);
        let mut events = std::pin::pin!(events);
        let mut listed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => listed = true,
                Ok(watcher::Event::Apply(secret)) if listed => {
                    let name = secret.metadata.name.unwrap_or_default();
                    if let Ok(mut counts) = shared.lock() {
                        *counts.entry(name).or_insert(0) += 1;
                    }
                }
                _ => {}
            }
        }
    });
    (counts, task)
}

/// Waits until the watch has seen a write to `size` Secrets.
async fn wait_written(writes: &WriteCounts, size: usize) -> Result<()> {
    let started = Instant::now();
    loop {
        let written = writes.lock().map(|w| w.len()).unwrap_or_default();
        if written == size {
            return Ok(());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the bare update loop wrote {written} of {size} Secrets"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The row of one size: the rotation beside the bare loop.
fn row(
    run: &RotationRun,
    size: usize,
    bare_per_s: f64,
    writes: &BTreeMap<String, u64>,
) -> Result<serde_json::Value> {
    let refresh_began = run.entered(Step::RefreshTokens)?;
    // The last pass that re-minted any (a write that raced another is
    // retried by the next pass).
    let reminted = run.last_logged(&["re-minted legacy tokens"])?;
    let refresh_seconds = reminted.duration_since(refresh_began).as_secs_f64();
    let total_writes: u64 = writes.values().sum();
    ensure!(
        writes.len() == size,
        "{} of {size} Secrets were written",
        writes.len()
    );
    Ok(json!({
        "secrets": size,
        "bare_per_s": bare_per_s,
        "controller_per_s": size as f64 / refresh_seconds,
        "refresh_seconds": refresh_seconds,
        "bare_seconds": size as f64 / bare_per_s,
        "writes_per_secret": total_writes as f64 / size as f64,
        "max_writes_to_one_secret": writes.values().max().copied().unwrap_or(0),
        "controller_peak_rss_mib": run.controller_peak_rss_mib,
        "controller_cpu_seconds": run.controller_cpu_seconds,
        "rotation_api_requests": run.api_requests.len(),
        "rotation_seconds": run.seconds,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().context("usage: ksa-bench-refresh SIZE..."))
        .collect::<Result<_>>()?;
    ensure!(
        !sizes.is_empty() && sizes.windows(2).all(|w| w[0] < w[1]),
        "sizes ascending, at least one"
    );
    let mut bench = RotationBench::start(async |_| Ok(())).await?;
    let client = bench.client.clone();
    let as_controller = bench.plane.lock().await.controller_client().await?;
    let key = bench.key.clone();
    create_namespace(&client, FLEET).await?;
    let uid = create_service_account(&client, FLEET, "robot")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    let token_len = token::mint(
        &Claims::legacy(
            FLEET,
            &ObjectRef {
                name: "robot".into(),
                uid: uid.clone(),
            },
            "robot-0",
        ),
        AwsLc::new().signing_key(&key)?.as_ref(),
    )?
    .len();
    let mut rows = Vec::new();
    let mut created = 0;
    for (to, size) in (2u64..).zip(sizes) {
        let started = Instant::now();
        create_secrets(&client, &uid, &key, created, size).await?;
        created = size;
        let count = Api::<Secret>::namespaced(client.clone(), FLEET)
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        ensure!(count == size, "{count} Secrets, not {size}");
        eprintln!("{size} legacy Secrets in {:.1?}", started.elapsed());
        let (writes, watch) = count_writes(&client);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let bare = bare_update_loop(&as_controller, size, token_len, to).await?;
        eprintln!("bare update loop: {bare:.0} Secrets/s");
        wait_written(&writes, size).await?;
        // The watch counting writes ran through the bare loop too, so both
        // had its load; the count starts now.
        if let Ok(mut counts) = writes.lock() {
            counts.clear();
        }
        let run = bench.rotate(to).await;
        watch.abort();
        let counts = writes.lock().map(|w| w.clone()).unwrap_or_default();
        let run = run?;
        let row = row(&run, size, bare, &counts)?;
        eprintln!("{row}");
        rows.push(row);
    }
    println!(
        "{}",
        json!({ "sizes": rows, "controller_user": CONTROLLER_USER })
    );
    Ok(())
}
