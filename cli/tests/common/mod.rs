//! Running the real `ksa` binary with a deadline, so that a test of hostile
//! input can fail but never hang.
#![allow(dead_code, reason = "each test file uses a part")]

pub mod fake_api;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished `ksa` run left.
#[derive(Debug)]
pub struct Run {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// `ksa` with a clean environment for output checks, under a 1 GiB address
/// space limit so that a regression that reads without bound fails here
/// instead of exhausting the machine.
pub fn ksa(args: &[&str]) -> Command {
    ksa_after("", args)
}

/// `ksa` started by a shell that first runs `setup` (such as `umask 0;`).
pub fn ksa_after(setup: &str, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{setup} ulimit -v 1048576; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_ksa"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("KSA_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `command`, killing it when it outlives `deadline`.
pub fn run(command: &mut Command, deadline: Duration) -> Run {
    let start = Instant::now();
    let mut child = command.spawn().expect("ksa starts");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait(&mut child, deadline);
    let took = start.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "ksa {:?} still ran after {deadline:?}; killed",
            command.get_args().skip(2).collect::<Vec<_>>()
        )
    });
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout thread"),
        stderr: stderr.join().expect("stderr thread"),
        took,
    }
}

fn wait(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The shared token vectors of `core/test_data/vectors.json`.
pub fn vectors() -> serde_json::Value {
    let path = format!(
        "{}/../core/test_data/vectors.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json")
}

/// The token of the vector called `name`.
pub fn vector_token(name: &str) -> String {
    vectors()["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["name"] == name)
        .and_then(|v| v["token"].as_str())
        .expect("vector")
        .to_owned()
}

/// A file holding the vectors' JWKS.
pub fn jwks_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), vectors()["jwks"].to_string()).expect("written");
    file
}
