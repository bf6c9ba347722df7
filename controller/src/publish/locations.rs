//! Each location a rotation publishes to, built from its spec and the
//! controller's settings: every host one the controller allows, every
//! directory below its root, checked before anything is contacted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use ksa_kube::api::{DirectorySink, KSASigningKeyRotation, S3Sink};
use kube::Resource as _;
use kube::ResourceExt as _;
use kube::api::Api;

use super::outsider::reader;
use super::sinks::{Owner, Sink};
use super::{PublishError, Settings};

/// Where one rotation publishes, and how an outsider reads it there.
pub(super) struct Location {
    /// What kind of sink it is (`endpoint`, `s3`, `directory`): the
    /// metrics' label, bounded whatever the spec says.
    pub(super) kind: &'static str,
    /// The `Cache-Control` its documents are written with.
    pub(super) cache_control: String,
    /// What metrics and errors call it (its public URL, or the directory).
    pub(super) name: String,
    /// Where outsiders read it. None: a directory with no public URL,
    /// confirmed by reading the files back.
    pub(super) public_url: Option<String>,
    /// Where documents are laid out (the public URL, or a placeholder base
    /// for a directory without one).
    pub(super) base: String,
    pub(super) sink: Sink,
    /// An outsider: no credentials, no redirects, a deadline.
    pub(super) reader: reqwest::Client,
}

/// A base for laying out a directory that has no public URL.
const NO_PUBLIC_URL: &str = "https://directory.invalid";

/// The controller's own endpoint for `rotation`, below its public base
/// `url`: each rotation is served under `<url>/<namespace>/<name>`.
pub(super) fn endpoint(
    settings: &Settings,
    rotation: &KSASigningKeyRotation,
    client: &kube::Client,
    url: &str,
) -> Result<Location, PublishError> {
    let namespace = rotation.namespace().unwrap_or_default();
    let name = rotation.name_any();
    let base = format!("{}/{namespace}/{name}", url.trim_end_matches('/'));
    Ok(Location {
        kind: "endpoint",
        cache_control: settings.cache_control(),
        name: base.clone(),
        public_url: Some(base.clone()),
        base,
        sink: Sink::Endpoint {
            config_maps: Box::new(Api::namespaced(client.clone(), &namespace)),
            namespace: namespace.clone(),
            rotation: name.clone(),
            sealer: settings.sealer.clone(),
            owner: rotation.controller_owner_ref(&()),
        },
        reader: reader(settings.public_ca.as_deref(), "--oidc-ca-file")?,
    })
}

/// `url`, checked: http(s), a host the controller allows, no credentials,
/// query or fragment.
fn allowed_url(
    settings: &Settings,
    field: &'static str,
    url: &str,
) -> Result<url::Url, PublishError> {
    let shown = shown_url(url);
    let bad = || PublishError::BadUrl {
        field,
        url: shown.clone(),
    };
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(bad)?;
    if !matches!(parsed.scheme(), "https" | "http")
        || !parsed.username().is_empty()
        || parsed.password().is_some()
        || url.contains(['?', '#'])
    {
        return Err(bad());
    }
    let with_port = parsed
        .port()
        .map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
    // A host listed without a port allows only the scheme's default port.
    let allowed = settings
        .allowed_hosts
        .iter()
        .any(|allowed| *allowed == with_port || (*allowed == host && parsed.port().is_none()));
    if allowed {
        Ok(parsed)
    } else {
        Err(PublishError::HostNotAllowed {
            field,
            host: with_port,
        })
    }
}

/// `url` as messages show it: never its credentials, query or fragment,
/// which may carry secrets. Taken from the parsed URL, which finds the
/// credentials where a client would (the last `@` before the host).
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let credentials = if parsed.username().is_empty() && parsed.password().is_none() {
                ""
            } else {
                "(credentials)@"
            };
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let dropped = if parsed.query().is_some() || parsed.fragment().is_some() {
                "?(not shown)"
            } else {
                ""
            };
            format!(
                "{}://{credentials}{}{port}{}{dropped}",
                parsed.scheme(),
                parsed.host_str().unwrap_or_default(),
                parsed.path()
            )
        }
        Err(_) if url.contains(['@', '?', '#']) => {
            "(not a URL; not shown, as it may hold credentials)".to_owned()
        }
        Err(_) => url.to_owned(),
    }
}

/// A relative path of safe segments (no `.`, `..` or empty one).
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
        })
}

