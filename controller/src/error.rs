//! The controller's errors: one enum, matched by tests.

use ksa_core::KeyVersion;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("key: {0}")]
    Key(#[from] ksa_core::key::KeyError),
    #[error("signing: {0}")]
    Sign(#[from] ksa_core::crypto::SignError),
    #[error(transparent)]
    BadStatus(#[from] crate::api::BadStatus),
    #[error(transparent)]
    Step(#[from] ksa_core::rotation::StepError),
    #[error(
        "key version {version} is not in the key store (Secret {secret}); import the cluster's current key first"
    )]
    MissingKey { version: KeyVersion, secret: String },
    /// The rotation's kubeconfig Secret is refused; `problem` names the
    /// field, never the Secret's content.
    #[error(
        "the user cluster kubeconfig in Secret {secret} is refused: {problem}; ksa accepts only \
         an https server with inline credentials (client-certificate-data and client-key-data, \
         or token) and an inline certificate-authority-data"
    )]
    Kubeconfig {
        secret: String,
        problem: crate::kubeconfig::KubeconfigProblem,
    },
    /// The client for the user cluster could not be built from a checked
    /// kubeconfig (say, a certificate that does not match its key). The
    /// cause is left out: it could quote the Secret.
    #[error(
        "the user cluster kubeconfig in Secret {secret} is refused: no client can be made of \
         its server, certificate authority and credentials"
    )]
    KubeconfigClient { secret: String },
    #[error(transparent)]
    Refused(#[from] crate::rollout::Refusal),
    #[error("key Secret {name} {problem}")]
    BadKeySecret { name: String, problem: &'static str },
    #[error("building a request: {0}")]
    Request(#[from] http::Error),
    #[error("the user cluster's {what} is unusable: {detail}")]
    BadResponse { what: &'static str, detail: String },
    #[error("the cluster operation lock is held by {holder}")]
    Locked { holder: String },
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The Event reason of an error that is a refusal of the rotation's
    /// spec or of what it names (retrying changes nothing until someone
    /// fixes them); `None` for other errors.
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            Error::Kubeconfig { .. } | Error::KubeconfigClient { .. } => Some("KubeconfigRefused"),
            Error::Refused(refusal) => Some(refusal.reason()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
