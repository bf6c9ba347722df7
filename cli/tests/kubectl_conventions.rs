//! kubectl's habits, against a fake API server on 127.0.0.1: which
//! kubeconfig and context are used (`--kubeconfig`, `KUBECONFIG` merged,
//! `--context`), `--request-timeout`, errors that name the server, context
//! and file (as JSON with `-o json`), `rotate` failing within seconds when
//! the CRD, RBAC or the controller is missing, and `keys import`.

mod common;

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::fake_api::{self, FakeApi, Request};
use common::{ksa, run};

const DEADLINE: Duration = Duration::from_secs(60);

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

fn user_cluster_config() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(file, "name: user-cluster-1").expect("written");
    file
}

fn path(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().expect("a UTF-8 path")
}

/// `ksa ARGS` with no KUBECONFIG and an empty home, unless the test sets
/// them.
fn ksa_isolated(args: &[&str], home: &Path) -> std::process::Command {
    let mut command = ksa(args);
    command.env_remove("KUBECONFIG").env("HOME", home);
    command
}

#[test]
fn a_connection_error_names_the_server_the_context_and_the_kubeconfig() {
    let home = tempfile::tempdir().expect("home");
    let config = user_cluster_config();
    let server = format!("http://127.0.0.1:{}", closed_port());
    let kubeconfig = fake_api::kubeconfig(&[("admin", &server, "default")], "admin");
    let out = run(
        &mut ksa_isolated(
            &[
                "update",
                "credentials",
                "ksa-signing-key",
                "status",
                "--config",
                path(&config),
                "--kubeconfig",
                path(&kubeconfig),
            ],
            home.path(),
        ),
        DEADLINE,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    for part in [
        server.as_str(),
        "context admin",
        &format!("kubeconfig {}", path(&kubeconfig)),
    ] {
        assert!(
            out.stderr.contains(part),
            "{part:?} missing: {}",
            out.stderr
        );
    }
}

#[test]
fn with_o_json_an_error_is_one_json_object_on_stderr_and_the_exit_code_stays() {
    let home = tempfile::tempdir().expect("home");
    let config = user_cluster_config();
    let server = format!("http://127.0.0.1:{}", closed_port());
    let kubeconfig = fake_api::kubeconfig(&[("admin", &server, "default")], "admin");
    let out = run(
        &mut ksa_isolated(
            &[
                "update",
                "credentials",
                "ksa-signing-key",
                "status",
                "--config",
                path(&config),
                "--kubeconfig",
                path(&kubeconfig),
                "-o",
                "json",
            ],
            home.path(),
        ),
        DEADLINE,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    let error: serde_json::Value = serde_json::from_str(out.stderr.trim()).expect("JSON");
    assert_eq!(error["error"]["exitCode"], 1, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&server)),
        "{error}"
    );
    // A usage error too, with its code.
    let out = run(
        &mut ksa_isolated(&["token", "verify", "-o", "json", "--bogus"], home.path()),
        DEADLINE,
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    let error: serde_json::Value = serde_json::from_str(out.stderr.trim()).expect("JSON");
    assert_eq!(error["error"]["exitCode"], 2, "{error}");
}

#[test]
fn context_picks_the_context_and_kubeconfig_files_are_merged_in_order() {
    let home = tempfile::tempdir().expect("home");
    let config = user_cluster_config();
    let first = format!("http://127.0.0.1:{}", closed_port());
    let second = format!("http://127.0.0.2:{}", closed_port());
    let a = fake_api::kubeconfig(&[("first", &first, "default")], "first");
    let b = fake_api::kubeconfig(&[("second", &second, "default")], "second");
    let status = |extra: &[&str], kubeconfig_env: Option<String>| {
        let mut args = vec![
            "update",
            "credentials",
            "ksa-signing-key",
            "status",
            "--config",
            path(&config),
        ];
        args.extend_from_slice(extra);
        let mut command = ksa_isolated(&args, home.path());
        if let Some(value) = kubeconfig_env {
            command.env("KUBECONFIG", value);
        }
        run(&mut command, DEADLINE)
    };
    // KUBECONFIG: a missing file is skipped, the first current-context wins.
    let env = format!("/nonexistent/config:{}:{}", path(&a), path(&b));
    let out = status(&[], Some(env.clone()));
    assert!(
        out.stderr.contains(&first) && out.stderr.contains("context first"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(path(&a)) && out.stderr.contains(path(&b)),
        "names the merged files: {}",
        out.stderr
    );
    // --context picks the second file's context.
    let out = status(&["--context", "second"], Some(env));
    assert!(
        out.stderr.contains(&second) && out.stderr.contains("context second"),
        "{}",
        out.stderr
    );
    // --kubeconfig wins over KUBECONFIG.
    let out = status(&["--kubeconfig", path(&b)], Some(path(&a).to_owned()));
    assert!(out.stderr.contains(&second), "{}", out.stderr);
    // An unknown context is refused by name, exit 2.
    let out = status(&["--kubeconfig", path(&a), "--context", "third"], None);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("has no context \"third\"; it has: first"),
        "{}",
        out.stderr
    );
    // ~/.kube/config when nothing else is given.
    std::fs::create_dir(home.path().join(".kube")).expect("dir");
    std::fs::copy(a.path(), home.path().join(".kube/config")).expect("copied");
    let out = status(&[], None);
    assert!(
        out.stderr.contains(&first) && out.stderr.contains(".kube/config"),
        "{}",
        out.stderr
    );
}

#[test]
fn request_timeout_bounds_a_request_to_a_server_that_never_answers() {
    let home = tempfile::tempdir().expect("home");
    let config = user_cluster_config();
    // Accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = format!("http://{}", silent.local_addr().expect("address"));
    let kubeconfig = fake_api::kubeconfig(&[("admin", &server, "default")], "admin");
    let out = run(
        &mut ksa_isolated(
            &[
                "update",
                "credentials",
                "ksa-signing-key",
                "status",
                "--config",
                path(&config),
                "--kubeconfig",
                path(&kubeconfig),
                "--request-timeout",
                "1s",
            ],
            home.path(),
        ),
        Duration::from_secs(30),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.took < Duration::from_secs(15), "took {:?}", out.took);
    assert!(out.stderr.contains(&server), "{}", out.stderr);
    drop(silent);
}

/// The answers of an admin cluster for `rotate`, with `crd`, `access` and
/// `leases` as the test says.
fn admin_cluster(
    crd: bool,
    allowed: bool,
    leases: serde_json::Value,
) -> impl Fn(&Request) -> fake_api::Answer + Send + Sync + 'static {
    move |request: &Request| {
        let path = request.path.split('?').next().unwrap_or_default();
        match (request.method.as_str(), path) {
            ("GET", "/version") => fake_api::version(),
            ("GET", "/apis/ksa.dev/v1alpha1") if crd => fake_api::crd_served(),
            ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") => {
                fake_api::access(allowed, "no RBAC policy matched")
            }
            ("GET", "/apis/coordination.k8s.io/v1/leases") => fake_api::leases(leases.clone()),
            // One namespace's, listed or by name, as an API server answers.
            ("GET", path) if path.starts_with("/apis/coordination.k8s.io/v1/namespaces/") => {
                let rest = &path["/apis/coordination.k8s.io/v1/namespaces/".len()..];
                let (namespace, name) = match rest.split('/').collect::<Vec<_>>()[..] {
                    [namespace, "leases"] => (namespace, None),
                    [namespace, "leases", name] => (namespace, Some(name)),
                    _ => return fake_api::not_found(),
                };
                let items = leases.as_array().cloned().unwrap_or_default();
                let mut there = items
                    .into_iter()
                    .filter(|lease| lease["metadata"]["namespace"] == namespace);
                match name {
                    None => fake_api::leases(serde_json::Value::Array(there.collect())),
                    Some(name) => there
                        .find(|lease| lease["metadata"]["name"] == name)
                        .map_or_else(fake_api::not_found, |lease| (200, lease)),
                }
            }
            _ => fake_api::not_found(),
        }
    }
}

