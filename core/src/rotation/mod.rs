//! The rotation of SPEC section 2 as a pure step function.
//!
//! [`step`] takes the stored [`RotationState`], what the caller [`Observed`]
//! of the world, the time and the [`Policy`], and returns a [`Plan`]: the next
//! state, the [`Effect`]s to apply (each idempotent) and when to look again.
//! The controller and the CLI's file-store mode both drive it; neither
//! decides anything about the rotation itself.
//!
//! The three numbers of the status line describe what is *confirmed*: a step
//! changes them only once `observed` shows its effect took hold. So they are a
//! function of the target version and the step, and every invariant of SPEC
//! section 2 holds by construction ([`KeyVersions`]) and is re-checked on
//! every transition ([`step`] refuses to return a plan that breaks one).

mod holders;
pub mod legacy;
mod observed;
mod plan;
mod policy;
pub mod refresh;
mod start;
mod state;
mod versions;
mod waiting;

pub use holders::{
    HolderCategory, HolderReason, Holders, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_NAMED,
    NamedHolder, Stall, StallKind, WorkloadKind,
};
pub use legacy::{CutOff, LegacyTokens};
pub use observed::{ApiServerView, Observation, Observed, PublicationView};
pub use plan::{Effect, OBSERVED_REFRESH_POLL, Plan, StepError, step};
pub use policy::{BoundTokenRefresh, Policy, TokenRefreshPolicy, UnknownTokenRefreshPolicy};
pub use refresh::{KUBELET_MAX_REFRESH, KUBELET_SLACK, kubelet_refresh_window};
pub use start::{OperationLock, Refusal, Requested, StartRequest, start, start_new};
pub use state::{IssuerChange, RotationState, Step};
pub use versions::{InvariantViolation, KeyVersions};
pub use waiting::{Wait, Waiting};
