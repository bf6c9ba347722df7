//! Real nodes (issue 31): containerd, runc, the CNI bridge, the kubelet and
//! kube-proxy, built by `cargo xtask setup` (`xtask/src/node.rs`) and found
//! through `KSA_NODE_DIR`, beside the control plane: pods run in real
//! containers, mount projected service-account tokens that their kubelet
//! requests and refreshes, and reach the API server through the
//! `kubernetes` Service's ClusterIP (kube-proxy, nftables mode).
//!
//! A test that runs real nodes calls [`enter`] first: it runs the test in
//! namespaces of its own, network, mount and PID (the test is its PID
//! namespace's init), so that its bridge, veths, pod network namespaces,
//! nftables rules, overlay and tmpfs mounts are its own and go with it, and
//! every process it started (daemons, shims, containers) is killed by the
//! kernel when it ends, even when it is killed. Within, each node's
//! processes run in a cgroup tree of the test's own
//! (`/sys/fs/cgroup/*/ksa-node-PID/NODE`, the kubelet's `cgroupRoot`),
//! which the node's drop empties by process id and the test's outer process
//! removes; a tree left by a test killed outright is removed by the next
//! one ([`enter`]). So a run never breaks the next one.
//!
//! Each node's state (containerd's root and state, the kubelet's root, pod
//! logs) lives in a directory bind-mounted on itself under the control
//! plane's directory, so that one recursive unmount takes every mount
//! beneath it (container root filesystems, token volumes, network
//! namespace files). Paths containerd, its shims and the kubelet use
//! outside their configuration (`/run/containerd`, `/var/lib/cni`,
//! `/var/log/containers`) are tmpfs of the test's mount namespace.
//!
//! A node joins a [`Cluster`]: the test control plane
//! ([`RealNode::start`]), or one whose API server is a static pod of the
//! node itself ([`RealNode::join`], which writes the static pods before
//! the kubelet starts). [`user_cluster`] holds what a user cluster whose
//! kube-apiservers run in pods needs: its etcd, its certificates, the
//! images of the control plane's own binaries.
//!
//! Two real-node tests may run at once: each has its namespaces, its
//! cgroup tree (named after its outer process) and its directories (seen
//! with the hosted and kubeadm tests run side by side, each cleaned up).

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

use crate::ControlPlane;
use crate::netns::{self, Netns};

pub mod user_cluster;

/// The variable through which tests find the node's components.
pub const ENV: &str = "KSA_NODE_DIR";
/// The pod sandbox image every node has imported.
pub const PAUSE_IMAGE: &str = "ksa.test/pause:1";
/// The workload image every node has imported: it presents its projected
/// token to the API server every second (`xtask/node-images/token-reader`).
pub const TOKEN_READER_IMAGE: &str = "ksa.test/token-reader:1";

