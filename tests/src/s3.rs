//! A real S3-compatible object store for one test: SeaweedFS (`weed
//! server` with its master, one volume server, the filer and the S3
//! gateway, all in one process) on loopback, with a data directory of the
//! test's own.
//!
//! It plays the cloud bucket a cluster publishes its OIDC discovery
//! document and JWKS into, for verifiers outside the cluster (a cloud IAM)
//! to read. So it serves S3 over **https** only, with a certificate from a
//! test CA of its own ([`S3Server::ca_pem`]), since an OIDC discovery
//! document and its `jwks_uri` must be https and the outside verifiers
//! refuse anything else. It knows two identities: a writer with an access
//! key and a secret (what ksa is configured with), allowed everything; and
//! `anonymous`, allowed to read objects of the one bucket
//! ([`S3Server::bucket`], created at start) and nothing else, which is what
//! a public-read bucket gives an outsider: a plain GET of
//! `https://127.0.0.1:PORT/BUCKET/KEY` (path-style) with no credentials.
//!
//! `weed` is built by `cargo xtask setup` (and `e2e`, `ci`) from the Go
//! module pinned in `xtask/seaweedfs/go.mod`; tests find it through
//! `KSA_SEAWEEDFS_DIR`. It ignores SIGTERM, so it is stopped with SIGKILL,
//! its whole process group, when the [`S3Server`] is dropped. Its
//! telemetry (on by default, to a host on the internet) is turned off.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore as _, ObjectStoreExt as _, PutOptions,
};

use crate::pki::Pki;

/// The region the store says it is in (SeaweedFS accepts any).
pub const REGION: &str = "us-east-1";
/// The writer's access key id.
pub const ACCESS_KEY_ID: &str = "ksa-e2e-writer";
/// The writer's secret access key.
pub const SECRET_ACCESS_KEY: &str = "ksa-e2e-writer-secret-0123456789abcdef";
/// The bucket anonymous callers may read.
pub const BUCKET: &str = "ksa-oidc";

