//! `ksa keys generate`, `ksa keys jwks` and `ksa keys import`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;
use ksa_core::KeyVersion;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::instances::in_use_everywhere;
use ksa_core::jwk::Jwks;
use ksa_core::key::{Algorithm, KeySpec, PrivateKey, PublicKey, parse_pem};
use ksa_core::rotation::Observation;
use ksa_kube::api::{ClusterRef, KSASigningKeyRotation, SecretKeyRef};
use ksa_kube::cluster::TargetCluster;
use ksa_kube::keystore::{ApiServerKeysImport, KeyStore, default_key_secret};
use kube::api::Api;

use crate::args::{Alg, KeysCommand, KubeArgs, Output};
use crate::connection::Connection;
use crate::{Failure, Outcome};

pub fn run(command: KeysCommand) -> Outcome {
    match command {
        KeysCommand::Generate {
            algorithm,
            bits,
            out,
            force,
            output,
        } => generate(algorithm, bits, &out, force, output),
        KeysCommand::Import {
            rotation,
            namespace,
            key,
            key_version,
            kubeconfig_secret,
            kube,
            output,
        } => import(ImportArgs {
            rotation,
            namespace,
            key,
            version: KeyVersion::new(key_version),
            kubeconfig_secret,
            kube,
            output,
        }),
        KeysCommand::Jwks { files, output } => {
            let mut keys: Vec<PublicKey> = Vec::new();
            for file in &files {
                let parsed = parse_pem(&crate::input::read_file(file)?)
                    .with_context(|| file.clone())
                    .map_err(Failure::bad_input)?;
                for key in parsed.public_keys() {
                    if !keys.contains(key) {
                        keys.push(key.clone());
                    }
                }
            }
            let jwks = Jwks::from_public_keys(&keys);
            crate::output::finish(&crate::output::render(&output, &jwks, || {
                Ok(serde_json::to_string_pretty(&jwks)?)
            })?)
        }
    }
}

fn generate(algorithm: Alg, bits: Option<u32>, out: &Path, force: bool, output: Output) -> Outcome {
    let algorithm = match algorithm {
        Alg::Rs256 => Algorithm::RS256,
        Alg::Es256 => Algorithm::ES256,
    };
    let spec = KeySpec::from_parts(algorithm, bits)
        .context("--bits")
        .map_err(Failure::bad_input)?;
    let (key_path, pub_path) = (out.join("sa.key"), out.join("sa.pub"));
    if !force {
        for path in [&key_path, &pub_path] {
            refuse_existing(path)?;
        }
    }
    let key = AwsLc::new().generate(spec)?;
    create_private_dir(out)?;
    // Both files are written in full before either is renamed into place, so
    // a failure leaves the old pair (or none), never a mismatched one.
    let private = staged(out, "sa.key", key.to_pem().as_bytes(), PRIVATE_MODE)?;
    let public = staged(out, "sa.pub", key.public_key().to_pem().as_bytes(), 0o644)?;
    if force {
        replace(private, &key_path)?;
        replace(public, &pub_path)?;
    } else {
        place_new(private, &key_path)?;
        if let Err(failure) = place_new(public, &pub_path) {
            // sa.pub appeared since the check: take back our sa.key.
            let _ = std::fs::remove_file(&key_path);
            return Err(failure);
        }
    }
    // Make the renames durable before saying they happened.
    std::fs::File::open(out)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", out.display()))?;
    let text = crate::output::render(&output, &generated(&key_path, &pub_path, &key), || {
        Ok(format!(
            "wrote {} (private, 0600) and {}\nkid: {}",
            key_path.display(),
            pub_path.display(),
            key.kid()
        ))
    })?;
    crate::output::finish(&text)
}

fn generated(key_path: &Path, pub_path: &Path, key: &PrivateKey) -> serde_json::Value {
    serde_json::json!({
        "privateKey": key_path,
        "publicKey": pub_path,
        "kid": key.kid().to_string(),
        "algorithm": key.public_key().algorithm().as_str(),
    })
}