fn rotate(api: &FakeApi) -> common::Run {
    rotate_with(api, &[])
}

fn rotate_with(api: &FakeApi, extra: &[&str]) -> common::Run {
    let home = tempfile::tempdir().expect("home");
    let config = user_cluster_config();
    let kubeconfig = api.kubeconfig("default");
    let mut args = vec![
        "update",
        "credentials",
        "ksa-signing-key",
        "rotate",
        "--config",
        path(&config),
        "--kubeconfig",
        path(&kubeconfig),
        "--skip-prompt",
        "--wait",
    ];
    args.extend_from_slice(extra);
    let out = run(&mut ksa_isolated(&args, home.path()), DEADLINE);
    let changed: Vec<Request> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("ksasigningkeyrotations") && r.method != "GET")
        .collect();
    assert!(changed.is_empty(), "the rotation was changed: {changed:?}");
    assert!(out.took < Duration::from_secs(20), "took {:?}", out.took);
    out
}

#[test]
fn rotate_fails_within_seconds_when_the_crd_is_not_installed() {
    let api = FakeApi::serve(admin_cluster(false, true, serde_json::json!([])));
    let out = rotate(&api);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("ksasigningkeyrotations.ksa.dev is not installed"),
        "{}",
        out.stderr
    );
}

#[test]
fn rotate_fails_within_seconds_when_rbac_forbids_creating_the_rotation() {
    let api = FakeApi::serve(admin_cluster(true, false, serde_json::json!([])));
    let out = rotate(&api);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "RBAC forbids you to create ksasigningkeyrotations.ksa.dev in namespace user-cluster-1"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn namespace_names_the_namespace_of_the_rotation() {
    let api = FakeApi::serve(admin_cluster(true, false, serde_json::json!([])));
    let out = rotate_with(&api, &["-n", "elsewhere"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("in namespace elsewhere"),
        "{}",
        out.stderr
    );
    let read = api.requests().iter().any(|r| {
        r.path.starts_with(
            "/apis/ksa.dev/v1alpha1/namespaces/elsewhere/ksasigningkeyrotations/user-cluster-1",
        )
    });
    assert!(read, "{:?}", api.requests());
}

#[test]
fn rotate_fails_within_seconds_when_no_controller_holds_the_leader_lease() {
    let api = FakeApi::serve(admin_cluster(true, true, serde_json::json!([])));
    let out = rotate(&api);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("no ksa-controller is running: no Lease ksa-controller-leader"),
        "{}",
        out.stderr
    );
    // A Lease its holder stopped renewing an hour ago is no controller
    // either.
    let stale = serde_json::json!([{
        "metadata": {"name": "ksa-controller-leader", "namespace": "ksa-system"},
        "spec": {
            "holderIdentity": "ksa-controller-1",
            "leaseDurationSeconds": 15,
            "renewTime": jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_hours(1))
                .expect("a time")
                .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
                .to_string(),
        }
    }]);
    let api = FakeApi::serve(admin_cluster(true, true, stale));
    let out = rotate(&api);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("the Lease ksa-system/ksa-controller-leader was last renewed")
            && out.stderr.contains("(1h ago) by ksa-controller-1"),
        "{}",
        out.stderr
    );
}

