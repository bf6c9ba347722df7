//! The browser harness: the inspector page served on loopback, and headless
//! Chromium driven through chromedriver (WebDriver), both from Debian's
//! packages that `cargo xtask setup` installs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::{Client, ClientBuilder};
use tokio::process::{Child, Command};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// `wasm/www`, checked to hold the package `cargo xtask wasm` builds.
pub fn inspector_dir() -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm/www");
    if !dir.join("pkg/ksa_wasm.js").is_file() {
        bail!(
            "{} has no pkg/ksa_wasm.js: run `cargo xtask wasm` first (`cargo xtask ci` does)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Serves `dir` on a loopback port until the runtime stops.
pub async fn serve_dir(dir: &Path, port: u16) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(address)
}

/// Headless Chromium under chromedriver; both stop when this is dropped.
#[derive(Debug)]
pub struct Browser {
    pub client: Client,
    _driver: Child,
}

impl Browser {
    pub async fn start() -> Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("starting {CHROMEDRIVER} (`cargo xtask setup` installs chromium-driver)")
            })?;
        let capabilities = chromium_capabilities()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut last_error = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Ok(Browser {
                        client,
                        _driver: driver,
                    });
                }
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("chromedriver did not start a Chromium session: {last_error:?}")
    }
}

/// The Chromium binary and flags, from `wasm/webdriver.json`, the file
/// wasm-bindgen-test-runner reads too.
fn chromium_capabilities() -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = include_str!("../../wasm/webdriver.json");
    Ok(serde_json::from_str(text)?)
}
