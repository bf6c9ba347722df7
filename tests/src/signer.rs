//! `ksa-controller signer` as a process, for the end-to-end tests and the
//! signer benchmark, and a gRPC channel to its socket.
//!
//! An issuer change does not touch the signer: the API servers that sign
//! through it take their issuer flags from the API server workload's args,
//! rolled out one instance at a time by
//! [`HostedApiServer::spawn_issuer_flags`](crate::HostedApiServer::spawn_issuer_flags)
//! (on a control plane started with
//! [`ControlPlane::start_ha_with_external_signer`](crate::ControlPlane::start_ha_with_external_signer)).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ksa_core::key::{PrivateKey, public_keys_to_pem};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{ksa_binary, write_private};

/// A running signer; killed when dropped.
#[derive(Debug)]
pub struct SignerProcess {
    child: Child,
    pub socket: PathBuf,
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SignerProcess {
    /// Serves the key Secret `namespace/name`, read with `kubeconfig`.
    pub fn from_secret(socket: &Path, secret: &str, kubeconfig: &Path, log: &Path) -> Result<Self> {
        let mut command = Command::new(ksa_binary("ksa-controller")?);
        command
            .args(["signer", "--secret", secret])
            .env("KUBECONFIG", kubeconfig);
        SignerProcess::spawn(command, socket, log)
    }

    /// Serves `sa.key` and `sa.pub` from `dir`.
    pub fn from_dir(socket: &Path, dir: &Path, log: &Path) -> Result<Self> {
        let mut command = Command::new(ksa_binary("ksa-controller")?);
        command.arg("signer").arg("--key-dir").arg(dir);
        SignerProcess::spawn(command, socket, log)
    }

    fn spawn(mut command: Command, socket: &Path, log: &Path) -> Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = command
            .args(["--refresh-hint-seconds", "1"])
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let signer = SignerProcess {
            child,
            socket: socket.to_owned(),
        };
        let started = Instant::now();
        while !socket.exists() {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the signer did not create {}", socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(signer)
    }

    /// A gRPC channel over the signer's Unix socket.
    pub async fn channel(&self) -> Result<Channel> {
        let socket = self.socket.clone();
        Ok(Endpoint::try_from("http://signer.invalid")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await?)
    }
}

/// Writes `sa.key` and `sa.pub` into `dir`, as the controller publishes them.
pub fn write_key_dir(dir: &Path, signing: &PrivateKey, trusted: &[&PrivateKey]) -> Result<()> {
    write_private(&dir.join("sa.key"), signing.to_pem().as_bytes())?;
    std::fs::write(
        dir.join("sa.pub"),
        public_keys_to_pem(trusted.iter().map(|k| k.public_key())),
    )?;
    Ok(())
}
