//! kubeadm control planes: `ksa update credentials ksa-signing-key rotate |
//! status --pki-dir DIR`. With no controller, the CLI runs the rotation
//! driver (`ksa_kube::driver`) itself, the same one the controller runs:
//! its state store is the state file in the pki directory ([`state`]), and
//! it runs in the one world (`ksa_kube::world`) the controller runs in,
//! over this node's ports: its key files ([`files`]) and the kube-apiserver
//! and kube-controller-manager static pod manifests ([`manifest`]; kubelet
//! restarts the pods). Every step is confirmed on the API servers through
//! `--kubeconfig`. This module adds only those ports and the command's
//! loop: passes until completed, API server restarts waited out.

pub mod files;
pub mod manifest;
pub mod state;
#[cfg(test)]
mod tests;

use crate::input::MAX_INPUT;
use crate::input::read_limited;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jiff::Timestamp;
use ksa_core::KeyVersion;
use ksa_core::issuer::Issuer;
use ksa_core::key::{KeyError, PrivateKey, PublicKey};
use ksa_core::rotation::{
    self, Effect, IssuerChange, OperationLock, Plan, Policy, RotationState, StartRequest,
};
use ksa_core::signing_issuer::signing_issuer;
use ksa_kube::cluster::TargetCluster;
use ksa_kube::driver::{self, Findings, PassError, StateStore, World};
use ksa_kube::flags;
use ksa_kube::world::{AlreadyHeld, ApiServers, ClusterWorld, KeyStorage, Nowhere, RollOut};
use std::collections::BTreeMap;

use self::files::{PkiDir, write_atomic};
use self::state::LockedState;
use crate::args::Output;
use crate::{Failure, Outcome, exit};

const APISERVER_MANIFEST: &str = "kube-apiserver.yaml";
const CONTROLLER_MANAGER_MANIFEST: &str = "kube-controller-manager.yaml";

const EXPLANATION: &str = "\
This rotates the service-account token signing key of the kubeadm control plane whose
pki directory is {pki} from version {from} to {to}. Keys live in {pki}/sa-vN.key and
the static pod manifests in {manifests} are edited; kubelet restarts kube-apiserver and
kube-controller-manager at each step:
  1. Generate key {to}.
  2. Trust: kube-apiserver accepts keys {from} and {to}.
  3. Sign: kube-apiserver signs with key {to}; kube-controller-manager too.
  4. Refresh: legacy token Secrets are re-minted with key {to}; pods are restarted
     so their bound tokens are re-issued.
  5. Retire: key {from} is removed from the manifests and deleted; sa.key/sa.pub become key {to}.
With several control-plane nodes, copy {pki}/sa-v* and both manifests to every node
at each step; each step waits until every API server confirms.";

const ISSUER_EXPLANATION: &str = "\
This changes the service-account token issuer of the kubeadm control plane whose static
pod manifests are in {manifests} from {from} to {to}{key}. The
--service-account-issuer lines of kube-apiserver.yaml are edited (the signing issuer
first, every other byte kept) and kubelet restarts kube-apiserver at each step:
  1. Trust: kube-apiserver accepts tokens of both issuers.{pin}
  2. Sign: new tokens carry {to}, and the discovery document names it. Before this
     step, every outside verifier that federates with this cluster (a cloud IAM, Vault,
     another cluster) must trust {to} and its discovery document.
  3. Refresh: pods holding bound tokens of {from} are restarted (Deployments,
     StatefulSets and DaemonSets by their pod template, other pods evicted) so kubelet
     requests new ones. Legacy token Secrets carry kubernetes/serviceaccount and are
     unaffected.
  4. Retire: {from} is removed; tokens carrying it are rejected.
With several control-plane nodes, copy kube-apiserver.yaml to every node at each step;
each step waits until every API server confirms.";

/// Without --wait, how long an API server restart is waited out.
const NO_WAIT_PATIENCE: Duration = Duration::from_secs(60);

