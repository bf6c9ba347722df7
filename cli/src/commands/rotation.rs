//! `ksa update credentials ksa-signing-key rotate | status`, against the
//! `KSASigningKeyRotation` resource in the admin cluster.

use std::io::IsTerminal as _;
use std::time::Duration;

use crate::prompt::{confirm, describe};
use anyhow::Context as _;
use ksa_core::KeyVersion;
use ksa_core::issuer::Issuer;
use ksa_core::rotation::{self, IssuerChange, Requested, RotationState, StartRequest, Step};
use ksa_core::signing_issuer::signing_issuer;
use ksa_kube::api::{
    ClusterRef, ISSUER_CONDITION_TYPE, KSASigningKeyRotation, RolloutSpec, RotationSpec,
    RotationStatus, SecretKeyRef, TokenRefreshSpec, WorkloadRef,
};
use ksa_kube::cluster::TargetCluster;
use ksa_kube::lock;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::args::{
    ClusterArgs, IssuerCommand, KeyRotateArgs, Output, PlanArgs, RotationCommand, StatusArgs,
};
use crate::config::UserClusterConfig;
use crate::connection::Connection;
use crate::{Failure, Outcome, exit};

const EXPLANATION: &str = "\
This rotates the service-account token signing key of user cluster {cluster} from version {from} to {to}:
  1. Generate key {to} and store it.
  2. Trust: every API server and the published JWKS accept keys {from} and {to}.
  3. Sign: every API server signs new tokens with key {to}.
  4. Refresh: every legacy token Secret is re-minted with key {to}; pods are restarted
     (or nodes recreated, or the kubelet refresh window waited out, as configured)
     so their bound tokens are re-issued.
  5. Retire: key {from} is removed everywhere and deleted.
The rotation cannot be paused or rolled back once started. Tokens issued by third
parties from key {from} are not refreshed and stop working after step 5.";

/// What `ksa-issuer` explains before it starts.
const ISSUER_EXPLANATION: &str = "\
This changes the service-account token issuer of user cluster {cluster} from {from} to {to}{key}:
  1. Trust: every API server accepts tokens of both issuers (the API server workload's
     --service-account-issuer arguments are changed and it rolls out; without
     --api-audiences, it is set to {from} so the default audience of tokens stays as it is).
  2. Sign: new tokens carry {to}, and the discovery document names it. Every outside
     verifier that federates with this cluster (a cloud IAM, Vault, another cluster)
     must trust {to} and its discovery document before this step.
  3. Refresh: pods holding bound tokens of {from} are restarted (or nodes recreated, or
     the kubelet refresh window waited out, as configured) so their tokens carry {to}.
     Legacy token Secrets carry kubernetes/serviceaccount and are unaffected.
  4. Retire: {from} is removed; tokens carrying it are rejected from then on.
The rotation cannot be paused or rolled back once started.";

/// A `rotate` of the key, the issuer or both.
#[derive(Debug)]
pub struct RotateArgs {
    cluster: ClusterArgs,
    manifests_dir: Option<std::path::PathBuf>,
    skip_prompt: bool,
    wait: bool,
    timeout: Option<String>,
    /// The issuer to change to, as given.
    issuer: Option<String>,
    /// `false` for `ksa-issuer rotate`.
    changes_key: bool,
    dry_run: bool,
    output: Output,
    accept_outside_legacy_tokens: bool,
    /// `-A --dry-run`: the fleet's plan.
    all_namespaces: bool,
    /// With `-A`: exit with what the fleet's rotations say.
    detailed_exit_code: bool,
}

/// A command of `ksa-signing-key` or `ksa-issuer`.
#[derive(Debug)]
pub enum Request {
    Rotate(RotateArgs),
    Status {
        cluster: ClusterArgs,
        output: Output,
        watch: bool,
        /// `ksa-issuer status`: the issuer line.
        issuer: bool,
        /// `-A`: every rotation.
        all_namespaces: bool,
    },
}

impl From<KeyRotateArgs> for Request {
    fn from(args: KeyRotateArgs) -> Request {
        let KeyRotateArgs {
            cluster,
            manifests_dir,
            skip_prompt,
            wait,
            timeout,
            issuer,
            dry_run,
            output,
            accept_outside_legacy_tokens,
            all_namespaces,
            detailed_exit_code,
        } = args;
        Request::Rotate(RotateArgs {
            cluster,
            manifests_dir,
            skip_prompt,
            wait,
            timeout,
            issuer,
            changes_key: true,
            dry_run,
            output,
            accept_outside_legacy_tokens,
            all_namespaces,
            detailed_exit_code,
        })
    }
}

impl From<PlanArgs> for Request {
    fn from(args: PlanArgs) -> Request {
        Request::Rotate(RotateArgs {
            cluster: args.cluster,
            manifests_dir: args.manifests_dir,
            skip_prompt: true,
            wait: false,
            // With -A: the fleet plan's.
            timeout: args.timeout,
            issuer: args.issuer,
            changes_key: true,
            dry_run: true,
            output: args.output,
            accept_outside_legacy_tokens: false,
            all_namespaces: args.all_namespaces,
            detailed_exit_code: args.detailed_exit_code,
        })
    }
}