/// `ksa keys import`.
#[derive(Debug)]
struct ImportArgs {
    rotation: String,
    namespace: Option<String>,
    /// A path, or `-` for stdin.
    key: String,
    version: KeyVersion,
    kubeconfig_secret: Option<String>,
    kube: KubeArgs,
    output: Output,
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imported {
    /// The Secret was written.
    Stored,
    /// The Secret already held this key: nothing changed.
    AlreadyThere,
}

fn import(args: ImportArgs) -> Outcome {
    // The key is read and checked before anything is sent.
    let pem = crate::input::read_file(&args.key)?;
    let key = parse_pem(&pem)
        .with_context(|| format!("--key {}", args.key))
        .map_err(Failure::bad_input)?
        .private_keys()
        .next()
        .cloned()
        .ok_or_else(|| {
            Failure::bad_input(anyhow::anyhow!(
                "--key {}: holds no private key; give the key kube-apiserver signs with (sa.key)",
                args.key
            ))
        })?;
    if !ksa_kube::names::is_dns1123_subdomain(&args.rotation) {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--rotation {:?}: not a resource name (lowercase letters, digits, '-' and '.')",
            args.rotation
        )));
    }
    if let Some(namespace) = &args.namespace
        && !ksa_kube::names::is_dns1123_label(namespace)
    {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--namespace {namespace:?}: not a namespace name (a DNS-1123 label)"
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let connection = Connection::open(&args.kube).await?;
        connection.check().await?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| connection.config.default_namespace.clone());
        // Nothing is written until every API server instance of the
        // cluster shows that it signs with this key and lists it.
        // The rotation, if it exists, names the user cluster and the
        // Secret its API servers mount; only its absence (or the CRD's) is
        // no answer, any other error stops the import.
        let rotation = match Api::<KSASigningKeyRotation>::namespaced(connection.client.clone(), &namespace)
            .get_opt(&args.rotation)
            .await
        {
            Ok(found) => found,
            Err(kube::Error::Api(status)) if status.code == 404 => None,
            Err(error) => {
                return Err(Failure::from(anyhow::Error::new(error).context(format!(
                    "reading rotation {namespace}/{} (nothing was changed)",
                    args.rotation
                ))));
            }
        };
        let cluster = user_cluster(&args, rotation.as_ref(), &namespace)?;
        let own = TargetCluster::new(connection.client.clone(), connection.config.clone());
        let target = TargetCluster::connect(&own, &connection.client, &namespace, cluster.as_ref())
            .await
            .map_err(|e| Failure::from(anyhow::Error::new(e).context("reaching the user cluster")))?;
        let views = target
            .observe_api_servers(
                &BTreeMap::from([(args.version, key.public_key().clone())]),
                &Observation {
                    api_servers: true,
                    signing: true,
                    ..Observation::default()
                },
                None,
            )
            .await
            .map_err(|e| {
                Failure::from(
                    anyhow::Error::new(e).context("asking the API server instances which key they use"),
                )
            })?;
        in_use_everywhere(&views, args.version).map_err(|not_in_use| {
            Failure::bad_input(anyhow::anyhow!(
                "--key {}: kid {} is not the key the cluster at {} ({}) signs with and accepts today: \
                 {} did not both sign a fresh token with it and list it in /openid/v1/jwks; give the \
                 API servers' current sa.key (nothing was changed)",
                args.key,
                key.kid(),
                target.url(),
                cluster.as_ref().map_or_else(
                    || "the cluster --kubeconfig names".to_owned(),
                    |c| format!("through Secret {namespace}/{}", c.kubeconfig_secret.name)
                ),
                crate::output::shown(&not_in_use.to_string())
            ))
        })?;
        let store = KeyStore::new(connection.client.clone(), &namespace, &args.rotation);
        let secret = store.secret_name(args.version);
        // The Secret the API servers mount, holding this key alone: one
        // that holds another is refused before anything is written.
        let key_secret = rotation
            .as_ref()
            .and_then(|r| r.spec.rollout.key_secret.clone())
            .unwrap_or_else(|| default_key_secret(&args.rotation));
        if key_secret != default_key_secret(&args.rotation) {
            // A Secret the rotation names is the operator's, made and
            // labelled beforehand: the import never creates one under a
            // name the resource's writer chose.
            if !ksa_kube::names::is_dns1123_subdomain(&key_secret) {
                return Err(Failure::bad_input(anyhow::anyhow!(
                    "rotation {namespace}/{}: spec.rollout.keySecret {:?} is not a Secret name (nothing was changed)",
                    args.rotation,
                    crate::output::shown(&key_secret)
                )));
            }
            let existing = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(connection.client.clone(), &namespace)
                .get_opt(&key_secret)
                .await
                .map_err(|error| {
                    Failure::from(anyhow::Error::new(error).context(format!("reading Secret {namespace}/{key_secret}")))
                })?;
            let labels = existing.as_ref().and_then(|s| s.metadata.labels.clone()).unwrap_or_default();
            if existing.is_none()
                || labels.get(ksa_kube::keystore::LABEL_ROTATION).map(String::as_str) != Some(args.rotation.as_str())
                || labels.contains_key(ksa_kube::keystore::LABEL_KEY_VERSION)
            {
                return Err(Failure::bad_input(anyhow::anyhow!(
                    "rotation {namespace}/{} names Secret {key_secret} (spec.rollout.keySecret) for its API \
                     servers: keys import writes the signing key only into {} or into a Secret that already \
                     exists, labelled ksa.dev/rotation={} and not a key Secret; create and label it, or \
                     remove keySecret (nothing was changed)",
                    args.rotation,
                    default_key_secret(&args.rotation),
                    args.rotation
                )));
            }
        }
        if let Some(ApiServerKeysImport::HoldsAnother { kid, also_trusted }) = store
            .api_server_keys_hold(&key_secret, &key)
            .await
            .map_err(|error| {
                Failure::from(
                    anyhow::Error::new(error).context(format!("reading Secret {namespace}/{key_secret}")),
                )
            })?
        {
            return Err(holds_another(
                &namespace,
                &key_secret,
                (kid.as_deref(), also_trusted),
                &key,
                None,
            ));
        }
        let imported = store_key(&store, args.version, &key)
            .await
            .map_err(|e| match e {
                StoreError::Different { stored } => Failure::bad_input(anyhow::anyhow!(
                    "Secret {namespace}/{secret} already holds a different key (kid {stored}, not {}); \
                     nothing was changed",
                    key.kid()
                )),
                StoreError::Kube(error) => Failure::from(
                    anyhow::Error::new(error)
                        .context(format!("storing the key in Secret {namespace}/{secret}")),
                ),
            })?;
        let mounted = store
            .import_api_server_keys(&key_secret, args.version, &key)
            .await
            .map_err(|error| {
                Failure::from(
                    anyhow::Error::new(error)
                        .context(format!("writing Secret {namespace}/{key_secret}")),
                )
            })?;
        if let ApiServerKeysImport::HoldsAnother { kid, also_trusted } = &mounted {
            // Made by someone else between the check and the write.
            return Err(holds_another(
                &namespace,
                &key_secret,
                (kid.as_deref(), *also_trusted),
                &key,
                Some(&secret),
            ));
        }
        let instances: Vec<String> = views
            .iter()
            .map(|v| crate::output::shown(&v.name).into_owned())
            .collect();
        let json = serde_json::json!({
            "rotation": args.rotation,
            "namespace": namespace,
            "secret": secret,
            "keyVersion": args.version.get(),
            "kid": key.kid().to_string(),
            "changed": imported == Imported::Stored || mounted == ApiServerKeysImport::Created,
            "apiServerKeySecret": key_secret,
            "checkedOn": instances,
        });
        let text = crate::output::render(&args.output, &json, || {
                let stored = match imported {
                    Imported::Stored => format!(
                        "imported key version {} (kid {}) into Secret {namespace}/{secret}",
                        args.version,
                        key.kid()
                    ),
                    Imported::AlreadyThere => format!(
                        "Secret {namespace}/{secret} already holds this key (kid {})",
                        key.kid()
                    ),
                };
                let mounted = match mounted {
                    ApiServerKeysImport::Created => format!(
                        "wrote Secret {namespace}/{key_secret} (sa.key, sa.pub), which the API servers mount"
                    ),
                    _ => format!(
                        "Secret {namespace}/{key_secret}, which the API servers mount, already holds this key"
                    ),
                };
                Ok(format!(
                    "{stored}\n{mounted}\nchecked on {} API server instance(s), each signing with it and listing it: {}",
                    instances.len(),
                    instances.join(", ")
                ))
        })?;
        crate::output::finish(&text)
    })
}

