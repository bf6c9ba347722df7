//! Starts and stops a real control plane for one test: etcd and one
//! kube-apiserver on loopback, or three kube-apiserver instances on one
//! etcd, each at an address of its own in the test's network namespace
//! (see [`crate::netns`]), all listed in the `kubernetes` EndpointSlice as
//! in an HA control plane. Instances pick up a new configuration (key
//! files, issuer flags) one at a time (a roll-out), each ready and listed
//! before the next is stopped.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use ksa_core::KeyId;
use ksa_core::key::{PrivateKey, PublicKey, public_keys_to_pem};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::pki::Pki;
use crate::roll::{RollLog, SpecId};

/// The service-account issuer of every test control plane.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a stopped instance may take to shut down before it is killed.
const TERMINATION_GRACE: Duration = Duration::from_secs(30);

/// How many kube-apiserver instances an HA control plane runs.
pub const HA_INSTANCES: usize = 3;

/// The key files kube-apiserver is started with: the key that signs and the
/// public keys it accepts (`--service-account-key-file`, in this order).
#[derive(Debug, Clone)]
pub struct ApiServerKeys {
    pub signing: PrivateKey,
    pub public: Vec<PublicKey>,
}

impl ApiServerKeys {
    /// One key that signs and is the only one accepted.
    pub fn single(signing: PrivateKey) -> ApiServerKeys {
        let public = vec![signing.public_key().clone()];
        ApiServerKeys { signing, public }
    }
}

/// How kube-apiserver signs service-account tokens.
#[derive(Debug, Clone)]
pub enum Signing {
    /// `--service-account-signing-key-file` and `--service-account-key-file`.
    KeyFiles(ApiServerKeys),
    /// `--service-account-signing-endpoint`: a KEP-740 external signer on
    /// this Unix socket, and no key file at all.
    External(PathBuf),
}

/// Everything a roll-out changes on a kube-apiserver instance: how it
/// signs and its issuer flags.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub signing: Signing,
    /// `--service-account-issuer`, once per value, in this order: the
    /// first is the issuer of the tokens it issues and of its discovery
    /// document; every one is accepted.
    pub issuers: Vec<String>,
    /// `--api-audiences` (a comma-separated list). None: kube-apiserver's
    /// default, the issuers.
    pub api_audiences: Option<String>,
    /// More flags a roll-out gives it (the audit webhook's).
    pub extra_flags: Vec<String>,
}

impl InstanceSpec {
    /// Signing as `signing`, with issuer [`ISSUER`] and the default
    /// audiences.
    pub fn new(signing: Signing) -> InstanceSpec {
        InstanceSpec {
            signing,
            issuers: vec![ISSUER.to_owned()],
            api_audiences: None,
            extra_flags: Vec::new(),
        }
    }

    /// The key files, unless it signs through an external signer.
    pub fn keys(&self) -> Option<&ApiServerKeys> {
        match &self.signing {
            Signing::KeyFiles(keys) => Some(keys),
            Signing::External(_) => None,
        }
    }

    /// The same issuer flags, signing with `keys`.
    pub fn with_keys(&self, keys: &ApiServerKeys) -> InstanceSpec {
        InstanceSpec {
            signing: Signing::KeyFiles(keys.clone()),
            ..self.clone()
        }
    }

    /// The same, with these more flags.
    pub fn with_extra_flags(&self, flags: &[String]) -> InstanceSpec {
        InstanceSpec {
            extra_flags: flags.to_vec(),
            ..self.clone()
        }
    }

    /// The same signing, with these issuer flags.
    pub fn with_issuers(&self, issuers: &[&str], api_audiences: Option<&str>) -> InstanceSpec {
        InstanceSpec {
            issuers: issuers.iter().map(|i| (*i).to_owned()).collect(),
            api_audiences: api_audiences.map(str::to_owned),
            ..self.clone()
        }
    }

