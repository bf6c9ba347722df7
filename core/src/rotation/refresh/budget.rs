//! PodDisruptionBudgets as the Eviction API weighs them: their label
//! selectors, as plain requirements, and whether a budget refuses an
//! eviction now.

use std::collections::BTreeMap;

use super::{Phase, Pod};
use crate::rotation::HolderReason;

/// A label selector, parsed: `None` selects nothing (a missing or invalid
/// selector, as the Eviction API reads one); no requirement selects all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector(Option<Vec<Requirement>>);

/// One requirement of a label selector, as the Eviction API reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    /// A `matchLabels` entry: the label `key` has the value `value`.
    pub fn label(key: impl Into<String>, value: impl Into<String>) -> Requirement {
        Requirement::In(key.into(), vec![value.into()])
    }

    /// A `matchExpressions` entry, or `None` when the API would not accept
    /// it (an unknown operator, `In` or `NotIn` without values, `Exists`
    /// or `DoesNotExist` with values).
    pub fn expression(
        key: impl Into<String>,
        operator: &str,
        values: Vec<String>,
    ) -> Option<Requirement> {
        let key = key.into();
        Some(match operator {
            "In" if !values.is_empty() => Requirement::In(key, values),
            "NotIn" if !values.is_empty() => Requirement::NotIn(key, values),
            "Exists" if values.is_empty() => Requirement::Exists(key),
            "DoesNotExist" if values.is_empty() => Requirement::DoesNotExist(key),
            _ => return None,
        })
    }
}

impl Selector {
    /// A selector of all of `requirements`; `None` (a missing selector, or
    /// one with a requirement [`Requirement::expression`] refused) selects
    /// nothing.
    pub fn new(requirements: Option<Vec<Requirement>>) -> Selector {
        Selector(requirements)
    }

    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let Some(requirements) = &self.0 else {
            return false;
        };
        requirements.iter().all(|requirement| match requirement {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }
}

/// A PodDisruptionBudget, as the Eviction API weighs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    pub name: String,
    pub selector: Selector,
    pub disruptions_allowed: i32,
    /// The disruption controller has seen its current generation.
    pub processed: bool,
    /// `unhealthyPodEvictionPolicy: AlwaysAllow`.
    pub always_allow_unhealthy: bool,
    pub current_healthy: i32,
    pub desired_healthy: i32,
}

/// Why the Eviction API would refuse to evict `pod` now, if it would
/// (kube-apiserver's `EvictionREST.Create`): a pending, finished or
/// terminating pod is evicted whatever its budgets; more than one budget
/// is refused; an unready pod passes when its budget says so.
pub fn eviction_blocked(pod: &Pod<'_>, budgets: &[Budget]) -> Option<HolderReason> {
    if matches!(pod.phase, Phase::Pending) || pod.phase.finished() || pod.deleting {
        return None;
    }
    let mut matching = budgets.iter().filter(|b| b.selector.matches(pod.labels));
    let budget = matching.next()?;
    let others = matching.count();
    if others > 0 {
        return Some(HolderReason::SeveralDisruptionBudgets {
            count: u32::try_from(others + 1).unwrap_or(u32::MAX),
            first: budget.name.clone(),
        });
    }
    if !pod.ready
        && (budget.always_allow_unhealthy
            || (budget.current_healthy >= budget.desired_healthy && budget.desired_healthy > 0))
    {
        return None;
    }
    if !budget.processed {
        return Some(HolderReason::DisruptionBudgetPending {
            budget: budget.name.clone(),
        });
    }
    (budget.disruptions_allowed <= 0).then(|| HolderReason::DisruptionBudget {
        budget: budget.name.clone(),
        allowed: budget.disruptions_allowed,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::labels;
    use super::*;

    #[test]
    fn selectors_match_as_the_eviction_api_matches_them() {
        let pod_labels = labels(&[("app", "web"), ("tier", "front")]);
        let expression = |key: &str, operator: &str, values: Option<&[&str]>| {
            let values = values
                .unwrap_or_default()
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            Selector::new(Requirement::expression(key, operator, values).map(|r| vec![r]))
        };
        assert!(expression("app", "In", Some(&["web", "db"])).matches(&pod_labels));
        assert!(!expression("app", "In", Some(&["db"])).matches(&pod_labels));
        assert!(expression("app", "NotIn", Some(&["db"])).matches(&pod_labels));
        assert!(expression("zone", "NotIn", Some(&["a"])).matches(&pod_labels));
        assert!(expression("tier", "Exists", None).matches(&pod_labels));
        assert!(expression("zone", "DoesNotExist", None).matches(&pod_labels));
        assert!(!expression("tier", "DoesNotExist", None).matches(&pod_labels));
        // Invalid selectors match nothing: an unknown operator, In with no
        // values, Exists with values.
        assert!(!expression("app", "Near", Some(&["web"])).matches(&pod_labels));
        assert!(!expression("app", "In", Some(&[])).matches(&pod_labels));
        assert!(!expression("app", "Exists", Some(&["web"])).matches(&pod_labels));
        // No selector matches nothing; an empty one everything.
        assert!(!Selector::new(None).matches(&pod_labels));
        assert!(Selector::new(Some(Vec::new())).matches(&pod_labels));
    }
}
