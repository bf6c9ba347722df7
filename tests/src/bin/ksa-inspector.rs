//! Serves the inspector page (`wasm/www`) on loopback, for `cargo xtask
//! serve-inspector`. Usage: ksa-inspector [--port N] (default 8088).

use anyhow::{Context, Result};
use ksa_tests::browser::{inspector_dir, serve_dir};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = match args.as_slice() {
        [] => 8088,
        [flag, port] if flag == "--port" => port
            .parse()
            .with_context(|| format!("--port {port:?} is not a port number"))?,
        _ => anyhow::bail!("usage: ksa-inspector [--port N]"),
    };
    let address = serve_dir(&inspector_dir()?, port).await?;
    println!("ksa inspector: http://{address}/ (Ctrl-C stops it)");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