    /// The same signing, with `flags` when given; otherwise the issuer
    /// flags stay as they are.
    pub fn with_issuer_flags(&self, flags: Option<&IssuerFlags>) -> InstanceSpec {
        match flags {
            Some(flags) => InstanceSpec {
                issuers: flags.issuers.clone(),
                api_audiences: flags.api_audiences.clone(),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// The issuer flags, as kube-apiserver is given them.
    fn issuer_flags(&self) -> Vec<String> {
        self.issuers
            .iter()
            .map(|issuer| format!("--service-account-issuer={issuer}"))
            .chain(
                self.api_audiences
                    .iter()
                    .map(|audiences| format!("--api-audiences={audiences}")),
            )
            .collect()
    }
}

/// Issuer flags as a Deployment's args or a static pod's command give
/// them: `--service-account-issuer=URL`, once per issuer (the signing one
/// first), and `--api-audiences=LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerFlags {
    pub issuers: Vec<String>,
    pub api_audiences: Option<String>,
}

impl IssuerFlags {
    /// The issuer flags among `args`; `None` when they name no issuer.
    /// (Only the `--flag=value` form, the one ksa writes.)
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<IssuerFlags> {
        let mut issuers = Vec::new();
        let mut api_audiences = None;
        for arg in args {
            if let Some(issuer) = arg.strip_prefix("--service-account-issuer=") {
                issuers.push(issuer.to_owned());
            } else if let Some(audiences) = arg.strip_prefix("--api-audiences=") {
                api_audiences = Some(audiences.to_owned());
            }
        }
        (!issuers.is_empty()).then_some(IssuerFlags {
            issuers,
            api_audiences,
        })
    }
}

struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Process> {
        let log = dir.join(format!("{name}.log"));
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Process {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// SIGKILL, as when its node fails.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as kubelet stops a container (kube-apiserver then takes
    /// itself out of the `kubernetes` EndpointSlice); SIGKILL if it has not
    /// exited after [`TERMINATION_GRACE`].
    async fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let started = Instant::now();
        while self.exited().is_none() {
            if started.elapsed() > TERMINATION_GRACE {
                eprintln!("{} ignored SIGTERM for {TERMINATION_GRACE:?}", self.name);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn tail(&self, lines: usize) -> String {
        let Ok(file) = fs::File::open(&self.log) else {
            return String::new();
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// One kube-apiserver instance.
struct Instance {
    /// Where it serves and what it advertises: 127.0.0.1 when it is the
    /// only one, otherwise an address of its own.
    address: Ipv4Addr,
    /// `kube-apiserver`, or `kube-apiserver-N` of several: its log and
    /// key files are named after it.
    name: String,
    process: Option<Process>,
    /// How it signs and its issuer flags, as last started.
    spec: InstanceSpec,
}

/// A client of one kube-apiserver instance, authenticated as cluster
/// admin.
#[derive(Clone)]
#[allow(
    missing_debug_implementations,
    reason = "kube::Client prints nothing useful"
)]
pub struct InstanceClient {
    /// `https://ADDRESS:PORT`.
    pub url: String,
    pub client: kube::Client,
}

/// A running etcd and kube-apiserver instances (and optionally
/// kube-controller-manager). Every process is killed when this is dropped,
/// on panic too, and the tail of each log is printed when a test failed.
#[allow(
    missing_debug_implementations,
    reason = "holds child processes; nothing useful to print"
)]
pub struct ControlPlane {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pki: Pki,
    etcd: Process,
    instances: Vec<Instance>,
    controller_manager: Option<Process>,
    /// The key kube-controller-manager signs legacy tokens with.
    controller_manager_key: Option<KeyId>,
    controller_manager_flags: Vec<String>,
    /// kube-scheduler and kwok, when a test simulates nodes.
    simulation: Vec<Supervised>,
    apiserver_port: u16,
    etcd_port: u16,
    etcd_peer_port: u16,
    /// What the instances are to run: the configuration last asked for.
    spec: InstanceSpec,
    extra_flags: Vec<String>,
    roll: RollLog,
    started: Instant,
    /// How many times kube-apiserver was started: once at the start, once
    /// for each new key set rolled out, once for each instance killed and
    /// restarted (a change of issuer flags is a roll-out too).
    pub apiserver_starts: u32,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the binaries are, or an error that says how to build them.
pub fn binaries() -> Result<PathBuf> {
    let dir = std::env::var_os("KSA_CONTROL_PLANE_DIR")
        .map(PathBuf::from)
        .context(
            "KSA_CONTROL_PLANE_DIR is not set: the end-to-end tests need a real control plane. \
         Run them with `cargo xtask e2e` (or `cargo xtask ci`), which builds etcd and \
         kube-apiserver from the pinned Go modules and sets it",
        )?;
    for name in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
    ] {
        if !dir.join(name).is_file() {
            bail!(
                "{} has no {name}; run `cargo xtask control-plane` to build it",
                dir.display()
            );
        }
    }
    Ok(dir)
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver with these service-account keys and
    /// waits until the API server is ready.
    pub async fn start(keys: ApiServerKeys) -> Result<ControlPlane> {
        ControlPlane::start_with_flags(keys, Vec::new()).await
    }

    /// Like [`ControlPlane::start`], with extra kube-apiserver flags.
    pub async fn start_with_flags(
        keys: ApiServerKeys,
        extra_flags: Vec<String>,
    ) -> Result<ControlPlane> {
        ControlPlane::launch(InstanceSpec::new(Signing::KeyFiles(keys)), extra_flags, 1).await
    }

    /// Like [`ControlPlane::start_with_flags`], one instance started with
    /// `spec` (its own issuer, say).
    pub async fn start_with_spec(
        spec: InstanceSpec,
        extra_flags: Vec<String>,
    ) -> Result<ControlPlane> {
        ControlPlane::launch(spec, extra_flags, 1).await
    }

    /// Like [`ControlPlane::start`], with [`HA_INSTANCES`] kube-apiserver
    /// instances, each at its own address. Only in a network namespace of
    /// the test's own ([`crate::netns::enter`]).
    pub async fn start_ha(keys: ApiServerKeys) -> Result<ControlPlane> {
        ControlPlane::start_ha_with_spec(InstanceSpec::new(Signing::KeyFiles(keys))).await
    }

    /// Like [`ControlPlane::start_ha`], every instance started with `spec`
    /// (its issuer flags, say).
    pub async fn start_ha_with_spec(spec: InstanceSpec) -> Result<ControlPlane> {
        ControlPlane::launch(spec, Vec::new(), HA_INSTANCES).await
    }

    /// A control plane whose kube-apiserver has no key file and signs
    /// through the external signer serving `socket`.
    pub async fn start_with_external_signer(socket: &Path) -> Result<ControlPlane> {
        ControlPlane::launch(
            InstanceSpec::new(Signing::External(socket.to_owned())),
            Vec::new(),
            1,
        )
        .await
    }

    /// Like [`ControlPlane::start_with_external_signer`], with
    /// [`HA_INSTANCES`] instances sharing the signer.
    pub async fn start_ha_with_external_signer(socket: &Path) -> Result<ControlPlane> {
        ControlPlane::start_ha_with_spec(InstanceSpec::new(Signing::External(socket.to_owned())))
            .await
    }

    /// Like [`ControlPlane::start_with_spec`], its one kube-apiserver at an
    /// address of the test's network namespace rather than loopback, so
    /// that pods of real nodes ([`crate::node`]) reach it through the
    /// `kubernetes` Service, which lists that address. Only in a namespace
    /// of the test's own ([`crate::node::enter`]).
    pub async fn start_for_nodes(
        spec: InstanceSpec,
        extra_flags: Vec<String>,
    ) -> Result<ControlPlane> {
        let address = crate::netns::new_address()?;
        ControlPlane::launch_at(spec, extra_flags, vec![address]).await
    }

    async fn launch(
        spec: InstanceSpec,
        extra_flags: Vec<String>,
        instances: usize,
    ) -> Result<ControlPlane> {
        let addresses: Vec<Ipv4Addr> = if instances == 1 {
            vec![Ipv4Addr::LOCALHOST]
        } else {
            (0..instances)
                .map(|_| crate::netns::new_address())
                .collect::<Result<_>>()?
        };
        ControlPlane::launch_at(spec, extra_flags, addresses).await
    }

    /// Starts one kube-apiserver instance at each of `addresses`.
    async fn launch_at(
        spec: InstanceSpec,
        extra_flags: Vec<String>,
        addresses: Vec<Ipv4Addr>,
    ) -> Result<ControlPlane> {
        let instances = addresses.len();
        let started = Instant::now();
        let bin = binaries()?;
        // KSA_E2E_KEEP=1 keeps the logs, key files and etcd data.
        let keep = std::env::var_os("KSA_E2E_KEEP").is_some_and(|v| v == "1");
        let dir = tempfile::Builder::new()
            .prefix("ksa-e2e-")
            .disable_cleanup(keep)
            .tempdir()?;
        if keep {
            eprintln!("KSA_E2E_KEEP: keeping {}", dir.path().display());
        }
        let pki = Pki::generate(
            &addresses
                .iter()
                .copied()
                .map(IpAddr::V4)
                .collect::<Vec<_>>(),
        )?;
        for (name, pem) in [
            ("ca.crt", &pki.ca_cert),
            ("apiserver.crt", &pki.server_cert),
            ("apiserver.key", &pki.server_key),
        ] {
            fs::write(dir.path().join(name), pem)?;
        }
        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd = spawn_etcd(&bin, dir.path(), etcd_port, etcd_peer_port)?;
        let instances: Vec<Instance> = addresses
            .into_iter()
            .enumerate()
            .map(|(index, address)| Instance {
                address,
                name: if instances == 1 {
                    "kube-apiserver".to_owned()
                } else {
                    format!("kube-apiserver-{index}")
                },
                process: None,
                spec: spec.clone(),
            })
            .collect();
        let mut plane = ControlPlane {
            dir,
            bin,
            pki,
            etcd,
            roll: RollLog::new(instances.iter().map(|i| i.name.clone()).collect()),
            instances,
            controller_manager: None,
            controller_manager_key: None,
            controller_manager_flags: Vec::new(),
            simulation: Vec::new(),
            apiserver_port: free_port()?,
            etcd_port,
            etcd_peer_port,
            spec,
            extra_flags,
            started,
            apiserver_starts: 0,
        };
        plane.write_kubeconfig()?;
        // Every instance at once: each takes seconds of CPU to start.
        for index in 0..plane.instances.len() {
            let id = SpecId::of(&plane.instances[index].spec);
            plane.roll.starting(index, id);
            plane.spawn_apiserver(index)?;
        }
        plane.apiserver_starts += 1;
        plane.wait_ready().await?;
        eprintln!(
            "control plane ready in {:.1?} at {}",
            started.elapsed(),
            plane.instance_urls().join(" ")
        );
        Ok(plane)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    pub fn ca_cert_pem(&self) -> &str {
        &self.pki.ca_cert
    }

    /// The URL of the first instance, which every kubeconfig names.
    pub fn server_url(&self) -> String {
        self.instance_url(0)
    }

    fn instance_url(&self, index: usize) -> String {
        format!(
            "https://{}:{}",
            self.instances[index].address, self.apiserver_port
        )
    }

    /// The URL of every instance, in order.
    pub fn instance_urls(&self) -> Vec<String> {
        (0..self.instances.len())
            .map(|index| self.instance_url(index))
            .collect()
    }

    /// How many kube-apiserver instances run.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// The key files kube-apiserver was last asked to run with; none with
    /// an external signer.
    pub fn keys(&self) -> Option<&ApiServerKeys> {
        self.spec.keys()
    }

    /// What kube-apiserver was last asked to run with.
    pub fn spec(&self) -> &InstanceSpec {
        &self.spec
    }

    /// What each instance runs, in order: once [`ControlPlane::roll_one_to`]
    /// has returned, each is ready (and listed) with it.
    pub fn running(&self) -> Vec<&InstanceSpec> {
        self.instances.iter().map(|i| &i.spec).collect()
    }

    /// Whether every instance runs `spec`.
    pub fn runs(&self, spec: &InstanceSpec) -> bool {
        let wanted = SpecId::of(spec);
        self.instances.iter().all(|i| SpecId::of(&i.spec) == wanted)
    }

    /// Every configuration asked of an instance, and whether any was asked
    /// before every instance served the one before.
    pub fn roll_log(&self) -> &RollLog {
        &self.roll
    }

    /// A client authenticated as cluster admin.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig_path()).await
    }

    /// An admin client of each instance, in order.
    pub async fn instance_clients(&self) -> Result<Vec<InstanceClient>> {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig_path())?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        self.instance_urls()
            .into_iter()
            .map(|url| {
                let mut config = config.clone();
                config.cluster_url = url.parse()?;
                Ok(InstanceClient {
                    url,
                    client: kube::Client::try_from(config)?,
                })
            })
            .collect()
    }

    /// A client authenticated as user `ksa-controller`, with only what it
    /// has been granted.
    pub async fn controller_client(&self) -> Result<kube::Client> {
        client_from(&self.controller_kubeconfig_path()).await
    }

    /// A client that presents `token` as its bearer token.
    pub async fn client_with_token(&self, token: &str) -> Result<kube::Client> {
        let mut config = kube::Config::new(self.server_url().parse()?);
        config.root_cert = Some(vec![pem_to_der(&self.pki.ca_cert)?]);
        config.auth_info.token = Some(token.to_owned().into());
        Ok(kube::Client::try_from(config)?)
    }

    /// A kubeconfig for user `ksa-controller` (no groups, no RBAC until
    /// granted).
    pub fn controller_kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("controller.kubeconfig")
    }

    /// A kubeconfig for user `ksa-signer` (no groups, no RBAC until
    /// granted).
    pub fn signer_kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("signer.kubeconfig")
    }

    fn write_kubeconfig(&self) -> Result<()> {
        fs::write(
            self.kubeconfig_path(),
            self.kubeconfig(&self.pki.admin_cert, &self.pki.admin_key),
        )?;
        fs::write(
            self.controller_kubeconfig_path(),
            self.kubeconfig(&self.pki.controller_cert, &self.pki.controller_key),
        )?;
        fs::write(
            self.signer_kubeconfig_path(),
            self.kubeconfig(&self.pki.signer_cert, &self.pki.signer_key),
        )?;
        Ok(())
    }

    fn kubeconfig(&self, cert: &str, key: &str) -> String {
        let b64 = |s: &str| STANDARD.encode(s);
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: e2e
  context: {{cluster: e2e, user: admin}}
current-context: e2e
",
            server = self.server_url(),
            ca = b64(&self.pki.ca_cert),
            cert = b64(cert),
            key = b64(key),
        )
    }

