//! `ksa update credentials ksa-signing-key rotate | status`, against the
//! `KSASigningKeyRotation` resource in the admin cluster.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use ksa_core::KeyVersion;
use ksa_core::rotation::{self, RotationState, StartRequest, Step};
use ksa_kube::api::{
    ClusterRef, KSASigningKeyRotation, KeyKind, RolloutKind, RolloutSpec, RotationSpec,
    RotationStatus, SecretKeyRef, TokenRefreshPolicy, TokenRefreshSpec,
};
use ksa_kube::lock;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::args::{ClusterArgs, Format, RotationCommand};
use crate::config::UserClusterConfig;
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

pub fn run(command: RotationCommand) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            RotationCommand::Rotate {
                cluster:
                    ClusterArgs {
                        pki_dir: Some(pki_dir),
                        kubeconfig,
                        ..
                    },
                manifests_dir,
                skip_prompt,
                wait,
                timeout,
            } => {
                crate::kubeadm::rotate(crate::kubeadm::RotateRequest {
                    pki_dir,
                    manifests_dir: manifests_dir.unwrap_or_default(),
                    kube_config: kube_config(kubeconfig.as_deref()).await?,
                    skip_prompt,
                    wait,
                    timeout: super::duration(&timeout, "--timeout")?,
                })
                .await
            }
            RotationCommand::Rotate {
                cluster,
                skip_prompt,
                wait,
                timeout,
                ..
            } => rotate(cluster, skip_prompt, wait, &timeout).await,
            RotationCommand::Status {
                cluster:
                    ClusterArgs {
                        pki_dir: Some(pki_dir),
                        ..
                    },
                output,
                ..
            } => crate::kubeadm::status(&pki_dir, output),
            RotationCommand::Status {
                cluster,
                output,
                watch,
            } => status(cluster, output, watch).await,
        }
    })
}

struct Target {
    config: UserClusterConfig,
    client: kube::Client,
    api: Api<KSASigningKeyRotation>,
}

/// The kubeconfig given, or the one found as kubectl finds it.
async fn kube_config(kubeconfig: Option<&std::path::Path>) -> Result<kube::Config, Failure> {
    Ok(match kubeconfig {
        Some(path) => {
            let bytes = crate::input::read_limited(path, crate::commands::MAX_INPUT)
                .with_context(|| format!("--kubeconfig {}", path.display()))
                .map_err(Failure::bad_input)?;
            let kubeconfig = std::str::from_utf8(&bytes)
                .map_err(anyhow::Error::from)
                .and_then(|text| Kubeconfig::from_yaml(text).map_err(anyhow::Error::from))
                .with_context(|| format!("--kubeconfig {}", path.display()))
                .map_err(Failure::bad_input)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))
                .map_err(Failure::bad_input)?
        }
        None => kube::Config::infer()
            .await
            .context("no --kubeconfig given and none found in $KUBECONFIG or ~/.kube/config")
            .map_err(Failure::bad_input)?,
    })
}

async fn connect(args: &ClusterArgs) -> Result<Target, Failure> {
    let path = args.config.as_deref().unwrap_or(std::path::Path::new(""));
    let config = UserClusterConfig::read(path).map_err(Failure::bad_input)?;
    let client = kube::Client::try_from(kube_config(args.kubeconfig.as_deref()).await?)?;
    let api = Api::namespaced(client.clone(), &config.namespace);
    Ok(Target {
        config,
        client,
        api,
    })
}

fn spec_for(config: &UserClusterConfig, key_version: u64) -> RotationSpec {
    let key = match config.key.as_str() {
        "RSA-3072" => KeyKind::Rsa3072,
        "RSA-4096" => KeyKind::Rsa4096,
        "ECDSA-P256" => KeyKind::EcdsaP256,
        _ => KeyKind::Rsa2048,
    };
    let policy = match config.token_refresh.as_str() {
        "recreate-nodes" => TokenRefreshPolicy::RecreateNodes,
        "wait" => TokenRefreshPolicy::Wait,
        _ => TokenRefreshPolicy::RestartPods,
    };
    RotationSpec {
        key_version,
        cluster: config.kubeconfig_secret.as_ref().map(|name| ClusterRef {
            kubeconfig_secret: SecretKeyRef {
                name: name.clone(),
                key: "value".into(),
            },
        }),
        key,
        rollout: RolloutSpec {
            kind: match config.rollout.as_str() {
                "external-signer" => RolloutKind::ExternalSigner,
                _ => RolloutKind::HostedControlPlane,
            },
            key_secret: config.key_secret.clone(),
            ..RolloutSpec::default()
        },
        token_refresh: TokenRefreshSpec {
            policy,
            max_token_seconds: config.max_token_seconds,
        },
        trust_lead_time_seconds: config.trust_lead_time_seconds,
    }
}

