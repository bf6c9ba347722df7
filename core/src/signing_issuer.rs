//! Which issuer a cluster signs with before a rotation starts: the rule
//! every starter follows (the controller, the CLI's `rotate`, kubeadm
//! mode).
//!
//! ksa's own record wins: once ksa has changed the issuer, the cluster
//! signs with the last issuer rotation's target. Before that, only the
//! cluster can say (its discovery document, a kubeadm manifest's first
//! `--service-account-issuer`), and it is asked only then.

use std::future::Future;

use crate::issuer::Issuer;
use crate::rotation::RotationState;

/// The issuer a cluster whose completed rotation state is `state` signs
/// with: the last issuer rotation's target, or, when ksa never changed the
/// issuer, what `discovered` finds. `discovered` is awaited only then.
pub async fn signing_issuer<E>(
    state: &RotationState,
    discovered: impl Future<Output = Result<Issuer, E>>,
) -> Result<Issuer, E> {
    match state.issuer() {
        Some(done) => Ok(done.to.clone()),
        None => discovered.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyVersion;
    use crate::rotation::{self, IssuerChange, OperationLock, StartRequest, Step};
    use jiff::Timestamp;

    fn issuer(text: &str) -> Issuer {
        Issuer::new(text).expect("an issuer")
    }

    /// Polls a future that never waits.
    fn ready<T>(future: impl Future<Output = T>) -> T {
        let mut future = std::pin::pin!(future);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the future waited"),
        }
    }

    #[test]
    fn the_last_rotations_target_wins_and_the_cluster_is_asked_only_before_any() {
        let (a, b) = (issuer("https://a.example"), issuer("https://b.example"));
        let settled = RotationState::settled(KeyVersion::FIRST);
        let asked = ready(signing_issuer(&settled, async { Ok::<_, ()>(a.clone()) }));
        assert_eq!(asked, Ok(a.clone()));
        // After an issuer rotation from a to b, the cluster is not asked.
        let mut state = rotation::start(
            &settled,
            &StartRequest {
                target: KeyVersion::FIRST,
                issuer: Some(IssuerChange {
                    from: a.clone(),
                    to: b.clone(),
                }),
                advanced_cluster: false,
                lock: OperationLock::Free,
            },
            Timestamp::UNIX_EPOCH,
        )
        .expect("starts");
        state = state.at_step(Step::Completed).expect("completed");
        let asked = std::cell::Cell::new(false);
        let known = ready(signing_issuer(&state, async {
            asked.set(true);
            Ok::<_, ()>(a.clone())
        }));
        assert!(!asked.get(), "asked the cluster although ksa knows");
        assert_eq!(known, Ok(b));
    }
}
