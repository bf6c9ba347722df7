//! The `KSASigningKeyRotation` custom resource (group `ksa.dev`, version
//! `v1alpha1`), one per user cluster in the admin cluster. The CRD YAML in
//! `deploy/` is generated from these types by `cargo xtask manifests`.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use ksa_core::KeyVersion;
use ksa_core::issuer::Issuer;
use ksa_core::key::KeySpec;
use ksa_core::rotation::{IssuerChange, Policy, RotationState, Step};
use ksa_core::status::StatusLine;
use kube::CustomResource;

use crate::provenance::{Kind, NotOurs, Sealer, Subject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The condition type that carries the status line.
pub const CONDITION_TYPE: &str = "KSASigningKeyRotation";
/// The condition type that carries the issuer status line (SPEC section
/// 10), once ksa has changed the issuer.
pub const ISSUER_CONDITION_TYPE: &str = "KSAIssuerRotation";
/// The condition `kubectl wait --for=condition=Ready` waits for: `True`
/// once the rotation the status records is completed.
pub const READY_CONDITION_TYPE: &str = "Ready";
/// The Ready reasons while not completed: the rotation moves on by itself;
/// it waits for something only an operator can do (a refusal, a missing
/// grant, token holders a PodDisruptionBudget holds); its passes fail.
pub const READY_PROGRESSING: &str = "Progressing";
pub const READY_BLOCKED: &str = "Blocked";
pub const READY_FAILING: &str = "Failing";

/// Rotate a user cluster's service-account signing key to `keyVersion`,
/// and its token issuer to `issuer`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ksa.dev",
    version = "v1alpha1",
    kind = "KSASigningKeyRotation",
    plural = "ksasigningkeyrotations",
    shortname = "ksarot",
    namespaced,
    status = "RotationStatus",
    printcolumn = r#"{"name":"Target","type":"integer","jsonPath":".spec.keyVersion"}"#,
    printcolumn = r#"{"name":"Version","type":"integer","jsonPath":".status.keyVersion"}"#,
    printcolumn = r#"{"name":"Step","type":"string","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why Ready is what it is: Completed, Progressing, Blocked (waits for an operator: -o wide says on what) or Failing","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Since","type":"date","jsonPath":".status.conditions[?(@.type==\"Ready\")].lastTransitionTime"}"#,
    printcolumn = r#"{"name":"Issuer","type":"string","priority":1,"jsonPath":".status.issuer.signingIssuer"}"#,
    printcolumn = r#"{"name":"Waiting","type":"string","priority":1,"jsonPath":".status.waitingFor"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[schemars(transform = schemars::transform::RecursiveTransform(int64_format))]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// The key version to rotate to: the current version plus one (or the
    /// current version, to change only the issuer).
    pub key_version: u64,
    /// The issuer to rotate to (`--service-account-issuer`): an https URL
    /// with a host and no query, fragment or credentials. Unset: the issuer
    /// stays as it is. Needs `rollout.workload`, whose container arguments
    /// carry the issuer flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = "^https://"))]
    pub issuer: Option<String>,
    /// How to reach the user cluster. None: the controller's own cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRef>,
    /// The key to generate.
    #[serde(default)]
    pub key: KeyKind,
    /// How API servers pick up a new key set.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// How bound (projected) tokens are refreshed.
    #[serde(default)]
    pub token_refresh: TokenRefreshSpec,
    /// Seconds Trust holds after every API server and every published
    /// location serves the new key and outside caches have expired, as a
    /// margin for verifiers that ignore caching.
    #[serde(default)]
    pub trust_lead_time_seconds: u64,
    /// Where outside verifiers read this cluster's keys besides the
    /// controller's own endpoint: a bucket, a directory.
    #[serde(default, skip_serializing_if = "PublishSpec::is_empty")]
    pub publish: PublishSpec,
}

/// Locations ksa publishes each issuer's discovery document and JWKS to,
/// and confirms as an outsider reads them (see `ksa_core::discovery`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Sink>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectorySink>,
}

impl PublishSpec {
    pub fn is_empty(&self) -> bool {
        self.s3.is_none() && self.directory.is_none()
    }
}