impl Request {
    /// `status` of the key rotation (`issuer`: false) or the issuer's.
    pub fn status(args: StatusArgs, issuer: bool) -> Request {
        Request::Status {
            cluster: args.cluster,
            output: args.output,
            watch: args.watch,
            issuer,
            all_namespaces: args.all_namespaces,
        }
    }
}

impl From<RotationCommand> for Request {
    fn from(command: RotationCommand) -> Request {
        match command {
            RotationCommand::Rotate(args) => args.into(),
            RotationCommand::Status(args) => Request::status(args, false),
        }
    }
}

impl From<IssuerCommand> for Request {
    fn from(command: IssuerCommand) -> Request {
        match command {
            IssuerCommand::Rotate {
                issuer,
                cluster,
                manifests_dir,
                skip_prompt,
                wait,
                timeout,
                dry_run,
                output,
            } => Request::Rotate(RotateArgs {
                cluster,
                manifests_dir,
                skip_prompt,
                wait,
                timeout,
                issuer: Some(issuer),
                changes_key: false,
                dry_run,
                output,
                // An issuer rotation re-mints no legacy token.
                accept_outside_legacy_tokens: false,
                all_namespaces: false,
                detailed_exit_code: false,
            }),
            IssuerCommand::Status(args) => Request::status(args, true),
        }
    }
}

pub fn run(request: Request) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    check_target(&request)?;
    runtime.block_on(async {
        match request {
            Request::Rotate(args) if args.all_namespaces => {
                let flags = super::fleet::PlanFlags {
                    detailed_exit_code: args.detailed_exit_code,
                    timeout: super::fleet::fleet_timeout(args.timeout.as_deref())?,
                };
                super::fleet::plan(&args.cluster.kube, &args.output, flags).await
            }
            Request::Status {
                cluster,
                output,
                all_namespaces: true,
                ..
            } => super::fleet::status(&cluster.kube, &output).await,
            Request::Rotate(args) => {
                // A URL that cannot be an issuer is refused before anything
                // is read or changed.
                let issuer = args
                    .issuer
                    .as_deref()
                    .map(|text| {
                        Issuer::target(text)
                            .context("--issuer")
                            .map_err(Failure::bad_input)
                    })
                    .transpose()?;
                match &args.cluster.pki_dir {
                    Some(pki_dir) => {
                        crate::kubeadm::rotate(crate::kubeadm::RotateRequest {
                            pki_dir: pki_dir.clone(),
                            manifests_dir: args.manifests_dir.clone().unwrap_or_default(),
                            connection: Connection::open(&args.cluster.kube).await?,
                            skip_prompt: args.skip_prompt,
                            wait: args.wait,
                            timeout: args
                                .timeout
                                .as_deref()
                                .map(|t| crate::input::duration(t, "--timeout"))
                                .transpose()?,
                            issuer,
                            changes_key: args.changes_key,
                            dry_run: args.dry_run,
                            output: args.output.clone(),
                            accept_outside_legacy_tokens: args.accept_outside_legacy_tokens,
                        })
                        .await
                    }
                    None => rotate(&args, issuer).await,
                }
            }
            Request::Status {
                cluster:
                    ClusterArgs {
                        pki_dir: Some(pki_dir),
                        ..
                    },
                output,
                issuer,
                ..
            } => crate::kubeadm::status(&pki_dir, &output, issuer),
            Request::Status {
                cluster,
                output,
                watch,
                issuer,
                ..
            } => status(cluster, output, watch, issuer).await,
        }
    })
}

/// What to give when the command line names no cluster: clap would say
/// only which flags are missing, not what a user has.
const NO_TARGET: &str = "which cluster? Give a user cluster: --config USER_CLUSTER_CONFIG (its gkectl \
config file) with --kubeconfig ADMIN_KUBECONFIG (the admin cluster that runs ksa-controller); \
or a kubeadm control plane: --pki-dir /etc/kubernetes/pki --manifests-dir /etc/kubernetes/manifests \
--kubeconfig /etc/kubernetes/admin.conf. See --help for examples";

/// Refuses a command line that names no cluster, or a kubeadm one without
/// its manifests, saying what to give.
fn check_target(request: &Request) -> Result<(), Failure> {
    let (cluster, manifests_dir) = match request {
        // The fleet: every rotation of the admin cluster.
        Request::Rotate(RotateArgs {
            all_namespaces: true,
            ..
        })
        | Request::Status {
            all_namespaces: true,
            ..
        } => return Ok(()),
        Request::Rotate(args) => (&args.cluster, Some(&args.manifests_dir)),
        Request::Status { cluster, .. } => (cluster, None),
    };
    if cluster.config.is_none() && cluster.pki_dir.is_none() {
        return Err(Failure::bad_input(anyhow::anyhow!(NO_TARGET)));
    }
    if cluster.pki_dir.is_some() && manifests_dir.is_some_and(Option::is_none) {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--pki-dir needs --manifests-dir: kubeadm's static pod manifests \
             (/etc/kubernetes/manifests), which ksa edits at each step"
        )));
    }
    Ok(())
}