/// The flags that name key files.
const KEY_FILE: &str = "service-account-key-file";
const SIGNING_KEY_FILE: &str = "service-account-signing-key-file";
const PRIVATE_KEY_FILE: &str = "service-account-private-key-file";

/// What `rotate --pki-dir` was asked.
#[derive(Debug)]
pub struct RotateRequest {
    pub pki_dir: PathBuf,
    pub manifests_dir: PathBuf,
    /// The cluster's API servers, through `--kubeconfig`; its errors name
    /// the server URL, the context and the kubeconfig.
    pub connection: crate::connection::Connection,
    pub skip_prompt: bool,
    pub wait: bool,
    /// `--timeout`; `None`: the longest the rotation takes when nothing
    /// holds it (`Policy::longest_rotation`).
    pub timeout: Option<Duration>,
    /// The issuer to change to (checked by `Issuer::target`); `None` keeps
    /// the issuer.
    pub issuer: Option<Issuer>,
    /// Whether the key changes too: `false` for `ksa-issuer rotate`.
    pub changes_key: bool,
    /// Print the plan and change nothing.
    pub dry_run: bool,
    pub output: Output,
    /// Go on although legacy tokens held outside the cluster will be
    /// re-minted.
    pub accept_outside_legacy_tokens: bool,
}