/// An S3-compatible bucket (what self-hosted IRSA-style issuers use). The
/// controller writes with the credentials of `credentialsSecret` and
/// confirms by reading `publicUrl` with none.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Sink {
    /// The S3 API endpoint, such as `https://s3.us-east-1.amazonaws.com`.
    /// Its host must be one the controller allows (`--publish-host`).
    #[schemars(length(max = 512), regex(pattern = "^https?://"))]
    pub endpoint: String,
    #[serde(default = "default_region")]
    #[schemars(length(max = 64))]
    pub region: String,
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = "^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,
    /// The key prefix documents go under (`prod` puts them under `prod/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub prefix: Option<String>,
    /// Where outsiders read the prefix. Default: path-style under the
    /// endpoint, `<endpoint>/<bucket>/<prefix>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = "^https?://"))]
    pub public_url: Option<String>,
    /// A Secret in this namespace with `accessKeyID` and `secretAccessKey`.
    #[schemars(length(max = 253))]
    pub credentials_secret: String,
    /// PEM certificates to trust for the endpoint and the public URL,
    /// besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// A directory below the controller's `--publish-root` (in
/// `ROOT/NAMESPACE/NAME/PATH`), for a static host or a GitOps sync to serve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectorySink {
    /// The directory, relative to `--publish-root/NAMESPACE/NAME` (plain
    /// segments, no `..`).
    #[schemars(length(min = 1, max = 256))]
    pub path: String,
    /// Where outsiders read the directory. Default: none; the controller
    /// confirms by reading the files back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = "^https?://"))]
    pub public_url: Option<String>,
}

/// A Secret in the admin cluster holding the user cluster's kubeconfig.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    pub kubeconfig_secret: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    pub name: String,
    /// The data key; `value` when omitted.
    #[serde(default = "default_kubeconfig_key")]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    "value".to_owned()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum KeyKind {
    #[default]
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    #[serde(rename = "RSA-3072")]
    Rsa3072,
    #[serde(rename = "RSA-4096")]
    Rsa4096,
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
}

impl From<KeyKind> for KeySpec {
    fn from(kind: KeyKind) -> KeySpec {
        match kind {
            KeyKind::Rsa2048 => KeySpec::Rsa2048,
            KeyKind::Rsa3072 => KeySpec::Rsa3072,
            KeyKind::Rsa4096 => KeySpec::Rsa4096,
            KeyKind::EcdsaP256 => KeySpec::EcP256,
        }
    }
}

/// How API servers get a new key set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    #[serde(default)]
    pub kind: RolloutKind,
    /// The Secret (in this namespace) the API server pods mount, holding
    /// `sa.key` and `sa.pub`. Default: `<name>-apiserver-keys`. Any other
    /// Secret must exist and be labelled `ksa.dev/rotation: <name>`: ksa
    /// writes the private signing key only into a Secret it owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<String>,
    /// The workload running the API server pods, restarted when the key set
    /// changes. It must be labelled `ksa.dev/rotation: <name>`. None:
    /// whoever mounts the Secret restarts on change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadRef>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RolloutKind {
    /// API server pods in the admin cluster mount the key Secret.
    #[default]
    HostedControlPlane,
    /// API servers sign through `ksa-controller signer`
    /// (`--service-account-signing-endpoint`), which follows the key Secret:
    /// no API server restarts.
    ExternalSigner,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet` or `DaemonSet`; any other kind is
    /// refused.
    pub kind: String,
    pub name: String,
    /// The API server container, whose `--service-account-issuer`
    /// arguments an issuer rotation changes. Default: `kube-apiserver`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// The API server container's name when the workload names none.
pub const DEFAULT_CONTAINER: &str = "kube-apiserver";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRefreshSpec {
    #[serde(default)]
    pub policy: TokenRefreshPolicy,
    /// For `wait`: a projected token lifetime, in seconds, to wait out at
    /// least. The window is 80% of the longest lifetime a pod from before
    /// RefreshTokens actually holds (at most 24 h), plus slack and skew;
    /// this can only lengthen it, for tokens held outside pods. 0 (the
    /// default): what the pods hold alone.
    #[serde(default)]
    pub max_token_seconds: u64,
    /// Legacy token Secrets (`namespace/name`) to give up on: RefreshTokens
    /// no longer waits for them (an immutable one, one whose token keeps
    /// being replaced), and Retire cuts their holders off unless a re-mint
    /// lands first. A Warning Event `LegacyTokensCutOff` names them when
    /// the step ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(length(max = 507), regex(pattern = "^[^/]+/[^/]+$"))
    )]
    pub give_up_legacy_tokens: Vec<String>,
    /// Seconds after RefreshTokens began that it waits for legacy token
    /// Secrets still stale (ksa re-mints them on every pass; the status
    /// names those it cannot); then it goes on without them, and Retire
    /// cuts their holders off. Default 86400 (24 h); at least 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3600))]
    pub legacy_token_deadline_seconds: Option<u64>,
    /// For `wait`: how the kubelets' token refreshes are observed.
    /// `AuditWebhook`: the controller writes the Secret `NAME-audit-webhook`
    /// (an audit policy and a webhook kubeconfig) for the user cluster's
    /// kube-apiservers to mount (docs/rotation.md), and RefreshTokens ends
    /// once every pod from before it was seen getting a new token, at the
    /// latest when the kubelet refresh window closes (then a Warning Event
    /// `RefreshNotObserved` names the pods not seen). Unset: the window
    /// alone. Needs the controller's `--audit-public-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observe: Option<RefreshObserver>,
}

