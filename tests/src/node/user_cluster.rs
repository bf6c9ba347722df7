//! A user cluster whose kube-apiservers run as pods on a real node (issue
//! 31): in a hosted control plane, as the pods of a Deployment of the
//! admin cluster; in a kubeadm one, as static pods of the node's kubelet.
//! Either way the containers run the control plane's own kube-apiserver
//! from the images `cargo xtask node` writes ([`APISERVER_IMAGE`]), and
//! keep their data in an etcd of the harness's, which listens at an
//! address of the test's network namespace that pods reach (through their
//! node's bridge, as they reach the admin cluster's API server).
//!
//! What the pods need besides their key files: the user cluster's CA, its
//! serving certificate (which names every address an instance may have:
//! each pod IP of the node's pod subnet and the node's own) and the etcd's
//! URL; [`UserCluster::apiserver_args`] gives the flags.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Pki;

/// The image of the user cluster's kube-apiserver, as a real node imports
/// it on demand ([`super::RealNode::import_control_plane_image`]).
pub const APISERVER_IMAGE: &str = "ksa.test/kube-apiserver:1";
/// The image of its kube-controller-manager, likewise.
pub const CONTROLLER_MANAGER_IMAGE: &str = "ksa.test/kube-controller-manager:1";
/// The port each instance serves on.
pub const APISERVER_PORT: u16 = 6443;
/// The user cluster's Service range (not the admin cluster's): its
/// `kubernetes` Service takes the first address.
const SERVICE_RANGE: &str = "10.97.0.0/24";

/// Every host address of an IPv4 `/24` subnet such as `10.244.0.0/24`.
pub fn subnet_addresses(cidr: &str) -> Result<Vec<IpAddr>> {
    let (network, bits) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr} is not a subnet"))?;
    ensure!(bits == "24", "{cidr} is not a /24");
    let [a, b, c, _] = network
        .parse::<Ipv4Addr>()
        .with_context(|| format!("{cidr} is not an IPv4 subnet"))?
        .octets();
    Ok((1..=254)
        .map(|d| IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
        .collect())
}

/// The user cluster's etcd and certificates. etcd is killed (by process
/// ID) when this is dropped.
#[allow(missing_debug_implementations, reason = "holds a running process")]
pub struct UserCluster {
    /// Its CA, the API servers' serving certificate and an admin client
    /// certificate (`system:masters`).
    pub pki: Pki,
    /// `http://ADDRESS:PORT`, where its etcd listens.
    pub etcd_url: String,
    etcd: Child,
    log: PathBuf,
}

