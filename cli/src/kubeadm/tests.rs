//! The kubeadm mode against hostile files, with no API server: a pki
//! directory and a manifests directory in a temporary directory. Every
//! refusal must leave the manifests byte for byte as they were.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ksa_core::KeyId;
use ksa_core::KeyVersion;
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey, parse_pem, public_keys_to_pem};
use ksa_core::rotation::{Effect, Policy, RotationState};
use ksa_kube::cluster::TargetCluster;
use ksa_kube::driver::World as _;

use super::files::PkiDir;
use super::{
    APISERVER_MANIFEST, CONTROLLER_MANAGER_MANIFEST, KEY_FILE, KubeadmError, RotateRequest,
    manifest_dir, node,
};

/// Nothing listens here: a test that reaches the API servers fails fast.
const NO_API_SERVER: &str = "https://127.0.0.1:9";

fn new_key() -> PrivateKey {
    AwsLc::new().generate(KeySpec::EcP256).expect("a key")
}

/// A kubeadm node: `pki/sa.key`, `pki/sa.pub` (the signing key's public
/// key and `extra`), and both manifests as kubeadm writes them.
struct Node {
    _root: tempfile::TempDir,
    pki: PathBuf,
    manifests: PathBuf,
}

impl Node {
    fn new() -> Node {
        Node::with_pki_name("pki", &[])
    }

    fn with_pki_name(name: &str, extra: &[&PrivateKey]) -> Node {
        let root = tempfile::tempdir().expect("a temporary directory");
        let (pki, manifests) = (root.path().join(name), root.path().join("manifests"));
        std::fs::create_dir_all(&pki).expect("pki");
        std::fs::create_dir_all(&manifests).expect("manifests");
        let signing = new_key();
        std::fs::write(pki.join("sa.key"), signing.to_pem().as_bytes()).expect("sa.key");
        let public: Vec<_> = std::iter::once(signing.public_key())
            .chain(extra.iter().map(|k| k.public_key()))
            .collect();
        std::fs::write(pki.join("sa.pub"), public_keys_to_pem(public)).expect("sa.pub");
        // As kubeadm writes them; the first edit names `pki`.
        let dir = "/etc/kubernetes/pki";
        std::fs::write(
            manifests.join(APISERVER_MANIFEST),
            format!(
                "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n    \
                 - --authorization-mode=Node,RBAC\n    \
                 - --service-account-issuer=https://kubernetes.default.svc.cluster.local\n    \
                 - --service-account-key-file={dir}/sa.pub\n    \
                 - --service-account-signing-key-file={dir}/sa.key\n    image: registry.k8s.io/kube-apiserver:v1.36.3\n"
            ),
        )
        .expect("kube-apiserver.yaml");
        std::fs::write(
            manifests.join(CONTROLLER_MANAGER_MANIFEST),
            format!(
                "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    - kube-controller-manager\n    \
                 - --service-account-private-key-file={dir}/sa.key\n"
            ),
        )
        .expect("kube-controller-manager.yaml");
        Node {
            _root: root,
            pki,
            manifests,
        }
    }

    fn manifests_text(&self) -> (String, String) {
        let read = |name| std::fs::read_to_string(self.manifests.join(name)).expect("manifest");
        (read(APISERVER_MANIFEST), read(CONTROLLER_MANAGER_MANIFEST))
    }

    fn write_state(&self, json: &str) {
        std::fs::write(self.pki.join("ksa-rotation.json"), json).expect("state");
    }

    fn pki_dir(&self) -> PkiDir {
        PkiDir {
            dir: self.pki.clone(),
        }
    }

    fn request(&self) -> RotateRequest {
        RotateRequest {
            pki_dir: self.pki.clone(),
            manifests_dir: self.manifests.clone(),
            connection: {
                let config = kube::Config::new(NO_API_SERVER.parse().expect("a URL"));
                crate::connection::Connection {
                    client: kube::Client::try_from(config.clone()).expect("a client"),
                    config,
                    context: None,
                    source: crate::connection::KubeconfigSource::InCluster,
                }
            },
            skip_prompt: true,
            wait: false,
            timeout: Some(Duration::from_secs(1)),
            issuer: None,
            changes_key: true,
            dry_run: false,
            output: crate::args::Output::Text,
            accept_outside_legacy_tokens: false,
        }
    }

