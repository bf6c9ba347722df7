//! A fake Kubernetes API server on 127.0.0.1, plain HTTP, one request per
//! connection: each test says how it answers, and reads back what it was
//! asked. Enough for `ksa`'s first requests, not a cluster.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A request as the fake server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path with its query.
    pub path: String,
    pub body: String,
}

/// An answer: the status code and a JSON body.
pub type Answer = (u16, serde_json::Value);

pub struct FakeApi {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeApi {
    /// Serves `answer` on a free port until the test ends.
    pub fn serve(answer: impl Fn(&Request) -> Answer + Send + Sync + 'static) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let answer = Arc::new(answer);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                let answer = answer.clone();
                std::thread::spawn(move || handle(stream, &seen, &*answer));
            }
        });
        FakeApi { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// A kubeconfig file whose current context `fake` points here, with
    /// `namespace` as the context's namespace.
    pub fn kubeconfig(&self, namespace: &str) -> tempfile::NamedTempFile {
        kubeconfig(&[("fake", &self.url(), namespace)], "fake")
    }
}

/// A kubeconfig with one context, cluster and user per `(name, server,
/// namespace)`.
pub fn kubeconfig(contexts: &[(&str, &str, &str)], current: &str) -> tempfile::NamedTempFile {
    let mut text = format!("apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n");
    for (name, server, _) in contexts {
        text.push_str(&format!(
            "- name: {name}\n  cluster:\n    server: {server}\n"
        ));
    }
    text.push_str("users:\n");
    for (name, _, _) in contexts {
        text.push_str(&format!("- name: {name}\n  user:\n    token: fake-token\n"));
    }
    text.push_str("contexts:\n");
    for (name, _, namespace) in contexts {
        text.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: {name}\n    namespace: {namespace}\n"
        ));
    }
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("written");
    file
}

fn handle(
    stream: TcpStream,
    seen: &Mutex<Vec<Request>>,
    answer: &(dyn Fn(&Request) -> Answer + Send + Sync),
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let request = Request {
        method,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    seen.lock().expect("lock").push(request.clone());
    let (code, json) = answer(&request);
    let body = json.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// `GET /version`.
pub fn version() -> Answer {
    (
        200,
        serde_json::json!({
            "major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "fake",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64"
        }),
    )
}

/// A Kubernetes `Status` error.
pub fn status(code: u16, reason: &str, message: &str) -> Answer {
    (
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code
        }),
    )
}

pub fn not_found() -> Answer {
    status(404, "NotFound", "not found")
}

/// `GET /apis/ksa.dev/v1alpha1` when the CRD is installed.
pub fn crd_served() -> Answer {
    (
        200,
        serde_json::json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "ksa.dev/v1alpha1",
            "resources": [{
                "name": "ksasigningkeyrotations", "singularName": "ksasigningkeyrotation",
                "namespaced": true, "kind": "KSASigningKeyRotation",
                "verbs": ["create", "get", "list", "patch", "watch"]
            }]
        }),
    )
}

/// A SelfSubjectAccessReview's answer.
pub fn access(allowed: bool, reason: &str) -> Answer {
    (
        201,
        serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {}, "status": {"allowed": allowed, "reason": reason}
        }),
    )
}

/// A list of Leases.
pub fn leases(items: serde_json::Value) -> Answer {
    (
        200,
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
            "metadata": {"resourceVersion": "1"}, "items": items
        }),
    )
}