struct Target {
    config: UserClusterConfig,
    client: kube::Client,
    kube_config: kube::Config,
    /// Where the client came from, for errors.
    connection: Connection,
    api: Api<KSASigningKeyRotation>,
}

async fn connect(args: &ClusterArgs) -> Result<Target, Failure> {
    let path = args.config.as_deref().unwrap_or(std::path::Path::new(""));
    let mut config = UserClusterConfig::read(path).map_err(Failure::bad_input)?;
    if let Some(namespace) = &args.namespace {
        config.namespace.clone_from(namespace);
    }
    let connection = Connection::open(&args.kube).await?;
    connection.check().await?;
    super::preflight::crd_installed(&connection).await?;
    let api = Api::namespaced(connection.client.clone(), &config.namespace);
    Ok(Target {
        config,
        client: connection.client.clone(),
        kube_config: connection.config.clone(),
        connection,
        api,
    })
}

fn spec_for(config: &UserClusterConfig, key_version: u64, issuer: Option<&Issuer>) -> RotationSpec {
    RotationSpec {
        key_version,
        issuer: issuer.map(|issuer| issuer.as_str().to_owned()),
        cluster: config.kubeconfig_secret.as_ref().map(|name| ClusterRef {
            kubeconfig_secret: SecretKeyRef {
                name: name.clone(),
                key: config.kubeconfig_secret_key.clone(),
            },
        }),
        key: config.key,
        rollout: RolloutSpec {
            kind: config.rollout,
            key_secret: config.key_secret.clone(),
            workload: config.api_server_workload.as_ref().map(|w| WorkloadRef {
                kind: w.kind.clone(),
                name: w.name.clone(),
                container: w.container.clone(),
            }),
        },
        // What the operator set beyond the config (legacy tokens given
        // up on, their deadline) is left out, so a merge patch keeps it.
        token_refresh: TokenRefreshSpec {
            policy: config.token_refresh,
            max_token_seconds: config.max_token_seconds,
            observe: config.observe,
            ..TokenRefreshSpec::default()
        },
        trust_lead_time_seconds: config.trust_lead_time_seconds,
        publish: config.publish.clone(),
    }
}

/// The user cluster, reached as the controller reaches it (the kubeconfig
/// Secret the config names, or the admin cluster itself).
async fn user_cluster(target: &Target) -> Result<TargetCluster, Failure> {
    let own = TargetCluster::new(target.client.clone(), target.kube_config.clone());
    let cluster_ref = target
        .config
        .kubeconfig_secret
        .as_ref()
        .map(|name| ClusterRef {
            kubeconfig_secret: SecretKeyRef {
                name: name.clone(),
                key: target.config.kubeconfig_secret_key.clone(),
            },
        });
    TargetCluster::connect(
        &own,
        &target.client,
        &target.config.namespace,
        cluster_ref.as_ref(),
    )
    .await
    .map_err(|error| kubeconfig_secret_error(target, error))
}

/// Why the user cluster's kubeconfig Secret could not be read, naming the
/// Secret, the config field and what to do.
fn kubeconfig_secret_error(target: &Target, error: ksa_kube::Error) -> Failure {
    let config = &target.config;
    let (Some(name), ksa_kube::Error::Kube(kube::Error::Api(status))) =
        (&config.kubeconfig_secret, &error)
    else {
        return match error {
            ksa_kube::Error::Kube(error) => target.connection.unreachable(error),
            other => Failure::bad_input(other),
        };
    };
    let namespace = &config.namespace;
    match status.code {
        404 => Failure::bad_input(anyhow::anyhow!(
            "the user cluster's kubeconfig Secret {namespace}/{name} \
             (ksaSigningKeyRotation.kubeconfigSecret in --config) does not exist in the admin \
             cluster {}: create it with `kubectl create secret generic {name} -n {namespace} \
             --from-file={}=USER_CLUSTER_KUBECONFIG`, or name the right Secret in \
             kubeconfigSecret; nothing was changed",
            target.connection.describe(),
            config.kubeconfig_secret_key,
        )),
        403 => Failure::from(anyhow::anyhow!(
            "reading the user cluster's kubeconfig Secret {namespace}/{name} is forbidden ({}): \
             ask for a Role that grants get on secrets in namespace {namespace}; nothing was changed",
            status.message
        )),
        _ => match error {
            ksa_kube::Error::Kube(error) => target.connection.unreachable(error),
            other => Failure::from(other),
        },
    }
}