    /// The kube-apiserver flags that say how instance `index` signs, with
    /// its own copy of the key files written (each control-plane node has
    /// its own).
    fn signing_flags(&self, index: usize) -> Result<Vec<String>> {
        let instance = &self.instances[index];
        match &instance.spec.signing {
            Signing::KeyFiles(keys) => {
                let dir = self.dir.path().join(&instance.name);
                fs::create_dir_all(&dir)?;
                let signing = dir.join("sa.key");
                let public = dir.join("sa.pub");
                write_private(&signing, keys.signing.to_pem().as_bytes())?;
                fs::write(&public, public_keys_to_pem(&keys.public))?;
                Ok(vec![
                    format!("--service-account-key-file={}", public.display()),
                    format!("--service-account-signing-key-file={}", signing.display()),
                ])
            }
            Signing::External(socket) => Ok(vec![format!(
                "--service-account-signing-endpoint={}",
                socket.display()
            )]),
        }
    }

    /// Starts instance `index` as it is configured; does not wait.
    fn spawn_apiserver(&mut self, index: usize) -> Result<()> {
        let signing_flags = self.signing_flags(index)?;
        let issuer_flags = self.instances[index].spec.issuer_flags();
        let d = self.dir.path();
        let instance = &self.instances[index];
        let mut command = if self.instances.len() > 1 {
            // Each instance on a host of its own, as in an HA control
            // plane: kube-apiserver names its identity Lease after its
            // host name, so instances sharing one would share one Lease.
            let mut on_own_host = Command::new("unshare");
            on_own_host
                .args(["--uts", "sh", "-c", r#"hostname "$0" && exec "$@""#])
                .arg(&instance.name);
            if let Ok(cpus) = std::env::var("KSA_CONTROL_PLANE_CPUS")
                && !cpus.is_empty()
            {
                on_own_host.args(["taskset", "--cpu-list", &cpus]);
            }
            on_own_host.arg(self.bin.join("kube-apiserver"));
            on_own_host
        } else {
            control_plane_command(self.bin.join("kube-apiserver"))
        };
        command
            .arg(format!(
                "--etcd-servers=http://127.0.0.1:{}",
                self.etcd_port
            ))
            .arg(format!("--bind-address={}", instance.address))
            // The lease endpoint reconciler lists this address in the
            // `kubernetes` EndpointSlice (a loopback address is refused
            // there, so a lone instance on 127.0.0.1 is never listed).
            .arg(format!("--advertise-address={}", instance.address))
            .arg(format!("--secure-port={}", self.apiserver_port))
            .arg(format!(
                "--cert-dir={}",
                d.join(&instance.name).join("certs").display()
            ))
            .arg(format!(
                "--tls-cert-file={}",
                d.join("apiserver.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                d.join("apiserver.key").display()
            ))
            .arg(format!("--client-ca-file={}", d.join("ca.crt").display()))
            .args(&issuer_flags)
            .args(&signing_flags)
            .arg("--service-cluster-ip-range=10.96.0.0/24")
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-priority-and-fairness=false")
            // Once in-flight requests are drained, stop within 2 s rather
            // than wait up to the request timeout (60 s) for watches to
            // end: a roll-out stops each instance with SIGTERM.
            .arg("--shutdown-send-retry-after=true")
            .arg("--profiling=false")
            .arg("--v=1")
            .args(&self.extra_flags)
            .args(&instance.spec.extra_flags);
        let process = Process::spawn(&instance.name, command, d)?;
        self.instances[index].process = Some(process);
        Ok(())
    }

    /// Waits until every instance is ready (and, of several, listed in the
    /// `kubernetes` EndpointSlice).
    async fn wait_ready(&mut self) -> Result<()> {
        let clients = self.instance_clients().await?;
        let listed = self.instances.len() > 1;
        let waits = self
            .instances
            .iter_mut()
            .zip(clients)
            .map(|(instance, client)| wait_instance_ready(instance, client.client, listed));
        futures::future::try_join_all(waits).await?;
        for index in 0..self.instances.len() {
            self.roll.serving(index);
        }
        Ok(())
    }

    /// Waits until instance `index` is ready (and listed).
    async fn wait_one_ready(&mut self, index: usize) -> Result<()> {
        let client = self.instance_clients().await?.swap_remove(index).client;
        let listed = self.instances.len() > 1;
        wait_instance_ready(&mut self.instances[index], client, listed).await?;
        self.roll.serving(index);
        Ok(())
    }

    /// Takes one step of a roll-out of `spec`: stops the first instance
    /// not running it (its key set or its issuer flags differ; SIGTERM, as
    /// kubelet does), starts it with `spec` and waits until it is ready and
    /// listed. Once every instance runs it, restarts
    /// kube-controller-manager if it signs with another key (kubelet
    /// restarts the static pod set together). Returns whether an instance
    /// was restarted: a roll-out calls it until it returns false, reading
    /// what to roll out afresh before each call, as a Deployment rolls out
    /// its newest template.
    pub async fn roll_one_to(&mut self, spec: &InstanceSpec) -> Result<bool> {
        let wanted = SpecId::of(spec);
        if SpecId::of(&self.spec) != wanted {
            self.apiserver_starts += 1;
        }
        self.spec = spec.clone();
        let next = self
            .instances
            .iter()
            .position(|i| SpecId::of(&i.spec) != wanted);
        let Some(index) = next else {
            if let Some(keys) = spec.keys()
                && self.controller_manager.is_some()
                && self.controller_manager_key.as_ref() != Some(keys.signing.kid())
            {
                if let Some(mut old) = self.controller_manager.take() {
                    old.stop();
                }
                self.spawn_controller_manager()?;
            }
            return Ok(false);
        };
        let seconds = self.started.elapsed().as_secs_f64();
        self.roll.ask(index, wanted, seconds);
        let asked = Instant::now();
        if let Some(mut old) = self.instances[index].process.take() {
            old.terminate().await;
        }
        let stopped = asked.elapsed();
        self.instances[index].spec = spec.clone();
        self.spawn_apiserver(index)?;
        self.wait_one_ready(index).await?;
        if let Some(line) = self.roll.history.last() {
            eprintln!(
                "roll-out: {line}; stopped in {stopped:.1?}, ready and listed {:.1?} later",
                asked.elapsed() - stopped
            );
        }
        Ok(true)
    }

    /// [`ControlPlane::roll_one_to`] key files `keys`, the issuer flags as
    /// last asked.
    pub async fn roll_one(&mut self, keys: &ApiServerKeys) -> Result<bool> {
        let spec = self.spec.with_keys(keys);
        self.roll_one_to(&spec).await
    }

    /// Rolls out `spec` to every instance, one at a time; waits until all
    /// run it.
    pub async fn roll_out(&mut self, spec: &InstanceSpec) -> Result<()> {
        while self.roll_one_to(spec).await? {}
        Ok(())
    }

    /// Rolls out new key files to every instance, one at a time, the way
    /// kubelet restarts a static pod whose manifest changed; then
    /// kube-controller-manager. Waits until all are ready. The issuer
    /// flags stay as last asked.
    pub async fn restart_apiserver(&mut self, keys: ApiServerKeys) -> Result<()> {
        while self.roll_one(&keys).await? {}
        Ok(())
    }

    /// Kills kube-apiserver (SIGKILL) and starts it again with the same
    /// keys, as when its node fails; waits until it is ready. Of several
    /// instances, the last: one no kubeconfig names, which the rotation
    /// must wait for while every client goes on.
    pub async fn kill_and_restart_apiserver(&mut self) -> Result<()> {
        let index = self.instances.len() - 1;
        if let Some(mut old) = self.instances[index].process.take() {
            old.stop();
        }
        self.roll.stopped(index);
        let id = SpecId::of(&self.instances[index].spec);
        self.roll.starting(index, id);
        self.spawn_apiserver(index)?;
        self.apiserver_starts += 1;
        self.wait_one_ready(index).await
    }

    /// Stops instance `index` where it stands (SIGSTOP), as a hung process
    /// or a node cut off: it answers nothing and renews nothing, drops out
    /// of the `kubernetes` EndpointSlice once its endpoint lease expires,
    /// and keeps its identity Lease. Not instance 0, which every client of
    /// the harness talks to.
    pub fn freeze(&mut self, index: usize) -> Result<()> {
        self.signal(index, "-STOP")
    }

    /// Lets a [`ControlPlane::freeze`]d instance go on (SIGCONT).
    pub fn thaw(&mut self, index: usize) -> Result<()> {
        self.signal(index, "-CONT")
    }

    fn signal(&mut self, index: usize, signal: &str) -> Result<()> {
        anyhow::ensure!(index > 0, "instance 0 serves the harness's own clients");
        let process = self.instances[index]
            .process
            .as_ref()
            .context("the instance is not running")?;
        let status = Command::new("kill")
            .arg(signal)
            .arg(process.child.id().to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// Restarts instance `index` with `spec` whatever the roll-out asks (a
    /// roll-out ksa did not drive, a configuration manager that lags, a
    /// node restored from backup); waits until it is ready and listed.
    pub async fn restart_instance_with(&mut self, index: usize, spec: &InstanceSpec) -> Result<()> {
        if let Some(mut old) = self.instances[index].process.take() {
            old.terminate().await;
        }
        self.roll.stopped(index);
        self.instances[index].spec = spec.clone();
        self.roll.starting(index, SpecId::of(spec));
        self.spawn_apiserver(index)?;
        self.apiserver_starts += 1;
        self.wait_one_ready(index).await
    }

    /// Kills etcd (SIGKILL) and starts it again on the same data and port;
    /// waits until kube-apiserver is ready on it again.
    pub async fn kill_and_restart_etcd(&mut self) -> Result<()> {
        self.etcd.stop();
        self.etcd = spawn_etcd(
            &self.bin,
            self.dir.path(),
            self.etcd_port,
            self.etcd_peer_port,
        )?;
        self.wait_ready().await
    }

    /// Starts kube-controller-manager (Deployments, ReplicaSets, the legacy
    /// token controller) signing legacy tokens with the current signing key.
    pub fn start_controller_manager(&mut self) -> Result<()> {
        self.start_controller_manager_with_flags(&[])
    }

    /// Like [`ControlPlane::start_controller_manager`], with extra flags
    /// (kept when it restarts with the API server).
    pub fn start_controller_manager_with_flags(&mut self, flags: &[&str]) -> Result<()> {
        self.controller_manager_flags = flags.iter().map(|f| (*f).to_owned()).collect();
        self.spawn_controller_manager()
    }

    fn spawn_controller_manager(&mut self) -> Result<()> {
        let d = self.dir.path();
        let key = d.join("sa.key");
        if let Some(keys) = self.spec.keys() {
            write_private(&key, keys.signing.to_pem().as_bytes())?;
            self.controller_manager_key = Some(keys.signing.kid().clone());
        }
        let mut command = control_plane_command(self.bin.join("kube-controller-manager"));
        command
            .arg(format!("--kubeconfig={}", self.kubeconfig_path().display()))
            .arg(format!(
                "--service-account-private-key-file={}",
                key.display()
            ))
            .arg(format!("--root-ca-file={}", d.join("ca.crt").display()))
            .arg("--bind-address=127.0.0.1")
            .arg("--secure-port=0")
            .arg("--leader-elect=false")
            .arg("--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle")
            .arg("--v=1")
            .args(&self.controller_manager_flags);
        self.controller_manager = Some(Process::spawn("kube-controller-manager", command, d)?);
        Ok(())
    }
    /// Starts kube-scheduler (restarted whenever it exits, as kubelet
    /// restarts a static pod), with `flags` added to its own.
    pub fn start_scheduler(&mut self, flags: &[&str]) -> Result<()> {
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig_path().display());
        let program = self.bin.join("kube-scheduler");
        let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
        let scheduler = move || {
            let mut command = control_plane_command(program.clone());
            command
                .arg(&kubeconfig)
                .arg("--bind-address=127.0.0.1")
                .arg("--secure-port=0")
                .arg("--leader-elect=false")
                .arg("--v=1")
                .args(&flags);
            command
        };
        self.simulation.push(Supervised::spawn(
            "kube-scheduler",
            self.dir.path(),
            scheduler,
        )?);
        Ok(())
    }

    /// A client certificate (PEM) and its key for `user` in `groups`,
    /// signed by the cluster's CA: a kubelet's (`system:node:NAME` in
    /// `system:nodes`) or kube-proxy's.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        self.pki.client_cert(user, groups)
    }

    /// A kubeconfig for the holder of `cert` and `key`.
    pub fn kubeconfig_for(&self, cert: &str, key: &str) -> String {
        self.kubeconfig(cert, key)
    }

    /// Simulates `nodes` nodes with kwok (built by `cargo xtask
    /// control-plane`, found through `KSA_KWOK_DIR`) and starts
    /// kube-scheduler to place pods on them: pods become Running and Ready
    /// once scheduled, and go at once when deleted, so Deployments roll out
    /// as on a real cluster, without containers. `scheduler_flags` are
    /// added to kube-scheduler's.
    pub async fn simulate_nodes(&mut self, nodes: usize, scheduler_flags: &[&str]) -> Result<()> {
        let kwok = kwok_dir()?;
        self.start_scheduler(scheduler_flags)?;
        let d = self.dir.path();
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig_path().display());
        let simulator = move || {
            let mut command = control_plane_command(kwok.join("kwok"));
            command
                .arg(&kubeconfig)
                .arg(format!("--config={}", kwok.join("stages.yaml").display()))
                .arg("--manage-all-nodes");
            command
        };
        self.simulation
            .push(Supervised::spawn("kwok", d, simulator)?);
        let api: Api<Node> = Api::all(self.client().await?);
        // The API server taints a new node not-ready, and with no node
        // lifecycle controller here nothing would lift it: lift it at once.
        let untaint = serde_json::json!({"spec": {"taints": null}});
        for i in 0..nodes {
            let name = format!("kwok-node-{i}");
            api.create(&PostParams::default(), &simulated_node(&name))
                .await?;
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&untaint))
                .await?;
        }
        let started = Instant::now();
        loop {
            let ready = api
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|n| node_ready(n))
                .count();
            if ready == nodes {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!("kwok made {ready} of {nodes} nodes Ready in {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// Waits until `instance` answers `/readyz` with ok through `client` (one
/// of its own) and, when `listed`, until the `kubernetes` EndpointSlice
/// lists its address, as a roll-out waits for a pod to be ready and its
/// endpoint to be published before it stops the next.
async fn wait_instance_ready(
    instance: &mut Instance,
    client: kube::Client,
    listed: bool,
) -> Result<()> {
    let started = Instant::now();
    let address = instance.address.to_string();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let mut ready = false;
    loop {
        if !ready {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            ready = client
                .request_text(request)
                .await
                .is_ok_and(|body| body.trim() == "ok");
        }
        if ready && !listed {
            return Ok(());
        }
        if ready
            && let Ok(list) = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
                .await
            && list
                .iter()
                .flat_map(|slice| &slice.endpoints)
                .any(|endpoint| endpoint.addresses.contains(&address))
        {
            return Ok(());
        }
        let name = &instance.name;
        if let Some(process) = instance.process.as_mut()
            && let Some(status) = process.exited()
        {
            bail!("{name} exited ({status}):\n{}", process.tail(40));
        }
        if started.elapsed() > READY_TIMEOUT {
            let tail = instance
                .process
                .as_ref()
                .map(|p| p.tail(40))
                .unwrap_or_default();
            let what = if ready {
                "listed in the kubernetes EndpointSlice"
            } else {
                "ready"
            };
            bail!("{name} not {what} after {READY_TIMEOUT:?}:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A process restarted whenever it exits, as kubelet restarts a static
/// pod: kube-scheduler exits by design when its cache goes wrong (a pod
/// recreated under the same name while its watch was down, as when the API
/// server restarts during a StatefulSet's rollout). Stopped when dropped.
struct Supervised {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervised {
    fn spawn(
        name: &'static str,
        dir: &Path,
        command: impl Fn() -> Command + Send + 'static,
    ) -> Result<Supervised> {
        let dir = dir.to_owned();
        let mut process = Process::spawn(name, command(), &dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                if let Some(status) = process.exited() {
                    eprintln!("{name} exited ({status}); restarting it, as kubelet would");
                    match Process::spawn(name, command(), &dir) {
                        Ok(restarted) => process = restarted,
                        Err(error) => {
                            eprintln!("{name} could not restart: {error:#}");
                            return;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            process.stop();
        });
        Ok(Supervised {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A node for kwok to manage (it marks it Ready and runs its pods).
fn simulated_node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            annotations: Some(BTreeMap::from([(
                "kwok.x-k8s.io/node".to_owned(),
                "fake".to_owned(),
            )])),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_owned(), name.to_owned()),
                ("type".to_owned(), "kwok".to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        ..Node::default()
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Where kwok and its stages are, or an error that says how to build them.
fn kwok_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("KSA_KWOK_DIR")
        .map(PathBuf::from)
        .context(
            "KSA_KWOK_DIR is not set: simulated nodes need kwok. Run with `cargo xtask e2e` or \
         `cargo xtask bench`, which build it from the pinned Go module and set it",
        )?;
    for name in ["kwok", "stages.yaml"] {
        if !dir.join(name).is_file() {
            bail!(
                "{} has no {name}; run `cargo xtask control-plane` to build it",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// A command for a control-plane process. `KSA_CONTROL_PLANE_CPUS` (a
/// `taskset --cpu-list` list), when set, pins it to those CPUs: a benchmark
/// keeps its clients off the API server's CPUs, as a cluster keeps
/// workloads off its control-plane nodes.
fn control_plane_command(program: PathBuf) -> Command {
    match std::env::var("KSA_CONTROL_PLANE_CPUS") {
        Ok(cpus) if !cpus.is_empty() => {
            let mut command = Command::new("taskset");
            command.arg("--cpu-list").arg(cpus).arg(program);
            command
        }
        _ => Command::new(program),
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        let core = std::iter::once(self.controller_manager.as_mut())
            .chain(self.instances.iter_mut().map(|i| i.process.as_mut()))
            .chain([Some(&mut self.etcd)]);
        // The simulation first: it talks to the API server.
        self.simulation.clear();
        for process in core.flatten() {
            process.stop();
            if failed {
                eprintln!(
                    "----- last lines of {} ({}) -----\n{}",
                    process.name,
                    process.log.display(),
                    process.tail(30)
                );
            }
        }
    }
}

/// Starts a one-member etcd keeping its data in `dir/etcd`.
fn spawn_etcd(bin: &Path, dir: &Path, port: u16, peer_port: u16) -> Result<Process> {
    let client_url = format!("http://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = control_plane_command(bin.join("etcd"));
    etcd.arg("--name=e2e")
        .arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=e2e={peer_url}"))
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    Process::spawn("etcd", etcd, dir)
}

/// Writes a private key file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    Ok(())
}

pub(crate) fn pem_to_der(pem_text: &str) -> Result<Vec<u8>> {
    let body: String = pem_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    Ok(STANDARD.decode(body)?)
}
