//! What `rotate` needs from the admin cluster before it changes anything,
//! each checked with one or two requests, so that a missing piece fails
//! within seconds naming what is missing, instead of a `--wait` that waits
//! for a controller that never comes:
//!
//! - the `KSASigningKeyRotation` CRD is installed ([`crd_installed`]);
//! - RBAC lets the user create (or patch) the rotation
//!   ([`may_change_rotation`], a SelfSubjectAccessReview);
//! - a controller holds the leader Lease ([`controller_running`], which
//!   gives one that was just started a few seconds to take it);
//! - the key the cluster signs with is in the key store ([`key_imported`]):
//!   forgetting `ksa keys import` used to start a rotation whose every
//!   controller pass failed on the missing key.
//!
//! The decisions are pure functions of what was read, tested below.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::api::{Api, ListParams, PostParams};

use crate::Failure;
use crate::connection::Connection;

/// The group and version of the rotation resource.
pub const GROUP_VERSION: &str = "ksa.dev/v1alpha1";
const PLURAL: &str = "ksasigningkeyrotations";
/// The controller's leader-election Lease (`controller/src/run.rs`).
pub const LEADER_LEASE: &str = "ksa-controller-leader";
/// Where `deploy/` runs the controller.
pub const CONTROLLER_NAMESPACE: &str = "ksa-system";
/// A Lease renewed this long after it expired still counts as held: the
/// leader renews every few seconds, and clocks differ.
const LEASE_GRACE: Duration = Duration::from_secs(10);

/// Fails when the API server does not serve the rotation resource.
pub async fn crd_installed(connection: &Connection) -> Result<(), Failure> {
    let resources = match connection
        .client
        .list_api_group_resources(GROUP_VERSION)
        .await
    {
        Ok(resources) => Some(resources),
        Err(kube::Error::Api(status)) if status.code == 404 => None,
        Err(error) => return Err(connection.unreachable(error)),
    };
    check_crd(resources.as_ref(), &connection.describe())
}

fn check_crd(resources: Option<&APIResourceList>, server: &str) -> Result<(), Failure> {
    let served = resources.is_some_and(|list| list.resources.iter().any(|r| r.name == PLURAL));
    if served {
        Ok(())
    } else {
        Err(Failure::from(anyhow::anyhow!(
            "the CustomResourceDefinition {PLURAL}.ksa.dev is not installed in {server}: \
             install it (kubectl apply -f deploy/crd.yaml) and the controller; nothing was changed"
        )))
    }
}

/// Fails when RBAC forbids `verb` (`create` or `patch`) on rotations in
/// `namespace`. When the review itself cannot be made, the request that
/// follows answers instead (its 403 is explained by [`forbidden`]).
pub async fn may_change_rotation(
    connection: &Connection,
    namespace: &str,
    verb: &str,
) -> Result<(), Failure> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some("ksa.dev".into()),
                resource: Some(PLURAL.into()),
                namespace: Some(namespace.into()),
                verb: Some(verb.into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(connection.client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(answer) => {
            let status = answer.status.unwrap_or_default();
            if status.allowed {
                Ok(())
            } else {
                Err(denied(
                    verb,
                    namespace,
                    status.reason.as_deref().filter(|r| !r.is_empty()),
                ))
            }
        }
        Err(error) => {
            tracing::debug!(%error, "cannot review access; the request will tell");
            Ok(())
        }
    }
}

fn denied(verb: &str, namespace: &str, reason: Option<&str>) -> Failure {
    Failure::from(anyhow::anyhow!(
        "RBAC forbids you to {verb} {PLURAL}.ksa.dev in namespace {namespace}{}: \
         ask for a Role that grants it; nothing was changed",
        reason.map(|r| format!(" ({r})")).unwrap_or_default()
    ))
}

/// A 403 from creating or patching the rotation, explained.
pub fn forbidden(error: kube::Error, verb: &str, namespace: &str) -> Result<kube::Error, Failure> {
    match error {
        kube::Error::Api(status) if status.code == 403 => {
            Err(denied(verb, namespace, Some(&status.message)))
        }
        other => Ok(other),
    }
}

