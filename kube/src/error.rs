//! The errors of ksa's Kubernetes I/O: one enum, matched by tests. The
//! controller wraps it with its own refusals (`ksa_controller::Error`); the
//! CLI reports it with its exit code.

use ksa_core::KeyVersion;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("Kubernetes API: {}", describe(.0))]
    Kube(#[from] kube::Error),
    #[error("key: {0}")]
    Key(#[from] ksa_core::key::KeyError),
    #[error("signing: {0}")]
    Sign(#[from] ksa_core::crypto::SignError),
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
    #[error("key Secret {name} {problem}")]
    BadKeySecret { name: String, problem: &'static str },
    #[error("building a request: {0}")]
    Request(#[from] http::Error),
    #[error("the user cluster's {what} is unusable: {detail}")]
    BadResponse { what: &'static str, detail: String },
    #[error("the cluster operation lock is held by {holder}")]
    Locked { holder: String },
    /// The lock was released between a failed take and the look at its
    /// holder: taking it again is safe.
    #[error("the cluster operation lock changed hands while being taken; taking it again")]
    LockRaced,
    /// A background task (a re-mint) panicked or was cancelled.
    #[error("a background task failed: {0}")]
    Task(tokio::task::JoinError),
    /// The API server requires the annotation on this Secret type, so only
    /// a cluster that skipped validation can hold one.
    #[error(
        "legacy token Secret {namespace}/{name} names no service account (annotation \
         kubernetes.io/service-account.name); fix or delete it"
    )]
    LegacySecretWithoutAccount { namespace: String, name: String },
    /// The identity Leases of the API servers cannot be listed: without
    /// them an instance missing from the EndpointSlice would go unasked.
    #[error(
        "listing the API servers' identity Leases in kube-system is forbidden: ksa confirms each \
         step on every instance, including one the kubernetes EndpointSlice does not list; grant \
         list on leases (coordination.k8s.io) in kube-system (deploy/controller.yaml grants it \
         in ClusterRole ksa-controller-probe, bound there)"
    )]
    IdentityLeasesForbidden,
    /// An object ksa would use, serve, adopt or overwrite is not ksa's.
    #[error(transparent)]
    NotOurs(#[from] crate::provenance::NotOurs),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Kubernetes client error as a person reads it: the API server's own
/// message with its code and reason (`secrets "x" not found (404
/// NotFound)`), never kube-rs's debug dump of the whole `Status`.
pub fn describe(error: &kube::Error) -> String {
    match error {
        // Not a Kubernetes answer: kube-rs keeps the body (an HTML page
        // from a proxy or a web server) as the message. Shown only when it
        // is one short line of text, such as `404 page not found`.
        kube::Error::Api(status) if status.reason == NOT_A_STATUS => {
            let body = status.message.trim();
            let short = body.len() <= 100
                && !body.contains(['<', '\n'])
                && !body.chars().any(char::is_control);
            let said = if short && !body.is_empty() {
                format!(" ({body:?})")
            } else {
                String::new()
            };
            let why = if status.code == 404 {
                "the server does not serve this API: a resource type that is not installed, or a \
                 server URL that is not a Kubernetes API server's"
            } else {
                "a proxy in front of the API server answered, or the server URL is not a \
                 Kubernetes API server's"
            };
            format!(
                "HTTP {} with no Kubernetes Status in the answer{said}; {why}",
                status.code
            )
        }
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                "the API server refused the request"
            } else {
                status.message.as_str()
            };
            match (status.code, status.reason.as_str()) {
                (0, "") => message.to_owned(),
                (code, "") => format!("{message} ({code})"),
                (code, reason) => format!("{message} ({code} {reason})"),
            }
        }
        other => other.to_string(),
    }
}

/// The reason kube-rs gives an error answer that is not a `Status`.
const NOT_A_STATUS: &str = "Failed to parse error data";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_is_no_status_is_not_dumped() {
        let html = kube::core::Status::failure(
            "<!DOCTYPE HTML>\n<html><body><h1>Error response</h1></body></html>",
            NOT_A_STATUS,
        )
        .with_code(404);
        assert_eq!(
            describe(&kube::Error::Api(html.boxed())),
            "HTTP 404 with no Kubernetes Status in the answer; the server does not serve this \
             API: a resource type that is not installed, or a server URL that is not a Kubernetes \
             API server's"
        );
        let text = kube::core::Status::failure("404 page not found", NOT_A_STATUS).with_code(404);
        assert_eq!(
            describe(&kube::Error::Api(text.boxed())),
            "HTTP 404 with no Kubernetes Status in the answer (\"404 page not found\"); the \
             server does not serve this API: a resource type that is not installed, or a server \
             URL that is not a Kubernetes API server's"
        );
    }

    #[test]
    fn an_api_error_reads_as_the_api_servers_message_not_a_debug_dump() {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "message": "ksasigningkeyrotations.ksa.dev \"c1\" not found",
            "reason": "NotFound",
            "code": 404,
        }))
        .expect("a Status");
        let error = Error::Kube(kube::Error::Api(Box::new(status)));
        assert_eq!(
            error.to_string(),
            "Kubernetes API: ksasigningkeyrotations.ksa.dev \"c1\" not found (404 NotFound)"
        );
    }
}