/// A Lease a tenant made in its own namespace, named as a shard's leader
/// Lease and renewed just now (or, named as the controller's, renewed
/// years ahead), is no running controller.
#[test]
fn a_tenants_lease_is_no_running_controller() {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string();
    let tenants = serde_json::json!([{
        "metadata": {"name": "ksa-controller-leader-x", "namespace": "tenant-1"},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15, "renewTime": now}
    }]);
    let api = FakeApi::serve(admin_cluster(true, true, tenants));
    let out = rotate(&api);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "no ksa-controller is running: no Lease ksa-controller-leader in namespace ksa-system"
        ),
        "{}",
        out.stderr
    );
    let ahead = serde_json::json!([{
        "metadata": {"name": "ksa-controller-leader", "namespace": "ksa-system"},
        "spec": {"holderIdentity": "ksa-controller-\u{1b}[2J", "leaseDurationSeconds": 15,
            "renewTime": "2099-01-01T00:00:00.000000Z"}
    }]);
    let api = FakeApi::serve(admin_cluster(true, true, ahead));
    let out = rotate(&api);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("later than now") && !out.stderr.contains('\u{1b}'),
        "{:?}",
        out.stderr
    );
}

/// An API server that stores Secrets: enough for `keys import`.
fn secret_store() -> FakeApi {
    let secrets: std::sync::Mutex<std::collections::BTreeMap<String, serde_json::Value>> =
        std::sync::Mutex::default();
    FakeApi::serve(move |request| {
        let path = request.path.split('?').next().unwrap_or_default();
        let mut secrets = secrets.lock().expect("lock");
        match request.method.as_str() {
            "GET" if path == "/version" => fake_api::version(),
            // A cluster that signs with some other key.
            "GET" if path == "/openid/v1/jwks" => (
                200,
                serde_json::json!({"keys": [{"kty": "EC", "kid": "another-key"}]}),
            ),
            "GET" => match secrets.get(path) {
                Some(secret) => (200, secret.clone()),
                None => fake_api::not_found(),
            },
            "POST" => {
                let secret: serde_json::Value =
                    serde_json::from_str(&request.body).expect("a JSON body");
                let name = secret["metadata"]["name"].as_str().expect("a name");
                let key = format!("{path}/{name}");
                if secrets.contains_key(&key) {
                    return fake_api::status(409, "AlreadyExists", "exists");
                }
                secrets.insert(key, secret.clone());
                (201, secret)
            }
            _ => fake_api::not_found(),
        }
    })
}