// How a `wait` rotation observes the kubelets' refreshes (no doc comments
// on the variants: the CRD's schema would carry them).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RefreshObserver {
    AuditWebhook,
}

/// The Secret the controller writes for a rotation that observes its
/// kubelets' refreshes through an audit webhook: `NAME-audit-webhook`.
pub fn audit_webhook_secret(rotation: &str) -> String {
    format!("{rotation}-audit-webhook")
}

impl RotationSpec {
    /// Whether this rotation observes its kubelets' refreshes through the
    /// audit webhook (`tokenRefresh.observe: AuditWebhook` with `wait`).
    pub fn observes_refreshes(&self) -> bool {
        self.token_refresh.policy == TokenRefreshPolicy::Wait
            && self.token_refresh.observe == Some(RefreshObserver::AuditWebhook)
    }
}

/// The policy names are the core's.
pub use ksa_core::rotation::TokenRefreshPolicy;

impl RotationSpec {
    /// The core's policy for this spec.
    pub fn policy(&self) -> Policy {
        let bound_token_refresh = self
            .token_refresh
            .policy
            .with_max_token_seconds(self.token_refresh.max_token_seconds);
        let defaults = Policy::default();
        Policy {
            key_spec: self.key.into(),
            trust_lead_time: Duration::from_secs(self.trust_lead_time_seconds),
            bound_token_refresh,
            legacy_token_deadline: self
                .token_refresh
                .legacy_token_deadline_seconds
                .map_or(defaults.legacy_token_deadline, Duration::from_secs),
            given_up_legacy_tokens: self
                .token_refresh
                .give_up_legacy_tokens
                .iter()
                .cloned()
                .collect(),
            ..defaults
        }
    }
}

/// Where the rotation stands: the core's state, the three numbers, and a
/// condition whose status, reason and message are exactly the status line's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[schemars(transform = schemars::transform::RecursiveTransform(int64_format))]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    pub key_version: u64,
    #[schemars(schema_with = "step_schema")]
    pub step: Step,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub step_started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub confirmed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub completed_at: Option<Timestamp>,
    pub token_version: u64,
    pub private_key_version: u64,
    pub public_key_versions: Vec<u64>,
    /// The status line, verbatim.
    #[serde(default)]
    pub status_line: String,
    /// `false` for an issuer rotation that keeps the key. Absent: `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_key: Option<bool>,
    /// The issuer rotation, once ksa has changed the issuer (SPEC section
    /// 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerStatus>,
    /// What the current step waits for, or the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// What the controller refuses to do until an operator changes the
    /// spec or what it names (a missing grant, a held lock, a Secret ksa
    /// did not write), while it refuses; `waitingFor` then reads
    /// `refused: MESSAGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<RefusalStatus>,
    /// The token holders the step waits for that only an operator can let
    /// proceed (a PodDisruptionBudget that allows no disruption, a paused
    /// Deployment, a legacy token Secret ksa cannot re-mint), each
    /// `namespace/name (why)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_holders: Vec<String>,
    /// Legacy token Secrets used in the last 30 days though no pod mounts
    /// them, found when RefreshTokens began: its re-mint cut their holders
    /// outside the cluster off (`namespace/name (service account, last
    /// used)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_legacy_tokens: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The controller's seal over the stored state (`provenance`): a state
    /// anyone else wrote into the status is refused, never acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