pub(super) async fn bucket(
    settings: &Settings,
    s3: &S3Sink,
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Location, PublishError> {
    let endpoint = allowed_url(settings, "spec.publish.s3.endpoint", &s3.endpoint)?;
    let prefix = s3.prefix.as_deref().unwrap_or("").trim_matches('/');
    if !prefix.is_empty() && !safe_relative(prefix) {
        return Err(PublishError::BadPath {
            path: prefix.to_owned(),
        });
    }
    let default_public = {
        let base = format!("{}/{}", s3.endpoint.trim_end_matches('/'), s3.bucket);
        if prefix.is_empty() {
            base
        } else {
            format!("{base}/{prefix}")
        }
    };
    let public_url = s3.public_url.clone().unwrap_or(default_public);
    allowed_url(settings, "spec.publish.s3.publicUrl", &public_url)?;
    let public_url = public_url.trim_end_matches('/').to_owned();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let missing = || PublishError::Credentials {
        name: s3.credentials_secret.clone(),
    };
    let secret = secrets
        .get_opt(&s3.credentials_secret)
        .await
        .ok()
        .flatten()
        .ok_or_else(missing)?;
    let data = secret.data.unwrap_or_default();
    let field = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
    };
    let (Some(access_key), Some(secret_key)) = (field("accessKeyID"), field("secretAccessKey"))
    else {
        return Err(missing());
    };
    // One client for the writes and the outsider's reads: no redirects,
    // a deadline, the bucket's CA.
    let http = reader(
        s3.ca_bundle.as_deref().map(str::as_bytes),
        "spec.publish.s3.caBundle",
    )?;
    let store = s3_store(s3, &endpoint, http.clone(), access_key, secret_key)?;
    Ok(Location {
        kind: "s3",
        cache_control: settings.cache_control(),
        name: public_url.clone(),
        public_url: Some(public_url.clone()),
        base: public_url,
        sink: Sink::Store {
            store: Arc::new(store),
            prefix: prefix.to_owned(),
            owner: Some(Owner {
                rotation: format!("{namespace}/{name}"),
                namespace: namespace.to_owned(),
                bucket: s3.bucket.clone(),
                sealer: settings.sealer.clone(),
            }),
        },
        reader: http,
    })
}

/// The bucket's store, writing through `http`. object_store's own client
/// would follow a redirect that the endpoint sends, to any host, and
/// resend the request there.
pub(super) fn s3_store(
    s3: &S3Sink,
    endpoint: &url::Url,
    http: reqwest::Client,
    access_key: String,
    secret_key: String,
) -> Result<object_store::aws::AmazonS3, PublishError> {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(s3.endpoint.trim_end_matches('/'))
        .with_region(&s3.region)
        .with_bucket_name(&s3.bucket)
        .with_access_key_id(access_key)
        .with_secret_access_key(secret_key)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(endpoint.scheme() == "http")
        .with_http_connector(Connector(http))
        .build()
        .map_err(|_| PublishError::BadUrl {
            field: "spec.publish.s3.endpoint",
            url: shown_url(&s3.endpoint),
        })
}

/// Gives object_store the controller's HTTP client instead of one of its
/// own making.
#[derive(Debug)]
struct Connector(reqwest::Client);

impl object_store::client::HttpConnector for Connector {
    fn connect(
        &self,
        _: &object_store::ClientOptions,
    ) -> object_store::Result<object_store::client::HttpClient> {
        Ok(object_store::client::HttpClient::new(self.0.clone()))
    }
}

/// The directory sink of rotation `name` in `namespace`: below
/// `--publish-root/NAMESPACE/NAME`, so that no rotation can write where
/// another one publishes.
pub(super) fn directory(
    settings: &Settings,
    directory: &DirectorySink,
    namespace: &str,
    name: &str,
) -> Result<Location, PublishError> {
    let root = settings.root.as_ref().ok_or(PublishError::NoRoot)?;
    let path = directory.path.trim_end_matches('/');
    if !safe_relative(path) {
        return Err(PublishError::BadPath {
            path: directory.path.clone(),
        });
    }
    let public_url = match &directory.public_url {
        Some(url) => {
            allowed_url(settings, "spec.publish.directory.publicUrl", url)?;
            Some(url.trim_end_matches('/').to_owned())
        }
        None => None,
    };
    let dir = root.join(namespace).join(name).join(path);
    std::fs::create_dir_all(&dir).map_err(|_| PublishError::BadPath {
        path: directory.path.clone(),
    })?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|_| {
        PublishError::BadPath {
            path: directory.path.clone(),
        }
    })?;
    Ok(Location {
        kind: "directory",
        cache_control: settings.cache_control(),
        name: format!("directory {path}"),
        base: public_url
            .clone()
            .unwrap_or_else(|| NO_PUBLIC_URL.to_owned()),
        public_url,
        sink: Sink::Store {
            store: Arc::new(store),
            prefix: String::new(),
            owner: None,
        },
        reader: reader(None, "spec.publish.directory")?,
    })
}

