//! `liveness::listed` finds out that the controller's watch has listed the
//! rotations even when it starts waiting before the controller runs (as
//! `run` does), where kube-runtime's `Store::wait_until_ready` alone was
//! seen to wait forever.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use ksa_kube::api::KSASigningKeyRotation;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};

/// An API server with no rotation, whose watch never ends.
fn empty_api_server() -> kube::Client {
    let service = tower::service_fn(|request: http::Request<kube::client::Body>| {
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.contains("watch=true"));
        async move {
            if watch {
                std::future::pending::<()>().await;
            }
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(
                        r#"{"apiVersion":"ksa.dev/v1alpha1","kind":"KSASigningKeyRotationList","items":[],"metadata":{"resourceVersion":"1"}}"#
                            .to_owned(),
                    )
                    .unwrap_or_default(),
            )
        }
    });
    kube::Client::new(service, "default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_begun_before_the_controller_runs_ends_once_it_has_listed() {
    let api: kube::Api<KSASigningKeyRotation> = kube::Api::all(empty_api_server());
    let controller = Controller::new(api, watcher::Config::default());
    let store = controller.store();
    let waiting = tokio::spawn(async move { ksa_controller::liveness::listed(&store).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = controller
        .shutdown_on_signal()
        .run(
            |_: Arc<KSASigningKeyRotation>, _: Arc<()>| async {
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _: &kube::Error, _| Action::await_change(),
            Arc::new(()),
        )
        .for_each(|_| async {});
    let run = tokio::spawn(run);
    let listed = tokio::time::timeout(Duration::from_secs(10), waiting).await;
    run.abort();
    assert!(
        matches!(listed, Ok(Ok(true))),
        "not found listed within 10 s: {listed:?}"
    );
}