/// The refusal of an import whose API server key Secret holds another key;
/// `written`: the key Secret the import had already written, when it had.
fn holds_another(
    namespace: &str,
    key_secret: &str,
    (kid, also_trusted): (Option<&str>, usize),
    key: &PrivateKey,
    written: Option<&str>,
) -> Failure {
    let holds = if kid == Some(key.kid().as_str()) {
        // The imported key, with an sa.pub that is not its public half alone.
        format!(
            "holds kid {} as sa.key, but its sa.pub {}",
            key.kid(),
            match also_trusted {
                0 => "does not hold that key's public half alone".to_owned(),
                n => format!(
                    "also holds {n} other public key(s), which the API servers accept as well"
                ),
            }
        )
    } else {
        format!(
            "holds {} as sa.key, not kid {}",
            kid.map_or("no key".to_owned(), |kid| format!("kid {kid}")),
            key.kid()
        )
    };
    Failure::bad_input(anyhow::anyhow!(
        "Secret {namespace}/{key_secret}, which the API servers mount, {holds}: ksa writes the \
         signing key only into a Secret that holds the key it imports and trusts no other; \
         delete it, or point the rotation's spec.rollout.keySecret at another ({})",
        written.map_or_else(
            || "nothing was changed".to_owned(),
            |secret| format!(
                "it was made while this import ran; Secret {namespace}/{secret} holds the imported \
                 key, and importing again once it is fixed changes nothing there"
            )
        ),
    ))
}

