//! Writing a location's documents: the endpoint's one ConfigMap, or the
//! objects of a bucket or a directory; never over what another rotation,
//! or anyone but ksa, wrote.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use ksa_core::discovery;
use ksa_kube::keystore::{metadata_is_clean, owned_labels};
use ksa_kube::provenance::{Kind, NotOurs, Sealer, Subject};
use kube::api::{Api, ObjectMeta};
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutOptions};

use super::locations::Location;
use super::{DOCUMENTS_KEY, MAX_DOCUMENT_BYTES, endpoint_config_map};

pub(super) enum Sink {
    /// The controller's endpoint: one ConfigMap holds every document.
    Endpoint {
        config_maps: Box<Api<ConfigMap>>,
        namespace: String,
        rotation: String,
        sealer: Option<Sealer>,
        /// The rotation, so that its documents go when it does.
        owner: Option<OwnerReference>,
    },
    /// A bucket or a directory, below `prefix`.
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: String,
        /// A bucket's objects name their rotation and carry a seal; a
        /// directory (below the rotation's own) holds only the rotation's.
        owner: Option<Owner>,
    },
}

/// Whose a bucket's objects are. Buckets are shared (two clusters with the
/// same issuer and no prefix write the same keys), so each object ksa
/// writes carries, as user metadata, the rotation it was written for and
/// a seal over that, where it is, and its body; an object without both,
/// verified, is not overwritten or deleted.
pub(super) struct Owner {
    /// `namespace/name`.
    pub(super) rotation: String,
    pub(super) namespace: String,
    pub(super) bucket: String,
    pub(super) sealer: Option<Sealer>,
}

/// The user metadata naming the rotation an object was written for.
const META_ROTATION: &str = "ksa-rotation";
/// The user metadata holding an object's seal.
const META_SEAL: &str = "ksa-seal";

impl Owner {
    fn sealer(&self) -> Result<&Sealer, String> {
        self.sealer
            .as_ref()
            .ok_or_else(|| "the controller has no sealing key".to_owned())
    }

    /// The seal of the object at `path` holding `body`, written for this
    /// rotation. Sealed as the endpoint's documents are, under a name no
    /// ConfigMap can have (it holds a `/`).
    fn seal(&self, sealer: &Sealer, path: &str, body: &[u8]) -> String {
        let name = format!("s3/{}/{path}", self.bucket);
        let subject = Subject {
            kind: Kind::Endpoint,
            namespace: &self.namespace,
            name: &name,
        };
        sealer.seal(
            &subject,
            [("rotation", self.rotation.as_bytes()), ("body", body)],
        )
    }

    /// The attributes an object written for this rotation carries.
    fn attributes(&self, sealer: &Sealer, path: &str, body: &[u8]) -> Vec<(Attribute, String)> {
        vec![
            (
                Attribute::Metadata(META_ROTATION.into()),
                self.rotation.clone(),
            ),
            (
                Attribute::Metadata(META_SEAL.into()),
                self.seal(sealer, path, body),
            ),
        ]
    }

    /// Why the object found at `path` may not be overwritten or deleted:
    /// it names another rotation, or its seal does not verify.
    fn refuses(&self, sealer: &Sealer, path: &str, found: &Stored) -> Option<String> {
        let meta = |key: &'static str| {
            found
                .attributes
                .get(&Attribute::Metadata(key.into()))
                .map(|v| v.as_ref().to_owned())
        };
        let object = format!("bucket {} key {path}", self.bucket);
        match meta(META_ROTATION) {
            Some(other) if other != self.rotation => {
                // Shown in the status: only when it reads as a rotation.
                let shown = if other.len() <= 320
                    && other.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"-./".contains(&b)
                    }) {
                    other
                } else {
                    "(an unreadable name)".to_owned()
                };
                return Some(format!(
                    "{object} belongs to rotation {shown} (of this or another cluster): ksa \
                     will not overwrite it; give one of the rotations its own \
                     spec.publish.s3.prefix"
                ));
            }
            Some(_) => {}
            None => {
                return Some(format!(
                    "{object} was not written by ksa: ksa will not overwrite it; delete it if \
                     nobody needs it, or set spec.publish.s3.prefix"
                ));
            }
        }
        let sealed = match (&found.body, meta(META_SEAL)) {
            (Some(body), Some(seal)) => {
                let name = format!("s3/{}/{path}", self.bucket);
                let subject = Subject {
                    kind: Kind::Endpoint,
                    namespace: &self.namespace,
                    name: &name,
                };
                sealer.verify(
                    &subject,
                    [
                        ("rotation", self.rotation.as_bytes()),
                        ("body", body.as_slice()),
                    ],
                    &seal,
                )
            }
            _ => false,
        };
        (!sealed).then(|| {
            format!(
                "{object} names this rotation but its seal does not verify (written by another \
                 cluster's ksa, or changed since): ksa will not overwrite it; delete it if \
                 nobody needs it, or set spec.publish.s3.prefix"
            )
        })
    }
}

