//! The outside prober: while a rotation runs, it keeps taking tokens from
//! the user cluster for the outside audience (TokenRequest for a
//! ServiceAccount, as a workload federating with a cloud IAM does) and
//! puts each to both outside verifiers: the outside API server
//! ([`crate::outside`], a real kube-apiserver's JWT authenticator) and the
//! bucket verifier ([`crate::bucket_verifier`]). It keeps the first tokens
//! it took (from before the rotation) and the latest, and reviews them all
//! every round, as [`crate::Prober`] does inside the cluster.
//!
//! "Valid", the definition the count rests on: the user cluster's own
//! TokenReview (with the outside audience) accepts the token at that
//! moment. A token an outside verifier rejects while valid, before and
//! again after the rejection, is counted as wrongly rejected, with which
//! verifier and why: the number that must stay zero while outside
//! verifiers are meant to keep up with the cluster. Tokens the cluster no
//! longer accepts are not counted either way. Failures to reach a
//! verifier (not a rejection) are counted as errors, and requests to the
//! user cluster that fail (it restarts during a rotation) as unavailable.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tokio::sync::Mutex;

use crate::bucket_verifier::{BucketVerifier, Verdict};
use crate::outside::{OutsideApiServer, Review};

/// How many of the first tokens, and of the latest, each round reviews.
const FIRST_TOKENS: usize = 3;
const LATEST_TOKENS: usize = 5;
/// How many error descriptions are kept (the latest).
const KEPT_ERRORS: usize = 20;

/// Whom the prober asks tokens for, and for which audience.
#[derive(Debug, Clone)]
pub struct OutsideProbeTarget {
    pub namespace: String,
    pub service_account: String,
    /// The audience the outside verifiers trust.
    pub audience: String,
}

/// What the outside prober saw.
#[derive(Debug, Default, Clone)]
pub struct OutsideProbeStats {
    pub tokens_issued: u64,
    /// Reviews the outside API server answered, and how many accepted.
    pub outside_reviews: u64,
    pub outside_accepted: u64,
    /// Verifications the bucket verifier completed, and how many accepted.
    pub bucket_reviews: u64,
    pub bucket_accepted: u64,
    /// Valid tokens an outside verifier rejected, described.
    pub wrongly_rejected: Vec<String>,
    /// Verifier failures other than a rejection (the outside API server
    /// answering neither a review nor 401; the bucket unreadable).
    pub errors: u64,
    /// The latest of those, described.
    pub last_errors: Vec<String>,
    /// Requests to the user cluster that failed.
    pub unavailable: u64,
}

impl OutsideProbeStats {
    /// One line for a test's output.
    pub fn report(&self) -> String {
        format!(
            "outside prober: {} tokens issued; outside API server accepted {}/{} reviews, bucket \
             verifier {}/{}; {} valid tokens wrongly rejected; {} verifier errors; {} user cluster \
             requests failed{}",
            self.tokens_issued,
            self.outside_accepted,
            self.outside_reviews,
            self.bucket_accepted,
            self.bucket_reviews,
            self.wrongly_rejected.len(),
            self.errors,
            self.unavailable,
            self.wrongly_rejected
                .first()
                .map(|first| format!("; first: {first}"))
                .unwrap_or_default(),
        )
    }

    fn error(&mut self, description: String) {
        self.errors += 1;
        if self.last_errors.len() == KEPT_ERRORS {
            self.last_errors.remove(0);
        }
        self.last_errors.push(description);
    }
}

/// A running outside prober; stops when dropped.
#[derive(Debug)]
pub struct OutsideProber {
    stats: Arc<Mutex<OutsideProbeStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OutsideProber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the user cluster accepts `token` for `audience` now (`None`
/// when it could not be asked).
async fn valid(user: &kube::Client, token: &str, audience: &str) -> Option<bool> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![audience.to_owned()]),
        },
        ..TokenReview::default()
    };
    let status = Api::<TokenReview>::all(user.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()?
        .status
        .unwrap_or_default();
    Some(status.authenticated == Some(true))
}

fn describe(token: &str) -> String {
    ksa_core::token::decode(token).map_or_else(
        |_| "an undecodable token".to_owned(),
        |d| {
            format!(
                "token of kid {} and issuer {}",
                d.header.kid.unwrap_or_default(),
                d.claims.iss.unwrap_or_default()
            )
        },
    )
}

impl OutsideProber {
    /// Takes tokens from the user cluster through `user` and puts them to
    /// `outside` and `bucket`, every `interval` or so.
    pub fn spawn(
        user: kube::Client,
        outside: Arc<OutsideApiServer>,
        bucket: Arc<BucketVerifier>,
        target: OutsideProbeTarget,
        interval: Duration,
    ) -> OutsideProber {
        let stats = Arc::new(Mutex::new(OutsideProbeStats::default()));
        let shared = stats.clone();
        let task = tokio::spawn(async move {
            let mut tokens: Vec<String> = Vec::new();
            loop {
                round(&user, &outside, &bucket, &target, &shared, &mut tokens).await;
                tokio::time::sleep(interval).await;
            }
        });
        OutsideProber { stats, task }
    }

    pub async fn stats(&self) -> OutsideProbeStats {
        self.stats.lock().await.clone()
    }
}

/// One round: a fresh token, then every kept token put to both verifiers.
async fn round(
    user: &kube::Client,
    outside: &OutsideApiServer,
    bucket: &BucketVerifier,
    target: &OutsideProbeTarget,
    stats: &Mutex<OutsideProbeStats>,
    tokens: &mut Vec<String>,
) {
    match crate::cluster::request_token(
        user,
        &target.namespace,
        &target.service_account,
        vec![target.audience.clone()],
        3600,
    )
    .await
    {
        Ok(token) => {
            tokens.push(token);
            stats.lock().await.tokens_issued += 1;
        }
        Err(_) => stats.lock().await.unavailable += 1,
    }
    if tokens.len() > FIRST_TOKENS + LATEST_TOKENS {
        tokens.drain(FIRST_TOKENS..tokens.len() - LATEST_TOKENS);
    }
    for token in tokens.iter() {
        let Some(true) = valid(user, token, &target.audience).await else {
            // Not valid now (or the cluster could not say): nothing to
            // expect of the outside.
            continue;
        };
        let (review, verdict) = futures::join!(outside.review(token), bucket.verify(token));
        let mut rejections = Vec::new();
        {
            let mut stats = stats.lock().await;
            match review {
                Ok(Review::Accepted { .. }) => {
                    stats.outside_reviews += 1;
                    stats.outside_accepted += 1;
                }
                Ok(Review::Rejected) => {
                    stats.outside_reviews += 1;
                    rejections.push("the outside API server (401)".to_owned());
                }
                Err(error) => stats.error(format!("outside API server: {error:#}")),
            }
            match verdict {
                Ok(Verdict::Accepted { .. }) => {
                    stats.bucket_reviews += 1;
                    stats.bucket_accepted += 1;
                }
                Ok(Verdict::Rejected { reason }) => {
                    stats.bucket_reviews += 1;
                    rejections.push(format!("the bucket verifier ({reason})"));
                }
                Err(error) => stats.error(format!("bucket verifier: {error:#}")),
            }
        }
        if rejections.is_empty() {
            continue;
        }
        // Still valid after the rejection: the cluster did not retire it
        // in between.
        if valid(user, token, &target.audience).await == Some(true) {
            let what = describe(token);
            let mut stats = stats.lock().await;
            for rejection in rejections {
                stats.wrongly_rejected.push(format!(
                    "{what} rejected by {rejection} while the cluster accepts it"
                ));
            }
        }
    }
}
