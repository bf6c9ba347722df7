//! `kubectl_complete-ksa`: what kubectl (1.26 and later) runs to complete
//! `kubectl ksa <TAB>`; install it on the PATH beside `kubectl-ksa`.

fn main() -> std::process::ExitCode {
    ksa_cli::completion::main()
}