pub async fn rotate(request: RotateRequest) -> Outcome {
    // Both directories are written into the manifests (the pki directory)
    // or named beside them: checked before anything is read or written.
    let pki = PkiDir {
        dir: manifest_dir("--pki-dir", &request.pki_dir)?,
    };
    let manifests = &manifest_dir("--manifests-dir", &request.manifests_dir)?;
    if !pki.dir.is_dir() {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--pki-dir {} is not a directory; give kubeadm's pki directory (/etc/kubernetes/pki)",
            pki.dir.display()
        )));
    }
    for name in [APISERVER_MANIFEST, CONTROLLER_MANAGER_MANIFEST] {
        let path = manifests.join(name);
        if !path.is_file() {
            return Err(Failure::bad_input(anyhow::anyhow!(
                "{} does not exist; --manifests-dir must hold kubeadm's static pod manifests",
                path.display()
            )));
        }
    }
    let policy = Policy::default();
    if request.dry_run {
        // No lock, no import of kubeadm's key, no state file: nothing is
        // written.
        let state = state::read(&pki.dir)?.unwrap_or(RotationState::settled(KeyVersion::FIRST));
        if !state.is_completed() {
            return Err(Failure::bad_input(anyhow::anyhow!(
                "a rotation is in progress on this control plane (step {}); there is nothing to plan: run without --dry-run to resume it",
                state.step()
            )));
        }
        let started = start(&state, &request, manifests).await?;
        request.connection.check().await?;
        let cluster = TargetCluster::new(
            request.connection.client.clone(),
            request.connection.config.clone(),
        );
        let plan = ksa_kube::plan::plan(&cluster, &started, &policy, Timestamp::now())
            .await
            .map_err(|error| at_server(&request.connection, error))?;
        return crate::plan::print(&plan, &request.output);
    }
    let locked = LockedState::lock(&pki.dir)?;
    let mut state = match locked.load()? {
        Some(state) => state,
        None => {
            // The first run: kubeadm's key becomes version 1.
            pki.import_kubeadm_key().map_err(Failure::bad_input)?;
            let settled = RotationState::settled(KeyVersion::FIRST);
            locked.save(&settled)?;
            settled
        }
    };
    // A state whose key files are not all here (a state file copied from
    // another node, a restored backup) would have the manifests name
    // missing files: refused before anything else happens.
    for version in state.required_keys() {
        pki.check_key_pair(version).map_err(|error| {
            Failure::bad_input(error.context(format!(
                "{} is at step {} of key version {}",
                pki.dir.join(state::STATE).display(),
                state.step(),
                state.key_version()
            )))
        })?;
    }
    let cluster = TargetCluster::new(
        request.connection.client.clone(),
        request.connection.config.clone(),
    );
    if state.is_completed() {
        let started = start(&state, &request, manifests).await?;
        request.connection.check().await?;
        let plan = ksa_kube::plan::plan(&cluster, &started, &policy, Timestamp::now())
            .await
            .map_err(|error| at_server(&request.connection, error))?;
        crate::plan::check_outside_holders(
            &plan,
            request.skip_prompt,
            request.accept_outside_legacy_tokens,
        )?;
        if !request.skip_prompt {
            crate::prompt::confirm(&format!(
                "{}\n\n{}",
                explanation(&pki, manifests, &state, &started),
                crate::plan::short(&plan).trim_end()
            ))?;
        }
        locked.save(&started)?;
        state = started;
        eprintln!(
            "started the rotation of this control plane: {}",
            crate::prompt::describe(&state)
        );
    } else {
        eprintln!(
            "resuming the rotation ({}) at step {}",
            crate::prompt::describe(&state),
            state.step()
        );
    }
    print_status_lines(&state, None)?;

    let mut store = StateFile(&locked);
    let mut node = node(&pki, manifests, &cluster, &policy);
    let started = Instant::now();
    // How long API servers that do not answer (kubelet restarting them) are
    // waited for: the whole timeout with --wait, a minute without.
    let timeout = request.timeout.unwrap_or_else(|| policy.longest_rotation());
    let patience = if request.wait {
        timeout
    } else {
        timeout.min(NO_WAIT_PATIENCE)
    };
    // The state and effects of the last pass: a pass that finds both again
    // has applied them once already and is waiting on the API servers. (A
    // step can stay put with a new effect: Retire deletes the old key once
    // no API server trusts it.)
    let mut last: Option<(RotationState, Vec<Effect>)> = None;
    let mut last_waiting: Option<String> = None;
    loop {
        let pass =
            match driver::pass(&mut store, &mut node, &state, &policy, Timestamp::now()).await {
                Ok(pass) => pass,
                // kube-apiserver restarts at every step: an API server that does
                // not answer is asked again, for a while. The state is read back
                // from the file, which is ahead of `state` when the failure came
                // after the save.
                Err(
                    PassError::Observe(KubeadmError::Cluster(error))
                    | PassError::Apply {
                        error: KubeadmError::Cluster(error),
                        ..
                    },
                ) if started.elapsed() < patience => {
                    eprintln!("the API servers did not answer ({error}); asking again");
                    state = locked.load()?.unwrap_or(state);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Err(error) => return Err(pass_failure(&pki, &request.connection, &state, error)),
            };
        let waiting_on_servers = last.as_ref().is_some_and(|(next, effects)| {
            *next == pass.plan.next && *effects == pass.plan.effects
        });
        if waiting_on_servers {
            let waiting = pass.plan.waiting.to_string();
            if last_waiting.as_deref() != Some(waiting.as_str()) {
                eprintln!("waiting for {waiting}");
                last_waiting = Some(waiting);
            }
        }
        print_status_lines(&pass.plan.next, Some(&state))?;
        for token in pass.findings.outside_legacy_tokens.iter().flatten() {
            eprintln!(
                "re-minting legacy token Secret {token}: no pod mounts it, so its holder outside the cluster needs the new token"
            );
        }
        state = pass.plan.next.clone();
        if state.is_completed() {
            return Ok(exit::DONE);
        }
        if !request.wait && waiting_on_servers {
            eprintln!(
                "step {} is waiting on the API servers; run the same command again to continue (or add --wait)",
                state.step()
            );
            return Ok(exit::DONE);
        }
        if started.elapsed() > timeout {
            return Err(crate::Failure::still_running(anyhow::anyhow!(
                "still running: the rotation did not complete within the timeout; it stays at step {}: run the same command again to resume",
                state.step()
            )));
        }
        let pause = pass.plan.requeue_after.unwrap_or(Duration::from_secs(2));
        last = Some((pass.plan.next, pass.plan.effects));
        tokio::time::sleep(pause.clamp(Duration::from_millis(250), Duration::from_secs(2))).await;
    }
}

