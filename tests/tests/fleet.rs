//! A fleet (issue 34): five hosted user clusters, each its own control
//! plane signing with its own key, rotated at once by ONE controller
//! watching the admin cluster, where each has its namespace, rotation,
//! kubeconfig Secret and key Secrets ([`ksa_tests::fleet`]).
//!
//! One of them runs a workload whose PodDisruptionBudget allows no
//! disruption: its refresh (an eviction, under restart-pods) is blocked,
//! and its status says so (the PDB in `blockedHolders` and `waitingFor`,
//! Ready `Blocked`, a `RefreshBlocked` Event), while the four others
//! complete: the stuck one holds none of them back. Throughout, each
//! cluster's lock (its `NAME-operation-lock` Lease) names that cluster's
//! rotation only, each cluster's API server ends up signing with the key
//! its own key Secret holds (five different keys), and a prober per
//! cluster presents that cluster's tokens: none that must be accepted is
//! rejected. Once the operator deletes the PDB, the stuck one completes
//! too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::Event;
use ksa_core::rotation::Step;
use ksa_kube::api::RotationStatus;
use ksa_kube::lock;
use ksa_tests::eventually;
use ksa_tests::fleet::{Fleet, FleetOptions, GUARDED, GUARDED_PDB};
use kube::api::{Api, ListParams};

const CLUSTERS: usize = 5;
/// The cluster whose refresh the PDB blocks (its index in the fleet).
const BLOCKED: usize = 2;
/// The key version every rotation goes to.
const TO: u64 = 2;
/// How long the rotations may take (each restarts its API server at
/// Trust, Sign and Retire; five at once on a loaded machine).
const ROTATE_WITHIN: Duration = Duration::from_secs(420);
/// How long the controller may take to say what it sees.
const SEEN_WITHIN: Duration = Duration::from_secs(120);

/// The holder the status names for the guarded pod, if any.
fn pdb_holder(status: &RotationStatus) -> Option<&String> {
    status.blocked_holders.iter().find(|h| {
        h.starts_with(&format!("{GUARDED}/"))
            && h.contains(&format!("PDB {GUARDED_PDB} allows 0 disruptions"))
    })
}

fn completed(status: &RotationStatus) -> bool {
    status.step == Step::Completed && status.key_version == TO
}