/// How long [`controller_running`] waits for a controller that is
/// starting (or taking over from a leader that died) to hold the Lease.
const CONTROLLER_PATIENCE: Duration = Duration::from_secs(10);

/// Fails unless a controller holds the leader Lease, looking again for
/// [`CONTROLLER_PATIENCE`] (one that was just started has not taken it
/// yet).
pub async fn controller_running(
    connection: &Connection,
    namespace: Option<&str>,
) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + CONTROLLER_PATIENCE;
    loop {
        match leader_held(connection, namespace).await? {
            Ok(()) => return Ok(()),
            Err(missing) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %missing.error, "no controller yet; looking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(missing) => return Err(missing),
        }
    }
}

/// How many Leases one list request reads.
const LEASE_PAGE: u32 = 100;

/// Whether a controller holds the leader Lease. Only Leases in the
/// controller's namespace count: a Lease anyone may create in their own
/// namespace proves nothing. That namespace is `namespace`
/// (`--controller-namespace`) when given; else [`CONTROLLER_NAMESPACE`]
/// when a leader Lease is there; else the one namespace that holds a Lease
/// named [`LEADER_LEASE`] (the unsharded controller's, found by name); the
/// CLI cannot know more without the flag, and asks for it when several
/// namespaces hold one. The outer error: the Leases could not be read; the
/// inner one: no controller holds the Lease.
async fn leader_held(
    connection: &Connection,
    namespace: Option<&str>,
) -> Result<Result<(), Failure>, Failure> {
    let client = connection.client.clone();
    let now = jiff::Timestamp::now();
    if let Some(namespace) = namespace {
        return match one_lease(Api::namespaced(client, namespace)).await {
            Ok(leases) => Ok(check_leader(
                &leases,
                namespace,
                &format!("namespace {namespace}"),
                now,
            )),
            Err(error) => cannot_read(connection, error),
        };
    }
    let usual = one_lease(Api::namespaced(client.clone(), CONTROLLER_NAMESPACE)).await;
    let usual = match usual {
        Ok(leases) if !leases.is_empty() => {
            return Ok(check_leader(
                &leases,
                CONTROLLER_NAMESPACE,
                &format!("namespace {CONTROLLER_NAMESPACE}"),
                now,
            ));
        }
        Ok(_) => None,
        Err(kube::Error::Api(status)) if status.code == 403 => Some(status),
        Err(error) => return Err(connection.unreachable(error)),
    };
    // Not in the usual namespace: the unsharded controller's Lease, by
    // name, wherever it is.
    let by_name = ListParams::default().fields(&format!("metadata.name={LEADER_LEASE}"));
    match list_all(&Api::<Lease>::all(client), &by_name, is_unsharded).await {
        Ok(leases) => Ok(discovered(&leases, now)),
        Err(kube::Error::Api(status)) if status.code == 403 => match usual {
            // Neither could be read.
            Some(forbidden) => cannot_read(connection, kube::Error::Api(forbidden)),
            None => Ok(check_leader(
                &[],
                CONTROLLER_NAMESPACE,
                &format!("namespace {CONTROLLER_NAMESPACE}"),
                now,
            )),
        },
        Err(error) => Err(connection.unreachable(error)),
    }
}

/// The answer when the Leases cannot be read: not allowed to look, a
/// warning, and the check passes; else the connection's failure.
fn cannot_read(
    connection: &Connection,
    error: kube::Error,
) -> Result<Result<(), Failure>, Failure> {
    match error {
        kube::Error::Api(status) if status.code == 403 => {
            eprintln!(
                "warning: cannot check that ksa-controller runs (reading its Lease is forbidden: {}); \
                 pass --controller-namespace if it runs elsewhere",
                crate::output::shown(&status.message)
            );
            Ok(Ok(()))
        }
        error => Err(connection.unreachable(error)),
    }
}

