//! A network namespace of the test's own, so that several kube-apiserver
//! instances can each have an address of their own.
//!
//! kube-apiserver registers its `--advertise-address` in the `kubernetes`
//! EndpointSlice, and the API refuses loopback addresses there
//! (`ValidateEndpointIP`: "may not be in the loopback range"), so instances
//! on 127.0.0.x would never be listed. Inside a namespace of its own the
//! test gives its loopback device addresses of the benchmarking range
//! 198.18.0.0/15, which nothing outside the namespace sees: no interface of
//! the machine is touched, and nothing is reachable but the namespace
//! itself.
//!
//! A test enters one by running itself again inside it: [`enter`] starts
//! this test executable, filtered to the calling test, under `unshare`
//! (as root `--net`; otherwise `--user --map-root-user --net`), relays its
//! output, and returns its outcome; inside, it brings the loopback device
//! up and returns [`Netns::Inside`]. Every process the test starts runs
//! inside too.

use std::io::{BufRead as _, BufReader, Read};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context as _, Result, bail};

/// Set, to [`INSIDE`], in the environment of the copy run inside.
const ENV: &str = "KSA_E2E_NETNS";
const INSIDE: &str = "inside";

/// Where [`enter`] left the test.
#[derive(Debug)]
#[must_use = "a test that ran in its namespace must return its outcome"]
pub enum Netns {
    /// This process is inside a network namespace of its own: go on with
    /// the test.
    Inside,
    /// The test ran in a copy of this process inside one; this is its
    /// outcome, to return.
    Ran(Result<()>),
}

/// Runs the calling test in a network namespace of its own; see the module
/// documentation. Call it first thing in the test:
///
/// ```ignore
/// if let Netns::Ran(outcome) = ksa_tests::netns::enter()? {
///     return outcome;
/// }
/// ```
pub fn enter() -> Result<Netns> {
    enter_with(&[], &[])
}

/// Like [`enter`], with more `unshare` flags (a mount and PID namespace
/// too, say) and variables for the copy run inside.
pub(crate) fn enter_with(flags: &[&str], env: &[(&str, String)]) -> Result<Netns> {
    if inside() {
        run(Command::new("ip").args(["link", "set", "lo", "up"]))?;
        return Ok(Netns::Inside);
    }
    // libtest runs each test on a thread named after it.
    let thread = std::thread::current();
    let test = thread
        .name()
        .filter(|name| *name != "main")
        .context("netns::enter must be called on the test's own thread")?;
    let mut command = Command::new("unshare");
    if !is_root()? {
        command.args(["--user", "--map-root-user"]);
    }
    command
        .arg("--net")
        .args(flags)
        .arg("--")
        .arg(std::env::current_exe()?)
        .args([test, "--exact", "--include-ignored", "--test-threads=1"]);
    let nocapture = std::env::var_os("RUST_TEST_NOCAPTURE").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--nocapture" || a == "--no-capture");
    if nocapture {
        command.arg("--nocapture");
    }
    let mut child = command
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env(ENV, INSIDE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting `unshare` (util-linux) to run the test in a network namespace")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    // Threads spawned here inherit the test's output capture, so the
    // relayed output is shown as the test's own: on failure, or always
    // with --nocapture.
    let errors = std::thread::spawn(move || relay(stderr, |line| eprintln!("{line}")));
    let report = relay(stdout, |line| println!("{line}"));
    let _ = errors.join();
    let status = child.wait()?;
    let passed = format!("test {test} ... ok");
    // libtest exits 101 when a test fails; `unshare` 1 when it cannot
    // make the namespace.
    Ok(Netns::Ran(if status.code() == Some(101) {
        Err(anyhow::anyhow!(
            "the test failed in its network namespace; its report is above"
        ))
    } else if !status.success() {
        Err(anyhow::anyhow!(
            "could not run the test in a network namespace of its own ({status}; see above): \
             that needs root, or unprivileged user namespaces"
        ))
    } else if !report.iter().any(|line| line == &passed) {
        Err(anyhow::anyhow!(
            "the copy of this test started in a network namespace did not run it \
             (no `{passed}` in its report)"
        ))
    } else {
        Ok(())
    }))
}

/// Whether this process is the copy [`enter`] started in a namespace.
pub fn inside() -> bool {
    std::env::var(ENV).is_ok_and(|v| v == INSIDE)
}

/// A new address on the namespace's loopback device, one of 198.18.0.0/15
/// (RFC 2544, set aside for benchmarks): an address kube-apiserver may
/// advertise in the `kubernetes` EndpointSlice. Only inside a namespace
/// [`enter`] made.
pub fn new_address() -> Result<Ipv4Addr> {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    if !inside() {
        bail!(
            "an address of its own for each kube-apiserver instance needs a network namespace: \
             call ksa_tests::netns::enter() first thing in the test"
        );
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        bail!("out of addresses");
    }
    let address = Ipv4Addr::new(198, 18, 0, n);
    run(Command::new("ip")
        .args(["address", "add"])
        .arg(format!("{address}/32"))
        .args(["dev", "lo"]))?;
    Ok(address)
}

fn is_root() -> Result<bool> {
    // /proc/self belongs to the process's effective user.
    Ok(std::fs::metadata("/proc/self")?.uid() == 0)
}

fn run(command: &mut Command) -> Result<()> {
    let output = command.output().with_context(|| {
        format!(
            "running {:?} (iproute2) in the test's network namespace",
            command.get_program()
        )
    })?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Copies `from` line by line to `to`; returns the lines.
fn relay(from: impl Read, to: impl Fn(&str)) -> Vec<String> {
    let mut lines = Vec::new();
    for line in BufReader::new(from).lines().map_while(Result::ok) {
        to(&line);
        lines.push(line);
    }
    lines
}
