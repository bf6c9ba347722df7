//! RS256 verifications per second inside headless Chromium, for `cargo xtask
//! bench`: loads the inspector page, then calls the wasm `verifyToken` on the
//! shared RS256 vector in a loop for SECONDS. Prints one JSON object.
//!
//! Usage: ksa-bench-wasm SECONDS

use anyhow::{Context, Result, bail};
use fantoccini::Locator;
use ksa_tests::browser::{Browser, inspector_dir, serve_dir};
use serde_json::{Value, json};

const SCRIPT: &str = r#"
const [token, jwks, options, seconds] = arguments;
const verify = window.ksa.verifyToken;
for (let i = 0; i < 200; i++) verify(token, jwks, options); // warm-up
let count = 0;
const start = performance.now();
const end = start + seconds * 1000;
while (performance.now() < end) {
  for (let i = 0; i < 50; i++) verify(token, jwks, options);
  count += 50;
}
return { count, ms: performance.now() - start };
"#;

#[tokio::main]
async fn main() -> Result<()> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .context("usage: ksa-bench-wasm SECONDS")?
        .parse()?;
    let vectors: Value =
        serde_json::from_str(include_str!("../../../core/test_data/vectors.json"))?;
    let vector = vectors["vectors"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["name"] == "valid RS256 bound token"))
        .context("the shared vectors have no valid RS256 token")?;
    let options = json!({
        "issuers": vector["issuers"], "audiences": vector["audiences"], "at": vector["at"],
    });

    let address = serve_dir(&inspector_dir()?, 0).await?;
    let browser = Browser::start().await?;
    let client = &browser.client;
    client.goto(&format!("http://{address}/")).await?;
    client
        .wait()
        .for_element(Locator::Css("body[data-ready]"))
        .await?;
    let result = client
        .execute(
            SCRIPT,
            vec![
                vector["token"].clone(),
                json!(vectors["jwks"].to_string()),
                options,
                json!(seconds),
            ],
        )
        .await?;
    // Ending the session makes chromedriver stop Chromium; killing
    // chromedriver alone would leave Chromium running.
    browser.client.clone().close().await?;
    let (Some(count), Some(ms)) = (result["count"].as_f64(), result["ms"].as_f64()) else {
        bail!("the benchmark script returned {result}");
    };
    println!(
        "{}",
        json!({ "verify_rs256_per_s": count / (ms / 1000.0), "count": count })
    );
    Ok(())
}