impl UserCluster {
    /// Starts the user cluster's etcd, keeping its data in `dir`, at a new
    /// address of the test's network namespace; its certificates name
    /// `addresses`. Only in namespaces of the test's own
    /// ([`super::enter`]).
    pub fn start(dir: &Path, addresses: &[IpAddr]) -> Result<UserCluster> {
        let pki = Pki::generate(addresses)?;
        let address = crate::netns::new_address()?;
        let port = free_port()?;
        let peer_port = free_port()?;
        let client_url = format!("http://{address}:{port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = dir.join("user-etcd.log");
        let file = fs::File::create(&log)?;
        let etcd = Command::new(crate::control_plane_binaries()?.join("etcd"))
            .arg("--name=user")
            .arg(format!("--data-dir={}", dir.join("user-etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=user={peer_url}"))
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting the user cluster's etcd")?;
        let mut cluster = UserCluster {
            pki,
            etcd_url: client_url,
            etcd,
            log,
        };
        let started = Instant::now();
        while TcpStream::connect((address, port)).is_err() {
            if let Some(status) = cluster.etcd.try_wait()? {
                bail!(
                    "the user cluster's etcd exited ({status}):\n{}",
                    fs::read_to_string(&cluster.log).unwrap_or_default()
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the user cluster's etcd did not listen at {address}:{port} in 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// The files the API server reads: the CA, its serving certificate and
    /// key (`ca.crt`, `apiserver.crt`, `apiserver.key`), by file name.
    pub fn certificate_files(&self) -> [(&'static str, &str); 3] {
        [
            ("ca.crt", &self.pki.ca_cert),
            ("apiserver.crt", &self.pki.server_cert),
            ("apiserver.key", &self.pki.server_key),
        ]
    }

    /// kube-apiserver's flags but its address, issuer and key files: etcd,
    /// the certificates (the [`UserCluster::certificate_files`] in
    /// `pki_dir`), the port, authorization, and what a test control plane
    /// turns off (see `ControlPlane`).
    pub fn apiserver_args(&self, pki_dir: &str) -> Vec<String> {
        vec![
            format!("--etcd-servers={}", self.etcd_url),
            format!("--secure-port={APISERVER_PORT}"),
            format!("--tls-cert-file={pki_dir}/apiserver.crt"),
            format!("--tls-private-key-file={pki_dir}/apiserver.key"),
            format!("--client-ca-file={pki_dir}/ca.crt"),
            format!("--service-cluster-ip-range={SERVICE_RANGE}"),
            "--authorization-mode=Node,RBAC".to_owned(),
            "--enable-priority-and-fairness=false".to_owned(),
            "--shutdown-send-retry-after=true".to_owned(),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ]
    }

    /// A kubeconfig of the user cluster's admin (`system:masters`) for the
    /// API server at `server` (`https://HOST:PORT`), with inline
    /// certificates only (as a rotation's kubeconfig Secret must be).
    pub fn kubeconfig(&self, server: &str) -> String {
        self.kubeconfig_with(server, &self.pki.admin_cert, &self.pki.admin_key)
    }

    /// Like [`UserCluster::kubeconfig`], for the holder of `cert` and
    /// `key` (a client certificate of [`Pki::client_cert`]).
    pub fn kubeconfig_with(&self, server: &str, cert: &str, key: &str) -> String {
        let b64 = |s: &str| STANDARD.encode(s);
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: user
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: user
  context: {{cluster: user, user: admin}}
current-context: user
",
            ca = b64(&self.pki.ca_cert),
            cert = b64(cert),
            key = b64(key),
        )
    }

    /// An admin client of the API server at `server`.
    pub async fn client(&self, server: &str) -> Result<kube::Client> {
        let kubeconfig = Kubeconfig::from_yaml(&self.kubeconfig(server))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// An https client that trusts the user cluster's CA only and presents
    /// no credentials of its own (a request carries its bearer token).
    pub fn bearer_client(&self) -> Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(self.pki.ca_cert.as_bytes())?;
        Ok(reqwest::Client::builder()
            .tls_certs_only([ca])
            .https_only(true)
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .build()?)
    }

    /// The last lines of the etcd's log.
    pub fn etcd_log(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for UserCluster {
    fn drop(&mut self) {
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// What one presentation of a bearer token to an API server came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 201: authenticated.
    Accepted,
    /// 401: the token was rejected.
    Rejected,
    /// No answer, or another status (the instance shutting down, say).
    Unavailable,
}

/// Presents `token` to the API server at `server` (`https://HOST:PORT`)
/// as a client does: as its bearer token, on a SelfSubjectReview (any
/// authenticated call would do).
pub async fn present(client: &reqwest::Client, server: &str, token: &str) -> Verdict {
    let body = r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#;
    let answer = client
        .post(format!(
            "{server}/apis/authentication.k8s.io/v1/selfsubjectreviews"
        ))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await;
    match answer.map(|a| a.status().as_u16()) {
        Ok(201) => Verdict::Accepted,
        Ok(401) => Verdict::Rejected,
        _ => Verdict::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_subnet_gives_its_host_addresses_and_anything_else_is_refused() {
        let all = subnet_addresses("10.244.3.0/24").expect("a /24");
        assert_eq!(all.len(), 254);
        assert_eq!(all[0], IpAddr::V4(Ipv4Addr::new(10, 244, 3, 1)));
        assert_eq!(all[253], IpAddr::V4(Ipv4Addr::new(10, 244, 3, 254)));
        for bad in ["10.244.3.0", "10.244.0.0/16", "fd00::/24", "ten/24", ""] {
            assert!(subnet_addresses(bad).is_err(), "{bad:?}");
        }
    }
}