/// An error of the user cluster's API servers, naming where they are: the
/// server of the kubeconfig Secret, or the admin cluster itself.
fn user_cluster_error(target: &Target, cluster: &TargetCluster, error: ksa_kube::Error) -> Failure {
    let ksa_kube::Error::Kube(error) = error else {
        return Failure::from(error);
    };
    match &target.config.kubeconfig_secret {
        Some(secret) => Failure::from(anyhow::Error::new(error).context(format!(
            "the user cluster's API server {} (from the kubeconfig in Secret {}/{secret})",
            cluster.url(),
            target.config.namespace
        ))),
        None => target.connection.unreachable(error),
    }
}

/// The issuer the user cluster signs with before ksa ever changed it: the
/// one its API servers' discovery document names.
async fn discovered_issuer(target: &Target) -> Result<Issuer, Failure> {
    let cluster = user_cluster(target).await?;
    let issuer = cluster.issuer().await?.ok_or_else(|| {
        Failure::bad_input(anyhow::anyhow!(
            "the user cluster's discovery document names no issuer; is --service-account-issuer set?"
        ))
    })?;
    Issuer::new(issuer)
        .context("the issuer the user cluster's discovery document names")
        .map_err(Failure::bad_input)
}

async fn rotate(args: &RotateArgs, issuer: Option<Issuer>) -> Outcome {
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| crate::input::duration(t, "--timeout"))
        .transpose()?;
    let target = connect(&args.cluster).await?;
    let config = &target.config;
    let existing = target.api.get_opt(&config.name).await?;
    let state = match &existing {
        Some(resource) => resource.state()?,
        None => RotationState::settled(KeyVersion::FIRST),
    };
    // `--issuer` wins; else the config's `issuer`, unless the cluster
    // already signs with it (checked below).
    let from_config = issuer.is_none() && config.issuer.is_some();
    let issuer = match issuer {
        Some(issuer) => Some(issuer),
        None => config
            .issuer
            .as_deref()
            .map(|text| {
                Issuer::target(text)
                    .context("ksaSigningKeyRotation.issuer")
                    .map_err(Failure::bad_input)
            })
            .transpose()?,
    };
    let requested_issuer = existing
        .as_ref()
        .and_then(|resource| resource.spec.issuer.as_deref())
        .and_then(|text| Issuer::new(text).ok());
    // The issuer the cluster signs with, only when an issuer is involved.
    let signing_issuer = if issuer.is_some() || requested_issuer.is_some() {
        Some(signing_issuer(&state, discovered_issuer(&target)).await?)
    } else {
        None
    };
    let issuer = issuer.filter(|to| !(from_config && signing_issuer.as_ref() == Some(to)));
    // Whether a rotation may start is the core's decision, the same one the
    // controller makes; a target the controller has not picked up yet is a
    // rotation in progress too, though its status still says completed.
    let current = state.key_version();
    let request = StartRequest {
        target: if args.changes_key {
            current.next().unwrap_or(current)
        } else {
            current
        },
        issuer: match (&issuer, &signing_issuer) {
            (Some(to), Some(from)) => Some(IssuerChange {
                from: from.clone(),
                to: to.clone(),
            }),
            _ => None,
        },
        advanced_cluster: config.advanced_cluster,
        lock: lock::observe(&target.client, &config.namespace, &config.name).await?,
    };
    let requested = Requested {
        key_version: existing
            .as_ref()
            .map(|resource| KeyVersion::new(resource.spec.key_version)),
        issuer: requested_issuer,
        signing_issuer,
    };
    let started = match rotation::start_new(&state, &requested, &request, jiff::Timestamp::now()) {
        Ok(started) => started,
        Err(refusal) => {
            let error = anyhow::Error::new(refusal.clone())
                .context(format!("{}: nothing was changed", config.name));
            return Err(if refusal.is_busy() {
                Failure::busy(error)
            } else {
                Failure::bad_input(error)
            });
        }
    };
    // What the rotation needs, before the plan (which takes a while) and
    // the prompt: fails within seconds, naming what is missing.
    let verb = if existing.is_some() {
        "patch"
    } else {
        "create"
    };
    if !args.dry_run {
        super::preflight::may_change_rotation(&target.connection, &config.namespace, verb).await?;
        super::preflight::controller_running(
            &target.connection,
            args.cluster.controller_namespace.as_deref(),
        )
        .await?;
    }
    super::preflight::key_imported(
        &target.connection,
        &config.namespace,
        &config.name,
        state.versions().private_key_version(),
    )
    .await?;
    let to = started.key_version().get();
    let spec = spec_for(config, to, issuer.as_ref());
    let longest = spec.policy().longest_rotation();
    // Who the rotation affects and who it could break, from the live
    // cluster, before anything changes.
    let cluster = user_cluster(&target).await?;
    let plan = ksa_kube::plan::plan(&cluster, &started, &spec.policy(), jiff::Timestamp::now())
        .await
        .map_err(|error| user_cluster_error(&target, &cluster, error))?;
    if args.dry_run {
        return crate::plan::print(&plan, &args.output);
    }
    crate::plan::check_outside_holders(&plan, args.skip_prompt, args.accept_outside_legacy_tokens)?;
    if !args.skip_prompt {
        confirm(&format!(
            "{}\n\n{}",
            explanation(config, &state, &started),
            crate::plan::short(&plan).trim_end()
        ))?;
    }
    match existing {
        None => {
            let resource = KSASigningKeyRotation {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec,
                status: None,
            };
            target
                .api
                .create(&PostParams::default(), &resource)
                .await
                .map_err(|e| refused(e, verb, &config.namespace))?;
        }
        Some(resource) => {
            // Conditional on what we read: of two racing `rotate`s, one
            // wins. A key rotation clears a stored issuer (a merge patch
            // keeps what it leaves out).
            let mut version = resource.metadata.resource_version.clone();
            let mut conflicts = 0;
            loop {
                let mut patch = serde_json::json!({
                    "metadata": {"resourceVersion": version},
                    "spec": spec,
                });
                if issuer.is_none() {
                    patch["spec"]["issuer"] = serde_json::Value::Null;
                }
                let conflict = match target
                    .api
                    .patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => break,
                    Err(kube::Error::Api(status)) if status.code == 409 => status,
                    Err(error) => return Err(refused(error, verb, &config.namespace)),
                };
                // The controller's own writes (its status, just after a
                // rotation completed, say) move the resourceVersion too:
                // the patch is made again while nothing this rotate
                // decided on has changed; another rotate's is refused.
                conflicts += 1;
                let fresh = target
                    .api
                    .get(&config.name)
                    .await
                    .map_err(|e| refused(e, verb, &config.namespace))?;
                if conflicts > 3 || !decided_on_the_same(&resource, &fresh, &state) {
                    return Err(conflict_is_busy(kube::Error::Api(conflict)));
                }
                version = fresh.metadata.resource_version;
            }
        }
    }
    eprintln!(
        "started the rotation of {}: {}",
        config.name,
        describe(&started)
    );
    if !args.wait {
        return Ok(exit::DONE);
    }
    // This command started the rotation from the completed state before
    // it, so it passes through every step: every line is printed.
    let progress = crate::progress::Progress::started_rotation(started);
    let timeout = match timeout {
        Some(timeout) => timeout,
        None => {
            eprintln!(
                "waiting at most {:#} (the longest this rotation takes when nothing holds it; --timeout to change)",
                jiff::SignedDuration::try_from(longest).unwrap_or(jiff::SignedDuration::MAX)
            );
            longest
        }
    };
    follow(&target, progress, Some(timeout)).await
}

