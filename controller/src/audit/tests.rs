//! The audit endpoint against hostile posts: no cluster needed.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;

use super::*;

const TOKEN_A: &str = "token-of-rotation-a";
const TOKEN_B: &str = "token-of-rotation-b";
/// What a token in a RequestResponse event's response looks like.
const SECRET_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.SECRET-TOKEN-PAYLOAD.signature";

/// When the rotations' RefreshTokens began, in the tests.
const STEP_START: &str = "2026-12-05T00:00:00Z";

fn at(time: &str) -> Timestamp {
    time.parse().expect("a time")
}

/// A leader's feeds: rotations a and b registered, in RefreshTokens since
/// [`STEP_START`].
fn feeds() -> AuditFeeds {
    let feeds = AuditFeeds::default();
    feeds.lead();
    feeds.register("ns", "a", TOKEN_A.as_bytes(), Some(at(STEP_START)));
    feeds.register("ns", "b", TOKEN_B.as_bytes(), Some(at(STEP_START)));
    feeds
}

/// What rotation `namespace/name` recorded: uid to time received.
fn records(feeds: &AuditFeeds, namespace: &str, name: &str) -> BTreeMap<String, Timestamp> {
    feeds.feed(namespace, name).token_requests()
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
        records(&feeds, "ns", "a"),
        BTreeMap::from([("uid-1".to_owned(), at("2026-12-05T00:10:05.123456Z"))])
    );
    assert!(
        records(&feeds, "ns", "b").is_empty(),
        "rotation b saw nothing"
    );
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
    assert!(records(&feeds, "ns", "a").is_empty());
    assert!(records(&feeds, "ns", "b").is_empty());
    // A rotation not registered: as a wrong token.
    assert_eq!(
        post(&feeds, "/audit/ns/c", Some(TOKEN_A), body()).await,
        StatusCode::UNAUTHORIZED
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
    feeds.register("ns", "a", b"a-new-token", Some(at(STEP_START)));
    assert!(records(&feeds, "ns", "a").is_empty());
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), body()).await,
        StatusCode::UNAUTHORIZED
    );
    feeds.forget("ns", "a");
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some("a-new-token"), body()).await,
        StatusCode::UNAUTHORIZED
    );
}

/// The whole answer to a post: status, headers and body.
async fn whole_answer(
    feeds: &AuditFeeds,
    path: &str,
    token: &str,
) -> (StatusCode, Vec<(String, Vec<u8>)>, Vec<u8>) {
    let request = Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(list(vec![node_event()])))
        .expect("request");
    let response = router(feeds.clone())
        .oneshot(request)
        .await
        .expect("answers");
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("a body")
        .to_vec();
    (status, headers, body)
}