/// Set, in the copy run inside, to the name of the test's cgroup tree.
const CGROUP_ENV: &str = "KSA_NODE_CGROUP";
const CGROUP_PREFIX: &str = "ksa-node-";
const CGROUP_FS: &str = "/sys/fs/cgroup";
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the node's components are, or an error that says how to build
/// them.
pub fn node_dir() -> Result<PathBuf> {
    let dir = std::env::var_os(ENV).map(PathBuf::from).context(
        "KSA_NODE_DIR is not set: the real-node tests need containerd, runc, the CNI plugins, \
         the kubelet and kube-proxy. Run them with `cargo xtask e2e` (or `cargo xtask ci`), \
         which builds them from the pinned Go modules (`cargo xtask node`) and sets it",
    )?;
    for file in [
        "bin/containerd",
        "bin/containerd-shim-runc-v2",
        "bin/ctr",
        "bin/runc",
        "bin/kubelet",
        "bin/kube-proxy",
        "cni/bridge",
        "cni/host-local",
        "cni/loopback",
        "images/pause.tar",
        "images/token-reader.tar",
    ] {
        if !dir.join(file).is_file() {
            bail!(
                "{} has no {file}; run `cargo xtask node` to build it",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Runs the calling test in network, mount and PID namespaces of its own
/// (see the module documentation). Call it first thing in the test:
///
/// ```ignore
/// if let Netns::Ran(outcome) = ksa_tests::node::enter()? {
///     return outcome;
/// }
/// ```
pub fn enter() -> Result<Netns> {
    if netns::inside() {
        let inside = netns::enter()?;
        isolate_paths()?;
        return Ok(inside);
    }
    ensure!(
        is_root(),
        "real nodes need root (containerd, runc, the kubelet): run the test as root"
    );
    remove_stale_trees()?;
    let tree = format!("{CGROUP_PREFIX}{}", std::process::id());
    let outcome = netns::enter_with(
        &["--mount", "--pid", "--fork", "--mount-proc"],
        &[(CGROUP_ENV, tree.clone())],
    )?;
    // The namespace's processes went with its init; its cgroups stay until
    // removed.
    let removed = remove_tree(&tree, Duration::from_secs(60));
    Ok(match outcome {
        Netns::Ran(result) => Netns::Ran(result.and(removed.with_context(|| {
            format!("the test's cgroups ({CGROUP_FS}/*/{tree}) could not be removed")
        }))),
        Netns::Inside => Netns::Inside,
    })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Mounts a tmpfs of the test's mount namespace on each path containerd,
/// its shims and the kubelet use outside their configuration.
fn isolate_paths() -> Result<()> {
    for path in ["/run/containerd", "/var/lib/cni", "/var/log/containers"] {
        fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
        run(Command::new("mount").args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs", path]))?;
    }
    Ok(())
}

/// The cgroup hierarchies mounted under `/sys/fs/cgroup` (v1: one per
/// controller, `systemd` and `unified`; v2: the one).
fn hierarchies() -> Result<Vec<PathBuf>> {
    if cgroup_v2() {
        return Ok(vec![PathBuf::from(CGROUP_FS)]);
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(CGROUP_FS)? {
        let path = entry?.path();
        // cpu,cpuacct and its links name one hierarchy: keep it once.
        let real = fs::canonicalize(&path)?;
        if real.join("cgroup.procs").is_file() && !found.contains(&real) {
            found.push(real);
        }
    }
    Ok(found)
}

/// Whether the host's cgroups are v2 only (unified).
fn cgroup_v2() -> bool {
    Path::new(CGROUP_FS).join("cgroup.controllers").is_file()
}

/// Removes the trees of tests that are gone (their outer process, whose
/// PID names the tree, no longer runs): killed outright, they could not.
fn remove_stale_trees() -> Result<()> {
    let mut stale = Vec::new();
    for hierarchy in hierarchies()? {
        for entry in fs::read_dir(&hierarchy)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(CGROUP_PREFIX)
                && !Path::new("/proc").join(pid).exists()
                && !stale.contains(&name)
            {
                stale.push(name);
            }
        }
    }
    for tree in stale {
        eprintln!("removing the cgroups {tree} of a real-node test that is gone");
        remove_tree(&tree, Duration::from_secs(30))?;
    }
    Ok(())
}

/// Kills every process of cgroup tree `tree` in every hierarchy, by the
/// process IDs its `cgroup.procs` list, and removes its cgroups, deepest
/// first; tries again until `within` has passed (a process takes a moment
/// to die).
fn remove_tree(tree: &str, within: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut left = Vec::new();
        for hierarchy in hierarchies()? {
            let root = hierarchy.join(tree);
            if root.exists()
                && let Err(error) = kill_and_remove(&root)
            {
                left.push(format!("{}: {error:#}", root.display()));
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if started.elapsed() > within {
            bail!("{}", left.join("; "));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cgroups under `root` (itself included), deepest first.
fn cgroups_under(root: &Path) -> Vec<PathBuf> {
    let mut all = vec![root.to_owned()];
    let mut index = 0;
    while index < all.len() {
        if let Ok(entries) = fs::read_dir(&all[index]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    all.push(entry.path());
                }
            }
        }
        index += 1;
    }
    all.reverse();
    all
}

/// The process IDs in the cgroups under `root`.
fn pids_under(root: &Path) -> Vec<i32> {
    cgroups_under(root)
        .iter()
        .filter_map(|cgroup| fs::read_to_string(cgroup.join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

fn kill_and_remove(root: &Path) -> Result<()> {
    let pids = pids_under(root);
    if !pids.is_empty() {
        kill(&pids);
        bail!("{} processes still running: {pids:?}", pids.len());
    }
    for cgroup in cgroups_under(root) {
        fs::remove_dir(&cgroup).with_context(|| format!("removing {}", cgroup.display()))?;
    }
    Ok(())
}

/// SIGKILL to each of `pids`.
fn kill(pids: &[i32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-KILL")
        .args(pids.iter().map(i32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Creates cgroup `path` (relative to the hierarchies' roots) in every
/// hierarchy; a v1 cpuset cgroup gets its parent's CPUs and memory nodes,
/// without which no process may join it.
fn create_cgroup(path: &str) -> Result<()> {
    for hierarchy in hierarchies()? {
        let mut dir = hierarchy.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let parent = dir.clone();
            dir = dir.join(part);
            if dir.exists() {
                continue;
            }
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = fs::read_to_string(parent.join(file)) {
                    fs::write(dir.join(file), value.trim())
                        .with_context(|| format!("writing {}", dir.join(file).display()))?;
                }
            }
        }
    }
    Ok(())
}

/// A command that first moves itself into cgroup `path` of every
/// hierarchy, then runs `program`: every process it starts (containerd's
/// shims, say) is in that cgroup too.
fn in_cgroup(path: &str, program: &Path) -> Result<Command> {
    let procs: Vec<String> = hierarchies()?
        .iter()
        .map(|h| h.join(path.trim_start_matches('/')).join("cgroup.procs"))
        .map(|p| p.display().to_string())
        .collect();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "for procs in {}; do echo $$ > \"$procs\" || exit 1; done; exec \"$0\" \"$@\"",
            procs.join(" ")
        ))
        .arg(program);
    Ok(command)
}

/// One daemon of a node, with its log.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Daemon> {
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
            .with_context(|| format!("starting {name}"))?;
        Ok(Daemon {
            name: name.to_owned(),
            child,
            log,
        })
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, tail(&self.log, 40));
        }
        Ok(())
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One real node: containerd, the kubelet and kube-proxy, registered as
/// Node [`RealNode::name`], Ready, its pods on a bridge of their own. Every
/// process is killed when this is dropped, by process ID, and every mount
/// and cgroup of it removed.
#[allow(missing_debug_implementations, reason = "holds running processes")]
pub struct RealNode {
    /// The Node's name (`ksa-node-N`).
    pub name: String,
    /// Its address in the test's network namespace (the Node's
    /// InternalIP; the kubelet serves there).
    pub address: Ipv4Addr,
    /// Its pods' subnet.
    pub pod_cidr: String,
    dir: PathBuf,
    /// Where its daemons' logs are (the control plane's directory, kept
    /// with `KSA_E2E_KEEP=1`).
    log_dir: PathBuf,
    bin: PathBuf,
    cgroup: String,
    daemons: Vec<Daemon>,
}

/// The cluster a real node joins: its kubelet and kube-proxy are its
/// clients, with certificates of its CA; the node's state and logs go in
/// its directory.
pub trait Cluster {
    /// Where the node's state and its daemons' logs go.
    fn dir(&self) -> &Path;
    /// The CA of the cluster's API server and client certificates.
    fn ca_cert_pem(&self) -> &str;
    /// A client certificate (PEM) and its key for `user` in `groups`.
    fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String)>;
    /// A kubeconfig of the API server for the holder of `cert` and `key`.
    fn kubeconfig_for(&self, cert: &str, key: &str) -> String;
    /// An admin client.
    fn client(&self) -> impl Future<Output = Result<kube::Client>> + Send;
}

impl Cluster for ControlPlane {
    fn dir(&self) -> &Path {
        ControlPlane::dir(self)
    }

    fn ca_cert_pem(&self) -> &str {
        ControlPlane::ca_cert_pem(self)
    }

    fn client_cert(&self, user: &str, groups: &[&str]) -> Result<(String, String)> {
        ControlPlane::client_cert(self, user, groups)
    }

    fn kubeconfig_for(&self, cert: &str, key: &str) -> String {
        ControlPlane::kubeconfig_for(self, cert, key)
    }

    fn client(&self) -> impl Future<Output = Result<kube::Client>> + Send {
        ControlPlane::client(self)
    }
}

impl RealNode {
    /// Starts node number `index` (0 to 200) of `plane`, which
    /// [`ControlPlane::start_for_nodes`] started, and waits until it is
    /// Ready and kube-proxy runs. Only in namespaces [`enter`] made.
    pub async fn start(plane: &ControlPlane, index: u8) -> Result<RealNode> {
        RealNode::join(plane, index, netns::new_address()?, |_| Ok(())).await
    }

    /// Starts node number `index` (0 to 200) of `cluster` at `address` (one
    /// of [`netns::new_address`]), runs `before_kubelet` once containerd
    /// runs and the test images are imported (to put static pods in
    /// [`RealNode::manifests_dir`], say, which may run the cluster's own
    /// API server), starts the kubelet, and waits until the Node is Ready
    /// and kube-proxy runs. Only in namespaces [`enter`] made.
    pub async fn join(
        cluster: &impl Cluster,
        index: u8,
        address: Ipv4Addr,
        before_kubelet: impl FnOnce(&RealNode) -> Result<()>,
    ) -> Result<RealNode> {
        let started = Instant::now();
        let components = node_dir()?;
        let tree = std::env::var(CGROUP_ENV).context(
            "real nodes run only in namespaces of the test's own: call ksa_tests::node::enter() \
             first thing in the test",
        )?;
        let name = format!("ksa-node-{index}");
        let cgroup = format!("/{tree}/{name}");
        create_cgroup(&format!("{cgroup}/daemons"))?;
        let dir = cluster.dir().join(&name);
        fs::create_dir_all(&dir)?;
        // A mount of its own: one recursive unmount takes all beneath.
        run(Command::new("mount").arg("--bind").arg(&dir).arg(&dir))?;
        let mut node = RealNode {
            name: name.clone(),
            address,
            pod_cidr: format!("10.244.{index}.0/24"),
            log_dir: cluster.dir().to_owned(),
            bin: components.join("bin"),
            cgroup,
            dir,
            daemons: Vec::new(),
        };
        node.start_containerd(&components).await?;
        for image in ["pause", "token-reader"] {
            node.import_image(
                &components.join("images").join(format!("{image}.tar")),
                &format!("ksa.test/{image}"),
            )?;
        }
        node.write_cni_config(&components)?;
        fs::create_dir_all(node.manifests_dir())?;
        before_kubelet(&node)?;
        node.start_kubelet(cluster)?;
        node.wait_ready(cluster).await?;
        node.start_kube_proxy(cluster)?;
        eprintln!(
            "real node {} ready in {:.1?} at {} (pods {})",
            node.name,
            started.elapsed(),
            node.address,
            node.pod_cidr
        );
        Ok(node)
    }

    /// The kubelet's static pod directory (`staticPodPath`): it runs a pod
    /// for each manifest there, and restarts it when its file changes.
    pub fn manifests_dir(&self) -> PathBuf {
        self.path("manifests")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("containerd.sock")
    }

    fn spawn(&mut self, name: &str, command: Command) -> Result<()> {
        let log = self.log_dir.join(format!("{}-{name}.log", self.name));
        self.daemons.push(Daemon::spawn(name, command, log)?);
        Ok(())
    }

    async fn start_containerd(&mut self, components: &Path) -> Result<()> {
        let config = format!(
            r#"version = 3
root = "{root}"
state = "{state}"
# NRI's socket and /opt/containerd are fixed paths of the host: not used.
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # Without CAP_SYS_RESOURCE (a sandboxed root may lack it) no process may
  # lower its OOM score below containerd's: the kubelet's -998 for the
  # sandbox would fail every pod. Here it is raised to containerd's.
  restrict_oom_score_adj = {restrict}
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
    BinaryName = "{runc}"
    SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni}"]
    conf_dir = "{conf}"
"#,
            root = self.path("containerd/root").display(),
            state = self.path("containerd/state").display(),
            socket = self.socket().display(),
            runc = self.bin.join("runc").display(),
            cni = components.join("cni").display(),
            conf = self.path("cni").display(),
            restrict = !has_sys_resource(),
        );
        let path = self.path("containerd.toml");
        fs::write(&path, config)?;
        let mut command = in_cgroup(
            &format!("{}/daemons", self.cgroup),
            &self.bin.join("containerd"),
        )?;
        command
            .arg("--config")
            .arg(&path)
            // Its shim is found on PATH.
            .env("PATH", path_with(&self.bin));
        self.spawn("containerd", command)?;
        let started = Instant::now();
        loop {
            if self.ctr().arg("version").output()?.status.success() {
                return Ok(());
            }
            self.check_daemons()?;
            if started.elapsed() > READY_TIMEOUT {
                bail!("containerd did not answer on {}", self.socket().display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `ctr` on this node's containerd, in the kubelet's namespace.
    fn ctr(&self) -> Command {
        let mut command = Command::new(self.bin.join("ctr"));
        command
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"]);
        command
    }

    /// Imports the OCI image archive `archive` (tagged, as `cargo xtask
    /// image` tags its layouts) as `BASE_NAME:TAG`, with no registry.
    pub fn import_image(&self, archive: &Path, base_name: &str) -> Result<()> {
        let output = self
            .ctr()
            .args(["images", "import", "--base-name", base_name])
            .arg(archive)
            .output()?;
        ensure!(
            output.status.success(),
            "ctr images import {} failed: {}{}",
            archive.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// Imports the image of the control plane's `name` (`kube-apiserver`
    /// or `kube-controller-manager`, as `ksa.test/NAME:1`), which `cargo
    /// xtask node` writes once the control plane is built.
    pub fn import_control_plane_image(&self, name: &str) -> Result<()> {
        let archive = node_dir()?.join(format!("images/{name}.tar"));
        ensure!(
            archive.is_file(),
            "{} is missing: run `cargo xtask node` (or `cargo xtask e2e`), which writes it from the \
             control plane's {name}",
            archive.display()
        );
        let started = Instant::now();
        self.import_image(&archive, &format!("ksa.test/{name}"))?;
        eprintln!(
            "{}: {name} image imported in {:.1?}",
            self.name,
            started.elapsed()
        );
        Ok(())
    }

    fn write_cni_config(&self, components: &Path) -> Result<()> {
        ensure!(components.join("cni/bridge").is_file(), "no bridge plugin");
        let conf = self.path("cni");
        fs::create_dir_all(&conf)?;
        let config = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "ksa",
            "plugins": [{
                "type": "bridge",
                "bridge": "ksa0",
                "isGateway": true,
                // No masquerade (it would need iptables): pods talk only
                // to the API server, in the test's network namespace.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": self.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.path("ipam"),
                },
            }],
        });
        fs::write(
            conf.join("10-ksa.conflist"),
            serde_json::to_vec_pretty(&config)?,
        )?;
        Ok(())
    }

    fn start_kubelet(&mut self, plane: &impl Cluster) -> Result<()> {
        let (cert, key) =
            plane.client_cert(&format!("system:node:{}", self.name), &["system:nodes"])?;
        let kubeconfig = self.path("kubelet.kubeconfig");
        crate::write_private(&kubeconfig, plane.kubeconfig_for(&cert, &key).as_bytes())?;
        fs::write(self.path("ca.crt"), plane.ca_cert_pem())?;
        fs::write(self.path("resolv.conf"), "nameserver 127.0.0.1\n")?;
        // Kubernetes 1.35 and later refuse cgroup v1 unless told not to.
        let cgroup_v1 = if cgroup_v2() {
            ""
        } else {
            eprintln!(
                "{}: the host's cgroups are v1 ({CGROUP_FS}/* per controller): the kubelet runs \
                 with failCgroupV1: false",
                self.name
            );
            "failCgroupV1: false\n"
        };
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
{cgroup_v1}cgroupDriver: cgroupfs
cgroupRoot: {cgroup}
containerRuntimeEndpoint: unix://{socket}
staticPodPath: {manifests}
resolvConf: {resolv}
podLogsDir: {logs}
address: {address}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
failSwapOn: false
# The host's disk is not this node's to guard: no eviction, no image GC.
evictionHard: {{memory.available: 1Mi, nodefs.available: 0%, nodefs.inodesFree: 0%, imagefs.available: 0%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 30
",
            cgroup = self.cgroup,
            socket = self.socket().display(),
            manifests = self.manifests_dir().display(),
            resolv = self.path("resolv.conf").display(),
            logs = self.path("pod-logs").display(),
            address = self.address,
            ca = self.path("ca.crt").display(),
        );
        let path = self.path("kubelet.yaml");
        fs::write(&path, config)?;
        let mut command = in_cgroup(
            &format!("{}/daemons", self.cgroup),
            &self.bin.join("kubelet"),
        )?;
        command
            .arg(format!("--config={}", path.display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--root-dir={}", self.path("kubelet").display()))
            .arg(format!("--hostname-override={}", self.name))
            .arg(format!("--node-ip={}", self.address))
            .arg("--v=2")
            .env("PATH", path_with(&self.bin));
        self.spawn("kubelet", command)
    }

    /// Waits until the kubelet has registered the Node and reports it
    /// Ready (its cluster's API server answering by then); then lifts the `not-ready` taint the API server put on it at
    /// registration (the node lifecycle controller, which would, is off in
    /// the test control plane).
    async fn wait_ready(&mut self, plane: &impl Cluster) -> Result<()> {
        let nodes: Api<Node> = Api::all(plane.client().await?);
        let started = Instant::now();
        loop {
            // The API server may not answer yet: a node's static pods may
            // be the API server.
            if let Ok(Some(node)) = nodes.get_opt(&self.name).await
                && node_ready(&node)
            {
                break;
            }
            self.check_daemons()?;
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} not Ready after {READY_TIMEOUT:?}; kubelet:\n{}",
                    self.name,
                    tail(&self.log_dir.join(format!("{}-kubelet.log", self.name)), 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let untaint = serde_json::json!({"spec": {"taints": null}});
        nodes
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&untaint))
            .await?;
        Ok(())
    }

    fn start_kube_proxy(&mut self, plane: &impl Cluster) -> Result<()> {
        let (cert, key) = plane.client_cert("system:kube-proxy", &[])?;
        let kubeconfig = self.path("kube-proxy.kubeconfig");
        crate::write_private(&kubeconfig, plane.kubeconfig_for(&cert, &key).as_bytes())?;
        let config = format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {name}
clusterCIDR: 10.244.0.0/16
# The conntrack sysctls stay as they are.
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s, udpTimeout: 0s, udpStreamTimeout: 0s}}
",
            kubeconfig = kubeconfig.display(),
            name = self.name,
        );
        let path = self.path("kube-proxy.yaml");
        fs::write(&path, config)?;
        let mut command = in_cgroup(
            &format!("{}/daemons", self.cgroup),
            &self.bin.join("kube-proxy"),
        )?;
        command
            .arg(format!("--config={}", path.display()))
            .arg("--v=2");
        self.spawn("kube-proxy", command)
    }

    /// Fails, with the tail of its log, when a daemon has exited.
    pub fn check_daemons(&mut self) -> Result<()> {
        for daemon in &mut self.daemons {
            daemon.check_running()?;
        }
        Ok(())
    }

    /// The lines a container of a pod has written (its log, as the kubelet
    /// keeps it: `TIME STREAM TAG LINE` per line), newest last.
    pub fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Vec<String>> {
        let logs = self.path("pod-logs");
        let prefix = format!("{namespace}_{pod}_");
        let mut lines = Vec::new();
        let Ok(entries) = fs::read_dir(&logs) else {
            return Ok(lines);
        };
        for entry in entries {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let dir = entry.path().join(container);
            let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            for file in files {
                for line in fs::read_to_string(&file)?.lines() {
                    let mut parts = line.splitn(4, ' ');
                    if let (Some(_time), Some(_stream), Some(_tag), Some(text)) =
                        (parts.next(), parts.next(), parts.next(), parts.next())
                    {
                        lines.push(text.to_owned());
                    }
                }
            }
        }
        Ok(lines)
    }

    /// The files of a pod's volume as its kubelet mounted it
    /// (`ROOT/pods/UID/volumes/kubernetes.io~projected/VOLUME/`), by name.
    pub fn projected_volume(
        &self,
        pod_uid: &str,
        volume: &str,
    ) -> Result<BTreeMap<String, Vec<u8>>> {
        let dir = self
            .path("kubelet/pods")
            .join(pod_uid)
            .join("volumes/kubernetes.io~projected")
            .join(volume);
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // The atomic writer's data directories and links.
            if name.starts_with("..") {
                continue;
            }
            files.insert(name, fs::read(entry.path())?);
        }
        Ok(files)
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24 of its effective
/// capabilities), without which it may not lower an OOM score.
fn has_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let has = effective & (1 << CAP_SYS_RESOURCE) != 0;
    if !has {
        eprintln!(
            "no CAP_SYS_RESOURCE here: containerd raises the pods' OOM scores to its own \
             (restrict_oom_score_adj)"
        );
    }
    has
}

fn path_with(bin: &Path) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{}:{path}", bin.display())
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        // The kubelet first, so that it restarts nothing; then every
        // process of the node's cgroups (containerd, its shims, kube-proxy,
        // the containers), by process ID.
        for daemon in &mut self.daemons {
            if daemon.name == "kubelet" {
                let _ = daemon.child.kill();
                let _ = daemon.child.wait();
            }
        }
        let root = self.cgroup.trim_start_matches('/').to_owned();
        let removed = remove_tree(&root, Duration::from_secs(30));
        for daemon in &mut self.daemons {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
            if failed {
                eprintln!(
                    "----- last lines of {} of {} ({}) -----\n{}",
                    daemon.name,
                    self.name,
                    daemon.log.display(),
                    tail(&daemon.log, 30)
                );
            }
        }
        // Every mount beneath the node's directory: container root file
        // systems, token volumes, network namespace files.
        let unmounted = run(Command::new("umount")
            .args(["--recursive", "--lazy"])
            .arg(&self.dir));
        if let Err(error) = removed.and(unmounted) {
            eprintln!("cleaning up {} left something: {error:#}", self.name);
        }
    }
}

/// What a token reader's last line says (see
/// `xtask/node-images/token-reader`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presentations {
    /// Presentations so far.
    pub count: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// No answer, or one that is neither accepted nor rejected (the API
    /// server restarting, say).
    pub unavailable: u64,
    /// The kid and issuer of the token last presented.
    pub kid: String,
    pub issuer: String,
    /// The status of the last presentation.
    pub status: String,
}

impl Presentations {
    /// The counts in the last line of a token reader's log, if any.
    pub fn last(lines: &[String]) -> Option<Presentations> {
        lines
            .iter()
            .rev()
            .find_map(|line| Presentations::parse(line))
    }

    /// One line of a token reader.
    pub fn parse(line: &str) -> Option<Presentations> {
        let fields: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|field| field.split_once('='))
            .collect();
        let number = |name: &str| fields.get(name)?.parse().ok();
        Some(Presentations {
            count: number("presentation")?,
            accepted: number("accepted")?,
            rejected: number("rejected")?,
            unavailable: number("unavailable")?,
            kid: (*fields.get("kid")?).to_owned(),
            issuer: (*fields.get("iss")?).to_owned(),
            status: (*fields.get("status")?).to_owned(),
        })
    }
}

/// A Deployment of `replicas` token readers running as `service_account`,
/// on real nodes: each container reads the token the kubelet projects
/// into it every second and presents it.
pub fn token_reader_deployment(
    name: &str,
    service_account: &str,
    replicas: i32,
) -> k8s_openapi::api::apps::v1::Deployment {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    Deployment {
        metadata: crate::workload::meta(name),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: crate::workload::selector(name),
            template: PodTemplateSpec {
                metadata: Some(kube::api::ObjectMeta {
                    labels: Some(crate::workload::labels(name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service_account.to_owned()),
                    containers: vec![Container {
                        name: "reader".into(),
                        image: Some(TOKEN_READER_IMAGE.into()),
                        image_pull_policy: Some("Never".into()),
                        ..Container::default()
                    }],
                    termination_grace_period_seconds: Some(1),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The volume [`with_projected_token`] adds.
pub const TOKEN_VOLUME: &str = "token";

/// Has the pods of `deployment` hold one service-account token of
/// `seconds`, where the kubelet would mount its default one (which lives
/// 3607 s): no automounted token, and a projected volume
/// [`TOKEN_VOLUME`] (the token, of `seconds`, and the cluster's CA) at the
/// default token's path in every container.
pub fn with_projected_token(deployment: &mut Deployment, seconds: i64) -> Result<()> {
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, KeyToPath, ProjectedVolumeSource, ServiceAccountTokenProjection,
        Volume, VolumeMount, VolumeProjection,
    };
    let template = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .context("the Deployment has no pod template")?;
    template.automount_service_account_token = Some(false);
    template.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: TOKEN_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(seconds),
                        path: "token".to_owned(),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            default_mode: None,
        }),
        ..Volume::default()
    });
    for container in &mut template.containers {
        container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: TOKEN_VOLUME.to_owned(),
                mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
    }
    Ok(())
}

/// Points the containers of `deployment` at the API server `server_url`
/// (`https://HOST:PORT`) rather than at the `kubernetes` Service: their
/// `KUBERNETES_SERVICE_HOST` and `_PORT`, which the kubelet sets for the
/// Service, are set to it (a container's own variables win).
///
/// With one API server instance rolled, its restart takes the Service's
/// endpoint away (it removes itself when it stops) and kube-proxy, whose
/// watches back off each time the instance goes, may add it back up to a
/// minute after the instance serves again: through the Service, the pods
/// would see that minute as the API server's. The kubelet and the token
/// readers then see the same API server, down only while it restarts.
pub fn reach_api_server_directly(deployment: &mut Deployment, server_url: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::EnvVar;
    let address = server_url
        .strip_prefix("https://")
        .with_context(|| format!("{server_url} is not an https URL"))?;
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{server_url} names no port"))?;
    let template = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .context("the Deployment has no pod template")?;
    for container in &mut template.containers {
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in [
            ("KUBERNETES_SERVICE_HOST", host),
            ("KUBERNETES_SERVICE_PORT", port),
        ] {
            env.push(EnvVar {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                ..EnvVar::default()
            });
        }
    }
    Ok(())
}

/// Follows the logs of the token readers of a node: each log file is kept
/// open once seen, so that what a container wrote is read to its end even
/// after its pod was deleted (the kubelet removes the file then).
#[derive(Debug)]
pub struct ReaderLogs {
    logs: PathBuf,
    /// Each reader container's log, by path: the open file, the text read
    /// but not yet a whole line, and its last presentations.
    files: BTreeMap<PathBuf, (fs::File, String, Option<Presentations>)>,
}

impl ReaderLogs {
    /// Follows the `reader` containers' logs on `node`.
    pub fn new(node: &RealNode) -> ReaderLogs {
        ReaderLogs {
            logs: node.path("pod-logs"),
            files: BTreeMap::new(),
        }
    }

    /// Opens the log files that appeared and reads what was appended to
    /// each; returns the last presentations of every reader seen so far,
    /// deleted ones included, by log path.
    pub fn poll(&mut self) -> Result<BTreeMap<PathBuf, Presentations>> {
        use std::io::Read as _;
        if let Ok(pods) = fs::read_dir(&self.logs) {
            for pod in pods.flatten() {
                let Ok(files) = fs::read_dir(pod.path().join("reader")) else {
                    continue;
                };
                for file in files.flatten() {
                    let path = file.path();
                    if !self.files.contains_key(&path)
                        && let Ok(opened) = fs::File::open(&path)
                    {
                        self.files.insert(path, (opened, String::new(), None));
                    }
                }
            }
        }
        for (file, partial, last) in self.files.values_mut() {
            let mut appended = String::new();
            file.read_to_string(&mut appended)?;
            partial.push_str(&appended);
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                let text = line.trim_end().splitn(4, ' ').nth(3).unwrap_or_default();
                if let Some(presentations) = Presentations::parse(text) {
                    *last = Some(presentations);
                }
            }
        }
        Ok(self
            .files
            .iter()
            .filter_map(|(path, (_, _, last))| Some((path.clone(), last.clone()?)))
            .collect())
    }
}

impl RealNode {
    /// The token in each projected volume of pod `pod_uid` (the file
    /// `token` of `kube-api-access-*`, say), by volume name.
    pub fn projected_tokens(&self, pod_uid: &str) -> Result<BTreeMap<String, String>> {
        let dir = self
            .path("kubelet/pods")
            .join(pod_uid)
            .join("volumes/kubernetes.io~projected");
        let mut tokens = BTreeMap::new();
        for volume in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let volume = volume?.file_name().to_string_lossy().into_owned();
            if let Some(token) = self.projected_volume(pod_uid, &volume)?.get("token") {
                tokens.insert(volume, String::from_utf8_lossy(token).trim().to_owned());
            }
        }
        Ok(tokens)
    }
}