/// What the prompt says before a rotation starts.
fn explanation(
    config: &UserClusterConfig,
    before: &RotationState,
    started: &RotationState,
) -> String {
    let from = before.key_version().get();
    let keys = EXPLANATION
        .replace("{cluster}", &config.name)
        .replace("{from}", &from.to_string())
        .replace("{to}", &(from + 1).to_string());
    let Some(change) = started.issuer().filter(|_| started.changes_issuer()) else {
        return keys;
    };
    let issuer = ISSUER_EXPLANATION
        .replace("{cluster}", &config.name)
        .replace("{from}", change.from.as_str())
        .replace("{to}", change.to.as_str());
    if started.changes_key() {
        let key = format!(
            ", together with the signing key (version {from} to {}): one Trust, one Sign,\none token refresh (one restart of the workloads) and one Retire for both",
            from + 1
        );
        format!("{}\n\n{keys}", issuer.replace("{key}", &key))
    } else {
        issuer.replace("{key}", "")
    }
}

/// Why creating or patching the rotation failed: RBAC, a racing rotate,
/// or the request's own error.
fn refused(error: kube::Error, verb: &str, namespace: &str) -> Failure {
    match super::preflight::forbidden(error, verb, namespace) {
        Ok(kube::Error::Api(status)) if status.code == 404 && verb == "create" => {
            Failure::bad_input(anyhow::anyhow!(
                "namespace {namespace} does not exist in the admin cluster ({}): create it \
                 (kubectl create namespace {namespace}) or name the rotation's namespace with -n \
                 or ksaSigningKeyRotation.namespace; nothing was changed",
                ksa_kube::error::describe(&kube::Error::Api(status))
            ))
        }
        Ok(other) => conflict_is_busy(other),
        Err(forbidden) => forbidden,
    }
}

/// Whether `fresh` holds what a rotate that read `read` (its state:
/// `state`) decided on: the same spec (no other rotate changed it) and the
/// same state in its status, though the controller may have written other
/// fields of it since.
fn decided_on_the_same(
    read: &KSASigningKeyRotation,
    fresh: &KSASigningKeyRotation,
    state: &RotationState,
) -> bool {
    let spec = |resource: &KSASigningKeyRotation| serde_json::to_value(&resource.spec).ok();
    read.metadata.generation == fresh.metadata.generation
        && spec(read).is_some()
        && spec(read) == spec(fresh)
        && fresh.state().ok().as_ref() == Some(state)
}