fn generate_key(dir: &Path) -> String {
    let out = run(
        &mut ksa(&[
            "keys",
            "generate",
            "--algorithm",
            "ES256",
            "--out",
            dir.to_str().expect("path"),
        ]),
        DEADLINE,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    dir.join("sa.key").to_str().expect("path").to_owned()
}

/// `keys import` writes nothing until the cluster's API servers confirm
/// the key: this fake API server confirms nothing (it serves no
/// EndpointSlice and gives the probe account no uid), so nothing is
/// posted. The writes themselves, and each refusal, are checked on the
/// real control plane (tests/tests/first_rotation.rs).
#[test]
fn keys_import_writes_nothing_when_no_api_server_confirms_the_key() {
    let home = tempfile::tempdir().expect("home");
    let api = secret_store();
    // The context's namespace is the default.
    let kubeconfig = api.kubeconfig("user-cluster-1");
    let keys = tempfile::tempdir().expect("dir");
    let key = generate_key(&keys.path().join("current"));
    let out = run(
        &mut ksa_isolated(
            &[
                "keys",
                "import",
                "--rotation",
                "user-cluster-1",
                "--key",
                &key,
                "--kubeconfig",
                path(&kubeconfig),
                "-o",
                "json",
            ],
            home.path(),
        ),
        DEADLINE,
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr
            .contains("asking the API server instances which key they use"),
        "{}",
        out.stderr
    );
    let secrets_posted = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/secrets"))
        .count();
    assert_eq!(secrets_posted, 0, "a Secret was written");
}

#[test]
fn kubectl_complete_ksa_answers_in_cobras_protocol() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl_complete-ksa"))
        .args([
            "update",
            "credentials",
            "ksa-signing-key",
            "status",
            "-o",
            "",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "text\nwide\njson\nyaml\njsonpath=\n:4\n"
    );
    // As a Cobra plugin's script passes it on.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl_complete-ksa"))
        .args(["__complete", "ke"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("keys\t") && text.ends_with(":4\n"),
        "{text}"
    );
}

#[test]
fn every_command_that_prints_data_takes_o_json_and_yaml() {
    let dir = tempfile::tempdir().expect("dir");
    let key = generate_key(&dir.path().join("k"));
    let token = common::vector_token("valid RS256 bound token");
    let jwks = common::jwks_file();
    let jwks = jwks.path().to_str().expect("path").to_owned();
    let line = "State of KSASigningKeyRotation with KSASigningKeyVersion 2 is - status: True, reason: KSASigningKeyRotationCompleted, message:{\"tokenVersion\":2,\"privateKeyVersion\":2,\"publicKeyVersions\":[2]}";
    let out_dir = dir.path().join("generated");
    let commands: Vec<Vec<&str>> = vec![
        vec!["version"],
        vec!["status", "decode", line],
        vec!["keys", "jwks", &key],
        vec!["token", "decode", &token],
        vec![
            "token",
            "verify",
            &token,
            "--jwks",
            &jwks,
            "--at",
            "1800000000",
        ],
        vec![
            "token",
            "mint",
            "--key",
            &key,
            "legacy",
            "--namespace",
            "d",
            "--service-account",
            "a",
            "--uid",
            "u",
            "--secret",
            "s",
        ],
    ];
    for format in ["json", "yaml"] {
        for args in &commands {
            let mut args = args.clone();
            args.extend(["-o", format]);
            let out = run(&mut ksa(&args), DEADLINE);
            assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
            let parsed: Result<serde_json::Value, String> = match format {
                "json" => serde_json::from_str(&out.stdout).map_err(|e| e.to_string()),
                _ => serde_saphyr::from_str(&out.stdout).map_err(|e| e.to_string()),
            };
            let value = parsed.unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.stdout));
            assert!(value.is_object(), "{args:?}: {value}");
        }
        // keys generate writes files; a fresh directory for each format.
        let out = run(
            &mut ksa(&[
                "keys",
                "generate",
                "--algorithm",
                "ES256",
                "--out",
                out_dir.join(format).to_str().expect("path"),
                "-o",
                format,
            ]),
            DEADLINE,
        );
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(out.stdout.contains("kid"), "{}", out.stdout);
    }
}

