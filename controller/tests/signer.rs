//! `ksa-controller signer` as kube-apiserver uses it: the real binary on a
//! Unix socket, called through gRPC clients generated from the same proto
//! (v1 and v1alpha1). Keys come from a directory that the test changes under
//! it, as a rotation does.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ksa_controller::signer::proto::{v1, v1alpha1};
use ksa_core::crypto::{AwsLc, SigningBackend as _};
use ksa_core::key::{KeySpec, PrivateKey, public_keys_to_pem};
use ksa_core::keyset::{KeySet, TrustedKey};
use ksa_core::token::{self, Expectations};
use tonic::transport::{Channel, Endpoint, Uri};

struct SignerProcess {
    child: Child,
    socket: PathBuf,
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_keys(dir: &Path, signing: &PrivateKey, trusted: &[&PrivateKey]) -> Result<()> {
    // Written to new files and renamed, as kubelet swaps a mounted Secret.
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let staging = dir.join(format!(".{name}.new"));
        std::fs::write(&staging, bytes)?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staging, dir.join(name))?;
        Ok(())
    };
    write("sa.key", signing.to_pem().as_bytes())?;
    write(
        "sa.pub",
        public_keys_to_pem(trusted.iter().map(|k| k.public_key())).as_bytes(),
    )
}

fn start_signer(dir: &Path) -> Result<SignerProcess> {
    let socket = dir.join("signer.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_ksa-controller"))
        .args(["signer", "--refresh-hint-seconds", "7"])
        .args(["--max-token-expiration-seconds", "3600"])
        .arg("--socket")
        .arg(&socket)
        .arg("--key-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    while !socket.exists() {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("the signer did not create {}", socket.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(SignerProcess { child, socket })
}