/// The rotation `request` starts from the completed `state`, or the
/// refusal.
async fn start(
    state: &RotationState,
    request: &RotateRequest,
    manifests: &Path,
) -> Result<RotationState, Failure> {
    let current = state.key_version();
    let target = if request.changes_key {
        current.next().unwrap_or(current)
    } else {
        current
    };
    let issuer = match &request.issuer {
        Some(to) => Some(IssuerChange {
            from: signing_issuer(state, async { manifest_issuer(manifests) }).await?,
            to: to.clone(),
        }),
        None => None,
    };
    let start = StartRequest {
        target,
        issuer,
        advanced_cluster: false,
        // The lock file held by this run is the operation lock.
        lock: OperationLock::Free,
    };
    rotation::start(state, &start, Timestamp::now())
        .map_err(|refusal| Failure::bad_input(anyhow::Error::new(refusal)))
}

/// Prints `state`'s status lines that differ from `before`'s (all of them
/// without `before`): the key line, unless the rotation changes only the
/// issuer, and the issuer line once ksa has changed the issuer.
fn print_status_lines(state: &RotationState, before: Option<&RotationState>) -> Outcome {
    let before = before.map(crate::progress::texts);
    for (kind, text) in crate::progress::texts(state).into_iter().enumerate() {
        if let Some(text) = text
            && before
                .as_ref()
                .is_none_or(|before| before[kind].as_ref() != Some(&text))
        {
            crate::output::print(&text)?;
        }
    }
    Ok(exit::DONE)
}

/// The issuer this control plane's manifest names first
/// (`--service-account-issuer`): the one it signs with before ksa ever
/// changed it.
fn manifest_issuer(manifests: &Path) -> Result<Issuer, Failure> {
    let path = manifests.join(APISERVER_MANIFEST);
    let text = String::from_utf8(read_limited(&path, MAX_INPUT)?)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    let first = manifest::flag_values(&text, flags::ISSUER)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Failure::bad_input(anyhow::anyhow!(
                "{} has no --{}= line; kubeadm writes one, add it back",
                path.display(),
                flags::ISSUER
            ))
        })?;
    Issuer::new(first).map_err(|error| {
        Failure::bad_input(anyhow::Error::new(error).context(format!(
            "the --{} of {}",
            flags::ISSUER,
            path.display()
        )))
    })
}

/// What the prompt says before a rotation starts.
fn explanation(
    pki: &PkiDir,
    manifests: &Path,
    before: &RotationState,
    started: &RotationState,
) -> String {
    let issuer = started.issuer().filter(|_| started.changes_issuer());
    let keys = || {
        EXPLANATION
            .replace("{pki}", &pki.dir.display().to_string())
            .replace("{manifests}", &manifests.display().to_string())
            .replace("{from}", &before.key_version().to_string())
            .replace("{to}", &started.key_version().to_string())
    };
    let Some(change) = issuer else {
        return keys();
    };
    let pinned = String::from_utf8(
        read_limited(&manifests.join(APISERVER_MANIFEST), MAX_INPUT).unwrap_or_default(),
    )
    .map(|text| manifest::flag_values(&text, flags::AUDIENCES).is_empty())
    .unwrap_or(false);
    let pin = if pinned {
        format!(
            "\n     --api-audiences={} is added: the default audience of tokens stays what\n     it is now instead of following the issuer.",
            change.from
        )
    } else {
        String::new()
    };
    let text = ISSUER_EXPLANATION
        .replace("{manifests}", &manifests.display().to_string())
        .replace("{from}", change.from.as_str())
        .replace("{to}", change.to.as_str())
        .replace("{pin}", &pin);
    if started.changes_key() {
        let key = format!(
            ", together with the signing key (version {} to {}; one Trust,\none Sign, one token refresh, one Retire for both)",
            before.key_version(),
            started.key_version()
        );
        format!("{}\n\n{}", text.replace("{key}", &key), keys())
    } else {
        text.replace("{key}", "")
    }
}