/// A refusal by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefusalStatus {
    /// A CamelCase word, as the Warning Event of the refusal has
    /// (`MissingGrant`, `RotationRefused`, `KubeconfigRefused`, ...).
    pub reason: String,
    /// What is refused and how to fix it.
    pub message: String,
}

/// Where the issuer rotation stands: the change (`from`, `to`; the state
/// that is stored) and the three values of SPEC section 10 with their
/// status line (derived from it, for readers).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerStatus {
    #[schemars(with = "String")]
    pub from: Issuer,
    #[schemars(with = "String")]
    pub to: Issuer,
    #[schemars(with = "String")]
    pub signing_issuer: Issuer,
    #[schemars(with = "Vec<String>")]
    pub accepted_issuers: Vec<Issuer>,
    #[schemars(with = "String")]
    pub token_issuer: Issuer,
    /// The issuer status line, verbatim.
    pub status_line: String,
}

/// The schema of a step: one of the core's step names, so the API server
/// refuses any other.
fn step_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<String> = Step::ROTATION
        .into_iter()
        .chain([Step::Completed])
        .map(|step| step.to_string())
        .collect();
    schemars::json_schema!({"type": "string", "enum": names})
}

/// The schema of a time: RFC 3339, as Kubernetes writes times.
fn timestamp_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time", "nullable": true})
}

/// Why a stored status cannot be read back.
/// Kubernetes knows no `uint64` format (kube-apiserver warns of one each
/// time the CRD is applied): an unsigned integer is an `int64` with the
/// minimum 0 that schemars gives it.
fn int64_format(schema: &mut schemars::Schema) {
    if schema.get("format").and_then(|f| f.as_str()) == Some("uint64") {
        schema.insert("format".into(), "int64".into());
    }
}

#[derive(Debug, thiserror::Error)]
#[error("status of the KSASigningKeyRotation does not load: {0}")]
pub struct BadStatus(String);

impl RotationStatus {
    /// The core state this status records.
    pub fn state(&self) -> Result<RotationState, BadStatus> {
        // Through the core's own deserialization, which checks the state.
        let value = serde_json::json!({
            "keyVersion": self.key_version,
            "step": self.step,
            "startedAt": self.started_at,
            "stepStartedAt": self.step_started_at,
            "confirmedAt": self.confirmed_at,
            "completedAt": self.completed_at,
            "issuer": self.issuer.as_ref().map(|i| IssuerChange {
                from: i.from.clone(),
                to: i.to.clone(),
            }),
            "changesKey": self.changes_key.unwrap_or(true),
        });
        serde_json::from_value(value).map_err(|e| BadStatus(e.to_string()))
    }

