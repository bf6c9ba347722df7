//! A fleet at scale, for `cargo xtask bench` (issue 34): for each size N,
//! a fresh fleet ([`ksa_tests::fleet`]) of one admin cluster, whose API
//! server audits every request of the controller's user, and N hosted user
//! clusters (each its own etcd and kube-apiserver, signing with its own
//! key; no workloads, so what is measured is the fleet's own cost), driven
//! by ONE fresh `ksa-controller` process. All N rotations are started at
//! once (`ksa rotate` per cluster, together) and the bench waits until
//! every one has completed. It reports, per N:
//!
//! - the seconds until all N completed;
//! - the controller's peak memory (`VmHWM`) and the CPU seconds it spent
//!   from the start of the rotations to the last completion, in total and
//!   per user cluster;
//! - the controller's requests to the admin API server in that time (the
//!   audit log), in total and per rotation;
//!
//! and, from the smallest N to the largest, the growth ratio of each
//! total beside the growth of N: a total growing faster than N (by more
//! than 10%, the noise of a shared machine) is printed as a SUPERLINEAR
//! line. Nothing is asserted about time. A size the machine cannot hold
//! (a control plane that does not start, rotations that do not complete
//! within 30 minutes) ends the run with a STOPPED line and is reported
//! under `stopped`, with the smaller sizes measured.
//!
//! Prints one JSON object. Usage: ksa-bench-fleet N...

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use ksa_core::rotation::Step;
use ksa_tests::FIRST_REPLICA;
use ksa_tests::bench::{audit_flags, audited_requests, cpu_seconds, peak_rss_mib};
use ksa_tests::fleet::{Fleet, FleetOptions};
use serde_json::{Value, json};

/// The key version every rotation goes to.
const TO: u64 = 2;
/// How long N rotations may take before the bench gives up.
const WITHIN: Duration = Duration::from_secs(1800);
/// How much faster than N a total may grow before it is called
/// superlinear: the noise of a shared machine.
const NOISE: f64 = 1.10;

/// The process's resident memory now (`VmRSS`), in MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kib / 1024.0)
}

async fn one_size(n: usize) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let (admin_flags, audit_log) = audit_flags(dir.path())?;
    let setup = Instant::now();
    let fleet = Fleet::start(FleetOptions {
        clusters: n,
        workloads: false,
        probers: false,
        admin_flags,
        start_concurrency: 4,
    })
    .await?;
    let setup_seconds = setup.elapsed().as_secs_f64();
    let pid = fleet
        .installation
        .replica_pid(FIRST_REPLICA)
        .context("the controller runs")?;
    // Let the controller start (its watches, leader election) before the
    // rotations, so that what is measured is theirs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss_mib = rss_mib(pid)?;
    let cpu_before = cpu_seconds(pid)?;
    let audited_before = audited_requests(&audit_log)?.len();
    let started = Instant::now();
    fleet.rotate_all().await?;
    let mut pending: Vec<String> = fleet.clusters.iter().map(|c| c.name.clone()).collect();
    let mut completed_after = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for name in pending {
            // The API servers restart meanwhile; a failed read is asked
            // again.
            let done = match fleet.rotation(&name).await {
                Ok(rotation) => {
                    let state = rotation.state()?;
                    state.step() == Step::Completed && state.key_version().get() == TO
                }
                Err(_) => false,
            };
            if done {
                completed_after.push(started.elapsed().as_secs_f64());
            } else {
                still.push(name);
            }
        }
        pending = still;
        if started.elapsed() > WITHIN {
            bail!(
                "{} of {n} rotations did not complete in {WITHIN:?}: {pending:?}\n{}",
                pending.len(),
                fleet.controller_log()
            );
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    let peak = peak_rss_mib(pid)?;
    // The audit log is written as requests end; the last ones settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = audited_requests(&audit_log)?.len() - audited_before;
    let n_f = n as f64;
    let row = json!({
        "clusters": n,
        "setup_seconds": setup_seconds,
        "seconds_all_completed": seconds,
        "first_completed_seconds": completed_after.iter().copied().fold(f64::INFINITY, f64::min),
        "controller_idle_rss_mib": idle_rss_mib,
        "controller_peak_rss_mib": peak,
        "controller_peak_rss_mib_per_cluster": peak / n_f,
        "controller_cpu_seconds": cpu,
        "controller_cpu_seconds_per_cluster": cpu / n_f,
        "admin_api_requests": requests,
        "admin_api_requests_per_rotation": requests as f64 / n_f,
    });
    eprintln!("{row}");
    Ok(row)
}

/// The growth of each total from the first row to the last, beside N's.
fn growth(rows: &[Value]) -> Result<Value> {
    let (first, last) = match rows {
        [first, .., last] => (first, last),
        _ => return Ok(json!({})),
    };
    let get = |row: &Value, field: &str| -> Result<f64> {
        row[field]
            .as_f64()
            .with_context(|| format!("no {field} in {row}"))
    };
    let n_ratio = get(last, "clusters")? / get(first, "clusters")?;
    let mut growth = serde_json::Map::new();
    growth.insert("clusters".into(), json!(n_ratio));
    for field in [
        "seconds_all_completed",
        "controller_peak_rss_mib",
        "controller_cpu_seconds",
        "admin_api_requests",
    ] {
        let ratio = get(last, field)? / get(first, field)?;
        let superlinear = ratio > n_ratio * NOISE;
        if superlinear {
            eprintln!(
                "SUPERLINEAR: {field} grew {ratio:.2}x from N={} to N={} ({n_ratio:.0}x the clusters)",
                first["clusters"], last["clusters"]
            );
        } else {
            eprintln!(
                "linear or better: {field} grew {ratio:.2}x from N={} to N={} ({n_ratio:.0}x the clusters)",
                first["clusters"], last["clusters"]
            );
        }
        growth.insert(
            field.into(),
            json!({"ratio": ratio, "superlinear": superlinear}),
        );
    }
    Ok(Value::Object(growth))
}

#[tokio::main]
async fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().context("usage: ksa-bench-fleet N..."))
        .collect::<Result<_>>()?;
    ensure!(
        !sizes.is_empty() && sizes[0] > 0 && sizes.windows(2).all(|w| w[0] < w[1]),
        "usage: ksa-bench-fleet N... (ascending, at least one, each at least 1)"
    );
    let mut rows = Vec::new();
    for n in sizes {
        rows.push(
            one_size(n)
                .await
                .with_context(|| format!("a fleet of {n}"))?,
        );
    }
    let growth = growth(&rows)?;
    println!("{}", json!({ "sizes": rows, "growth": growth }));
    Ok(())
}