impl Location {
    pub(super) async fn write(
        &self,
        documents: &BTreeMap<String, String>,
        gone: &[String],
    ) -> Result<(), String> {
        match &self.sink {
            Sink::Endpoint {
                config_maps,
                namespace,
                rotation,
                owner,
                sealer,
            } => {
                let sealer = sealer
                    .as_ref()
                    .ok_or_else(|| "the controller has no sealing key".to_owned())?;
                let name = endpoint_config_map(rotation);
                // Never written into, nor given an owner (which would have
                // it collected with the rotation), when it is another's.
                let current = config_maps
                    .get_opt(&name)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(current) = &current
                    && sealer
                        .check_config_map(Kind::Endpoint, namespace, current)
                        .is_err()
                {
                    let empty = current.data.as_ref().is_none_or(BTreeMap::is_empty)
                        && current.binary_data.as_ref().is_none_or(BTreeMap::is_empty);
                    if !empty || !metadata_is_clean(&current.metadata, &[]) {
                        let subject = Subject {
                            kind: Kind::Endpoint,
                            namespace,
                            name: &name,
                        };
                        return Err(NotOurs::new(
                            &subject,
                            "it has no valid seal and holds data or metadata ksa did not write",
                        )
                        .to_string());
                    }
                }
                let mut config_map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(owned_labels(rotation)),
                        owner_references: owner.clone().map(|owner| vec![owner]),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(
                        DOCUMENTS_KEY.to_owned(),
                        serde_json::to_string(documents).map_err(|e| e.to_string())?,
                    )])),
                    ..ConfigMap::default()
                };
                sealer.seal_config_map(Kind::Endpoint, namespace, &mut config_map);
                // Created, or written on the condition that it is still the
                // one checked: never into one someone made meanwhile.
                ksa_kube::keystore::write_owned(config_maps, current.as_ref(), config_map, || {
                    NotOurs::new(
                        &Subject {
                            kind: Kind::Endpoint,
                            namespace,
                            name: &name,
                        },
                        "someone else created it while ksa was writing it",
                    )
                })
                .await
                .map_err(|e| e.to_string())?;
                Ok(())
            }
            Sink::Store {
                store,
                prefix,
                owner,
            } => {
                for (key, body) in documents {
                    let path = object_path(prefix, key)?;
                    let current = read_bounded(store.as_ref(), &path)
                        .await
                        .map_err(|e| store_problem(&e))?;
                    let sealer = owner.as_ref().map(Owner::sealer).transpose()?;
                    if let (Some(owner), Some(sealer), Some(current)) = (owner, sealer, &current)
                        && let Some(refused) = owner.refuses(sealer, path.as_ref(), current)
                    {
                        return Err(refused);
                    }
                    if current.and_then(|c| c.body).as_deref() == Some(body.as_bytes()) {
                        continue;
                    }
                    // A directory's files carry nothing but their bytes
                    // (the local store keeps no attributes).
                    let attributes = match (owner, sealer) {
                        (Some(owner), Some(sealer)) => {
                            let content_type = if key.ends_with(discovery::JWKS_PATH) {
                                "application/jwk-set+json"
                            } else {
                                "application/json"
                            };
                            let mut attributes = vec![
                                (Attribute::ContentType, content_type.to_owned()),
                                (Attribute::CacheControl, self.cache_control.clone()),
                            ];
                            attributes.extend(owner.attributes(
                                sealer,
                                path.as_ref(),
                                body.as_bytes(),
                            ));
                            Attributes::from_iter(attributes)
                        }
                        _ => Attributes::new(),
                    };
                    let options = PutOptions {
                        attributes,
                        ..PutOptions::default()
                    };
                    store
                        .put_opts(&path, body.clone().into(), options)
                        .await
                        .map_err(|e| store_problem(&e))?;
                }
                for key in gone {
                    let path = object_path(prefix, key)?;
                    if let Some(owner) = owner {
                        let sealer = owner.sealer()?;
                        let current = read_bounded(store.as_ref(), &path)
                            .await
                            .map_err(|e| store_problem(&e))?;
                        let Some(current) = current else { continue };
                        if let Some(refused) = owner.refuses(sealer, path.as_ref(), &current) {
                            // Another's: left as it is.
                            tracing::warn!(problem = %refused, "not deleting a withdrawn document");
                            continue;
                        }
                    }
                    match store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(error) => return Err(store_problem(&error)),
                    }
                }
                Ok(())
            }
        }
    }
}

