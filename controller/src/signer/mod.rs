//! `ksa-controller signer`: the KEP-740 external signer. kube-apiserver
//! started with `--service-account-signing-endpoint=SOCKET` (and no key
//! files) asks it to sign every token and for the keys that verify them.
//!
//! It serves `ExternalJWTSigner` in package `v1` and, for older API servers,
//! `v1alpha1` (same shape), over gRPC on a Unix socket created 0600. It signs
//! with the key in `sa.key` and returns the keys of `sa.pub`: the files the
//! controller publishes at every step (privateKeyVersion and
//! publicKeyVersions), so the rotation steps drive the signer with no API
//! server restart. A key set is reloaded when its source changes, and one
//! whose signing key is not trusted is refused.

pub mod keys;
pub mod source;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use self::keys::{SignRefusal, SignerKeys};
use self::source::KeySource;

/// The gRPC types and services, generated at build time from
/// `proto/externaljwt/{v1,v1alpha1}/externaljwt.proto`.
pub mod proto {
    pub mod v1 {
        tonic::include_proto!("v1");
    }
    pub mod v1alpha1 {
        tonic::include_proto!("v1alpha1");
    }
}

/// The shortest maximum token lifetime kube-apiserver accepts.
pub const MIN_MAX_TOKEN_SECONDS: i64 = 600;

#[derive(clap::Args, Debug)]
pub struct SignerArgs {
    /// The Unix socket to serve on: kube-apiserver's
    /// --service-account-signing-endpoint.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Read sa.key and sa.pub from this Secret (NAMESPACE/NAME; the
    /// controller publishes <rotation>-apiserver-keys), through KUBECONFIG or
    /// the in-cluster config.
    #[arg(
        long,
        value_name = "NAMESPACE/NAME",
        required_unless_present = "key_dir",
        conflicts_with = "key_dir"
    )]
    pub secret: Option<String>,
    /// Read sa.key and sa.pub from this directory instead (static control
    /// planes, or the Secret mounted as a volume); re-read every second.
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// How often kube-apiserver should fetch the public keys again.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(i64).range(1..=86400))]
    pub refresh_hint_seconds: i64,
    /// The longest token lifetime the signer allows (at least 600).
    #[arg(long, default_value_t = 86400, value_parser = clap::value_parser!(i64).range(MIN_MAX_TOKEN_SECONDS..))]
    pub max_token_expiration_seconds: i64,
    #[arg(long, value_enum, default_value = "text", env = "KSA_LOG_FORMAT")]
    pub log_format: crate::run::LogFormat,
}

/// The service: the key set being served and the configured answers.
#[derive(Debug, Clone)]
pub struct Signer {
    keys: watch::Receiver<Option<Arc<SignerKeys>>>,
    refresh_hint_seconds: i64,
    max_token_expiration_seconds: i64,
}

impl Signer {
    fn keys(&self) -> Result<Arc<SignerKeys>, Status> {
        self.keys
            .borrow()
            .clone()
            .ok_or_else(|| Status::unavailable("no key set loaded yet"))
    }

    fn sign_claims(&self, claims: &str) -> Result<(String, String), Status> {
        let keys = self.keys()?;
        keys.sign(claims).map_err(|refusal| match refusal {
            SignRefusal::BadClaims(_) => Status::invalid_argument(refusal.to_string()),
            SignRefusal::Failed(_) => Status::internal(refusal.to_string()),
        })
    }
}