/// An error of the cluster's API servers, naming the server URL, the
/// context and the kubeconfig.
fn at_server(connection: &crate::connection::Connection, error: ksa_kube::Error) -> Failure {
    match error {
        ksa_kube::Error::Kube(error) => connection.unreachable(error),
        other => Failure::from(other),
    }
}

/// What the CLI reports for a pass that stopped.
fn pass_failure(
    pki: &PkiDir,
    connection: &crate::connection::Connection,
    state: &RotationState,
    error: PassError<KubeadmError>,
) -> Failure {
    match error {
        PassError::Observe(KubeadmError::Cluster(error)) => anyhow::Error::new(error)
            .context(format!(
                "observing the API servers ({}); run the same command again to resume",
                connection.describe()
            ))
            .into(),
        PassError::MissingKey(version) => Failure::bad_input(anyhow::anyhow!(
            "{} is missing, but step {} of the rotation to key version {} needs it; \
             restore it (and {}) from a backup of this pki directory",
            pki.key_path(version).display(),
            state.step(),
            state.key_version(),
            pki.pub_path(version).display()
        )),
        PassError::Step(error) => anyhow::Error::new(error)
            .context("the rotation state is inconsistent")
            .into(),
        PassError::Observe(error) | PassError::Save(error) | PassError::Apply { error, .. } => {
            match error {
                KubeadmError::Files(error) => error.into(),
                KubeadmError::Cluster(error) => anyhow::Error::new(error)
                    .context(format!("the API servers ({})", connection.describe()))
                    .into(),
            }
        }
    }
}

/// The state file in the pki directory, as the driver's state store.
struct StateFile<'a>(&'a LockedState);

impl StateStore for StateFile<'_> {
    type Error = KubeadmError;

    async fn save(
        &mut self,
        before: &RotationState,
        plan: &Plan,
        _findings: &Findings,
    ) -> Result<(), KubeadmError> {
        if plan.next != *before {
            self.0.save(&plan.next)?;
        }
        Ok(())
    }
}

/// This node's world: its key files and static pod manifests, and the API
/// servers `cluster` reaches; nowhere outside.
fn node<'a>(
    pki: &'a PkiDir,
    manifests: &'a Path,
    cluster: &'a TargetCluster,
    policy: &'a Policy,
) -> impl World<Error = KubeadmError> + 'a {
    ClusterWorld::new(
        cluster,
        policy,
        KeyFiles(pki),
        Manifests {
            pki,
            dir: manifests,
        },
        None::<Nowhere>,
        // The lock file this run holds is the operation lock.
        AlreadyHeld,
    )
}

/// This node's key files, as the world's key storage.
struct KeyFiles<'a>(&'a PkiDir);

impl KeyStorage<KubeadmError> for KeyFiles<'_> {
    async fn public_keys(&self) -> Result<BTreeMap<KeyVersion, PublicKey>, KubeadmError> {
        Ok(self.0.public_keys()?)
    }

    async fn private_key(&self, version: KeyVersion) -> Result<PrivateKey, KubeadmError> {
        Ok(self.0.private_key(version)?)
    }

    async fn contains(&self, version: KeyVersion) -> Result<bool, KubeadmError> {
        // A file that is not a key is overwritten by the new one.
        Ok(self.0.private_key(version).is_ok())
    }

    async fn create(&mut self, version: KeyVersion, key: &PrivateKey) -> Result<(), KubeadmError> {
        Ok(self.0.store(version, key)?)
    }

    async fn retire(
        &mut self,
        version: KeyVersion,
        current: KeyVersion,
    ) -> Result<(), KubeadmError> {
        // sa.key/sa.pub become the current key before the retired one goes.
        self.0.make_kubeadm_key(&self.0.private_key(current)?)?;
        Ok(self.0.delete(version)?)
    }
}