/// Without a rotation's token, no one learns whether it exists: the
/// leader answers a rotation it does not know as a wrong token, and a
/// standby answers 503 whether it exists or not.
#[tokio::test]
async fn whether_a_rotation_exists_is_not_told_without_its_token() {
    let feeds = feeds();
    let known = whole_answer(&feeds, "/audit/ns/a", "guess").await;
    let unknown = whole_answer(&feeds, "/audit/ns/nothing", "guess").await;
    assert_eq!(known.0, StatusCode::UNAUTHORIZED);
    assert_eq!(known, unknown);
    feeds.stand_by();
    let known = whole_answer(&feeds, "/audit/ns/a", TOKEN_A).await;
    let unknown = whole_answer(&feeds, "/audit/ns/nothing", "guess").await;
    assert_eq!(known.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(known, unknown);
    // A standby forgot every rotation: leading again, it records nothing
    // until the rotations are registered again.
    feeds.lead();
    assert_eq!(
        whole_answer(&feeds, "/audit/ns/a", TOKEN_A).await.0,
        StatusCode::UNAUTHORIZED
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
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), body.clone()).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(records(&feeds, "ns", "a").is_empty());
    // Its length declared: refused before a byte is read.
    let request = Request::post("/audit/ns/a")
        .header("authorization", format!("Bearer {TOKEN_A}"))
        .header("content-length", body.len().to_string())
        .body(Body::from(body))
        .expect("request");
    let answer = router(feeds.clone())
        .oneshot(request)
        .await
        .expect("answers");
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// A body of many tiny events (`{}` is 3 bytes: 2 MiB of them are
/// 700,000 events) is refused once past [`MAX_ITEMS`], each event read
/// into a record or nothing as it comes; kind and version are checked
/// whatever order the fields come in.
#[tokio::test]
async fn a_body_of_too_many_events_is_refused() {
    let feeds = feeds();
    let tiny = |n: usize| {
        let items = vec!["{}"; n].join(",");
        format!("{{\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\",\"items\":[{items}]}}")
            .into_bytes()
    };
    let flood = tiny(MAX_BODY / 3 - 100);
    assert!(flood.len() <= MAX_BODY);
    assert_eq!(
        post(&feeds, "/audit/ns/a", Some(TOKEN_A), flood).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        token_requests(&tiny(MAX_ITEMS + 1)),
        Err(BadBody::TooManyItems)
    );
    assert_eq!(token_requests(&tiny(MAX_ITEMS)), Ok(Vec::new()));
    // Items first, then another kind: refused all the same.
    let items_first = |kind: &str| {
        format!(
            "{{\"items\":[{}],\"kind\":\"{kind}\",\"apiVersion\":\"audit.k8s.io/v1\"}}",
            node_event()
        )
    };
    assert_eq!(
        token_requests(items_first("Pod").as_bytes()),
        Err(BadBody::NotAnEventList)
    );
    let good_items_first = items_first("EventList");
    assert_eq!(
        token_requests(good_items_first.as_bytes()).map(|seen| seen.len()),
        Ok(1)
    );
    // A field twice: refused.
    let twice =
        "{\"kind\":\"EventList\",\"kind\":\"EventList\",\"apiVersion\":\"audit.k8s.io/v1\"}";
    assert!(matches!(
        token_requests(twice.as_bytes()),
        Err(BadBody::Unparsable { .. })
    ));
    assert!(records(&feeds, "ns", "a").is_empty());
}

/// Bodies are read a few at a time: past them, a post waits its turn, and
/// is answered 503 (retried) when none comes; a post without the token
/// never waits.
#[tokio::test]
async fn one_rotations_slow_posts_do_not_keep_anothers_out() {
    let feeds = feeds();
    let app = router_with(feeds.clone(), MAX_READS, Duration::from_millis(200));
    let post = |token: &str, body: Body| {
        let rotation = if token == TOKEN_A { "a" } else { "b" };
        Request::post(format!("/audit/ns/{rotation}"))
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .expect("request")
    };
    // Bodies that never end, each holding a turn until READ_TIMEOUT.
    let never = || Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let slow: Vec<_> = (0..MAX_READS)
        .map(|_| tokio::spawn(app.clone().oneshot(post(TOKEN_A, never()))))
        .collect();
    let turns = feeds
        .lock()
        .rotations
        .get(&("ns".to_owned(), "a".to_owned()))
        .map(|feed| feed.turns.clone())
        .expect("registered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while turns.0.available_permits() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow posts never took their turns"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Rotation a holds all its turns: its next post waits, then 503.
    let busy = app
        .clone()
        .oneshot(post(TOKEN_A, Body::from(list(vec![node_event()]))))
        .await
        .expect("answers");
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Rotation b's batch is read and recorded all the same.
    let other = app
        .oneshot(post(TOKEN_B, Body::from(list(vec![node_event()]))))
        .await
        .expect("answers");
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(records(&feeds, "ns", "b").len(), 1);
    for post in slow {
        post.abort();
    }
}

#[tokio::test]
async fn bodies_are_read_a_few_at_a_time() {
    let feeds = feeds();
    let app = router_with(feeds.clone(), 0, Duration::ZERO);
    let request = |token: &str| {
        Request::post("/audit/ns/a")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(list(vec![node_event()])))
            .expect("request")
    };
    let busy = app
        .clone()
        .oneshot(request(TOKEN_A))
        .await
        .expect("answers");
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(busy.headers().contains_key("retry-after"));
    let wrong = app.oneshot(request("guess")).await.expect("answers");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(records(&feeds, "ns", "a").is_empty());
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
    long_uid["requestObject"]["spec"]["boundObjectRef"]["uid"] = "u".repeat(MAX_UID + 1).into();
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
        records(&feeds, "ns", "a").is_empty(),
        "{:?}",
        records(&feeds, "ns", "a")
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
    let kept = records(&feeds, "ns", "a");
    assert_eq!(kept.len(), 1);
    // Nothing recorded holds it: what is kept is the uid and time, each
    // checked here.
    let kept = format!("{kept:?}");
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
async fn an_event_of_another_shape_is_skipped_not_the_batch_refused() {
    let feeds = feeds();
    // A policy merged with the operator's logs patches too: their
    // requestObject is a JSON Patch list. Others may carry fields of types
    // this never reads.
    let patch = serde_json::json!({
        "stage": "ResponseComplete",
        "verb": "patch",
        "user": {"username": "admin"},
        "objectRef": {"resource": "deployments", "namespace": "apps", "name": "web"},
        "responseStatus": {"code": 200},
        "requestObject": [
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/metadata/labels/x", "value": "y"}
        ]
    });
    let odd = serde_json::json!({"stage": 7, "user": "not an object", "objectRef": []});
    let status = post(
        &feeds,
        "/audit/ns/a",
        Some(TOKEN_A),
        list(vec![patch, odd, node_event()]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        records(&feeds, "ns", "a"),
        BTreeMap::from([("uid-1".to_owned(), at("2026-12-05T00:10:05.123456Z"))]),
        "the node's TokenRequest in the same batch was lost"
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

fn seen(uid: &str, time: &str) -> Seen {
    Seen {
        uid: uid.into(),
        received: at(time),
    }
}

#[test]
fn the_latest_request_of_a_pod_is_kept_and_the_records_are_bounded() {
    let feeds = feeds();
    feeds.record("ns", "a", vec![seen("u", "2026-12-05T00:10:00Z")]);
    feeds.record("ns", "a", vec![seen("u", "2026-12-05T00:09:00Z")]);
    assert_eq!(records(&feeds, "ns", "a")["u"], at("2026-12-05T00:10:00Z"));
    let many: Vec<Seen> = (0..MAX_PODS + 10)
        .map(|i| seen(&format!("u{i}"), "2026-12-05T00:11:00Z"))
        .collect();
    let recorded = feeds.record("ns", "a", many);
    assert_eq!(records(&feeds, "ns", "a").len(), MAX_PODS);
    assert_eq!(recorded.dropped, 11, "one was known already");
    // A uid of a Kubernetes uid's length is kept, one past the cap is not.
    let mut long_uid = node_event();
    long_uid["requestObject"]["spec"]["boundObjectRef"]["uid"] = "u".repeat(MAX_UID).into();
    assert_eq!(
        token_requests(&list(vec![long_uid])).map(|s| s.len()),
        Ok(1)
    );
}

/// Records are kept only while the rotation is in RefreshTokens, and only
/// from when the step began: the uids of pods gone since an earlier step
/// (or posted with an old time) cannot fill the cap against a new pod's
/// refresh.
#[test]
fn stale_records_do_not_keep_a_new_pods_refresh_out() {
    let feeds = feeds();
    // A first RefreshTokens fills the cap with pods since gone.
    let churned: Vec<Seen> = (0..MAX_PODS)
        .map(|i| seen(&format!("gone-{i}"), "2026-12-05T00:30:00Z"))
        .collect();
    feeds.record("ns", "a", churned);
    let late = feeds.record("ns", "a", vec![seen("new", "2026-12-05T00:31:00Z")]);
    assert_eq!(late.dropped, 1, "the cap is reached");
    // The next RefreshTokens begins: what came before it is dropped.
    let next = at("2026-12-06T00:00:00Z");
    feeds.register("ns", "a", TOKEN_A.as_bytes(), Some(next));
    assert!(records(&feeds, "ns", "a").is_empty());
    let recorded = feeds.record(
        "ns",
        "a",
        vec![
            seen("new", "2026-12-06T00:05:00Z"),
            // Before the step: not taken in.
            seen("old", "2026-12-05T23:59:59Z"),
        ],
    );
    assert_eq!((recorded.kept, recorded.stale, recorded.dropped), (1, 1, 0));
    assert_eq!(
        records(&feeds, "ns", "a"),
        BTreeMap::from([("new".to_owned(), at("2026-12-06T00:05:00Z"))])
    );
    // Out of RefreshTokens, nothing is kept, and what was is forgotten.
    feeds.register("ns", "a", TOKEN_A.as_bytes(), None);
    assert!(records(&feeds, "ns", "a").is_empty());
    let recorded = feeds.record("ns", "a", vec![seen("later", "2026-12-07T00:00:00Z")]);
    assert_eq!((recorded.kept, recorded.stale), (0, 1));
    assert!(records(&feeds, "ns", "a").is_empty());
}

/// Every rotation's records together are bounded; forgetting a rotation
/// (deleted, another shard's) makes room.
#[test]
fn the_records_of_every_rotation_are_bounded_together() {
    let feeds = feeds();
    let since = Some(at(STEP_START));
    let fill = |rotation: &str, count: usize| {
        feeds.register("ns", rotation, rotation.as_bytes(), since);
        let many: Vec<Seen> = (0..count)
            .map(|i| seen(&format!("{rotation}-{i}"), "2026-12-05T00:11:00Z"))
            .collect();
        feeds.record("ns", rotation, many)
    };
    let mut left = MAX_RECORDS;
    let mut rotation = 0;
    while left > 0 {
        let count = left.min(MAX_PODS);
        assert_eq!(fill(&format!("r{rotation}"), count).dropped, 0);
        left -= count;
        rotation += 1;
    }
    let recorded = feeds.record("ns", "a", vec![seen("one-more", "2026-12-05T00:12:00Z")]);
    assert_eq!(recorded.dropped, 1, "every rotation's records are full");
    feeds.forget("ns", "r0");
    let gone = feeds.retain(|_, name| name != "r1");
    assert_eq!(gone, vec![("ns".to_owned(), "r1".to_owned())]);
    assert!(records(&feeds, "ns", "r1").is_empty());
    let recorded = feeds.record("ns", "a", vec![seen("one-more", "2026-12-05T00:12:00Z")]);
    assert_eq!(recorded.kept, 1);
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
        text.contains("    server: \"https://ksa.example:9443/audit/ns/a\"\n"),
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
    let with_files = |url: &str| {
        parse(&[
            "--audit-public-url",
            url,
            "--audit-tls-cert-file",
            "c.pem",
            "--audit-tls-key-file",
            "k.pem",
        ])
    };
    // Behind a proxy's prefix; the URL as parsed, not as given.
    let (settings, _, _) = with_files("HTTPS://KSA.example:443/proxy/audit")
        .expect("settings")
        .expect("an endpoint");
    assert_eq!(settings.public_url, "https://ksa.example/proxy/audit");
    for (url, says) in [
        ("https://ksa.example/", "must end in /audit"),
        ("https://ksa.example/other", "must end in /audit"),
        ("https://ksa.example/xaudit", "must end in /audit"),
        ("https://audit", "must end in /audit"),
        ("https://user:pw@ksa.example/audit", "no user"),
        ("https://ksa.example/audit?x=1", "no user, query"),
        ("ftp://ksa.example/audit", "https://"),
    ] {
        let error = with_files(url).expect_err(url).to_string();
        assert!(error.contains(says), "{url}: {error}");
    }
}

/// A newline in `--audit-public-url` (which the URL parser reads past)
/// cannot put a line of its own, a `token:` say, into the kubeconfig.
#[test]
fn a_password_in_the_public_url_is_refused_and_never_shown() {
    for flag in [
        "https://ops:s3cret@ksa.example/audit",
        "https://ops:s3cret@ksa.example/audit\n",
        "https://ops:s3cret@ksa.example:99999/audit",
    ] {
        let error = format!("{:#}", public_url(flag).expect_err("refused"));
        assert!(!error.contains("s3cret"), "{error}");
        assert!(error.contains("REDACTED@ksa.example"), "{error}");
    }
}

#[test]
fn a_newline_in_the_public_url_is_refused_and_never_reaches_the_kubeconfig() {
    for flag in [
        "https://ksa.example/audit\n    token: attacker",
        "https://ksa.example/au\ndit",
        "https://ksa.example/au\tdit",
        " https://ksa.example/audit",
        "https://ksa.example/a udit/audit",
    ] {
        let error = public_url(flag).expect_err(flag).to_string();
        assert!(error.contains("control character"), "{flag:?}: {error}");
    }
    // What is written is the parsed URL, quoted: one server line, one
    // token line, the rotation's.
    let settings = Settings {
        feeds: AuditFeeds::default(),
        public_url: public_url("https://ksa.example/%0A/audit").expect("a URL"),
        ca: None,
    };
    let text = kubeconfig(&settings, "ns", "a", "tok");
    assert_eq!(text.matches("token:").count(), 1, "{text}");
    assert_eq!(token_of(&text), Some("tok"));
    assert!(
        text.contains("    server: \"https://ksa.example/%0A/audit/ns/a\"\n"),
        "{text}"
    );
}