/// The decision on the Leases named [`LEADER_LEASE`] found cluster-wide,
/// when [`CONTROLLER_NAMESPACE`] holds no leader Lease: the one namespace
/// that holds one is taken for the controller's; several cannot be told
/// apart (any of them may be a tenant's), so the operator is asked to say.
fn discovered(leases: &[Lease], now: jiff::Timestamp) -> Result<(), Failure> {
    let leases: Vec<Lease> = leases.iter().filter(|l| is_unsharded(l)).cloned().collect();
    let mut namespaces: Vec<&str> = leases
        .iter()
        .filter_map(|lease| lease.metadata.namespace.as_deref())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    match namespaces[..] {
        [] => check_leader(
            &[],
            CONTROLLER_NAMESPACE,
            &format!(
                "namespace {CONTROLLER_NAMESPACE} nor in any other namespace (a shard's Lease, \
                 {LEADER_LEASE}-SHARD, is looked for only in {CONTROLLER_NAMESPACE} and in the \
                 namespace --controller-namespace names: pass it when the shards run elsewhere)"
            ),
            now,
        ),
        [namespace] => check_leader(
            &leases,
            namespace,
            &format!("namespace {}", crate::output::shown(namespace)),
            now,
        ),
        ref several => {
            let shown: Vec<String> = several
                .iter()
                .map(|n| crate::output::shown(n).into_owned())
                .collect();
            Err(Failure::from(anyhow::anyhow!(
                "cannot tell which ksa-controller runs: namespaces {} each hold a Lease \
                 {LEADER_LEASE}, and {CONTROLLER_NAMESPACE} holds none; anyone allowed to create \
                 Leases in a namespace can make one there. Pass --controller-namespace with \
                 the namespace ksa-controller runs in (its --leader-namespace); nothing was \
                 changed",
                shown.join(", ")
            )))
        }
    }
}

/// The controller's Lease in `api`'s namespace, else its shards'.
async fn one_lease(api: Api<Lease>) -> Result<Vec<Lease>, kube::Error> {
    match api.get_opt(LEADER_LEASE).await? {
        Some(lease) => Ok(vec![lease]),
        // A shard's.
        None => list_all(&api, &ListParams::default(), is_leader).await,
    }
}

/// Every Lease `params` selects that `keep` keeps, read a page at a time.
async fn list_all(
    api: &Api<Lease>,
    params: &ListParams,
    keep: impl Fn(&Lease) -> bool,
) -> Result<Vec<Lease>, kube::Error> {
    let mut params = params.clone().limit(LEASE_PAGE);
    let mut kept = Vec::new();
    loop {
        let page = api.list(&params).await?;
        kept.extend(page.items.into_iter().filter(|lease| keep(lease)));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(kept),
        }
    }
}

/// Whether `lease` is the unsharded controller's leader Lease.
fn is_unsharded(lease: &Lease) -> bool {
    lease.metadata.name.as_deref() == Some(LEADER_LEASE)
}

/// Whether `lease` is a leader Lease: the controller's, or a shard's
/// (`ksa-controller-leader-SHARD`).
fn is_leader(lease: &Lease) -> bool {
    lease.metadata.name.as_deref().is_some_and(|name| {
        name == LEADER_LEASE
            || name
                .strip_prefix(LEADER_LEASE)
                .is_some_and(|shard| shard.starts_with('-'))
    })
}