/// The user cluster whose API servers sign with the key: `--kubeconfig-secret`,
/// else the rotation resource's, else (`None`) the cluster --kubeconfig
/// names. The two named must agree.
fn user_cluster(
    args: &ImportArgs,
    rotation: Option<&KSASigningKeyRotation>,
    namespace: &str,
) -> Result<Option<ClusterRef>, Failure> {
    let named = rotation.and_then(|r| r.spec.cluster.clone());
    let Some(flag) = &args.kubeconfig_secret else {
        return Ok(named);
    };
    if rotation.is_some() && named.is_none() {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--kubeconfig-secret {}: rotation {namespace}/{} names no user cluster (the controller \
             checks the cluster it runs in); leave the flag out, or set the rotation's spec.cluster \
             (nothing was changed)",
            crate::output::shown(flag),
            args.rotation
        )));
    }
    if !ksa_kube::names::is_dns1123_subdomain(flag) {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--kubeconfig-secret {flag:?}: not a Secret name (lowercase letters, digits, '-' and '.')"
        )));
    }
    if let Some(named) = &named
        && named.kubeconfig_secret.name != *flag
    {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--kubeconfig-secret {flag}: rotation {namespace}/{} reaches its user cluster through \
             Secret {}; give that one, or leave the flag out (nothing was changed)",
            args.rotation,
            crate::output::shown(&named.kubeconfig_secret.name)
        )));
    }
    Ok(Some(ClusterRef {
        kubeconfig_secret: SecretKeyRef {
            name: flag.clone(),
            key: named.map_or_else(|| "value".to_owned(), |n| n.kubeconfig_secret.key),
        },
    }))
}

