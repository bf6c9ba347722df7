//! The audit endpoint against hostile posts: no cluster needed.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;

use super::*;

const TOKEN_A: &str = "token-of-rotation-a";
const TOKEN_B: &str = "token-of-rotation-b";
/// What a token in a RequestResponse event's response looks like.
const SECRET_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.SECRET-TOKEN-PAYLOAD.signature";

fn feeds() -> AuditFeeds {
    let feeds = AuditFeeds::default();
    feeds.register("ns", "a", TOKEN_A.as_bytes());
    feeds.register("ns", "b", TOKEN_B.as_bytes());
    feeds
}

/// A node's TokenRequest for pod `pod` (uid `uid`), as the backend posts
/// it at `Request` level.
fn event(user: &str, pod: &str, uid: &str, received: &str) -> serde_json::Value {
    serde_json::json!({
        "level": "Request",
        "auditID": "6f8d5c0e-0000-0000-0000-000000000000",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/apps/serviceaccounts/app/token",
        "verb": "create",
        "user": {"username": user, "groups": ["system:nodes", "system:authenticated"]},
        "sourceIPs": ["10.0.0.1"],
        "objectRef": {
            "resource": "serviceaccounts",
            "namespace": "apps",
            "name": "app",
            "apiVersion": "v1",
            "subresource": "token"
        },
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {
                "audiences": ["https://kubernetes.default.svc"],
                "expirationSeconds": 600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid}
            },
            "status": {"token": "", "expirationTimestamp": null}
        },
        "requestReceivedTimestamp": received,
        "stageTimestamp": received
    })
}

fn list(items: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "metadata": {},
        "items": items
    }))
    .expect("serializes")
}

async fn post(feeds: &AuditFeeds, path: &str, token: Option<&str>, body: Vec<u8>) -> StatusCode {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    router(feeds.clone())
        .oneshot(request.body(Body::from(body)).expect("request"))
        .await
        .expect("answers")
        .status()
}

fn node_event() -> serde_json::Value {
    event(
        "system:node:worker-0",
        "reader-1",
        "uid-1",
        "2026-12-05T00:10:05.123456Z",
    )
}

#[tokio::test]
async fn a_nodes_token_request_is_recorded_for_its_rotation_only() {
    let feeds = feeds();
    let status = post(
        &feeds,
        "/audit/ns/a",
        Some(TOKEN_A),
        list(vec![node_event()]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        feeds.records("ns", "a"),
        vec![Seen {
            namespace: "apps".into(),
            pod: "reader-1".into(),
            uid: "uid-1".into(),
            received: "2026-12-05T00:10:05.123456Z".parse().expect("time"),
        }]
    );
    assert!(
        feeds.records("ns", "b").is_empty(),
        "rotation b saw nothing"
    );
    let requests = feeds.feed("ns", "a").token_requests();
    assert_eq!(requests.len(), 1);
    assert!(feeds.feed("ns", "b").token_requests().is_empty());
}

#[tokio::test]
async fn a_wrong_missing_or_other_rotations_token_records_nothing() {
    let feeds = feeds();
    let body = || list(vec![node_event()]);
    assert_eq!(
        post(&feeds, "/audit/ns/a", None, body()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some("guess"), body()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(""), body()).await,
        StatusCode::UNAUTHORIZED
    );
    // Rotation B's token, on rotation A's path.
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_B), body()).await,
        StatusCode::UNAUTHORIZED
    );
    // A token with something appended, or its prefix.
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(&format!("{TOKEN_A}x")), body()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(&TOKEN_A[..5]), body()).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(feeds.records("ns", "a").is_empty());
    assert!(feeds.records("ns", "b").is_empty());
    // A rotation not registered here (a standby): retry elsewhere.
    assert_eq!(
        post(&feeds, "/audit/ns/c", Some(TOKEN_A), body()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Only POST.
    let get = router(feeds.clone())
        .oneshot(
            Request::get("/audit/ns/a")
                .header("authorization", format!("Bearer {TOKEN_A}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answers");
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    // A token re-registered (a new Secret) forgets what the old one saw,
    // and the old one is refused.
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), body()).await,
        StatusCode::OK
    );
    feeds.register("ns", "a", b"a-new-token");
    assert!(feeds.records("ns", "a").is_empty());
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), body()).await,
        StatusCode::UNAUTHORIZED
    );
    feeds.forget("ns", "a");
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some("a-new-token"), body()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn an_oversize_body_is_refused_unread() {
    let feeds = feeds();
    let mut events = Vec::new();
    // Each event is under 1 KiB: 10000 of them are over 8 MiB.
    for i in 0..10_000 {
        events.push(event(
            "system:node:worker-0",
            &format!("pod-{i}"),
            &format!("uid-{i}"),
            "2026-12-05T00:10:05Z",
        ));
    }
    let body = list(events);
    assert!(body.len() > MAX_BODY, "{} bytes", body.len());
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), body).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(feeds.records("ns", "a").is_empty());
}