fn conflict_is_busy(error: kube::Error) -> Failure {
    match error {
        kube::Error::Api(status) if status.code == 409 => Failure::busy(anyhow::anyhow!(
            "another rotate changed the rotation at the same moment; it proceeds, this one does not ({})",
            status.message
        )),
        other => Failure::from(other),
    }
}

/// Prints the status lines of the rotation until it completes, each once and
/// in order (`crate::progress`). It watches the resource and keeps watching
/// through API server restarts until the timeout; a step the rotation passed
/// through while the watch was away is printed from the step, and stderr
/// says it was not observed.
async fn follow(
    target: &Target,
    mut lines: crate::progress::Progress,
    timeout: Option<Duration>,
) -> Outcome {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};

    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timings = crate::progress::Timings::default();
    let progress = std::io::stderr().is_terminal().then(|| {
        // The bar fills with the steps completed; the message names the
        // step under way by its number (`step 3/5 Sign`).
        let bar = indicatif::ProgressBar::new(Step::ROTATION.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:20}] {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("waiting for the controller to take the rotation up");
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut config =
        watcher::Config::default().fields(&format!("metadata.name={}", target.config.name));
    // With --request-timeout, the server ends each watch before the
    // client would give up on it.
    if let Some(limit) = target.kube_config.read_timeout {
        let seconds = u32::try_from(limit.as_secs().saturating_sub(1)).unwrap_or(u32::MAX);
        config = config.timeout(seconds.clamp(1, 290));
    }
    let mut updates = std::pin::pin!(
        watcher(target.api.clone(), config)
            .default_backoff()
            .applied_objects()
    );
    loop {
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, updates.next()).await {
                Ok(next) => next,
                Err(_) => {
                    return Err(Failure::still_running(anyhow::anyhow!(
                        "still running: the rotation did not complete within the timeout; it goes on: follow it with `status --watch`"
                    )));
                }
            },
            None => updates.next().await,
        };
        let resource = match next {
            Some(Ok(resource)) => resource,
            // The API servers restart during a rotation; the watcher
            // reconnects with backoff.
            Some(Err(error)) => {
                tracing::debug!(%error, "watch interrupted; reconnecting");
                continue;
            }
            None => return Err(anyhow::anyhow!("the watch of the rotation ended").into()),
        };
        let state = resource.state()?;
        let waiting_for = resource
            .status
            .as_ref()
            .and_then(|status| status.waiting_for.clone());
        // Nothing of the previous rotation (until the controller picks up
        // the new target), nothing twice, nothing out of order.
        for line in lines.lines_for(&state) {
            // The line on stdout, byte for byte; the note on stderr.
            match &progress {
                Some(bar) => bar.suspend(|| crate::output::print(&line.text))?,
                None => crate::output::print(&line.text)?,
            }
            if let Some(note) = line.note() {
                match &progress {
                    Some(bar) => bar.println(&note),
                    None => eprintln!("{note}"),
                }
            }
        }
        if lines.follows(&state)
            && let Some(note) = timings.observe(&state)
        {
            match &progress {
                Some(bar) => bar.println(&note),
                None => eprintln!("{note}"),
            }
        }
        if let Some(bar) = &progress
            && lines.follows(&state)
        {
            let number = state.step().number();
            bar.set_position(u64::from(number - 1));
            bar.set_message(format!(
                "step {number}/{} {} {}",
                Step::ROTATION.len(),
                state.step(),
                waiting_for.clone().unwrap_or_default()
            ));
        }
        if lines.is_done() {
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            if let Some(summary) = timings.summary() {
                eprintln!("{summary}");
            }
            return Ok(exit::DONE);
        }
    }
}