/// An object found in a store.
#[derive(Debug)]
pub(super) struct Stored {
    /// Its bytes; None when it holds more than [`MAX_DOCUMENT_BYTES`] (it
    /// is never read whole).
    pub(super) body: Option<Vec<u8>>,
    /// Its attributes (a bucket's user metadata).
    pub(super) attributes: Attributes,
}

/// The object at `path` when it exists, read as a stream that stops at
/// [`MAX_DOCUMENT_BYTES`] whatever the store says of its size.
pub(super) async fn read_bounded(
    store: &dyn ObjectStore,
    path: &object_store::path::Path,
) -> Result<Option<Stored>, object_store::Error> {
    use futures::StreamExt as _;
    match store.head(path).await {
        // A ranged read of an empty object is refused by some stores.
        Ok(meta) if meta.size == 0 => {
            return Ok(Some(Stored {
                body: Some(Vec::new()),
                attributes: Attributes::new(),
            }));
        }
        Ok(_) => {}
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error),
    }
    let options = object_store::GetOptions {
        range: Some((0..MAX_DOCUMENT_BYTES as u64 + 1).into()),
        ..object_store::GetOptions::default()
    };
    let found = match store.get_opts(path, options).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(error) => return Err(error),
    };
    let attributes = found.attributes.clone();
    let mut stream = found.into_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Ok(Some(Stored {
                body: None,
                attributes,
            }));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(Stored {
        body: Some(body),
        attributes,
    }))
}

pub(super) fn object_path(prefix: &str, key: &str) -> Result<object_store::path::Path, String> {
    let full = if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}/{key}")
    };
    object_store::path::Path::parse(full).map_err(|_| "not a safe object key".to_owned())
}

