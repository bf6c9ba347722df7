//! The `ksa` binary: everything is in the library, so `kubectl-ksa` is the
//! same program.

fn main() -> std::process::ExitCode {
    ksa_cli::main()
}