async fn status(args: ClusterArgs, output: Output, watch: bool, issuer: bool) -> Outcome {
    let target = connect(&args).await?;
    let resource = target.api.get_opt(&target.config.name).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no KSASigningKeyRotation {} in namespace {}: no rotation has been started for this \
             cluster (start one with `ksa update credentials ksa-signing-key rotate --config \
             CONFIG`, or name the namespace it is in with -n)",
            target.config.name,
            target.config.namespace
        )
    })?;
    let state = resource.state()?;
    if watch {
        // A rotation asked for and not completed needs a controller: say
        // so now rather than watch a resource nothing will change.
        let awaited =
            !state.is_completed() || resource.spec.key_version != state.key_version().get();
        if awaited {
            super::preflight::controller_running(
                &target.connection,
                args.controller_namespace.as_deref(),
            )
            .await?;
        }
        // Not started by this command: lines from the first state seen on
        // (`Progress::joined_rotation`). The rotation is the one the state
        // is in, or, when completed, the one the spec asks for next.
        let rotation = if state.is_completed() {
            let target = KeyVersion::new(resource.spec.key_version);
            if target == state.key_version() {
                state.clone()
            } else {
                RotationState::settled(target)
            }
        } else {
            state.clone()
        };
        let progress = crate::progress::Progress::joined_rotation(rotation);
        return follow(&target, progress, None).await;
    }
    // Before the controller's first write: the status of the state the
    // resource stands at.
    let status = resource.status.clone().unwrap_or_else(|| {
        RotationStatus::of(
            &state,
            None,
            None,
            resource.metadata.generation,
            jiff::Timestamp::now(),
        )
    });
    if issuer {
        return issuer_status(&status, &resource, &output);
    }
    // A rotation the spec asks for that has not started is not completed,
    // whatever the last one's line said.
    let requested = KeyVersion::new(resource.spec.key_version);
    // `status.refusal`; for a status of a controller before it, the
    // `refused: ` prefix of `waitingFor`.
    let refusal = super::fleet::refusal(&status);
    let line = state.status_line_for(requested, refusal.is_some());
    if output == Output::Text {
        // Standard output is the status line alone, byte for byte (scripts
        // parse it); where the rotation stands goes beside it, for people.
        if line != state.status_line() {
            eprintln!(
                "the rotation to key version {requested} is {}",
                match refusal {
                    Some(refusal) => format!(
                        "{} by the controller",
                        crate::output::shown(&refusal.describe())
                    ),
                    None => "asked for; the controller has not started it yet (is it running? \
                             `kubectl get pods -A -l app.kubernetes.io/name=ksa-controller`)"
                        .to_owned(),
                }
            );
        } else {
            eprintln!("{}", progress_note(&status, jiff::Timestamp::now()));
        }
    }
    let value = structured(&status, &resource, &line);
    let text = match output {
        Output::Wide => key_table(&value, jiff::Timestamp::now()),
        output => crate::output::render(&output, &value, || Ok(line.to_string()))?,
    };
    crate::output::finish(&text)
}

/// Where a rotation stands, for people: the step, since when, and what it
/// waits for.
fn progress_note(status: &RotationStatus, now: jiff::Timestamp) -> String {
    let mut note = format!("step: {}", status.step);
    if let Some(since) = status.step_started_at {
        note.push_str(&format!(" since {}", crate::output::time(since, now)));
    }
    match status.waiting_for.as_deref().filter(|w| !w.is_empty()) {
        Some(waiting) => {
            note.push_str(&format!("\nwaiting for: {}", crate::output::shown(waiting)))
        }
        None if status.step == ksa_core::rotation::Step::Completed => {}
        None => note.push_str("\nwaiting for: nothing (the controller moves it on)"),
    }
    note
}

/// `ksa-issuer status`: the issuer line, or the issuer state.
fn issuer_status(
    status: &RotationStatus,
    resource: &KSASigningKeyRotation,
    output: &Output,
) -> Outcome {
    let Some(issuer) = &status.issuer else {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "ksa has not changed the issuer of {}: there is no issuer rotation to show (start one with `ksa update credentials ksa-issuer rotate --issuer URL`)",
            resource.metadata.name.as_deref().unwrap_or_default()
        )));
    };
    let structured = || {
        serde_json::json!({
            "cluster": resource.metadata.name,
            "targetIssuer": resource.spec.issuer,
            "issuer": issuer.to,
            "step": status.step,
            "signingIssuer": issuer.signing_issuer,
            "acceptedIssuers": issuer.accepted_issuers,
            "tokenIssuer": issuer.token_issuer,
            "waitingFor": status.waiting_for,
            "condition": status.conditions.iter().find(|c| c.type_ == ISSUER_CONDITION_TYPE),
            "statusLine": issuer.status_line,
        })
    };
    let value = structured();
    let text = match output {
        Output::Wide => issuer_table(&value),
        output => crate::output::render(output, &value, || Ok(issuer.status_line.clone()))?,
    };
    crate::output::finish(&text)
}

/// A JSON value as a table cell: text as it is (escaped when it holds
/// control characters), nothing as `-`, lists joined by commas.
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(text) if text.is_empty() => "-".to_owned(),
        // The status is written by whoever may write it: never raw bytes
        // on the terminal.
        serde_json::Value::String(text) => crate::output::shown(text).into_owned(),
        serde_json::Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// How long ago an RFC 3339 time was, as kubectl's AGE column says it.
fn age(value: &serde_json::Value, now: jiff::Timestamp) -> String {
    value
        .as_str()
        .and_then(|text| text.parse::<jiff::Timestamp>().ok())
        .map_or("-".to_owned(), |at| {
            crate::output::age(
                now.as_second()
                    .saturating_sub(at.as_second())
                    .unsigned_abs(),
            )
        })
}