/// An object store error without what it may echo of a request.
pub(super) fn store_problem(error: &object_store::Error) -> String {
    match error {
        object_store::Error::NotFound { .. } => "not found".to_owned(),
        object_store::Error::PermissionDenied { .. } => "permission denied".to_owned(),
        object_store::Error::Unauthenticated { .. } => {
            "the credentials were not accepted".to_owned()
        }
        other => {
            // Other errors may carry what the store answered: logged, never
            // shown in the status.
            tracing::warn!(error = %other, "the object store answered an error");
            "the store could not be reached or answered an error (see the controller's log)"
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ksa_kube::api::DirectorySink;

    use super::super::Settings;
    use super::super::locations::{directory, test_bucket};
    use super::super::outsider::reader;
    use super::*;

    /// A bucket that answers a read with a body that never ends: one that
    /// says it holds a small object, then streams for ever.
    async fn endless_bucket() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let common = "ETag: \"e\"\r\nLast-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n";
                    if head.starts_with(b"HEAD") {
                        let answer =
                            format!("HTTP/1.1 200 OK\r\n{common}Content-Length: 10\r\n\r\n");
                        let _ = socket.write_all(answer.as_bytes()).await;
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 206 Partial Content\r\n{common}Content-Length: 1000000000000\r\n\
                         Content-Range: bytes 0-{MAX_DOCUMENT_BYTES}/1000000000000\r\n\r\n"
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    while socket.write_all(&chunk).await.is_ok() {}
                });
            }
        });
        addr
    }

    /// Issue 29, finding 4: an endless body is read up to the cap, not
    /// until the deadline.
    #[tokio::test]
    async fn an_endless_body_is_read_only_up_to_the_cap() {
        let addr = endless_bucket().await;
        let store = test_bucket(&format!("http://{addr}"));
        let path = object_store::path::Path::from("openid/v1/jwks");
        let read = tokio::time::timeout(Duration::from_secs(5), read_bounded(&store, &path))
            .await
            .expect("stopped at the cap, well before the request's deadline");
        assert!(
            matches!(read, Ok(Some(Stored { body: None, .. }))),
            "{read:?}"
        );
    }

    /// A fake API server: records each request's method and path; answers
    /// a GET of `ns/r-oidc` with `existing` (404 when None) and a PATCH
    /// with what it was sent.
    /// Each request's method, path and body.
    type Asked = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;

    fn api_server(existing: Option<serde_json::Value>) -> (kube::Client, Asked) {
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let log = log.clone();
            let existing = existing.clone();
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                let body = http_body_util::BodyExt::collect(request.into_body())
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                log.lock().unwrap_or_else(|e| e.into_inner()).push((
                    method.clone(),
                    path,
                    body.clone(),
                ));
                let not_found = serde_json::json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found",
                });
                let (status, answer) = match (method.as_str(), existing) {
                    ("GET", Some(existing)) => (200, existing.to_string()),
                    ("GET", None) => (404, not_found.to_string()),
                    ("PATCH", _) => (200, body),
                    // Created when absent (`keystore::write_owned`).
                    ("POST", None) => (201, body),
                    _ => (404, not_found.to_string()),
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(answer)
                        .unwrap_or_default(),
                )
            }
        });
        (kube::Client::new(service, "default"), asked)
    }

    fn endpoint_location(client: &kube::Client) -> Location {
        Location {
            kind: "endpoint",
            cache_control: "public, max-age=30".into(),
            name: "https://ksa.example/ns/r".into(),
            public_url: Some("https://ksa.example/ns/r".into()),
            base: "https://ksa.example/ns/r".into(),
            sink: Sink::Endpoint {
                config_maps: Box::new(Api::namespaced(client.clone(), "ns")),
                namespace: "ns".into(),
                rotation: "r".into(),
                owner: None,
                sealer: Some(sealer()),
            },
            reader: reader(None, "f").expect("a client"),
        }
    }

    fn sealer() -> Sealer {
        Sealer::from_bytes(&[7; 32]).expect("32 bytes")
    }

    fn documents() -> BTreeMap<String, String> {
        BTreeMap::from([(
            "a.example/openid/v1/jwks".to_owned(),
            "{\"keys\":[]}".to_owned(),
        )])
    }

    /// Issue 29, finding 6: a `NAME-oidc` ksa did not make, holding data of
    /// another's, is neither written into nor given an owner.
    #[tokio::test]
    async fn a_foreign_endpoint_config_map_is_never_written() {
        let foreign = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "r-oidc", "namespace": "ns"},
            "data": {"settings": "theirs"},
        });
        let (client, asked) = api_server(Some(foreign));
        let written = endpoint_location(&client).write(&documents(), &[]).await;
        let asked = asked.lock().expect("works").clone();
        assert!(
            asked.iter().all(|(method, _, _)| method == "GET"),
            "only read: {asked:?}"
        );
        let problem = written.expect_err("refused");
        assert!(
            problem.contains("ns/r-oidc") && problem.contains("delete it"),
            "{problem}"
        );
    }

    /// What the endpoint writes is sealed, and an empty `NAME-oidc` of
    /// nobody's (nothing to lose) or its own is written.
    #[tokio::test]
    async fn the_endpoint_config_map_is_sealed_and_only_taken_over_when_empty() {
        let empty = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "r-oidc", "namespace": "ns"},
        });
        for existing in [None, Some(empty)] {
            let (client, asked) = api_server(existing);
            endpoint_location(&client)
                .write(&documents(), &[])
                .await
                .expect("written");
            let asked = asked.lock().expect("works").clone();
            // Created when absent, applied over the one read otherwise.
            let (_, _, body) = asked
                .iter()
                .find(|(method, _, _)| method == "PATCH" || method == "POST")
                .expect("a write");
            let written: ConfigMap = serde_json::from_str(body).expect("a ConfigMap");
            assert_eq!(
                sealer().check_config_map(Kind::Endpoint, "ns", &written),
                Ok(())
            );
            // Its own, written again.
            let (client, asked) = api_server(Some(serde_json::to_value(&written).expect("json")));
            let mut changed = documents();
            changed.insert("b".into(), "{}".into());
            endpoint_location(&client)
                .write(&changed, &[])
                .await
                .expect("written");
            assert!(
                asked
                    .lock()
                    .expect("works")
                    .iter()
                    .any(|(m, _, _)| m == "PATCH")
            );
        }
        // Empty, but with an owner of another's: refused.
        let owned = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "r-oidc", "namespace": "ns", "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}]},
        });
        let (client, _) = api_server(Some(owned));
        assert!(
            endpoint_location(&client)
                .write(&documents(), &[])
                .await
                .is_err()
        );
    }

    fn bucket_location(store: Arc<dyn ObjectStore>, rotation: &str) -> Location {
        Location {
            kind: "s3",
            cache_control: "public, max-age=30".into(),
            name: "https://s3.example/b".into(),
            public_url: Some("https://s3.example/b".into()),
            base: "https://s3.example/b".into(),
            sink: Sink::Store {
                store,
                prefix: String::new(),
                owner: Some(Owner {
                    rotation: format!("ns/{rotation}"),
                    namespace: "ns".into(),
                    bucket: "b".into(),
                    sealer: Some(sealer()),
                }),
            },
            reader: reader(None, "f").expect("a client"),
        }
    }

    /// Issue 29, finding 7: two rotations sharing a bucket never overwrite
    /// each other's objects, nor an object ksa did not write.
    #[tokio::test]
    async fn a_bucket_object_of_another_rotation_is_never_overwritten() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let a = bucket_location(store.clone(), "a");
        let b = bucket_location(store.clone(), "b");
        a.write(&documents(), &[]).await.expect("the first writer");
        let mut changed = documents();
        changed.insert("a.example/openid/v1/jwks".into(), "{\"keys\":[1]}".into());
        a.write(&changed, &[]).await.expect("its own object");
        let refused = b
            .write(&documents(), &[])
            .await
            .expect_err("another rotation's");
        assert!(
            refused.contains("bucket b key a.example/openid/v1/jwks")
                && refused.contains("rotation ns/a"),
            "{refused}"
        );
        let path = object_store::path::Path::from("a.example/openid/v1/jwks");
        let kept = store
            .get(&path)
            .await
            .expect("there")
            .bytes()
            .await
            .expect("read");
        assert_eq!(kept.as_ref(), b"{\"keys\":[1]}");
        // An object ksa did not write.
        let path = object_store::path::Path::from("c.example/openid/v1/jwks");
        store
            .put(&path, b"theirs".to_vec().into())
            .await
            .expect("written");
        let theirs = BTreeMap::from([("c.example/openid/v1/jwks".to_owned(), "{}".to_owned())]);
        let refused = a.write(&theirs, &[]).await.expect_err("not ksa's");
        assert!(refused.contains("not written by ksa"), "{refused}");
        // Another cluster's ksa, same rotation name, another sealing key.
        let mut other_cluster = bucket_location(store.clone(), "a");
        if let Sink::Store {
            owner: Some(owner), ..
        } = &mut other_cluster.sink
        {
            owner.sealer = Sealer::from_bytes(&[8; 32]);
        }
        let refused = other_cluster
            .write(&documents(), &[])
            .await
            .expect_err("another cluster's");
        assert!(refused.contains("seal does not verify"), "{refused}");
        // Withdrawn documents of another rotation are left alone.
        let gone = ["a.example/openid/v1/jwks".to_owned()];
        b.write(&BTreeMap::new(), &gone)
            .await
            .expect("nothing of its");
        assert!(
            store
                .head(&object_store::path::Path::from("a.example/openid/v1/jwks"))
                .await
                .is_ok()
        );
        a.write(&BTreeMap::new(), &gone).await.expect("its own");
        assert!(
            store
                .head(&object_store::path::Path::from("a.example/openid/v1/jwks"))
                .await
                .is_err()
        );
    }

    /// A directory's files are the documents, with nothing else (the
    /// local store keeps no attributes, and refuses to be given any).
    #[tokio::test]
    async fn a_directory_is_written_with_the_documents() {
        let root = tempfile::tempdir().expect("a temp dir");
        let settings = Settings {
            root: Some(root.path().to_owned()),
            ..Settings::default()
        };
        let sink = DirectorySink {
            path: "prod".into(),
            public_url: None,
        };
        let location = directory(&settings, &sink, "ns", "r").expect("a directory");
        location.write(&documents(), &[]).await.expect("written");
        let written =
            std::fs::read_to_string(root.path().join("ns/r/prod/a.example/openid/v1/jwks"))
                .expect("a file");
        assert_eq!(written, "{\"keys\":[]}");
    }
}
