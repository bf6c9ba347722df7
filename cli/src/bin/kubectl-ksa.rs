//! `kubectl-ksa`: the kubectl plugin name of `ksa`, so `kubectl ksa ...` works.

fn main() -> std::process::ExitCode {
    ksa_cli::main()
}