/// Whether one of the leader Leases of `leases` in `namespace` (the
/// controller's; a Lease elsewhere counts for nothing) is held now: a
/// holder, renewed within its duration (plus [`LEASE_GRACE`]), and not
/// later than now (plus [`LEASE_GRACE`], for clocks that differ): a
/// renewal in the future would count as held for ever.
fn check_leader(
    leases: &[Lease],
    namespace: &str,
    place: &str,
    now: jiff::Timestamp,
) -> Result<(), Failure> {
    let missing = |detail: String| {
        Failure::from(anyhow::anyhow!(
            "no ksa-controller is running: {detail}; nothing would carry the rotation out. \
             Install or start the controller (kubectl apply -f deploy/), or pass \
             --controller-namespace; nothing was changed"
        ))
    };
    let leases: Vec<&Lease> = leases
        .iter()
        .filter(|lease| lease.metadata.namespace.as_deref() == Some(namespace) && is_leader(lease))
        .collect();
    if leases.is_empty() {
        return Err(missing(format!("no Lease {LEADER_LEASE} in {place}")));
    }
    let mut last = None;
    for lease in leases {
        let where_ = crate::output::shown(&format!(
            "{namespace}/{}",
            lease.metadata.name.as_deref().unwrap_or(LEADER_LEASE)
        ))
        .into_owned();
        let Some(spec) = &lease.spec else { continue };
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let duration = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
        );
        match (holder, renewed) {
            (Some(holder), Some(renewed)) => {
                let holder = crate::output::shown(holder);
                let age = now.duration_since(renewed);
                if age.is_negative() && age.unsigned_abs() > LEASE_GRACE {
                    last = Some(format!(
                        "the Lease {where_} says it was renewed {} by {holder}, later than now: \
                         a clock more than {} s off, or a Lease ksa-controller did not write",
                        crate::output::time(renewed, now),
                        LEASE_GRACE.as_secs()
                    ));
                    continue;
                }
                if age.unsigned_abs() <= duration + LEASE_GRACE {
                    return Ok(());
                }
                last = Some(format!(
                    "the Lease {where_} was last renewed {} by {holder}",
                    crate::output::time(renewed, now),
                ));
            }
            _ => last = Some(format!("the Lease {where_} has no holder")),
        }
    }
    Err(missing(last.unwrap_or_else(|| {
        format!("no holder of Lease {LEADER_LEASE} in {place}")
    })))
}

/// Fails, naming the command that fixes it, when the key version the
/// rotation starts from is not in the key store of rotation `name` in
/// `namespace` (its Secret `NAME-signing-key-vN`). A user who may not read
/// Secrets is not stopped here: the controller names a missing key too.
pub async fn key_imported(
    connection: &Connection,
    namespace: &str,
    name: &str,
    version: ksa_core::KeyVersion,
) -> Result<(), Failure> {
    let store = ksa_kube::keystore::KeyStore::new(connection.client.clone(), namespace, name);
    match store.stored_key(version).await {
        Ok(found) => check_key_imported(
            found.is_some(),
            namespace,
            &store.secret_name(version),
            name,
            version,
        ),
        Err(ksa_kube::Error::Kube(kube::Error::Api(status))) if status.code == 403 => Ok(()),
        Err(ksa_kube::Error::Kube(error)) => Err(connection.unreachable(error)),
        Err(other) => Err(Failure::bad_input(anyhow::anyhow!(
            "Secret {namespace}/{}: {other}; nothing was changed",
            store.secret_name(version)
        ))),
    }
}