async fn rotate(args: ClusterArgs, skip_prompt: bool, wait: bool, timeout: &str) -> Outcome {
    let timeout = super::duration(timeout, "--timeout")?;
    let target = connect(&args).await?;
    let config = &target.config;
    let existing = target.api.get_opt(&config.name).await?;
    let state = match &existing {
        Some(resource) => resource.state()?,
        None => RotationState::settled(KeyVersion::FIRST),
    };
    // Whether a rotation may start is the core's decision, the same one the
    // controller makes; a target the controller has not picked up yet is a
    // rotation in progress too, though its status still says completed.
    let request = StartRequest {
        target: state.key_version().next().unwrap_or(state.key_version()),
        issuer: None,
        advanced_cluster: config.advanced_cluster,
        lock: lock::observe(&target.client, &config.namespace, &config.name).await?,
    };
    let requested = existing
        .as_ref()
        .map(|resource| KeyVersion::new(resource.spec.key_version));
    if let Err(refusal) = rotation::start_new(&state, requested, &request, jiff::Timestamp::now()) {
        let error = anyhow::Error::new(refusal.clone())
            .context(format!("{}: nothing was changed", config.name));
        return Err(if refusal.is_busy() {
            Failure::busy(error)
        } else {
            Failure::bad_input(error)
        });
    }
    let from = state.key_version().get();
    let to = from + 1;
    if !skip_prompt {
        confirm(
            &EXPLANATION
                .replace("{cluster}", &config.name)
                .replace("{from}", &from.to_string())
                .replace("{to}", &to.to_string()),
        )?;
    }
    match existing {
        None => {
            let resource = KSASigningKeyRotation {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: spec_for(config, to),
                status: None,
            };
            target
                .api
                .create(&PostParams::default(), &resource)
                .await
                .map_err(conflict_is_busy)?;
        }
        Some(resource) => {
            // Conditional on what we read: of two racing `rotate`s, one wins.
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": resource.metadata.resource_version},
                "spec": spec_for(config, to),
            });
            target
                .api
                .patch(&config.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(conflict_is_busy)?;
        }
    }
    eprintln!(
        "started the rotation of {} to key version {to}",
        config.name
    );
    if !wait {
        return Ok(exit::DONE);
    }
    // This command started the rotation from the completed state of
    // `from`, so it passes through every step: every line is printed.
    let progress = crate::progress::Progress::started(KeyVersion::new(to));
    follow(&target, progress, Some(timeout)).await
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

pub(crate) fn confirm(explanation: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "rotate asks for confirmation and there is no terminal; pass --skip-prompt to go ahead (nothing was changed)"
        )));
    }
    eprintln!("{explanation}");
    eprint!("Proceed? [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
        Ok(())
    } else {
        Err(Failure::bad_input(anyhow::anyhow!(
            "not confirmed; nothing was changed"
        )))
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
    let progress = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(Step::ROTATION.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:20}] step {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", target.config.name));
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
                    return Err(anyhow::anyhow!(
                        "the rotation did not complete within the timeout; it goes on: follow it with `status --watch`"
                    )
                    .into());
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
                Some(bar) => bar.suspend(|| super::print(&line.text))?,
                None => super::print(&line.text)?,
            }
            if let Some(note) = line.note() {
                match &progress {
                    Some(bar) => bar.println(&note),
                    None => eprintln!("{note}"),
                }
            }
        }
        if let Some(bar) = &progress
            && state.key_version() == lines.target()
        {
            bar.set_position(u64::from(state.step().number() - 1));
            bar.set_message(format!(
                "{} {}",
                state.step(),
                waiting_for.clone().unwrap_or_default()
            ));
        }
        if lines.is_done() {
            if let Some(bar) = progress {
                bar.finish_and_clear();
            }
            return Ok(exit::DONE);
        }
    }
}

async fn status(args: ClusterArgs, output: Format, watch: bool) -> Outcome {
    let target = connect(&args).await?;
    let resource = target.api.get_opt(&target.config.name).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "no KSASigningKeyRotation {} in namespace {}: no rotation has been started for this cluster",
            target.config.name,
            target.config.namespace
        )
    })?;
    if watch {
        // Not started by this command: lines from the first state seen on
        // (`Progress::joined`).
        let progress =
            crate::progress::Progress::joined(KeyVersion::new(resource.spec.key_version));
        return follow(&target, progress, None).await;
    }
    let state = resource.state()?;
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
    let text = match output {
        Format::Text => state.status_line().to_string(),
        Format::Json => serde_json::to_string_pretty(&structured(&status, &resource))?,
        Format::Yaml => serde_yaml::to_string(&structured(&status, &resource))?,
    };
    super::finish(&text)
}

fn structured(status: &RotationStatus, resource: &KSASigningKeyRotation) -> serde_json::Value {
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
        "statusLine": status.status_line,
    })
}