#[tokio::test]
async fn only_a_nodes_successful_token_request_bound_to_a_pod_counts() {
    let feeds = feeds();
    let mut forged_user = node_event();
    forged_user["user"]["username"] = "alice".into();
    let mut node_prefix_only = node_event();
    node_prefix_only["user"]["username"] = "system:node:".into();
    let mut impersonating = node_event();
    impersonating["user"]["username"] = "system:node:worker-0".into();
    impersonating["impersonatedUser"] = serde_json::json!({"username": "system:node:worker-1"});
    let mut service_account = node_event();
    service_account["user"]["username"] = "system:serviceaccount:apps:app".into();
    let mut refused = node_event();
    refused["responseStatus"]["code"] = 403.into();
    let mut no_code = node_event();
    no_code["responseStatus"] = serde_json::json!({"metadata": {}});
    let mut received_stage = node_event();
    received_stage["stage"] = "RequestReceived".into();
    let mut get = node_event();
    get["verb"] = "get".into();
    let mut secret = node_event();
    secret["objectRef"]["resource"] = "secrets".into();
    let mut bound_to_secret = node_event();
    bound_to_secret["requestObject"]["spec"]["boundObjectRef"]["kind"] = "Secret".into();
    let mut unbound = node_event();
    unbound["requestObject"]["spec"]
        .as_object_mut()
        .expect("object")
        .remove("boundObjectRef");
    let mut no_time = node_event();
    no_time
        .as_object_mut()
        .expect("object")
        .remove("requestReceivedTimestamp");
    let mut long_uid = node_event();
    long_uid["requestObject"]["spec"]["boundObjectRef"]["uid"] = "u".repeat(300).into();
    let body = list(vec![
        forged_user,
        node_prefix_only,
        impersonating,
        service_account,
        refused,
        no_code,
        received_stage,
        get,
        secret,
        bound_to_secret,
        unbound,
        no_time,
        long_uid,
    ]);
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), body).await,
        StatusCode::OK
    );
    assert!(
        feeds.records("ns", "a").is_empty(),
        "{:?}",
        feeds.records("ns", "a")
    );
}