    /// The status of a state, with its condition.
    pub fn of(
        state: &RotationState,
        previous: Option<&RotationStatus>,
        waiting_for: Option<String>,
        generation: Option<i64>,
        now: jiff::Timestamp,
    ) -> RotationStatus {
        let line: StatusLine = state.status_line();
        let versions = state.versions();
        let condition = |type_: &str, status: bool, reason: &str, message: String| {
            let status = if status { "True" } else { "False" };
            // Keep the transition time while the condition's status is
            // unchanged.
            let last_transition = previous
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                last_transition_time: last_transition,
                observed_generation: generation,
            }
        };
        let ready = if state.is_completed() {
            condition(
                READY_CONDITION_TYPE,
                true,
                "Completed",
                format!("settled on key version {}", state.key_version()),
            )
        } else {
            let mut message = format!("at step {}", state.step());
            if let Some(waiting) = &waiting_for {
                message.push_str(&format!(", waiting for {waiting}"));
            }
            condition(READY_CONDITION_TYPE, false, READY_PROGRESSING, message)
        };
        let mut conditions = vec![
            condition(
                CONDITION_TYPE,
                line.status(),
                line.reason.as_str(),
                line.message(),
            ),
            ready,
        ];
        let issuer = state
            .issuer()
            .zip(state.issuer_status_line())
            .map(|(change, line)| {
                conditions.push(condition(
                    ISSUER_CONDITION_TYPE,
                    line.completed,
                    line.reason(),
                    line.message(),
                ));
                IssuerStatus {
                    from: change.from.clone(),
                    to: change.to.clone(),
                    signing_issuer: line.issuers.signing_issuer().clone(),
                    accepted_issuers: line.issuers.accepted_issuers().to_vec(),
                    token_issuer: line.issuers.token_issuer().clone(),
                    status_line: line.to_string(),
                }
            });
        RotationStatus {
            key_version: state.key_version().get(),
            step: state.step(),
            started_at: state.started_at(),
            step_started_at: state.step_started_at(),
            confirmed_at: state.confirmed_at(),
            completed_at: state.completed_at(),
            token_version: versions.token_version().get(),
            private_key_version: versions.private_key_version().get(),
            public_key_versions: versions
                .public_key_versions()
                .iter()
                .map(|v| v.get())
                .collect(),
            status_line: line.to_string(),
            changes_key: (!state.changes_key()).then_some(false),
            issuer,
            waiting_for,
            refusal: None,
            blocked_holders: Vec::new(),
            outside_legacy_tokens: Vec::new(),
            observed_generation: generation,
            conditions,
            seal: None,
        }
    }

    /// This status with its seal over `state`, as the controller writes it
    /// for `resource`.
    pub fn sealed(
        mut self,
        sealer: &Sealer,
        resource: &KSASigningKeyRotation,
        state: &RotationState,
    ) -> RotationStatus {
        self.seal = Some(seal_state(sealer, resource, state));
        self
    }
}

/// The seal of `state` stored in `resource`'s status: over its namespace,
/// name and uid (a recreated resource does not inherit it) and the state.
fn seal_state(sealer: &Sealer, resource: &KSASigningKeyRotation, state: &RotationState) -> String {
    let (subject, uid, json) = state_sealed(resource, state);
    sealer.seal(&subject, [("uid", uid), ("state", json.as_slice())])
}

/// What a state's seal covers. The state's own serialization is canonical:
/// a state read back from the status serializes byte for byte as it was
/// written.
fn state_sealed<'a>(
    resource: &'a KSASigningKeyRotation,
    state: &RotationState,
) -> (Subject<'a>, &'a [u8], Vec<u8>) {
    let subject = Subject {
        kind: Kind::State,
        namespace: resource.metadata.namespace.as_deref().unwrap_or_default(),
        name: resource.metadata.name.as_deref().unwrap_or_default(),
    };
    let uid = resource
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .as_bytes();
    (subject, uid, serde_json::to_vec(state).unwrap_or_default())
}

impl KSASigningKeyRotation {
    /// The stored state, or a cluster settled on key 1 before any rotation.
    pub fn state(&self) -> Result<RotationState, BadStatus> {
        match &self.status {
            Some(status) => status.state(),
            None => Ok(RotationState::settled(KeyVersion::FIRST)),
        }
    }