/// The bucket `oidc` at `endpoint`, written through the controller's own
/// client, as `bucket` builds it (for tests, which reach a fake store).
#[cfg(test)]
pub(super) fn test_bucket(endpoint: &str) -> object_store::aws::AmazonS3 {
    let s3 = S3Sink {
        endpoint: endpoint.to_owned(),
        region: "us-east-1".into(),
        bucket: "oidc".into(),
        prefix: None,
        public_url: None,
        credentials_secret: "s3".into(),
        ca_bundle: None,
    };
    let url = url::Url::parse(&s3.endpoint).expect("a URL");
    let http = reader(None, "spec.publish.s3.caBundle").expect("a client");
    s3_store(&s3, &url, http, "id".into(), "secret".into()).expect("a store")
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt as _;

    use super::*;

    /// Serves `app` on a free loopback port; returns `host:port`.
    async fn serve(app: axum::Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// An endpoint that redirects every request to another host: the
    /// write fails, and nothing reaches that host.
    #[tokio::test]
    async fn the_bucket_follows_no_redirect_to_another_host() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let reached = Arc::new(AtomicUsize::new(0));
        let counter = reached.clone();
        let other = serve(axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "" }
        }))
        .await;
        let endpoint = serve(
            axum::Router::new().fallback(move |uri: http::Uri| async move {
                (
                    http::StatusCode::TEMPORARY_REDIRECT,
                    [(http::header::LOCATION, format!("http://{other}{uri}"))],
                )
            }),
        )
        .await;
        let store = test_bucket(&format!("http://{endpoint}"));
        let path = object_store::path::Path::from("openid/v1/jwks");
        let written = store.put(&path, b"{}".to_vec().into()).await;
        assert!(written.is_err(), "{written:?}");
        let read = store.get(&path).await;
        assert!(read.is_err(), "{:?}", read.map(|r| r.meta));
        assert_eq!(
            reached.load(Ordering::SeqCst),
            0,
            "a request was redirected"
        );
    }

    /// Issue 29, finding 9: a URL's credentials never reach a message,
    /// wherever its `@`s are.
    #[test]
    fn credentials_are_redacted_from_the_parsed_url() {
        let settings = Settings {
            allowed_hosts: vec!["s3.example".into()],
            ..Settings::default()
        };
        for url in [
            "https://u:p@ss@s3.example/b",
            "https://u:p@ss@s3.example/b?x=secret",
            "https://u@p@s3.example",
            "ht!tp://u:p@ss@s3.example",
        ] {
            let error = allowed_url(&settings, "f", url).expect_err(url).to_string();
            assert!(
                !error.contains("ss") && !error.contains(":p") && !error.contains("secret"),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn sinks_reach_only_hosts_the_controller_allows() {
        let settings = Settings {
            allowed_hosts: vec!["s3.example".into(), "127.0.0.1:9000".into()],
            ..Settings::default()
        };
        assert!(allowed_url(&settings, "f", "https://s3.example/b").is_ok());
        assert!(allowed_url(&settings, "f", "https://s3.example:443/b").is_ok());
        assert!(allowed_url(&settings, "f", "http://127.0.0.1:9000").is_ok());
        for refused in [
            "http://127.0.0.1:9001",
            "https://169.254.169.254/latest",
            "https://kubernetes.default.svc",
            "https://s3.example.evil/b",
            "https://s3.example:10250/b",
        ] {
            assert!(
                matches!(
                    allowed_url(&settings, "f", refused),
                    Err(PublishError::HostNotAllowed { .. })
                ),
                "{refused}"
            );
        }
        for bad in [
            "file:///etc/passwd",
            "https://u:p@s3.example",
            "https://s3.example/?x",
            "s3.example",
        ] {
            assert!(
                matches!(
                    allowed_url(&settings, "f", bad),
                    Err(PublishError::BadUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn directories_stay_below_the_root() {
        let root = tempfile::tempdir().expect("a temp dir");
        let settings = Settings {
            root: Some(root.path().to_owned()),
            ..Settings::default()
        };
        for path in [
            "../x",
            "a/../../x",
            "/etc",
            "a//b",
            ".",
            "a/./b",
            "a\\..",
            "",
        ] {
            let sink = DirectorySink {
                path: path.to_owned(),
                public_url: None,
            };
            assert!(
                matches!(
                    directory(&settings, &sink, "ns", "r"),
                    Err(PublishError::BadPath { .. })
                ),
                "{path}"
            );
        }
        let none = Settings::default();
        let sink = DirectorySink {
            path: "prod".into(),
            public_url: None,
        };
        assert!(matches!(
            directory(&none, &sink, "ns", "r"),
            Err(PublishError::NoRoot)
        ));
        assert!(directory(&settings, &sink, "ns", "r").is_ok());
        // Each rotation's own directory: another namespace naming the same
        // path writes elsewhere.
        assert!(root.path().join("ns/r/prod").is_dir());
        assert!(directory(&settings, &sink, "other", "r").is_ok());
        assert!(root.path().join("other/r/prod").is_dir());
    }
}
