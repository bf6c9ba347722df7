//! The controller's errors: the Kubernetes I/O's (`ksa_kube::Error`), and
//! what only the reconciler meets (roll-out refusals, a stored status that
//! does not load, a step the core refuses). Matched by tests.

use crate::rollout::Refusal;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] ksa_kube::Error),
    #[error(transparent)]
    BadStatus(#[from] ksa_kube::api::BadStatus),
    #[error(transparent)]
    Step(#[from] ksa_core::rotation::StepError),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    PublishRefused(#[from] crate::publish::PublishError),
    #[error(transparent)]
    Publish(#[from] crate::publish::WriteError),
    #[error(
        "the cluster's service-account issuer could not be learned (its discovery document), so \
         its discovery document cannot be published outside"
    )]
    IssuerUnknown,
    #[error(
        "the reconcile did not finish within {seconds} s (an API server that accepts requests and \
         never answers, such as a user cluster the kubeconfig Secret names); it was stopped and is \
         retried: every step resumes where it stopped"
    )]
    ReconcileTimedOut { seconds: u64 },
}

// What `?` meets in the controller's own modules goes where the
// Kubernetes I/O puts it, so an error reads and matches the same wherever
// it was raised.
impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Error {
        Error::Kube(error.into())
    }
}

impl From<ksa_core::key::KeyError> for Error {
    fn from(error: ksa_core::key::KeyError) -> Error {
        Error::Kube(error.into())
    }
}

impl From<ksa_core::crypto::SignError> for Error {
    fn from(error: ksa_core::crypto::SignError) -> Error {
        Error::Kube(error.into())
    }
}

impl Error {
    /// The Event reason of an error that is a refusal of the rotation's
    /// spec or of what it names (retrying changes nothing until someone
    /// fixes them); `None` for other errors.
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            Error::Kube(
                ksa_kube::Error::Kubeconfig { .. } | ksa_kube::Error::KubeconfigClient { .. },
            ) => Some("KubeconfigRefused"),
            Error::Refused(refusal) => Some(refusal.reason()),
            Error::Kube(ksa_kube::Error::NotOurs(_)) => Some("NotKsas"),
            Error::PublishRefused(_) => Some("PublishRefused"),
            _ => None,
        }
    }

    /// Whether the error is a write refused because the resource changed
    /// since it was read (409 Conflict): the next reconcile reads it
    /// again; nothing an operator need look at.
    pub fn is_stale_read(&self) -> bool {
        matches!(
            self,
            Error::Kube(ksa_kube::Error::Kube(kube::Error::Api(status))) if status.code == 409
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
