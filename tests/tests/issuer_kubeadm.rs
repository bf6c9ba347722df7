//! The product's issuer rotation (SPEC section 10) on a kubeadm control
//! plane of three kube-apiserver instances: `ksa ... --pki-dir` edits the
//! static pod manifests, which the harness's kubelet rolls out, and a run
//! SIGKILLed as a step begins is resumed by the next.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, public_keys_to_pem};
use ksa_tests::cluster::request_token;
use ksa_tests::issuer::follow::{Followed, StepsSeen, run, stderr, stdout_lines};
use ksa_tests::issuer::{
    A, APP, B, COMPLETED_B, ROTATION_TIMEOUT, ensure_all, ensure_legacy_token_accepted,
    issuer_lines, issuers_discovered, issuers_issued, key_line, mint_token, token_audiences,
    token_issuer, verdicts_of,
};
use ksa_tests::kubeadm;
use ksa_tests::kubelet::{StaticPods, kubeadm_manifests, manifest_issuer_flags};
use ksa_tests::netns::{self, Netns};
use ksa_tests::scenario::{APPS, create_workload};
use ksa_tests::{
    ApiServerKeys, ControlPlane, HA_INSTANCES, IssuerFlags, ProbeTarget, Prober, RotationSource,
    write_private,
};
use tokio::sync::Mutex;

/// `ksa update credentials ksa-issuer ARGS` against the control plane.
fn kubeadm_issuer(
    args: &[&str],
    pki: &Path,
    manifests: &Path,
    kubeconfig: &Path,
) -> Result<std::process::Command> {
    kubeadm::command("ksa-issuer", args, pki, manifests, kubeconfig)
}