fn check_key_imported(
    found: bool,
    namespace: &str,
    secret: &str,
    name: &str,
    version: ksa_core::KeyVersion,
) -> Result<(), Failure> {
    if found {
        return Ok(());
    }
    Err(Failure::bad_input(anyhow::anyhow!(
        "key version {version}, the key the cluster signs with now, is not in the key store \
         (Secret {namespace}/{secret} does not exist): import it first with `ksa keys import \
         --rotation {name} -n {namespace} --key sa.key --key-version {version}` (sa.key: the \
         API servers' --service-account-signing-key-file); nothing was changed"
    )))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_rotation_without_the_current_key_is_refused_with_the_import_command() {
        assert!(
            check_key_imported(
                true,
                "ns",
                "r-signing-key-v1",
                "r",
                ksa_core::KeyVersion::FIRST
            )
            .is_ok()
        );
        let refused = check_key_imported(
            false,
            "ns",
            "r-signing-key-v1",
            "r",
            ksa_core::KeyVersion::FIRST,
        )
        .expect_err("no key");
        assert_eq!(refused.code, crate::exit::BAD_INPUT);
        let text = refused.error.to_string();
        assert!(
            text.contains("Secret ns/r-signing-key-v1 does not exist"),
            "{text}"
        );
        assert!(
            text.contains("ksa keys import --rotation r -n ns --key sa.key --key-version 1"),
            "{text}"
        );
        assert!(text.contains("nothing was changed"), "{text}");
    }
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, MicroTime, ObjectMeta};

    fn lease(holder: Option<&str>, renewed: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(LEADER_LEASE.into()),
                namespace: Some("ksa-system".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                renew_time: renewed.map(|t| MicroTime(t.parse().expect("a time"))),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
        }
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("a time")
    }

    #[test]
    fn a_lease_renewed_within_its_duration_is_a_running_controller() {
        let now = at("2026-11-30T10:00:00Z");
        let held = lease(Some("ksa-controller-1"), Some("2026-11-30T09:59:50Z"));
        assert!(check_leader(&[held], "ksa-system", "namespace ksa-system", now).is_ok());
        // A shard's, and a renewal a little ahead of this clock.
        let shard = named(
            "ksa-system",
            "ksa-controller-leader-a",
            Some("shard-a-0"),
            Some("2026-11-30T10:00:05Z"),
        );
        assert!(check_leader(&[shard], "ksa-system", "namespace ksa-system", now).is_ok());
    }

    fn named(namespace: &str, name: &str, holder: Option<&str>, renewed: Option<&str>) -> Lease {
        let mut lease = lease(holder, renewed);
        lease.metadata.namespace = Some(namespace.into());
        lease.metadata.name = Some(name.into());
        lease
    }

    fn says(result: Result<(), Failure>) -> String {
        result.expect_err("no controller").error.to_string()
    }

    /// A Lease a tenant creates in its own namespace, named as a shard's
    /// or as the controller's, and held, is no running controller.
    #[test]
    fn a_leader_lease_outside_the_controllers_namespace_counts_for_nothing() {
        let now = at("2026-11-30T10:00:00Z");
        let tenant = named(
            "tenant-1",
            "ksa-controller-leader-x",
            Some("me"),
            Some("2026-11-30T09:59:59Z"),
        );
        let error = says(check_leader(
            std::slice::from_ref(&tenant),
            CONTROLLER_NAMESPACE,
            "namespace ksa-system",
            now,
        ));
        assert!(
            error.contains("no Lease ksa-controller-leader in namespace ksa-system"),
            "{error}"
        );
        // Found by name: a tenant's beside the controller's own elsewhere
        // cannot be told apart; the operator is asked to say.
        let theirs = named(
            "tenant-1",
            LEADER_LEASE,
            Some("me"),
            Some("2026-11-30T09:59:59Z"),
        );
        let ours = named(
            "ksa-elsewhere",
            LEADER_LEASE,
            Some("ksa-controller-0"),
            Some("2026-11-30T09:59:59Z"),
        );
        let error = says(discovered(&[theirs.clone(), ours.clone()], now));
        assert!(
            error.contains("namespaces ksa-elsewhere, tenant-1 each hold a Lease")
                && error.contains("--controller-namespace"),
            "{error}"
        );
        assert!(discovered(&[ours], now).is_ok(), "the only one");
        // Found by name means by that name: a shard's name elsewhere is
        // not the controller's.
        let error = says(discovered(&[tenant], now));
        assert!(error.contains("nor in any other namespace"), "{error}");
        let error = says(discovered(&[], now));
        assert!(
            error.contains(
                "no Lease ksa-controller-leader in namespace ksa-system nor in any other namespace"
            ) && error.contains("pass it when the shards run elsewhere"),
            "{error}"
        );
        // A name that only starts like a leader's is none.
        let other = named(
            CONTROLLER_NAMESPACE,
            "ksa-controller-leaderboard",
            Some("me"),
            Some("2026-11-30T09:59:59Z"),
        );
        assert!(check_leader(&[other], CONTROLLER_NAMESPACE, "namespace ksa-system", now).is_err());
    }

    /// A renewal later than now would count as held for ever.
    #[test]
    fn a_lease_renewed_in_the_future_is_no_controller() {
        let now = at("2026-11-30T10:00:00Z");
        let future = lease(Some("ksa-controller-1"), Some("2030-01-01T00:00:00Z"));
        let error = says(check_leader(
            &[future],
            "ksa-system",
            "namespace ksa-system",
            now,
        ));
        assert!(
            error.contains("the Lease ksa-system/ksa-controller-leader says it was renewed 2030-01-01T00:00:00Z")
                && error.contains("later than now"),
            "{error}"
        );
        let just_past_the_skew = lease(Some("ksa-controller-1"), Some("2026-11-30T10:00:11Z"));
        assert!(
            check_leader(
                &[just_past_the_skew],
                "ksa-system",
                "namespace ksa-system",
                now
            )
            .is_err()
        );
    }

    /// The holder is whatever wrote the Lease: escaped before it reaches
    /// the terminal.
    #[test]
    fn a_holder_with_terminal_escapes_is_shown_escaped() {
        let now = at("2026-11-30T10:00:00Z");
        for renewed in ["2026-11-30T09:00:00Z", "2030-01-01T00:00:00Z"] {
            let stale = lease(Some("evil\u{1b}]0;owned\u{7}\u{1b}[2J"), Some(renewed));
            let error = says(check_leader(
                &[stale],
                "ksa-system",
                "namespace ksa-system",
                now,
            ));
            assert!(
                !error.contains('\u{1b}') && !error.contains('\u{7}'),
                "{error:?}"
            );
            assert!(error.contains("by \"evil\\u{1b}]0;owned"), "{error}");
        }
    }

    #[test]
    fn no_lease_an_empty_holder_or_a_stale_one_is_no_controller() {
        let now = at("2026-11-30T10:00:00Z");
        let cases = [
            (
                vec![],
                "no Lease ksa-controller-leader in namespace ksa-system",
            ),
            (
                vec![lease(None, Some("2026-11-30T09:59:59Z"))],
                "the Lease ksa-system/ksa-controller-leader has no holder",
            ),
            (
                vec![lease(
                    Some("ksa-controller-1"),
                    Some("2026-11-30T09:55:00Z"),
                )],
                "the Lease ksa-system/ksa-controller-leader was last renewed 2026-11-30T09:55:00Z (5m ago) by ksa-controller-1",
            ),
        ];
        for (leases, says) in cases {
            let error = check_leader(&leases, "ksa-system", "namespace ksa-system", now)
                .expect_err("no controller")
                .error
                .to_string();
            assert!(
                error.starts_with("no ksa-controller is running: ") && error.contains(says),
                "{error}"
            );
        }
    }

    #[test]
    fn the_crd_must_serve_the_rotation_resource() {
        let error = check_crd(None, "https://admin.example").expect_err("missing");
        assert!(
            error.error.to_string().contains(
                "ksasigningkeyrotations.ksa.dev is not installed in https://admin.example"
            ),
            "{}",
            error.error
        );
        let list = |name: &str| APIResourceList {
            group_version: GROUP_VERSION.into(),
            resources: vec![APIResource {
                name: name.into(),
                ..APIResource::default()
            }],
        };
        assert!(check_crd(Some(&list("other")), "s").is_err());
        assert!(check_crd(Some(&list(PLURAL)), "s").is_ok());
    }

    #[test]
    fn a_403_is_explained_and_other_errors_pass_through() {
        let status = kube::core::Status::failure("no", "Forbidden").with_code(403);
        let error =
            forbidden(kube::Error::Api(Box::new(status)), "create", "ns1").expect_err("explained");
        assert!(
            error.error.to_string().starts_with(
                "RBAC forbids you to create ksasigningkeyrotations.ksa.dev in namespace ns1 (no)"
            ),
            "{}",
            error.error
        );
    }
}