/// This node's static pod manifests, as the world's API servers: kubelet
/// restarts kube-apiserver and kube-controller-manager when they change.
struct Manifests<'a> {
    pki: &'a PkiDir,
    dir: &'a Path,
}

impl ApiServers<KubeadmError> for Manifests<'_> {
    async fn roll_out(&mut self, to: RollOut<'_>) -> Result<(), KubeadmError> {
        // An issuer rotation that keeps the key leaves the key flags,
        // and kube-controller-manager, as they are.
        let keys = to.changes_key.then_some((to.public, to.signing));
        Ok(point_manifests_at(self.pki, self.dir, keys, to.issuers)?)
    }
}

/// `dir` (the value of `flag`) as the manifests will name it: absolute,
/// without `.` or `..`, and made only of characters safe in a manifest
/// (see [`manifest::check_value`]). Symbolic links are kept, not resolved:
/// kube-apiserver reads the files through the host path its pod mounts,
/// which is the path kubeadm wrote, not where a link leads.
fn manifest_dir(flag: &str, dir: &Path) -> Result<PathBuf, Failure> {
    let absolute = std::path::absolute(dir)
        .with_context(|| format!("{flag} {}: cannot make it absolute", dir.display()))
        .map_err(Failure::bad_input)?;
    if absolute.components().any(|c| c == Component::ParentDir) {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "{flag} {} has a '..' component; give the directory as the manifests name it, \
             without '..' (e.g. /etc/kubernetes/pki)",
            dir.display()
        )));
    }
    // Rebuilt from its components: no `.`, no doubled or trailing slash.
    let absolute: PathBuf = absolute.components().collect();
    let text = absolute.to_str().ok_or_else(|| {
        Failure::bad_input(anyhow::anyhow!(
            "{flag} {:?} is not UTF-8; it is written into the static pod manifests",
            dir
        ))
    })?;
    manifest::check_value(text).map_err(|unsafe_character| {
        Failure::bad_input(anyhow::anyhow!(
            "{flag} {text:?}: {unsafe_character}; it is written into the static pod manifests \
             (a newline or \": \" there would add flags of its own); give a path without it"
        ))
    })?;
    Ok(absolute)
}

/// Why a pass failed: the node's files (fatal), or the cluster (the API
/// servers restart at every step; tried again).
#[derive(Debug)]
enum KubeadmError {
    Files(anyhow::Error),
    Cluster(ksa_kube::Error),
}

impl From<anyhow::Error> for KubeadmError {
    fn from(error: anyhow::Error) -> KubeadmError {
        KubeadmError::Files(error)
    }
}

impl From<ksa_kube::Error> for KubeadmError {
    fn from(error: ksa_kube::Error) -> KubeadmError {
        KubeadmError::Cluster(error)
    }
}

impl From<KeyError> for KubeadmError {
    fn from(error: KeyError) -> KubeadmError {
        KubeadmError::Files(anyhow::Error::new(error))
    }
}

/// Points kube-apiserver at public keys `public` and signing key
/// `signing` (and with `issuers`, at those issuers, the first signing), and
/// kube-controller-manager at `signing`. Every key file named is checked,
/// and both manifests are edited in memory, before either is written: a
/// refusal leaves both as they were.
fn point_manifests_at(
    pki: &PkiDir,
    manifests: &Path,
    keys: Option<(&[KeyVersion], KeyVersion)>,
    issuers: Option<&[Issuer]>,
) -> anyhow::Result<()> {
    let mut apiserver: Vec<(&str, Vec<String>)> = Vec::new();
    let mut controller_manager: Vec<(&str, Vec<String>)> = Vec::new();
    if let Some((public, signing)) = keys {
        let mut versions: Vec<KeyVersion> = public.to_vec();
        versions.push(signing);
        versions.sort();
        versions.dedup();
        for version in versions {
            pki.check_key_pair(version)?;
        }
        let public: Vec<String> = public
            .iter()
            .map(|v| pki.pub_path(*v).display().to_string())
            .collect();
        let signing = vec![pki.key_path(signing).display().to_string()];
        apiserver.push((KEY_FILE, public));
        apiserver.push((SIGNING_KEY_FILE, signing.clone()));
        controller_manager.push((PRIVATE_KEY_FILE, signing));
    }
    if let Some(issuers) = issuers {
        apiserver.push((
            flags::ISSUER,
            issuers.iter().map(|i| i.as_str().to_owned()).collect(),
        ));
    }
    let edits = [
        edited_manifest(&manifests.join(APISERVER_MANIFEST), &apiserver)?,
        edited_manifest(
            &manifests.join(CONTROLLER_MANAGER_MANIFEST),
            &controller_manager,
        )?,
    ];
    for (path, edited) in edits {
        if let Some(text) = edited {
            write_atomic(&path, text.as_bytes(), 0o600)?;
        }
    }
    Ok(())
}