    /// Applies one effect as `rotate` does.
    async fn apply(&self, state: &RotationState, effect: Effect) -> Result<(), String> {
        let config = kube::Config::new(NO_API_SERVER.parse().expect("a URL"));
        let client = kube::Client::try_from(config.clone()).expect("a client");
        let cluster = TargetCluster::new(client, config);
        let (pki, policy) = (self.pki_dir(), Policy::default());
        let mut world = node(&pki, &self.manifests, &cluster, &policy);
        match world.apply(state, &effect).await {
            Ok(()) => Ok(()),
            Err(KubeadmError::Files(error)) => Err(format!("{error:#}")),
            Err(KubeadmError::Cluster(error)) => panic!("{effect:?} reached the cluster: {error}"),
        }
    }

    /// The kids of every public key in the files kube-apiserver's manifest
    /// names in --service-account-key-file.
    fn trusted_kids(&self) -> Vec<KeyId> {
        let (apiserver, _) = self.manifests_text();
        let prefix = format!("- --{KEY_FILE}=");
        apiserver
            .lines()
            .filter_map(|line| line.trim().strip_prefix(&prefix))
            .flat_map(|file| {
                let pem = std::fs::read(file).expect("a key file the manifest names");
                parse_pem(&pem)
                    .expect("keys")
                    .public_keys()
                    .map(|k| k.kid().clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn state(json: &str) -> RotationState {
    serde_json::from_str(json).expect("a rotation state")
}

async fn rotate(node: &Node) -> Result<u8, (u8, String)> {
    super::rotate(node.request())
        .await
        .map_err(|failure| (failure.code, format!("{:#}", failure.error)))
}

// Finding 10a: a state file naming a version whose key files are missing.

#[tokio::test]
async fn a_state_naming_missing_key_files_is_refused_and_the_manifests_are_unchanged() {
    let node = Node::new();
    node.write_state(r#"{"keyVersion":5,"step":"Trust"}"#);
    let before = node.manifests_text();
    let (code, message) = rotate(&node).await.expect_err("refused");
    assert_ne!(code, 0);
    assert!(message.contains("sa-v4.key"), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("copy"), "says how to recover: {message}");
    assert_eq!(node.manifests_text(), before);
}

#[tokio::test]
async fn key_flags_are_never_pointed_at_missing_or_mismatched_key_files() {
    let node = Node::new();
    let trust = state(r#"{"keyVersion":5,"step":"Trust"}"#);
    let before = node.manifests_text();
    let publish = Effect::PublishPublicKeys {
        public: vec![KeyVersion::new(4), KeyVersion::new(5)],
        signing: KeyVersion::new(4),
        issuers: None,
    };

    // Missing.
    let message = node
        .apply(&trust, publish.clone())
        .await
        .expect_err("refused");
    assert!(message.contains("sa-v4.key"), "{message}");
    assert_eq!(node.manifests_text(), before);

    // Present, but sa-v5.pub is not the public key of sa-v5.key.
    let pki = node.pki_dir();
    pki.store(KeyVersion::new(4), &new_key()).expect("key 4");
    pki.store(KeyVersion::new(5), &new_key()).expect("key 5");
    std::fs::write(
        pki.pub_path(KeyVersion::new(5)),
        new_key().public_key().to_pem(),
    )
    .expect("sa-v5.pub");
    let message = node
        .apply(&trust, publish.clone())
        .await
        .expect_err("refused");
    assert!(message.contains("sa-v5.pub"), "{message}");
    assert!(message.contains("does not match"), "{message}");
    assert_eq!(node.manifests_text(), before);

    // Not a key at all.
    std::fs::write(pki.pub_path(KeyVersion::new(5)), "hello\n").expect("sa-v5.pub");
    let message = node
        .apply(&trust, publish.clone())
        .await
        .expect_err("refused");
    assert!(message.contains("sa-v5.pub"), "{message}");
    assert_eq!(node.manifests_text(), before);

    // A public key where the private key belongs.
    let key = new_key();
    std::fs::write(pki.key_path(KeyVersion::new(4)), key.public_key().to_pem()).expect("sa-v4.key");
    let sign = Effect::SwitchSigner {
        signing: KeyVersion::new(4),
        public: vec![KeyVersion::new(4)],
        issuers: None,
    };
    let message = node.apply(&trust, sign).await.expect_err("refused");
    assert!(message.contains("sa-v4.key"), "{message}");
    assert_eq!(node.manifests_text(), before);
}

// Finding 10b: flag injection through --pki-dir.

const INJECTED: &str = "\n    - --authorization-mode=AlwaysAllow";

#[tokio::test]
async fn a_pki_dir_that_injects_a_flag_is_refused_and_the_manifests_are_unchanged() {
    let node = Node::with_pki_name(&format!("pki{INJECTED}"), &[]);
    let before = node.manifests_text();
    let (code, message) = rotate(&node).await.expect_err("refused");
    assert_eq!(code, crate::exit::BAD_INPUT, "{message}");
    assert!(message.contains("--pki-dir"), "{message}");
    assert!(message.contains(r"'\n'"), "names the character: {message}");
    assert!(message.contains("position"), "{message}");
    assert_eq!(node.manifests_text(), before);

    // The manifest editor refuses it too, whoever calls it.
    let pki = node.pki_dir();
    pki.import_kubeadm_key().expect("key 1");
    let settled = RotationState::settled(KeyVersion::FIRST);
    let publish = Effect::PublishPublicKeys {
        public: vec![KeyVersion::FIRST],
        signing: KeyVersion::FIRST,
        issuers: None,
    };
    let message = node.apply(&settled, publish).await.expect_err("refused");
    assert!(message.contains("not safe"), "{message}");
    assert_eq!(node.manifests_text(), before);
    assert!(!node.manifests_text().0.contains("AlwaysAllow"));
}

#[test]
fn directories_are_written_absolute_and_with_safe_characters_only() {
    let cwd = std::env::current_dir().expect("a working directory");
    assert_eq!(
        manifest_dir("--pki-dir", Path::new("etc/kubernetes/pki")).expect("accepted"),
        cwd.join("etc/kubernetes/pki")
    );
    assert_eq!(
        manifest_dir("--pki-dir", Path::new("/etc/kubernetes/./pki/")).expect("accepted"),
        Path::new("/etc/kubernetes/pki")
    );
    for (dir, named) in [
        ("/etc/kubernetes/pki\n    - --x=1", r"'\n'"),
        ("/etc/kube\trnetes/pki", r"'\t'"),
        ("/etc/kubernetes/pki: x", "' '"),
        ("/etc/kubernetes/pki:", "':'"),
        ("/etc/kubernetes/pki #x", "' '"),
        ("/etc/kubernetes/\"pki\"", "'\"'"),
        ("/etc/kubernetes/pki,/tmp", "','"),
        ("/etc/kubernetes/pki ", "' '"),
        ("/etc/kubernetes/../pki", "'..'"),
    ] {
        let refused = manifest_dir("--manifests-dir", Path::new(dir)).expect_err(dir);
        let message = format!("{:#}", refused.error);
        assert_eq!(refused.code, crate::exit::BAD_INPUT);
        assert!(message.contains("--manifests-dir"), "{message}");
        assert!(message.contains(named), "{dir:?}: {message}");
    }
}

// Finding 10c: extra public keys in kubeadm's sa.pub.

#[tokio::test]
async fn extra_public_keys_of_sa_pub_stay_trusted_until_retire() {
    let extra = new_key();
    let node = Node::with_pki_name("pki", &[&extra]);
    let pki = node.pki_dir();
    pki.import_kubeadm_key().expect("imported");
    let v1 = KeyVersion::FIRST;
    let v2 = KeyVersion::new(2);
    let generate = state(r#"{"keyVersion":2,"step":"Generate"}"#);
    node.apply(
        &generate,
        Effect::GenerateKey {
            version: v2,
            spec: KeySpec::EcP256,
        },
    )
    .await
    .expect("generated");
    let key = |v| pki.private_key(v).expect("key").kid().clone();
    let (first, second) = (key(v1), key(v2));

    node.apply(
        &state(r#"{"keyVersion":2,"step":"Trust"}"#),
        Effect::PublishPublicKeys {
            public: vec![v1, v2],
            signing: v1,
            issuers: None,
        },
    )
    .await
    .expect("trusted");
    assert_eq!(
        node.trusted_kids(),
        [first.clone(), extra.kid().clone(), second.clone()]
    );
    node.apply(
        &state(r#"{"keyVersion":2,"step":"Sign"}"#),
        Effect::SwitchSigner {
            signing: v2,
            public: vec![v1, v2],
            issuers: None,
        },
    )
    .await
    .expect("signing");
    assert_eq!(
        node.trusted_kids(),
        [first.clone(), extra.kid().clone(), second.clone()]
    );

    let retire = state(r#"{"keyVersion":2,"step":"Retire"}"#);
    node.apply(
        &retire,
        Effect::PublishPublicKeys {
            public: vec![v2],
            signing: v2,
            issuers: None,
        },
    )
    .await
    .expect("retired from the manifests");
    assert_eq!(node.trusted_kids(), std::slice::from_ref(&second));
    node.apply(&retire, Effect::RetireKey { version: v1 })
        .await
        .expect("deleted");
    let sa_pub = parse_pem(&std::fs::read(node.pki.join("sa.pub")).expect("sa.pub")).expect("keys");
    let kids: Vec<_> = sa_pub.public_keys().map(|k| k.kid().clone()).collect();
    assert_eq!(kids, [second]);
    assert!(!pki.pub_path(v1).exists());
}

#[tokio::test]
async fn issuer_lines_are_written_signing_first_with_the_default_audience_pinned() {
    let node = Node::new();
    let pki = node.pki_dir();
    pki.import_kubeadm_key().expect("imports");
    let trust = state(
        r#"{"keyVersion":1,"step":"Trust","changesKey":false,
            "issuer":{"from":"https://kubernetes.default.svc.cluster.local","to":"https://b.example"}}"#,
    );
    let (before, controller_manager) = node.manifests_text();
    let old = "https://kubernetes.default.svc.cluster.local";
    let publish = |issuers: &[&str]| Effect::PublishPublicKeys {
        public: vec![KeyVersion::FIRST],
        signing: KeyVersion::FIRST,
        issuers: Some(
            issuers
                .iter()
                .map(|i| ksa_core::issuer::Issuer::new(*i).expect("an issuer"))
                .collect(),
        ),
    };
    node.apply(&trust, publish(&[old, "https://b.example"]))
        .await
        .expect("applies");
    let (after, unchanged) = node.manifests_text();
    // An issuer rotation that keeps the key touches neither the key flags
    // nor kube-controller-manager.
    assert_eq!(unchanged, controller_manager);
    let issuer_lines = format!(
        "    - --service-account-issuer={old}\n    - --service-account-issuer=https://b.example\n    \
         - --api-audiences={old}\n"
    );
    // Only the issuer lines differ.
    let expected = before.replace(
        &format!("    - --service-account-issuer={old}\n"),
        &issuer_lines,
    );
    assert_eq!(after, expected);

    // Retire: the old issuer goes, the pinned audience stays.
    node.apply(&trust, publish(&["https://b.example"]))
        .await
        .expect("applies");
    let (retired, _) = node.manifests_text();
    assert!(
        retired
            .contains("    - --service-account-issuer=https://b.example\n    - --api-audiences=")
    );
    assert!(!retired.contains(&format!("--service-account-issuer={old}")));

    // An issuer that would change the YAML (from a hand-edited state file)
    // is refused, and nothing is written.
    for hostile in [
        "https://x.example/'",
        "https://x.example/#c",
        "https://x.example/a,b",
    ] {
        let message = node
            .apply(&trust, publish(&[hostile]))
            .await
            .expect_err("refused");
        assert!(message.contains("not safe"), "{message}");
        assert_eq!(node.manifests_text().0, retired);
    }
}
