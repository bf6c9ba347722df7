//! Waiting, with a deadline, for what another component must first
//! observe. A write to the API server is not in force when it returns: the
//! RBAC authorizer, the admission policies, Pod Security admission and
//! every controller see it through an informer, a moment later. A check
//! made right after such a write asks again until it holds, and fails at
//! the deadline with what was still wrong.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;

/// How long a check after a write waits for the component that must
/// observe it (the RBAC authorizer, an admission policy): ample on a
/// loaded machine, where it usually takes well under a second.
pub const OBSERVED_WITHIN: Duration = Duration::from_secs(30);

/// How often a check is asked again.
const TICK: Duration = Duration::from_millis(250);

/// Asks `check` until it returns `Ok`, for at most `within`; an `Err` means
/// "not yet", and says what is still missing. At the deadline, fails with
/// the last error, in the context of `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(error) if started.elapsed() < within => {
                note_retry(what, &error);
                tokio::time::sleep(TICK.min(within)).await;
            }
            Err(error) => {
                return Err(error.context(format!("{what}: still not so after {within:?}")));
            }
        }
    }
}

/// Says (once a second at most) why a check is asked again.
fn note_retry(what: &str, error: &anyhow::Error) {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let Ok(mut last) = LAST.lock() else { return };
    if last.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
        eprintln!("{what}: {error:#}; asking again");
        *last = Some(Instant::now());
    }
}
