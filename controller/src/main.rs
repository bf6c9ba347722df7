//! The `ksa-controller` binary: a thin `main` over the library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use ksa_kube::api::KSASigningKeyRotation;
use kube::CustomResourceExt as _;

#[derive(Parser, Debug)]
#[command(
    name = "ksa-controller",
    version,
    about = "Rotates Kubernetes service-account signing keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reconcile KSASigningKeyRotation resources (with leader election).
    Run(Box<ksa_controller::run::RunArgs>),
    /// Serve the KEP-740 external signer on a Unix socket for kube-apiserver
    /// (--service-account-signing-endpoint).
    Signer(ksa_controller::signer::SignerArgs),
    /// Print the CustomResourceDefinition as YAML.
    Crd,
    /// Write the install manifests (CRD, RBAC, Deployment, Service) into DIR.
    Manifests { dir: std::path::PathBuf },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!(
                "{}",
                ksa_controller::manifests::to_yaml(&KSASigningKeyRotation::crd())
            );
            Ok(())
        }
        Command::Run(args) => ksa_controller::run::run(*args).await,
        Command::Signer(args) => ksa_controller::signer::run(args).await,
        Command::Manifests { dir } => {
            std::fs::create_dir_all(&dir)?;
            for (name, text) in ksa_controller::manifests::render() {
                std::fs::write(dir.join(name), text)?;
                println!("wrote {}", dir.join(name).display());
            }
            Ok(())
        }
    }
}
