//! Every file the user names is read with a cap on the bytes read, not on
//! the size the file reports: devices, FIFOs and endless streams are refused
//! with the bad-input code within seconds instead of filling memory.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{ksa, run};

const DEADLINE: Duration = Duration::from_secs(30);
const BAD_INPUT: Option<i32> = Some(2);
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln";

/// Each command that reads a user-named file, with `FILE` where the file goes.
const READERS: [&[&str]; 6] = [
    &["token", "verify", TOKEN, "--jwks", "FILE"],
    &["token", "verify", TOKEN, "--public-key", "FILE"],
    &["keys", "jwks", "FILE"],
    &[
        "token",
        "mint",
        "--key",
        "FILE",
        "legacy",
        "--namespace",
        "a",
        "--service-account",
        "b",
        "--uid",
        "c",
        "--secret",
        "d",
    ],
    &[
        "update",
        "credentials",
        "ksa-signing-key",
        "status",
        "--config",
        "FILE",
    ],
    &[
        "update",
        "credentials",
        "ksa-signing-key",
        "status",
        "--config",
        "CONFIG",
        "--kubeconfig",
        "FILE",
    ],
];

fn config() -> tempfile::NamedTempFile {
    let mut config = tempfile::NamedTempFile::new().expect("temp");
    writeln!(config, "name: user-cluster-1").expect("written");
    config
}

fn refuses_within_seconds(file: &str) {
    let config = config();
    let config = config.path().to_str().expect("path");
    for reader in READERS {
        let args: Vec<&str> = reader
            .iter()
            .map(|a| match *a {
                "FILE" => file,
                "CONFIG" => config,
                other => other,
            })
            .collect();
        let out = run(&mut ksa(&args), DEADLINE);
        assert_eq!(out.code, BAD_INPUT, "{args:?}: {out:?}");
        assert!(
            out.stderr
                .contains(&format!("{file} holds more than 1048576 bytes")),
            "{args:?}: {out:?}"
        );
        assert!(out.took < Duration::from_secs(10), "{args:?}: {out:?}");
    }
}

#[test]
fn dev_zero_is_refused() {
    refuses_within_seconds("/dev/zero");
}

#[test]
fn dev_urandom_is_refused() {
    refuses_within_seconds("/dev/urandom");
}

/// A FIFO whose writer never stops: the reader stops one byte past the cap.
#[test]
fn endless_fifo_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config();
    let config = config.path().to_str().expect("path");
    for (n, reader) in READERS.iter().enumerate() {
        let fifo = dir.path().join(format!("fifo-{n}"));
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", fifo.display());
        {
            let fifo = fifo.clone();
            // Not joined: should ksa never open the FIFO, the writer stays
            // blocked in open until the test process ends.
            std::thread::spawn(move || {
                // Opening blocks until ksa opens the other end; writing ends
                // when ksa closes it (EPIPE).
                let Ok(mut pipe) = std::fs::OpenOptions::new().write(true).open(&fifo) else {
                    return;
                };
                let chunk = [b'a'; 64 * 1024];
                while pipe.write_all(&chunk).is_ok() {}
            });
        }
        let fifo = fifo.to_str().expect("path");
        let args: Vec<&str> = reader
            .iter()
            .map(|a| match *a {
                "FILE" => fifo,
                "CONFIG" => config,
                other => other,
            })
            .collect();
        let out = run(&mut ksa(&args), DEADLINE);
        assert_eq!(out.code, BAD_INPUT, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("holds more than 1048576 bytes"),
            "{args:?}: {out:?}"
        );
    }
}

/// Stdin (`-`) has the same cap.
#[test]
fn endless_stdin_is_refused() {
    let mut command = ksa(&["keys", "jwks", "-"]);
    command.stdin(std::fs::File::open("/dev/zero").expect("/dev/zero"));
    let out = run(&mut command, DEADLINE);
    assert_eq!(out.code, BAD_INPUT, "{out:?}");
    assert!(
        out.stderr.contains("stdin holds more than 1048576 bytes"),
        "{out:?}"
    );
}