/// `status -o wide`: the key rotation as a kubectl table row.
pub(crate) fn key_table(value: &serde_json::Value, now: jiff::Timestamp) -> String {
    // Before the controller's first condition, the status line says it.
    let decoded = value["statusLine"]
        .as_str()
        .and_then(|line| ksa_core::status::decode(line).ok())
        .map(|decoded| {
            serde_json::json!({
                "status": if decoded["status"] == true { "True" } else { "False" },
                "reason": decoded["reason"],
            })
        });
    let condition = match (&value["condition"], &decoded) {
        (serde_json::Value::Null, Some(decoded)) => decoded,
        (condition, _) => condition,
    };
    crate::output::table(
        &[
            "name",
            "target",
            "key",
            "step",
            "status",
            "reason",
            "token",
            "private",
            "public",
            "step age",
            "waiting for",
        ],
        &[vec![
            cell(&value["cluster"]),
            cell(&value["targetKeyVersion"]),
            cell(&value["keyVersion"]),
            cell(&value["step"]),
            cell(&condition["status"]),
            cell(&condition["reason"]),
            cell(&value["tokenVersion"]),
            cell(&value["privateKeyVersion"]),
            cell(&value["publicKeyVersions"]),
            age(&value["stepStartedAt"], now),
            cell(&value["waitingFor"]),
        ]],
    )
}

/// `ksa-issuer status -o wide`: the issuer rotation as a kubectl table row.
fn issuer_table(value: &serde_json::Value) -> String {
    let condition = &value["condition"];
    crate::output::table(
        &[
            "name",
            "target",
            "step",
            "status",
            "reason",
            "signing",
            "accepted",
            "tokens",
            "waiting for",
        ],
        &[vec![
            cell(&value["cluster"]),
            cell(&value["targetIssuer"]),
            cell(&value["step"]),
            cell(&condition["status"]),
            cell(&condition["reason"]),
            cell(&value["signingIssuer"]),
            cell(&value["acceptedIssuers"]),
            cell(&value["tokenIssuer"]),
            cell(&value["waitingFor"]),
        ]],
    )
}

fn structured(
    status: &RotationStatus,
    resource: &KSASigningKeyRotation,
    line: &ksa_core::status::StatusLine,
) -> serde_json::Value {
    serde_json::json!({
        "cluster": resource.metadata.name,
        "targetKeyVersion": resource.spec.key_version,
        "keyVersion": status.key_version,
        "step": status.step,
        "tokenVersion": status.token_version,
        "privateKeyVersion": status.private_key_version,
        "publicKeyVersions": status.public_key_versions,
        "startedAt": status.started_at,
        "stepStartedAt": status.step_started_at,
        "completedAt": status.completed_at,
        "waitingFor": status.waiting_for,
        "condition": status.conditions.first(),
        "statusLine": line.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conflict from the controller's own status write is made again; one
    /// from another rotate's spec, or a state that moved, is not.
    #[test]
    fn a_conflict_is_retried_only_when_nothing_decided_on_changed() {
        let now: jiff::Timestamp = "2026-11-30T10:05:00Z".parse().expect("a time");
        let state = RotationState::settled(KeyVersion::new(2));
        let read: KSASigningKeyRotation = serde_json::from_value(serde_json::json!({
            "apiVersion": "ksa.dev/v1alpha1",
            "kind": "KSASigningKeyRotation",
            "metadata": {"name": "c", "namespace": "c", "generation": 4, "resourceVersion": "10"},
            "spec": {"keyVersion": 2},
        }))
        .expect("a rotation");
        let mut read = read;
        read.status = Some(RotationStatus::of(&state, None, None, None, now));
        let mut fresh = read.clone();
        fresh.metadata.resource_version = Some("11".into());
        fresh.status = Some(RotationStatus::of(
            &state,
            None,
            Some("done".into()),
            None,
            now,
        ));
        assert!(decided_on_the_same(&read, &fresh, &state));
        let mut other_rotate = fresh.clone();
        other_rotate.metadata.generation = Some(5);
        other_rotate.spec.key_version = 3;
        assert!(!decided_on_the_same(&read, &other_rotate, &state));
        let moved = RotationState::settled(KeyVersion::new(3));
        let mut progressed = fresh.clone();
        progressed.status = Some(RotationStatus::of(&moved, None, None, None, now));
        assert!(!decided_on_the_same(&read, &progressed, &state));
    }

    #[test]
    fn status_text_says_the_step_since_when_and_what_it_waits_for() {
        let now: jiff::Timestamp = "2026-11-30T10:05:00Z".parse().expect("a time");
        let mut state = RotationState::settled(KeyVersion::new(2));
        let mut status = RotationStatus::of(&state, None, None, None, now);
        assert_eq!(progress_note(&status, now), "step: Completed");
        state = serde_json::from_value(serde_json::json!({
            "keyVersion": 3, "step": "Trust", "stepStartedAt": "2026-11-30T10:00:00Z",
        }))
        .expect("a state");
        status = RotationStatus::of(
            &state,
            None,
            Some("API servers accepting key 3: 1/3".into()),
            None,
            now,
        );
        assert_eq!(
            progress_note(&status, now),
            "step: Trust since 2026-11-30T10:00:00Z (5m ago)\nwaiting for: API servers accepting key 3: 1/3"
        );
    }
}