#[derive(Debug)]
enum StoreError {
    /// The version's Secret holds another key.
    Different {
        stored: String,
    },
    Kube(ksa_kube::error::Error),
}

/// Stores `key` as `version` with the key store's own writer (the labels
/// the controller selects by, and the `ksa.dev/kid` annotation), then reads
/// it back: `KeyStore::create` keeps a Secret that already exists, so the
/// read says whether it holds this key or another.
async fn store_key(
    store: &KeyStore,
    version: KeyVersion,
    key: &PrivateKey,
) -> Result<Imported, StoreError> {
    let before = match store.private_key(version).await {
        Ok(stored) => Some(stored),
        Err(ksa_kube::error::Error::MissingKey { .. }) => None,
        Err(other) => return Err(StoreError::Kube(other)),
    };
    if let Some(stored) = &before {
        // The same kid says only that the public halves match: the stored
        // private key must also be one whose arithmetic is that public key
        // (a planted Secret can carry the cluster's public key beside a
        // private key of its own).
        return if stored.kid() == key.kid() && AwsLc::new().signing_key(stored).is_ok() {
            Ok(Imported::AlreadyThere)
        } else {
            Err(StoreError::Different {
                stored: stored.kid().to_string(),
            })
        };
    }
    store.create(version, key).await.map_err(StoreError::Kube)?;
    // Another import may have raced this one.
    let stored = store.private_key(version).await.map_err(StoreError::Kube)?;
    if stored.kid() == key.kid() {
        Ok(Imported::Stored)
    } else {
        Err(StoreError::Different {
            stored: stored.kid().to_string(),
        })
    }
}

/// The mode of a private key file.
const PRIVATE_MODE: u32 = 0o600;

fn refuse_existing(path: &Path) -> Result<(), Failure> {
    // symlink_metadata: a symlink (even a dangling one) counts as existing.
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(exists(path));
    }
    Ok(())
}

fn exists(path: &Path) -> Failure {
    Failure::bad_input(anyhow::anyhow!(
        "{} exists; pass --force to replace it (nothing was written)",
        path.display()
    ))
}

/// Creates `dir` and any missing parents, each 0700 whatever the umask;
/// directories that already exist are left as they are.
fn create_private_dir(dir: &Path) -> Result<(), Failure> {
    let mut missing = Vec::new();
    let mut next = Some(dir);
    while let Some(path) = next {
        if path.as_os_str().is_empty() || std::fs::symlink_metadata(path).is_ok() {
            break;
        }
        missing.push(path);
        next = path.parent();
    }
    for path in missing.into_iter().rev() {
        let created = std::fs::DirBuilder::new().mode(0o700).create(path);
        match created {
            Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)),
            // Created by someone else meanwhile: leave it as it is.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
        .with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(())
}

/// `contents` written to a new file in `dir` (created exclusively, 0600, then
/// given `mode`) and flushed to disk, ready to be renamed into place.
fn staged(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<tempfile::NamedTempFile, Failure> {
    let context = || format!("writing a new {name} in {}", dir.display());
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .permissions(std::fs::Permissions::from_mode(PRIVATE_MODE))
        .tempfile_in(dir)
        .with_context(context)?;
    // Set on the open file, so the umask cannot change it.
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(context)?;
    file.write_all(contents).with_context(context)?;
    file.as_file().sync_all().with_context(context)?;
    Ok(file)
}

/// Renames a staged file over `path`: a symlink there is replaced, never
/// followed.
fn replace(file: tempfile::NamedTempFile, path: &Path) -> Result<(), Failure> {
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Renames a staged file to `path`, refusing when anything is there.
fn place_new(file: tempfile::NamedTempFile, path: &Path) -> Result<(), Failure> {
    file.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            exists(path)
        } else {
            Failure::from(
                anyhow::Error::new(e.error).context(format!("writing {}", path.display())),
            )
        }
    })?;
    Ok(())
}