/// Records each step the state file goes through, with its
/// `stepStartedAt`; stops when dropped.
struct StateFileSteps {
    steps: Arc<Mutex<StepsSeen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StateFileSteps {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StateFileSteps {
    fn spawn(pki: &Path) -> StateFileSteps {
        let steps = Arc::new(Mutex::new(Vec::new()));
        let (shared, pki) = (steps.clone(), pki.to_owned());
        let task = tokio::spawn(async move {
            loop {
                if let Some(state) = kubeadm::state(&pki).filter(|s| s.issuer().is_some()) {
                    let mut steps = shared.lock().await;
                    let entry = (state.step(), state.step_started_at());
                    if steps.last() != Some(&entry) {
                        steps.push(entry);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        StateFileSteps { steps, task }
    }

    async fn followed(&self, completed_at: Option<jiff::Timestamp>) -> Followed {
        let steps = self.steps.lock().await.clone();
        Followed {
            started_at: steps.first().and_then(|(_, at)| *at),
            steps,
            completed_at,
            trust_confirmed_at: None,
            checked: Vec::new(),
        }
    }
}

#[tokio::test]
async fn a_kubeadm_control_plane_changes_its_issuer_through_its_manifest_and_resumes_after_sigkill()
-> Result<()> {
    if let Netns::Ran(outcome) = netns::enter()? {
        return outcome;
    }
    let clock = Instant::now();
    let first = AwsLc::new().generate(KeySpec::Rsa2048)?;
    let mut plane = ControlPlane::start_ha(ApiServerKeys::single(first.clone())).await?;
    plane.start_controller_manager()?;
    let client = plane.client().await?;
    let instances = plane.instance_clients().await?;
    let kubeconfig = plane.kubeconfig_path();
    let root = plane.dir().join("etc-kubernetes");
    let (pki, manifests_dir) = (root.join("pki"), root.join("manifests"));
    std::fs::create_dir_all(&pki)?;
    std::fs::create_dir_all(&manifests_dir)?;
    write_private(&pki.join("sa.key"), first.to_pem().as_bytes())?;
    std::fs::write(pki.join("sa.pub"), public_keys_to_pem([first.public_key()]))?;
    let (apiserver, controller_manager) = kubeadm_manifests(&pki);
    std::fs::write(manifests_dir.join("kube-apiserver.yaml"), &apiserver)?;
    std::fs::write(
        manifests_dir.join("kube-controller-manager.yaml"),
        &controller_manager,
    )?;
    create_workload(&client).await?;
    let plane = Arc::new(Mutex::new(plane));
    let _kubelet = StaticPods::spawn(plane.clone(), &manifests_dir);
    let prober = Prober::spawn(
        client.clone(),
        instances.clone(),
        ProbeTarget {
            namespace: APPS.into(),
            service_account: APP.into(),
            legacy_secret: "app-token".into(),
            rotation: RotationSource::StateFile {
                pki_dir: pki.clone(),
            },
        },
    );
    let early = request_token(&client, APPS, APP, Vec::new(), 3600).await?;
    assert_eq!(token_issuer(&early)?, A);
    let steps = StateFileSteps::spawn(&pki);
    eprintln!("control plane ready in {:.1?}", clock.elapsed());

    // Without --wait, again and again, as the CLI says to; every run that
    // sees a step begin (the state file moves) is SIGKILLed at once, the
    // first three times: the next run resumes.
    let started = Instant::now();
    let (mut runs, mut kills) = (0, 0);
    let mut printed: Vec<String> = Vec::new();
    while !kubeadm::state(&pki).is_some_and(|s| s.is_completed() && s.issuer().is_some()) {
        ensure!(
            runs < 80 && started.elapsed() < ROTATION_TIMEOUT,
            "not completed after {runs} runs: {:?}",
            kubeadm::state(&pki)
        );
        runs += 1;
        let before = kubeadm::state(&pki).map(|s| s.step());
        let mut child = tokio::process::Command::from(kubeadm_issuer(
            &["rotate", "--issuer", B],
            &pki,
            &manifests_dir,
            &kubeconfig,
        )?)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
        let mut killed_at = None;
        while child.try_wait()?.is_none() {
            // The child is killed on drop, when this fails.
            ensure!(
                started.elapsed() < ROTATION_TIMEOUT,
                "run {runs} did not exit in {ROTATION_TIMEOUT:?} from the start; the state file: {:?}",
                kubeadm::state(&pki)
            );
            let now = kubeadm::state(&pki).map(|s| s.step());
            if kills < 3 && runs > 1 && now != before {
                child.start_kill()?;
                killed_at = now;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let output = child.wait_with_output().await?;
        match killed_at {
            Some(step) => {
                kills += 1;
                eprintln!(
                    "run {runs}: SIGKILLed as step {step} began ({:?})",
                    output.status
                );
            }
            None => {
                eprintln!(
                    "run {runs}: exit {:?}, at {:?}\n{}",
                    output.status.code(),
                    kubeadm::state(&pki).map(|s| s.step()),
                    stderr(&output).trim()
                );
                assert_eq!(
                    output.status.code(),
                    Some(0),
                    "run {runs}: {}",
                    stderr(&output)
                );
            }
        }
        printed.extend(stdout_lines(&output));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let elapsed = started.elapsed();
    let state = kubeadm::state(&pki).context("the state file")?;
    let followed = steps.followed(state.completed_at()).await;
    drop(steps);
    eprintln!("kubeadm A -> B: {runs} runs, {kills} SIGKILLed, {elapsed:.1?}");
    followed.print("kubeadm A -> B");
    assert!(kills >= 1, "no run was killed mid-step");

    // What the runs printed: the issuer line of every step, in order (a
    // run prints where it stands when it starts, so lines repeat across
    // runs); the key line, if any, only ever key 1's.
    let mut issuer_printed: Vec<String> = Vec::new();
    for line in &printed {
        if line.starts_with("State of KSAIssuerRotation") && issuer_printed.last() != Some(line) {
            issuer_printed.push(line.clone());
        }
    }
    eprintln!("kubeadm A -> B: the runs printed (repeats across runs dropped):");
    for line in &issuer_printed {
        eprintln!("  {line}");
    }
    assert_eq!(issuer_printed, issuer_lines(A, B));
    let others: BTreeSet<&String> = printed
        .iter()
        .filter(|l| !l.starts_with("State of KSAIssuerRotation"))
        .collect();
    eprintln!("kubeadm A -> B: other lines printed: {others:?}");
    assert!(
        others.iter().all(|l| **l == key_line(1, true, 1, 1, &[1])),
        "the key stayed at version 1: {others:?}"
    );
    let status = run(kubeadm_issuer(
        &["status"],
        &pki,
        &manifests_dir,
        &kubeconfig,
    )?)
    .await?;
    assert_eq!(stdout_lines(&status), [COMPLETED_B], "{}", stderr(&status));

    // The manifest's issuer flags: B alone, the default audience pinned
    // to A (the bytes of the rest are checked last).
    let edited = std::fs::read_to_string(manifests_dir.join("kube-apiserver.yaml"))?;
    assert_eq!(
        manifest_issuer_flags(&edited),
        Some(IssuerFlags {
            issuers: vec![B.to_owned()],
            api_audiences: Some(A.to_owned()),
        })
    );
    assert_eq!(
        std::fs::read(pki.join("sa.key"))?,
        first.to_pem().as_bytes(),
        "the key stayed"
    );

    // The instances: A retired, B signs, the default audience stayed.
    ensure_all(
        &verdicts_of(&instances, &early).await?,
        &false,
        "the token taken before",
    )?;
    let minted_a = mint_token(&client, APPS, APP, A, &[A], &first).await?;
    ensure_all(
        &verdicts_of(&instances, &minted_a).await?,
        &false,
        "a token of A",
    )?;
    let minted_b = mint_token(&client, APPS, APP, B, &[A], &first).await?;
    ensure_all(
        &verdicts_of(&instances, &minted_b).await?,
        &true,
        "a token of B",
    )?;
    ensure_all(
        &issuers_issued(&instances).await?,
        &B.to_owned(),
        "fresh tokens",
    )?;
    ensure_all(
        &issuers_discovered(&instances).await?,
        &B.to_owned(),
        "discovery",
    )?;
    let fresh = request_token(&client, APPS, APP, Vec::new(), 3600).await?;
    assert_eq!(
        token_audiences(&fresh)?,
        [A],
        "the default audience stayed A"
    );
    ensure_legacy_token_accepted(&client, &instances).await?;

    let stats = prober.stats().await;
    eprintln!("kubeadm A -> B: prober: {stats:?}");
    assert_eq!(stats.wrongly_rejected, Vec::<String>::new());
    assert!(
        stats.reviews > 100,
        "the prober reviewed too little: {stats:?}"
    );
    let plane = plane.lock().await;
    assert_eq!(
        plane.roll_log().check()?,
        3 * HA_INSTANCES,
        "three issuer flag roll-outs (Trust, Sign, Retire), each to every instance"
    );
    assert_eq!(plane.apiserver_starts, 4, "the start and three roll-outs");
    drop(plane);

    // Last, every byte of the manifests: the issuer line now B with the
    // default audience pinned to A after it, everything else as kubeadm
    // wrote it (README: "On kubeadm, the --service-account-issuer lines of
    // kube-apiserver.yaml, one per accepted issuer, every other byte
    // kept"); kube-controller-manager's manifest untouched (kubelet would
    // restart it for nothing).
    let edited = std::fs::read_to_string(manifests_dir.join("kube-apiserver.yaml"))?;
    let issuer_line = format!("    - --service-account-issuer={A}\n");
    assert!(apiserver.contains(&issuer_line));
    let expected = apiserver.replace(
        &issuer_line,
        &format!("    - --service-account-issuer={B}\n    - --api-audiences={A}\n"),
    );
    assert!(
        edited == expected,
        "kube-apiserver.yaml changed beyond its issuer lines:\n{}",
        line_diff(&expected, &edited)
    );
    let edited = std::fs::read_to_string(manifests_dir.join("kube-controller-manager.yaml"))?;
    assert!(
        edited == controller_manager,
        "an issuer rotation changed kube-controller-manager.yaml:\n{}",
        line_diff(&controller_manager, &edited)
    );
    eprintln!("the test took {:.1?}", clock.elapsed());
    Ok(())
}

/// The lines of `expected` and `got` that differ, in order, each marked
/// `-` (expected) or `+` (got).
fn line_diff(expected: &str, got: &str) -> String {
    let (expected, got): (Vec<&str>, Vec<&str>) =
        (expected.lines().collect(), got.lines().collect());
    let mut out = Vec::new();
    for index in 0..expected.len().max(got.len()) {
        let (want, have) = (expected.get(index), got.get(index));
        if want != have {
            out.extend(want.map(|l| format!("- {l}")));
            out.extend(have.map(|l| format!("+ {l}")));
        }
    }
    out.join("\n")
}