#[test]
fn rotate_gives_a_controller_that_is_starting_a_few_seconds_to_take_the_lease() {
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let lists = admin_cluster(true, true, serde_json::json!([]));
    let api = FakeApi::serve(move |request| {
        if request
            .path
            .starts_with("/apis/coordination.k8s.io/v1/leases")
        {
            // Taken on the third look.
            if asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                return fake_api::leases(serde_json::json!([]));
            }
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
                .to_string();
            return fake_api::leases(serde_json::json!([{
                "metadata": {"name": "ksa-controller-leader", "namespace": "default"},
                "spec": {"holderIdentity": "ksa-controller-1", "leaseDurationSeconds": 15, "renewTime": now}
            }]));
        }
        lists(request)
    });
    let home = tempfile::tempdir().expect("home");
    let config = user_cluster_config();
    let kubeconfig = api.kubeconfig("default");
    let out = run(
        &mut ksa_isolated(
            &[
                "update",
                "credentials",
                "ksa-signing-key",
                "rotate",
                "--config",
                path(&config),
                "--kubeconfig",
                path(&kubeconfig),
                "--skip-prompt",
            ],
            home.path(),
        ),
        DEADLINE,
    );
    assert!(!out.stderr.contains("no ksa-controller"), "{}", out.stderr);
    let looks = api
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/apis/coordination.k8s.io/v1/leases"))
        .count();
    assert_eq!(looks, 3, "{:?}", api.requests());
}

#[test]
fn status_watch_of_a_rotation_no_controller_carries_out_fails_within_seconds() {
    let rotation = serde_json::json!({
        "apiVersion": "ksa.dev/v1alpha1", "kind": "KSASigningKeyRotation",
        "metadata": {"name": "user-cluster-1", "namespace": "user-cluster-1"},
        "spec": {"keyVersion": 2}
    });
    let lists = admin_cluster(true, true, serde_json::json!([]));
    let api = FakeApi::serve(move |request| {
        if request.path
            == "/apis/ksa.dev/v1alpha1/namespaces/user-cluster-1/ksasigningkeyrotations/user-cluster-1"
        {
            return (200, rotation.clone());
        }
        lists(request)
    });
    let home = tempfile::tempdir().expect("home");
    let config = user_cluster_config();
    let kubeconfig = api.kubeconfig("default");
    let out = run(
        &mut ksa_isolated(
            &[
                "update",
                "credentials",
                "ksa-signing-key",
                "status",
                "--watch",
                "--config",
                path(&config),
                "--kubeconfig",
                path(&kubeconfig),
            ],
            home.path(),
        ),
        DEADLINE,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("no ksa-controller is running"),
        "{}",
        out.stderr
    );
    assert!(out.took < Duration::from_secs(20), "took {:?}", out.took);
}