fn ready_reason(status: &RotationStatus) -> Option<(&str, &str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Every operation lock in the admin cluster must be cluster N's own: in
/// namespace N, named `N-operation-lock`, held by N's rotation. Returns
/// what is wrong, and the namespaces of the locks held.
async fn check_locks(
    fleet: &Fleet,
    names: &BTreeSet<String>,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut wrong = Vec::new();
    let mut held = Vec::new();
    for (namespace, name, holder) in fleet.locks().await? {
        if !names.contains(&namespace)
            || name != lock::lease_name(&namespace)
            || (!holder.is_empty() && holder != lock::holder(&namespace))
        {
            wrong.push(format!("{namespace}/{name} held by {holder:?}"));
        }
        if !holder.is_empty() {
            held.push(namespace);
        }
    }
    Ok((wrong, held))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_user_clusters_rotate_at_once_and_a_blocked_one_holds_back_none() -> Result<()> {
    let began = Instant::now();
    let fleet = Fleet::start(FleetOptions::new(CLUSTERS)).await?;
    let log = || fleet.controller_log();
    let names: Vec<String> = fleet.clusters.iter().map(|c| c.name.clone()).collect();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let stuck = &fleet.clusters[BLOCKED];
    stuck.guard_with_pdb().await?;
    // Each cluster signs with its own key, the one its key Secret holds.
    let mut first_kids = BTreeSet::new();
    for cluster in &fleet.clusters {
        let kid = cluster.first_key.kid().as_str().to_owned();
        ensure!(
            fleet.published_signing_kid(&cluster.name).await? == kid,
            "{}: its key Secret holds another key than its API server's",
            cluster.name
        );
        first_kids.insert(kid);
    }
    ensure!(first_kids.len() == CLUSTERS, "the clusters share keys");

    let started = Instant::now();
    fleet.rotate_all().await.with_context(log)?;
    eprintln!(
        "fleet: {CLUSTERS} rotations started ({:.1?} after the test began)",
        began.elapsed()
    );

    // The four others complete while the stuck one is named blocked on
    // its PDB; every lock, every time it is looked at, is its cluster's.
    let wrong_locks = Mutex::new(Vec::<String>::new());
    let held_at_once = Mutex::new(0usize);
    let done_at = Mutex::new(BTreeMap::<String, Duration>::new());
    let (stuck_status, statuses) = eventually(
        "the four others completed while the stuck one is blocked on its PDB",
        ROTATE_WITHIN,
        || async {
            let (wrong, held) = check_locks(&fleet, &all).await?;
            wrong_locks.lock().expect("lock").extend(wrong);
            {
                let mut most = held_at_once.lock().expect("lock");
                *most = (*most).max(held.len());
            }
            let mut statuses = BTreeMap::new();
            for name in &names {
                let status = fleet.status(name).await?;
                if completed(&status) {
                    done_at
                        .lock()
                        .expect("lock")
                        .entry(name.clone())
                        .or_insert_with(|| started.elapsed());
                }
                statuses.insert(name.clone(), status);
            }
            let stuck_status = statuses.remove(&stuck.name).context("the stuck one")?;
            let pending: Vec<String> = statuses
                .iter()
                .filter(|(_, s)| !completed(s))
                .map(|(n, s)| format!("{n} at {:?}: {:?}", s.step, s.waiting_for))
                .collect();
            if !pending.is_empty() || pdb_holder(&stuck_status).is_none() {
                bail!(
                    "not completed: {pending:?}; the stuck one at {:?}, blocked {:?}",
                    stuck_status.step,
                    stuck_status.blocked_holders
                );
            }
            Ok((stuck_status, statuses))
        },
    )
    .await
    .with_context(log)?;
    eprintln!(
        "fleet: four completed after {:.1?}: {:?}",
        started.elapsed(),
        done_at.lock().expect("lock")
    );
    // Still blocked, at RefreshTokens, and the status says on what.
    ensure!(
        stuck_status.step == Step::RefreshTokens && !completed(&stuck_status),
        "the stuck one: {stuck_status:?}"
    );
    // Each status names nothing of another cluster.
    for (name, status) in statuses.iter().chain([(&stuck.name, &stuck_status)]) {
        let text = serde_json::to_string(status)?;
        let others: Vec<&String> = names
            .iter()
            .filter(|other| *other != name && text.contains(other.as_str()))
            .collect();
        ensure!(
            others.is_empty(),
            "{name}'s status names {others:?}: {text}"
        );
    }
    let holder = pdb_holder(&stuck_status).context("named")?.clone();
    eprintln!("{} blocked: {holder}", stuck.name);
    let waiting = stuck_status.waiting_for.clone().unwrap_or_default();
    ensure!(
        waiting.contains(&holder) && waiting.contains("1 blocked"),
        "{}: waiting for {waiting}",
        stuck.name
    );
    let stuck_ready = eventually(
        "the stuck one's Ready says Blocked",
        SEEN_WITHIN,
        || async {
            let status = fleet.status(&stuck.name).await?;
            match ready_reason(&status) {
                Some(("False", "Blocked")) => Ok(status),
                other => bail!("Ready {other:?}"),
            }
        },
    )
    .await?;
    ensure!(
        stuck_ready.step == Step::RefreshTokens,
        "{:?}",
        stuck_ready.step
    );
    let event = eventually(
        "a RefreshBlocked Event in the stuck one's namespace names the PDB",
        SEEN_WITHIN,
        || async {
            let events = Api::<Event>::namespaced(fleet.admin_client.clone(), &stuck.name)
                .list(&ListParams::default())
                .await?;
            events
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("RefreshBlocked"))
                .filter_map(|e| e.message)
                .find(|m| m.contains(&format!("PDB {GUARDED_PDB} allows 0 disruptions")))
                .context("none yet")
        },
    )
    .await?;
    eprintln!("RefreshBlocked: {event}");

    // Each completed cluster: its own status, its lock released, its API
    // server signing with the new key of its own key Secret and accepting
    // that key alone.
    let mut new_kids = BTreeSet::new();
    for (name, status) in &statuses {
        ensure!(
            status.blocked_holders.is_empty()
                && status.waiting_for.as_deref().unwrap_or_default().is_empty()
                && !status.status_line.contains(&stuck.name)
                && ready_reason(status) == Some(("True", "Completed")),
            "{name}: {status:?}"
        );
        let cluster = fleet
            .clusters
            .iter()
            .find(|c| &c.name == name)
            .context("a cluster")?;
        let kid = eventually(
            &format!("{name} runs the key its key Secret holds"),
            SEEN_WITHIN,
            || async {
                let published = fleet.published_signing_kid(name).await?;
                let plane = cluster.plane.lock().await;
                let keys = plane.keys().context("key files")?;
                ensure!(
                    keys.signing.kid().as_str() == published && keys.public.len() == 1,
                    "runs {} accepting {} keys; the Secret holds {published}",
                    keys.signing.kid(),
                    keys.public.len()
                );
                Ok(published)
            },
        )
        .await?;
        ensure!(
            !first_kids.contains(&kid),
            "{name} still signs with a first key"
        );
        new_kids.insert(kid);
    }
    ensure!(
        new_kids.len() == CLUSTERS - 1,
        "the completed clusters share keys: {new_kids:?}"
    );
    eventually("only the stuck one's lock is held", SEEN_WITHIN, || async {
        let (wrong, held) = check_locks(&fleet, &all).await?;
        wrong_locks.lock().expect("lock").extend(wrong);
        ensure!(held == vec![stuck.name.clone()], "held by {held:?}");
        Ok(())
    })
    .await?;

    // The operator deletes the PDB: the stuck one completes by itself.
    let unblocked = Instant::now();
    stuck.remove_pdb().await?;
    let done = eventually(
        "the stuck one completes once its PDB is gone",
        ROTATE_WITHIN,
        || async {
            let (wrong, _) = check_locks(&fleet, &all).await?;
            wrong_locks.lock().expect("lock").extend(wrong);
            let status = fleet.status(&stuck.name).await?;
            if completed(&status) {
                Ok(status)
            } else {
                bail!(
                    "at {:?}: blocked {:?}; waiting for {:?}",
                    status.step,
                    status.blocked_holders,
                    status.waiting_for
                )
            }
        },
    )
    .await
    .with_context(log)?;
    eprintln!(
        "{}: completed {:.1?} after its PDB was deleted ({:.1?} after the start)",
        stuck.name,
        unblocked.elapsed(),
        started.elapsed()
    );
    ensure!(done.blocked_holders.is_empty(), "{done:?}");
    let kid = eventually(
        "the stuck one runs the key its key Secret holds",
        SEEN_WITHIN,
        || async {
            let published = fleet.published_signing_kid(&stuck.name).await?;
            let running = stuck.running_signing_kid().await.context("key files")?;
            ensure!(
                running == published,
                "runs {running}, the Secret holds {published}"
            );
            Ok(published)
        },
    )
    .await?;
    ensure!(
        !first_kids.contains(&kid) && !new_kids.contains(&kid),
        "the stuck one's new key is another cluster's or its old one"
    );
    eventually("every lock released", SEEN_WITHIN, || async {
        let (wrong, held) = check_locks(&fleet, &all).await?;
        wrong_locks.lock().expect("lock").extend(wrong);
        ensure!(held.is_empty(), "held by {held:?}");
        Ok(())
    })
    .await?;
    let wrong = wrong_locks.into_inner().expect("lock");
    ensure!(wrong.is_empty(), "locks not their cluster's own: {wrong:?}");
    eprintln!(
        "fleet: at most {} locks held at once",
        held_at_once.into_inner().expect("lock")
    );

    // No valid token was rejected in any cluster.
    let mut rejected = Vec::new();
    for cluster in &fleet.clusters {
        let stats = cluster.prober.as_ref().context("a prober")?.stats().await;
        eprintln!(
            "prober {}: {} tokens issued, {} reviews, {} unavailable, {} wrongly rejected",
            cluster.name,
            stats.tokens_issued,
            stats.reviews,
            stats.unavailable,
            stats.wrongly_rejected.len()
        );
        ensure!(
            stats.reviews > 10,
            "{}: the prober reviewed too little: {stats:?}",
            cluster.name
        );
        rejected.extend(
            stats
                .wrongly_rejected
                .iter()
                .map(|r| format!("{}: {r}", cluster.name)),
        );
    }
    ensure!(
        rejected.is_empty(),
        "valid tokens were rejected: {rejected:?}"
    );
    eprintln!("fleet: the test took {:.1?}", began.elapsed());
    Ok(())
}