/// A static pod manifest with flags set, or `None` when nothing changed
/// (kubelet restarts the pod on every change, so an unchanged manifest is
/// not written).
fn edited_manifest(
    path: &Path,
    flags: &[(&str, Vec<String>)],
) -> anyhow::Result<(PathBuf, Option<String>)> {
    let before = String::from_utf8(read_limited(path, MAX_INPUT)?)
        .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
    let mut after = before.clone();
    for (flag, values) in flags {
        if *flag == flags::ISSUER {
            // The default audience is pinned by the rule of
            // `ksa_kube::flags`.
            let issuers = manifest::flag_values(&after, flags::ISSUER);
            let audiences = manifest::flag_values(&after, flags::AUDIENCES);
            let issuers: Vec<&str> = issuers.iter().map(String::as_str).collect();
            let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
            if let Some(pin) = flags::audiences_to_pin(&issuers, &audiences) {
                let pin: Vec<String> = pin.into_iter().map(str::to_owned).collect();
                after = manifest::insert_list_flag(&after, flags::ISSUER, flags::AUDIENCES, &pin)
                    .with_context(|| path.display().to_string())?;
            }
        }
        after =
            manifest::set_flag(&after, flag, values).with_context(|| path.display().to_string())?;
    }
    Ok((path.to_owned(), (after != before).then_some(after)))
}

/// `status --pki-dir`: the status line from the state file (with
/// `issuer`, the issuer status line).
pub fn status(pki_dir: &Path, output: &Output, issuer: bool) -> Outcome {
    let state = match state::read(pki_dir)? {
        Some(state) => state,
        None => {
            eprintln!(
                "no rotation has run on this control plane: it signs with kubeadm's {}/sa.key (version 1)",
                pki_dir.display()
            );
            RotationState::settled(KeyVersion::FIRST)
        }
    };
    let line = if issuer {
        state
            .issuer_status_line()
            .ok_or_else(|| {
                Failure::bad_input(anyhow::anyhow!(
                    "ksa has not changed the issuer of this control plane: there is no issuer rotation to show"
                ))
            })?
            .to_string()
    } else {
        state.status_line().to_string()
    };
    let text = match output {
        Output::Wide if !issuer => {
            // The table of `status -o wide`, from the state file.
            let status_line = state.status_line();
            let value = serde_json::json!({
                "cluster": pki_dir.display().to_string(),
                "targetKeyVersion": state.key_version(),
                "keyVersion": state.key_version(),
                "step": state.step(),
                "tokenVersion": status_line.versions.token_version(),
                "privateKeyVersion": status_line.versions.private_key_version(),
                "publicKeyVersions": status_line.versions.public_key_versions(),
                "stepStartedAt": state.step_started_at(),
                "condition": {
                    "status": if status_line.status() { "True" } else { "False" },
                    "reason": status_line.reason,
                },
            });
            crate::commands::rotation::key_table(&value, Timestamp::now())
        }
        output => crate::output::render(output, &state, || Ok(line.clone()))?,
    };
    crate::output::print(&text)?;
    Ok(exit::DONE)
}