/// How long `weed` may take to answer S3 requests after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running SeaweedFS serving S3 over https on loopback; killed (its
/// whole process group) when dropped, on panic too, and the tail of its
/// log printed when a test failed.
#[allow(
    missing_debug_implementations,
    reason = "holds a child process and a client; nothing useful to print"
)]
pub struct S3Server {
    dir: tempfile::TempDir,
    child: Child,
    log: PathBuf,
    /// The https port of the S3 gateway.
    port: u16,
    /// The gRPC ports, whose Unix sockets `weed` leaves in /tmp.
    grpc_ports: Vec<(&'static str, u16)>,
    pki: Pki,
    store: AmazonS3,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where `weed` is, or an error that says how to build it.
pub fn binary() -> Result<PathBuf> {
    let dir = std::env::var_os("KSA_SEAWEEDFS_DIR")
        .map(PathBuf::from)
        .context(
            "KSA_SEAWEEDFS_DIR is not set: this test needs a real S3 server (SeaweedFS). Run it \
             with `cargo xtask e2e` (or `cargo xtask ci`), which builds `weed` from the pinned Go \
             module in xtask/seaweedfs/ and sets it",
        )?;
    let weed = dir.join("weed");
    if !weed.is_file() {
        bail!(
            "{} has no weed; run `cargo xtask setup` to build it",
            dir.display()
        );
    }
    Ok(weed)
}

/// The identities `weed` knows (`-s3.config`): the writer, allowed
/// everything (creating the bucket on the first write needs `Admin`), and
/// `anonymous`, allowed to read objects of [`BUCKET`] only.
fn identities() -> String {
    serde_json::json!({
        "identities": [
            {
                "name": "anonymous",
                "actions": [format!("Read:{BUCKET}")],
            },
            {
                "name": "ksa-e2e-writer",
                "credentials": [
                    {"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY},
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
        ],
    })
    .to_string()
}

impl S3Server {
    /// Starts `weed` on free loopback ports with a fresh data directory,
    /// creates [`BUCKET`] and waits until a writer's object in it can be
    /// read anonymously over https.
    pub async fn start() -> Result<S3Server> {
        let started = Instant::now();
        let weed = binary()?;
        // KSA_E2E_KEEP=1 keeps the data and the log, as for the control
        // plane.
        let keep = std::env::var_os("KSA_E2E_KEEP").is_some_and(|v| v == "1");
        let dir = tempfile::Builder::new()
            .prefix("ksa-s3-")
            .disable_cleanup(keep)
            .tempdir()?;
        if keep {
            eprintln!("KSA_E2E_KEEP: keeping {}", dir.path().display());
        }
        let d = dir.path();
        let pki = Pki::generate(&[IpAddr::V4(Ipv4Addr::LOCALHOST)])?;
        fs::write(d.join("s3.crt"), &pki.server_cert)?;
        crate::write_private(&d.join("s3.key"), pki.server_key.as_bytes())?;
        fs::write(d.join("s3.json"), identities())?;
        let data = d.join("data");
        fs::create_dir_all(&data)?;
        let port = free_port()?;
        let grpc_ports = vec![
            ("master", free_port()?),
            ("volume", free_port()?),
            ("filer", free_port()?),
            ("s3", free_port()?),
        ];
        let grpc = |name: &str| {
            grpc_ports
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, p)| *p)
        };
        let log = d.join("weed.log");
        let file = fs::File::create(&log)?;
        let mut command = Command::new(&weed);
        command
            .current_dir(d)
            // Nothing from the machine's own SeaweedFS configuration
            // (`filer.toml`, `security.toml` are read from ., $HOME/.seaweedfs
            // and /etc/seaweedfs; none is in the data directory or $HOME).
            .env("HOME", d)
            .env("TMPDIR", d)
            .arg("server")
            .arg(format!("-dir={}", data.display()))
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-master.port={}", free_port()?))
            .arg(format!("-master.port.grpc={}", grpc("master")))
            .arg("-master.telemetry=false")
            .arg("-master.volumeSizeLimitMB=64")
            .arg(format!("-volume.port={}", free_port()?))
            .arg(format!("-volume.port.grpc={}", grpc("volume")))
            .arg("-volume.max=16")
            .arg("-filer")
            .arg(format!("-filer.port={}", free_port()?))
            .arg(format!("-filer.port.grpc={}", grpc("filer")))
            .arg(format!(
                "-filer.localSocket={}",
                d.join("filer.sock").display()
            ))
            .arg("-s3")
            .arg(format!("-s3.port={port}"))
            .arg(format!("-s3.port.grpc={}", grpc("s3")))
            .arg("-s3.port.iceberg=0")
            .arg("-s3.port.lance=0")
            .arg(format!("-s3.localSocket={}", d.join("s3.sock").display()))
            .arg(format!("-s3.cert.file={}", d.join("s3.crt").display()))
            .arg(format!("-s3.key.file={}", d.join("s3.key").display()))
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            // Its own process group, so that drop kills everything it
            // started.
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", weed.display()))?;
        let endpoint = format!("https://127.0.0.1:{port}");
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_region(REGION)
            .with_bucket_name(BUCKET)
            .with_access_key_id(ACCESS_KEY_ID)
            .with_secret_access_key(SECRET_ACCESS_KEY)
            .with_virtual_hosted_style_request(false)
            .with_client_options(
                ClientOptions::new()
                    .with_root_certificate(object_store::Certificate::from_pem(
                        pki.ca_cert.as_bytes(),
                    )?)
                    .with_timeout(Duration::from_secs(20)),
            )
            .build()?;
        let mut server = S3Server {
            dir,
            child,
            log,
            port,
            grpc_ports,
            pki,
            store,
        };
        server.wait_ready().await?;
        eprintln!(
            "S3 server (SeaweedFS) ready in {:.1?} at {}",
            started.elapsed(),
            server.public_url()
        );
        Ok(server)
    }

    /// Creates the bucket (the writer's first write does, with
    /// `-s3.autoCreateBucket`) and waits until an object in it can be read
    /// anonymously; then deletes the object again, leaving the bucket
    /// empty.
    async fn wait_ready(&mut self) -> Result<()> {
        const PROBE: &str = ".ksa-e2e-ready";
        let started = Instant::now();
        let anonymous = self.anonymous_client()?;
        let mut last_error = String::new();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("weed exited ({status}):\n{}", self.tail(40));
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "weed did not serve S3 within {READY_TIMEOUT:?} (last: {last_error}):\n{}",
                    self.tail(40)
                );
            }
            match self.put(PROBE, b"ready".to_vec(), "text/plain", None).await {
                Ok(()) => match anonymous.get(self.object_url(PROBE)).send().await {
                    Ok(response) if response.status().is_success() => break,
                    Ok(response) => last_error = format!("anonymous GET: {}", response.status()),
                    Err(error) => last_error = format!("anonymous GET: {error}"),
                },
                Err(error) => last_error = format!("PUT: {error:#}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.store
            .delete(&ObjectPath::from(PROBE))
            .await
            .context("deleting the readiness probe object")?;
        Ok(())
    }

    /// The S3 endpoint, `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn region(&self) -> &'static str {
        REGION
    }

    pub fn access_key_id(&self) -> &'static str {
        ACCESS_KEY_ID
    }

    pub fn secret_access_key(&self) -> &'static str {
        SECRET_ACCESS_KEY
    }

    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    /// The CA (PEM) that issued the server's certificate, which names
    /// 127.0.0.1 and localhost.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_cert
    }

    /// Where anonymous callers read the bucket: `https://127.0.0.1:PORT/BUCKET`
    /// (path-style).
    pub fn public_url(&self) -> String {
        format!("{}/{BUCKET}", self.endpoint())
    }

    /// The public URL of object `key` of the bucket.
    pub fn object_url(&self, key: &str) -> String {
        format!("{}/{}", self.public_url(), key.trim_start_matches('/'))
    }

    /// The writer's client of the bucket (`object_store`, S3 with
    /// signatures, trusting [`S3Server::ca_pem`]).
    pub fn store(&self) -> &AmazonS3 {
        &self.store
    }

    /// Writes object `key` as the writer, with this `Content-Type` and,
    /// when given, `Cache-Control` (which the store returns on every GET).
    pub async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        cache_control: Option<&str>,
    ) -> Result<()> {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        if let Some(cache_control) = cache_control {
            attributes.insert(Attribute::CacheControl, cache_control.to_owned().into());
        }
        let options = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&ObjectPath::from(key), body.into(), options)
            .await
            .with_context(|| format!("putting {key} into bucket {BUCKET}"))?;
        Ok(())
    }

    /// An https client with no credentials that trusts this server's CA
    /// only: what an outsider reads the bucket with.
    pub fn anonymous_client(&self) -> Result<reqwest::Client> {
        anonymous_client(self.ca_pem())
    }

    /// The data directory, log (`weed.log`) and certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// An https client with no credentials that trusts `ca_pem` only (not the
/// machine's roots), with short timeouts.
pub fn anonymous_client(ca_pem: &str) -> Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes())?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([ca])
        .https_only(true)
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()?)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // SIGKILL to the whole group: weed ignores SIGTERM.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The Unix sockets weed puts in /tmp for its gRPC ports.
        for (name, port) in &self.grpc_ports {
            let _ = fs::remove_file(format!("/tmp/seaweedfs-{name}-grpc-{port}.sock"));
        }
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of weed ({}) -----\n{}",
                self.log.display(),
                self.tail(30)
            );
        }
    }
}
