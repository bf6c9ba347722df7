//! Running the real `ksa` binary with a deadline, so that a test of hostile
//! input can fail but never hang.
#![allow(dead_code, reason = "each test file uses a part")]

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
