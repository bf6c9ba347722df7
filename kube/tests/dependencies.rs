//! The crate boundaries of ARCHITECTURE.md, checked on the resolved
//! dependency graph (`cargo metadata`): what each crate compiles, through
//! its normal and build dependencies (dev-dependencies do not ship).
//!
//! - `ksa-cli` never depends on `ksa-controller`, so building `ksa`
//!   compiles no gRPC, HTTP server or metrics.
//! - `ksa-kube` (the Kubernetes I/O the CLI and the controller share) has
//!   no command-line parsing, HTTP server, gRPC or metrics either.
//! - `ksa-core` is sans-IO: no Kubernetes client, no tokio, no gRPC.

use std::collections::{BTreeMap, VecDeque};
use std::process::Command;

use serde_json::Value;

/// The controller's own parts: its gRPC signer, HTTP server and metrics.
const CONTROLLER_ONLY: &[&str] = &[
    "ksa-controller",
    "tonic",
    "axum",
    "prometheus-client",
    "protox",
];

#[test]
fn the_cli_never_depends_on_the_controller() {
    let graph = Graph::load();
    graph.assert_reaches_none("ksa-cli", CONTROLLER_ONLY);
}

#[test]
fn ksa_kube_has_no_cli_server_grpc_or_metrics() {
    let graph = Graph::load();
    graph.assert_reaches_none("ksa-kube", CONTROLLER_ONLY);
    graph.assert_reaches_none("ksa-kube", &["clap"]);
}

#[test]
fn the_core_has_no_kubernetes_client_runtime_or_grpc() {
    let graph = Graph::load();
    graph.assert_reaches_none(
        "ksa-core",
        &["kube", "kube-client", "tokio", "tonic", "k8s-openapi"],
    );
}

/// The workspace's resolved graph: package names by id, and each
/// package's normal and build dependencies.
struct Graph {
    names: BTreeMap<String, String>,
    edges: BTreeMap<String, Vec<String>>,
}

impl Graph {
    /// `cargo metadata` of this workspace with every feature of its
    /// members on, so an optional dependency is checked too.
    fn load() -> Graph {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(&cargo)
            .args(["metadata", "--format-version", "1", "--all-features"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap_or_else(|e| panic!("could not run {cargo} metadata: {e}"));
        assert!(
            output.status.success(),
            "{cargo} metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: Value =
            serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
        let names = metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| (text(&p["id"]), text(&p["name"])))
            .collect();
        let edges = metadata["resolve"]["nodes"]
            .as_array()
            .expect("resolve.nodes")
            .iter()
            .map(|node| {
                let deps = node["deps"]
                    .as_array()
                    .expect("deps")
                    .iter()
                    .filter(|dep| shipped(dep))
                    .map(|dep| text(&dep["pkg"]))
                    .collect();
                (text(&node["id"]), deps)
            })
            .collect();
        Graph { names, edges }
    }

    /// Fails naming the path from `root` to the first of `forbidden` it
    /// reaches.
    fn assert_reaches_none(&self, root: &str, forbidden: &[&str]) {
        let start = self
            .names
            .iter()
            .find(|(_, name)| *name == root)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("{root} is not in the workspace"));
        // Breadth first, remembering how each package was reached.
        let mut reached_from: BTreeMap<String, Option<String>> = BTreeMap::new();
        reached_from.insert(start.clone(), None);
        let mut queue = VecDeque::from([start]);
        while let Some(id) = queue.pop_front() {
            if forbidden.contains(&self.names[&id].as_str()) {
                panic!(
                    "{root} must not depend on {}, but does: {}",
                    self.names[&id],
                    self.path(&reached_from, &id)
                );
            }
            for dep in self.edges.get(&id).into_iter().flatten() {
                if !reached_from.contains_key(dep) {
                    reached_from.insert(dep.clone(), Some(id.clone()));
                    queue.push_back(dep.clone());
                }
            }
        }
    }

    fn path(&self, reached_from: &BTreeMap<String, Option<String>>, id: &str) -> String {
        let mut path = vec![self.names[id].clone()];
        let mut at = id;
        while let Some(Some(parent)) = reached_from.get(at) {
            path.push(self.names[parent].clone());
            at = parent;
        }
        path.reverse();
        path.join(" -> ")
    }
}

/// Whether a dependency edge is a normal or build one (`kind` null or
/// "build") on any target; dev-only edges are left out.
fn shipped(dep: &Value) -> bool {
    dep["dep_kinds"]
        .as_array()
        .expect("dep_kinds (cargo 1.41 or later)")
        .iter()
        .any(|kind| kind["kind"].is_null() || kind["kind"] == "build")
}

fn text(value: &Value) -> String {
    value.as_str().expect("a string").to_owned()
}