#[tokio::test]
async fn a_request_response_event_is_used_without_its_token_being_kept() {
    let feeds = feeds();
    let mut with_token = node_event();
    with_token["level"] = "RequestResponse".into();
    with_token["responseObject"] = serde_json::json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "status": {"token": SECRET_JWT, "expirationTimestamp": "2026-12-05T00:20:05Z"}
    });
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), list(vec![with_token])).await,
        StatusCode::OK
    );
    let records = feeds.records("ns", "a");
    assert_eq!(records.len(), 1);
    // Nothing recorded holds it: what is kept is the namespace, pod, uid
    // and time, each checked here.
    let kept = format!("{records:?}");
    assert!(!kept.contains("SECRET-TOKEN"), "{kept}");
    // A response object of the wrong shape is skipped unread, not refused.
    let mut odd = node_event();
    odd["responseObject"] = serde_json::json!([1, "x", {"token": SECRET_JWT}]);
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), list(vec![odd])).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn bodies_that_are_no_event_list_are_refused() {
    let feeds = feeds();
    for body in [
        b"not json".to_vec(),
        b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1beta1\",\"items\":[]}".to_vec(),
        b"{\"kind\":\"Pod\",\"apiVersion\":\"audit.k8s.io/v1\"}".to_vec(),
        b"{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":{}}".to_vec(),
    ] {
        assert_eq!(
            post(&feeds, "/audit/ns/a", Some(TOKEN_A), body.clone()).await,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn the_latest_request_of_a_pod_is_kept_and_the_records_are_bounded() {
    let feeds = feeds();
    let seen = |uid: &str, at: &str| Seen {
        namespace: "apps".into(),
        pod: "p".into(),
        uid: uid.into(),
        received: at.parse().expect("time"),
    };
    feeds.record("ns", "a", vec![seen("u", "2026-12-05T00:10:00Z")]);
    feeds.record("ns", "a", vec![seen("u", "2026-12-05T00:09:00Z")]);
    assert_eq!(
        feeds.records("ns", "a")[0].received,
        "2026-12-05T00:10:00Z".parse::<Timestamp>().expect("time")
    );
    let many: Vec<Seen> = (0..MAX_PODS + 10)
        .map(|i| seen(&format!("u{i}"), "2026-12-05T00:11:00Z"))
        .collect();
    let dropped = feeds.record("ns", "a", many);
    assert_eq!(feeds.records("ns", "a").len(), MAX_PODS);
    assert_eq!(dropped, 11, "one was known already");
}

#[test]
fn the_policy_logs_only_node_token_requests_at_request_level() {
    assert!(POLICY.contains("- level: Request\n"));
    assert!(!POLICY.contains("level: RequestResponse"));
    assert!(!POLICY.contains("level: Metadata"));
    assert!(POLICY.contains("resources: [serviceaccounts/token]"));
    assert!(POLICY.trim_end().ends_with("- level: None"));
}

#[test]
fn the_kubeconfig_names_the_rotations_path_and_reads_back_its_token() {
    let settings = Settings {
        feeds: AuditFeeds::default(),
        public_url: "https://ksa.example:9443/audit".into(),
        ca: Some(b"-----BEGIN CERTIFICATE-----\n".to_vec()),
    };
    let text = kubeconfig(&settings, "ns", "a", "tok");
    assert!(
        text.contains("    server: https://ksa.example:9443/audit/ns/a\n"),
        "{text}"
    );
    assert!(text.contains("certificate-authority-data: "));
    assert_eq!(token_of(&text), Some("tok"));
    let without_ca = Settings {
        ca: None,
        ..settings
    };
    assert!(!kubeconfig(&without_ca, "ns", "a", "tok").contains("certificate-authority"));
    assert_ne!(new_token().expect("random"), new_token().expect("random"));
    assert_eq!(new_token().expect("random").len(), 43);
}

#[test]
fn the_flags_refuse_plain_http_and_a_url_without_a_certificate() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        audit: AuditArgs,
    }
    let parse = |args: &[&str]| {
        Flags::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .expect("parses")
            .audit
            .settings()
    };
    assert!(parse(&[]).expect("no endpoint").is_none());
    let error = parse(&["--audit-public-url", "http://ksa.example/audit"])
        .expect_err("plain HTTP")
        .to_string();
    assert!(error.contains("https://"), "{error}");
    let error = parse(&["--audit-public-url", "https://ksa.example/audit"])
        .expect_err("no certificate")
        .to_string();
    assert!(error.contains("--audit-tls-cert-file"), "{error}");
    let (settings, _, _) = parse(&[
        "--audit-public-url",
        "https://ksa.example/audit/",
        "--audit-tls-cert-file",
        "c.pem",
        "--audit-tls-key-file",
        "k.pem",
    ])
    .expect("settings")
    .expect("an endpoint");
    assert_eq!(settings.public_url, "https://ksa.example/audit");
}