    /// The stored state, if the controller wrote it: its seal verifies, or
    /// there is no status yet, or the status is unsealed and says no more
    /// than a resource without one would (settled on key 1, no issuer
    /// change). Anything else is refused, so that a hand-edited status (a
    /// Retire that skipped RefreshTokens) never deletes a key.
    pub fn sealed_state(&self, sealer: &Sealer) -> crate::Result<RotationState> {
        let state = self.state().map_err(|e| crate::Error::BadResponse {
            what: "rotation status",
            detail: e.to_string(),
        })?;
        let Some(status) = &self.status else {
            return Ok(state);
        };
        let (subject, uid, json) = state_sealed(self, &state);
        match &status.seal {
            Some(seal)
                if sealer.verify(&subject, [("uid", uid), ("state", json.as_slice())], seal) =>
            {
                Ok(state)
            }
            Some(_) => {
                Err(NotOurs::new(&subject, "its status's seal does not match its state").into())
            }
            None if state.is_completed()
                && state.key_version() == KeyVersion::FIRST
                && state.issuer().is_none() =>
            {
                Ok(state)
            }
            None => Err(NotOurs::new(&subject, "its status has no seal").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksa_core::rotation::{OperationLock, StartRequest};

    /// Every `format` in the CRD's schema, anywhere in it.
    fn formats(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(format)) = map.get("format") {
                    found.push(format.clone());
                }
                map.values().for_each(|v| formats(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| formats(v, found)),
            _ => {}
        }
    }

    #[test]
    fn the_crd_uses_only_formats_kubernetes_knows() {
        use kube::CustomResourceExt as _;
        let crd = serde_json::to_value(KSASigningKeyRotation::crd()).expect("serializes");
        let mut found = Vec::new();
        formats(&crd, &mut found);
        // What kube-apiserver validates without a warning
        // (k8s.io/kube-openapi/pkg/validation/strfmt, and the numeric ones).
        let known = [
            "int32",
            "int64",
            "float",
            "double",
            "byte",
            "date",
            "date-time",
        ];
        let unknown: Vec<&String> = found
            .iter()
            .filter(|f| !known.contains(&f.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "formats kube-apiserver warns of: {unknown:?}"
        );
        assert!(found.iter().any(|f| f == "int64"), "{found:?}");
    }

    fn mid_rotation() -> RotationState {
        let request = StartRequest {
            target: KeyVersion::new(2),
            issuer: None,
            advanced_cluster: false,
            lock: OperationLock::Free,
        };
        let now: Timestamp = "2026-11-30T02:16:27.5Z".parse().expect("a time");
        ksa_core::rotation::start(&RotationState::settled(KeyVersion::FIRST), &request, now)
            .expect("starts")
    }

    #[test]
    fn a_status_loads_back_the_state_it_was_written_from() {
        let state = mid_rotation();
        let status = RotationStatus::of(&state, None, None, Some(3), Timestamp::UNIX_EPOCH);
        let json = serde_json::to_value(&status).expect("serializes");
        // Kubernetes' forms: a step name and RFC 3339 times.
        assert_eq!(json["step"], "Generate");
        assert_eq!(json["startedAt"], "2026-11-30T02:16:27.5Z");
        let back: RotationStatus = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back.state().expect("loads"), state);
    }

    #[test]
    fn ready_is_true_only_once_the_rotation_completed() {
        let ready = |status: &RotationStatus| {
            status
                .conditions
                .iter()
                .find(|c| c.type_ == READY_CONDITION_TYPE)
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        };
        let rotating = RotationStatus::of(
            &mid_rotation(),
            None,
            Some("key version 2 to be stored".into()),
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            ready(&rotating),
            Some((
                "False".into(),
                "Progressing".into(),
                "at step Generate, waiting for key version 2 to be stored".into()
            ))
        );
        let done = RotationStatus::of(
            &RotationState::settled(KeyVersion::new(2)),
            Some(&rotating),
            None,
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(
            ready(&done),
            Some((
                "True".into(),
                "Completed".into(),
                "settled on key version 2".into()
            ))
        );
        // The gkectl-shaped condition stays the first, as it always was.
        assert_eq!(done.conditions[0].type_, CONDITION_TYPE);
    }

    #[test]
    fn a_status_with_an_unknown_step_or_a_bad_time_does_not_load() {
        let state = mid_rotation();
        let status = RotationStatus::of(&state, None, None, None, Timestamp::UNIX_EPOCH);
        let mut json = serde_json::to_value(&status).expect("serializes");
        json["step"] = "Rotate".into();
        assert!(serde_json::from_value::<RotationStatus>(json.clone()).is_err());
        json["step"] = "Trust".into();
        json["startedAt"] = "yesterday".into();
        assert!(serde_json::from_value::<RotationStatus>(json).is_err());
    }
}