async fn channel(socket: &Path) -> Result<Channel> {
    let socket = socket.to_owned();
    Ok(Endpoint::try_from("http://signer.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?)
}

type V1Client = v1::external_jwt_signer_client::ExternalJwtSignerClient<Channel>;

/// Signs claims through the signer; returns the whole token.
async fn sign(client: &mut V1Client, claims: &serde_json::Value) -> Result<String> {
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let response = client
        .sign(v1::SignJwtRequest {
            claims: claims.clone(),
        })
        .await?
        .into_inner();
    Ok(format!(
        "{}.{claims}.{}",
        response.header, response.signature
    ))
}

async fn fetched_kids(client: &mut V1Client) -> Result<Vec<String>> {
    let keys = client
        .fetch_keys(v1::FetchKeysRequest {})
        .await?
        .into_inner();
    Ok(keys.keys.into_iter().map(|k| k.key_id).collect())
}

/// Polls until `check` holds (the signer re-reads its directory every second).
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    while !check().await? {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("{what} did not happen within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn verify(token: &str, key: &PrivateKey) -> Result<token::Verified> {
    let trusted = vec![TrustedKey {
        kid: key.kid().clone(),
        key: key.public_key().clone(),
        version: None,
    }];
    let keys = KeySet::new(trusted, &AwsLc::new())?;
    let expect = Expectations {
        issuers: vec!["https://issuer.test".into()],
        audiences: vec![],
        at: 1_800_000_000,
        leeway_seconds: 60,
    };
    Ok(token::verify(token, &keys, &expect)?)
}

#[tokio::test]
async fn the_signer_follows_its_key_files_and_never_signs_with_an_untrusted_key() -> Result<()> {
    let aws = AwsLc::new();
    let [one, two, stranger] = [(); 3].map(|()| aws.generate(KeySpec::Rsa2048).expect("keygen"));
    let dir = tempfile::tempdir()?;
    write_keys(dir.path(), &one, &[&one])?;
    let signer = start_signer(dir.path())?;
    let mode = std::fs::metadata(&signer.socket)?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is private");

    let mut client = V1Client::new(channel(&signer.socket).await?);
    let metadata = client.metadata(v1::MetadataRequest {}).await?.into_inner();
    assert_eq!(metadata.max_token_expiration_seconds, 3600);
    let keys = client
        .fetch_keys(v1::FetchKeysRequest {})
        .await?
        .into_inner();
    assert_eq!(keys.refresh_hint_seconds, 7);
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].key_id, one.kid().as_str());
    assert_eq!(keys.keys[0].key, one.public_key().spki_der());
    assert!(!keys.keys[0].exclude_from_oidc_discovery);
    let first_timestamp = keys.data_timestamp.context("a data timestamp")?;

    let claims = serde_json::json!({
        "iss": "https://issuer.test", "sub": "system:serviceaccount:apps:web",
        "aud": ["api"], "iat": 1_800_000_000, "nbf": 1_800_000_000, "exp": 1_800_003_600,
    });
    let token = sign(&mut client, &claims).await?;
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(token.split('.').next().context("a header")?)?,
    )?;
    assert_eq!(
        header,
        serde_json::json!({"alg": "RS256", "kid": one.kid().as_str(), "typ": "JWT"}),
        "the header has only alg, kid and typ"
    );
    verify(&token, &one)?;

    // Claims that are not base64url are refused, not signed.
    for bad in ["", "not base64!", "eyJ.eyJ"] {
        let status = client
            .sign(v1::SignJwtRequest { claims: bad.into() })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
    }

    // Trust: both keys published, still signing with the first.
    write_keys(dir.path(), &one, &[&one, &two])?;
    eventually("the signer publishing [1, 2]", || {
        let mut client = client.clone();
        async move { Ok(fetched_kids(&mut client).await?.len() == 2) }
    })
    .await?;
    let keys = client
        .fetch_keys(v1::FetchKeysRequest {})
        .await?
        .into_inner();
    assert!(keys.data_timestamp.context("a timestamp")?.seconds >= first_timestamp.seconds);
    verify(&sign(&mut client, &claims).await?, &one)?;

    // Sign: the second key signs.
    write_keys(dir.path(), &two, &[&one, &two])?;
    eventually("the signer signing with key 2", || {
        let mut client = client.clone();
        let claims = claims.clone();
        let two = two.clone();
        async move { Ok(verify(&sign(&mut client, &claims).await?, &two).is_ok()) }
    })
    .await?;

    // A signing key outside the trusted set is refused; the last good set stays.
    write_keys(dir.path(), &stranger, &[&one, &two])?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    verify(&sign(&mut client, &claims).await?, &two)?;
    assert_eq!(
        fetched_kids(&mut client).await?,
        [one.kid().as_str(), two.kid().as_str()]
    );

    // Retire: only the second key is published.
    write_keys(dir.path(), &two, &[&two])?;
    eventually("the signer publishing [2]", || {
        let mut client = client.clone();
        async move { Ok(fetched_kids(&mut client).await?.len() == 1) }
    })
    .await?;

    // Older API servers speak v1alpha1: same answers.
    let mut alpha = v1alpha1::external_jwt_signer_client::ExternalJwtSignerClient::new(
        channel(&signer.socket).await?,
    );
    let encoded = URL_SAFE_NO_PAD.encode(claims.to_string());
    let response = alpha
        .sign(v1alpha1::SignJwtRequest {
            claims: encoded.clone(),
        })
        .await?
        .into_inner();
    verify(
        &format!("{}.{encoded}.{}", response.header, response.signature),
        &two,
    )?;
    let alpha_keys = alpha
        .fetch_keys(v1alpha1::FetchKeysRequest {})
        .await?
        .into_inner();
    assert_eq!(alpha_keys.keys[0].key_id, two.kid().as_str());
    Ok(())
}

#[tokio::test]
async fn a_second_signer_refuses_a_live_socket_and_sigterm_stops_cleanly() -> Result<()> {
    let key = AwsLc::new().generate(KeySpec::EcP256)?;
    let dir = tempfile::tempdir()?;
    write_keys(dir.path(), &key, &[&key])?;
    let mut signer = start_signer(dir.path())?;

    let second = Command::new(env!("CARGO_BIN_EXE_ksa-controller"))
        .arg("signer")
        .arg("--socket")
        .arg(&signer.socket)
        .arg("--key-dir")
        .arg(dir.path())
        .output()?;
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another process serves"), "{stderr}");

    let mut client = V1Client::new(channel(&signer.socket).await?);
    assert_eq!(fetched_kids(&mut client).await?, [key.kid().as_str()]);

    let pid = signer.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = signer.child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the signer did not stop on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(!signer.socket.exists(), "the socket is removed");
    Ok(())
}