/// One implementation for both API versions, whose messages have the same
/// shape in different packages.
macro_rules! external_jwt_signer {
    ($version:ident) => {
        #[tonic::async_trait]
        impl proto::$version::external_jwt_signer_server::ExternalJwtSigner for Signer {
            async fn sign(
                &self,
                request: Request<proto::$version::SignJwtRequest>,
            ) -> Result<Response<proto::$version::SignJwtResponse>, Status> {
                let (header, signature) = self.sign_claims(&request.get_ref().claims)?;
                Ok(Response::new(proto::$version::SignJwtResponse {
                    header,
                    signature,
                }))
            }

            async fn fetch_keys(
                &self,
                _: Request<proto::$version::FetchKeysRequest>,
            ) -> Result<Response<proto::$version::FetchKeysResponse>, Status> {
                let keys = self.keys()?;
                Ok(Response::new(proto::$version::FetchKeysResponse {
                    keys: keys
                        .trusted()
                        .iter()
                        .map(|key| proto::$version::Key {
                            key_id: key.kid().as_str().to_owned(),
                            key: key.spki_der().to_vec(),
                            exclude_from_oidc_discovery: false,
                        })
                        .collect(),
                    data_timestamp: Some(keys.data_timestamp.into()),
                    refresh_hint_seconds: self.refresh_hint_seconds,
                }))
            }

            async fn metadata(
                &self,
                _: Request<proto::$version::MetadataRequest>,
            ) -> Result<Response<proto::$version::MetadataResponse>, Status> {
                Ok(Response::new(proto::$version::MetadataResponse {
                    max_token_expiration_seconds: self.max_token_expiration_seconds,
                }))
            }
        }
    };
}

external_jwt_signer!(v1);
external_jwt_signer!(v1alpha1);

/// Runs the signer until SIGTERM or Ctrl-C, then finishes the calls in
/// flight and removes the socket.
pub async fn run(args: SignerArgs) -> anyhow::Result<()> {
    crate::run::init_tracing(args.log_format)?;
    let source = match (&args.secret, &args.key_dir) {
        (Some(secret), _) => {
            let Some((namespace, name)) = secret.split_once('/') else {
                bail!("--secret {secret:?} is not NAMESPACE/NAME");
            };
            KeySource::Secret {
                client: kube::Client::try_default()
                    .await
                    .context("connecting to the cluster that holds the key Secret")?,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }
        }
        (None, Some(dir)) => KeySource::Directory {
            dir: dir.clone(),
            poll: Duration::from_secs(1),
        },
        (None, None) => bail!("give --secret NAMESPACE/NAME or --key-dir DIR"),
    };
    let (current, keys) = watch::channel(None);
    let follow = tokio::spawn(source.follow(current));
    tracing::info!("waiting for the first key set");
    keys.clone()
        .wait_for(Option::is_some)
        .await
        .context("the key source stopped")?;

    let listener = bind_private(&args.socket)?;
    let signer = Signer {
        keys,
        refresh_hint_seconds: args.refresh_hint_seconds,
        max_token_expiration_seconds: args.max_token_expiration_seconds,
    };
    tracing::info!(socket = %args.socket.display(), "serving ExternalJWTSigner v1 and v1alpha1");
    let served = tonic::transport::Server::builder()
        .add_service(
            proto::v1::external_jwt_signer_server::ExternalJwtSignerServer::new(signer.clone()),
        )
        .add_service(
            proto::v1alpha1::external_jwt_signer_server::ExternalJwtSignerServer::new(signer),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            crate::run::shutdown_signal(),
        )
        .await;
    follow.abort();
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!("stopped");
    Ok(served?)
}

/// Binds the socket so that no one else can ever connect to it: it is
/// created in a fresh 0700 directory, made 0600, then moved into place.
/// A stale socket is replaced; a live one (another signer) is an error.
fn bind_private(path: &Path) -> anyhow::Result<UnixListener> {
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            bail!("{} exists and is not a socket", path.display());
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("another process serves {}; stop it first", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let private = tempfile::Builder::new()
        .prefix(".ksa-signer-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    let staging = private.path().join("socket");
    let listener =
        UnixListener::bind(&staging).with_context(|| format!("binding {}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staging, path)
        .with_context(|| format!("moving the socket to {}", path.display()))?;
    Ok(listener)
}
