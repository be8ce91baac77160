//! Which load balancers a caller may see and change.
//!
//! Each front door's authentication turns a credential into a [`Scope`] (a Huawei project,
//! OCI compartments, Azure subscriptions, a native token's list of load balancers): a
//! predicate on a load balancer, since every resource but a subnet lies under one. The
//! scope is enforced in two places only, both here in the control plane:
//! - **reads**: [`Config::scoped`] is the view with everything outside the scope taken
//!   out, so a dialect that reads through it finds other tenants' resources exactly as it
//!   finds resources that do not exist (lists filtered, gets not found, in its own shape);
//! - **writes**: the engine checks every plan ([`Scope::check_plan`]) against the full view:
//!   the load balancer a change lies under must be in scope before the change (else not
//!   found) and after it (a change may not create a load balancer outside the scope or move
//!   one out of it: forbidden), and a change under no load balancer (subnets) needs an
//!   unlimited scope.
//!
//! Work requests follow their load balancer; one whose load balancer is gone is seen by the
//! principal that made it only.

use std::sync::Arc;

use fulcrum_model::{LoadBalancer, LoadBalancerId, ResourceKind, WorkRequest};

use crate::{Config, ControlError};

/// The load balancers a caller may see and change: every one (the default), or those a
/// predicate admits.
#[derive(Clone, Default)]
pub enum Scope {
    #[default]
    All,
    /// `what` describes the limit for error messages (`project 0123…`), never a secret.
    Limited {
        what: Arc<str>,
        admits: Arc<dyn Fn(&LoadBalancer) -> bool + Send + Sync>,
        /// May also change what lies under no load balancer (subnets and VPCs): a Huawei
        /// credential manages its project's through the VPC API. They are not partitioned
        /// by tenant: every such credential changes the same ones.
        networks: bool,
        /// Which resources of no load balancer (certificates) it owns, by their labels
        /// (a Huawei project's certificates); none unless given.
        owns: Option<OwnsFn>,
    },
}

/// A resource's labels.
pub type Labels = std::collections::BTreeMap<String, String>;

/// Which labels mark a resource of no load balancer as a scope's own.
type OwnsFn = Arc<dyn Fn(&Labels) -> bool + Send + Sync>;

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("All"),
            Scope::Limited { what, .. } => write!(f, "Limited({what})"),
        }
    }
}

impl Scope {
    /// A scope of the load balancers `admits` accepts; `what` names it in refusals.
    pub fn limited(
        what: impl Into<String>,
        admits: impl Fn(&LoadBalancer) -> bool + Send + Sync + 'static,
    ) -> Self {
        Scope::Limited {
            what: Arc::from(what.into()),
            admits: Arc::new(admits),
            networks: false,
            owns: None,
        }
    }

    /// The same scope, owning the resources of no load balancer whose labels `owns`
    /// accepts.
    pub fn owning(self, owns: impl Fn(&Labels) -> bool + Send + Sync + 'static) -> Self {
        match self {
            Scope::Limited {
                what,
                admits,
                networks,
                ..
            } => Scope::Limited {
                what,
                admits,
                networks,
                owns: Some(Arc::new(owns)),
            },
            all => all,
        }
    }

    /// Whether the caller may see and change a resource of no load balancer labelled so.
    pub fn owns(&self, labels: &Labels) -> bool {
        match self {
            Scope::All => true,
            Scope::Limited { owns, .. } => owns.as_ref().is_some_and(|f| f(labels)),
        }
    }

    /// The write check of resources of no load balancer as a plan writes them.
    pub(crate) fn check_owned(&self, written: &[Labels]) -> Result<(), ControlError> {
        if let Scope::Limited { what, .. } = self
            && written.iter().any(|l| !self.owns(l))
        {
            return Err(ControlError::Forbidden(format!(
                "this credential is limited to {what}: the certificate would be outside it"
            )));
        }
        Ok(())
    }

    /// The same scope, allowed to change subnets and VPCs too.
    pub fn with_networks(self) -> Self {
        match self {
            Scope::Limited {
                what, admits, owns, ..
            } => Scope::Limited {
                what,
                admits,
                networks: true,
                owns,
            },
            all => all,
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// Whether the caller may see and change `lb` and everything under it.
    pub fn admits(&self, lb: &LoadBalancer) -> bool {
        match self {
            Scope::All => true,
            Scope::Limited { admits, .. } => admits(lb),
        }
    }

    /// Whether the load balancer `id` of `cfg` exists and is in scope.
    pub fn admits_id(&self, cfg: &Config, id: &LoadBalancerId) -> bool {
        cfg.loadbalancers
            .get(id)
            .is_some_and(|lb| self.admits(&lb.value))
    }

    /// Whether `principal` with this scope may read `wr`: one of a load balancer in scope,
    /// or one it made itself (its load balancer may be gone since).
    pub fn admits_work_request(&self, cfg: &Config, principal: &str, wr: &WorkRequest) -> bool {
        if self.is_all() || (!wr.principal.is_empty() && wr.principal == principal) {
            return true;
        }
        wr.loadbalancer_id
            .as_ref()
            .is_some_and(|id| self.admits_id(cfg, id))
    }

    /// The write check: `lb` is the load balancer the change lies under, `before` it as the
    /// view holds it (absent when the change creates it), `after` it as the change writes it
    /// (absent when the change does not write it).
    pub(crate) fn check_change(
        &self,
        lb: Option<&LoadBalancerId>,
        before: Option<&LoadBalancer>,
        after: Option<&LoadBalancer>,
    ) -> Result<(), ControlError> {
        let Scope::Limited { what, networks, .. } = self else {
            return Ok(());
        };
        let Some(id) = lb else {
            if *networks {
                return Ok(());
            }
            return Err(ControlError::Forbidden(format!(
                "this credential is limited to {what}: it cannot change resources outside \
                 load balancers"
            )));
        };
        if let Some(before) = before
            && !self.admits(before)
        {
            return Err(ControlError::not_found(ResourceKind::LoadBalancer, id));
        }
        if let Some(after) = after
            && !self.admits(after)
        {
            return Err(ControlError::Forbidden(format!(
                "this credential is limited to {what}: the load balancer would be outside it"
            )));
        }
        Ok(())
    }
}

impl Config {
    /// The view as a caller of `scope` may see it: load balancers outside the scope and
    /// everything under them (listeners, pools, members, health monitors, their work
    /// requests) are absent; subnets, VPCs and address claims stay. The full view when the scope is unlimited.
    pub fn scoped(&self, scope: &Scope) -> std::borrow::Cow<'_, Config> {
        if scope.is_all() {
            return std::borrow::Cow::Borrowed(self);
        }
        let admitted = |id: &LoadBalancerId| scope.admits_id(self, id);
        let mut out = Config {
            revision: self.revision,
            traffic_revision: self.traffic_revision,
            loadbalancers: self
                .loadbalancers
                .iter()
                .filter(|(_, v)| scope.admits(&v.value))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            subnets: self.subnets.clone(),
            vpcs: self.vpcs.clone(),
            certificates: self
                .certificates
                .iter()
                .filter(|(_, v)| match &v.value.loadbalancer_id {
                    Some(lb) => scope.admits_id(self, lb),
                    None => scope.owns(&v.value.spec.labels),
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            // Addresses are shared by every tenant: a claim is a claim whoever holds it.
            vip_claims: self.vip_claims.clone(),
            ..Config::default()
        };
        out.listeners = self
            .listeners
            .iter()
            .filter(|(_, v)| admitted(&v.value.loadbalancer_id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.pools = self
            .pools
            .iter()
            .filter(|(_, v)| admitted(&v.value.loadbalancer_id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.members = self
            .members
            .iter()
            .filter(|(pool, _)| out.pools.contains_key(*pool))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.monitors = self
            .monitors
            .iter()
            .filter(|(_, v)| admitted(&v.value.loadbalancer_id))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.pending_work_requests = self
            .pending_work_requests
            .iter()
            .filter(|(_, v)| v.value.loadbalancer_id.as_ref().is_some_and(admitted))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.finished_work_requests = self
            .finished_work_requests
            .filtered(|wr| wr.loadbalancer_id.as_ref().is_some_and(admitted));
        std::borrow::Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fulcrum_model::{LoadBalancerSpec, WorkRequestId, WorkRequestStatus};

    use super::*;
    use crate::Versioned;

    fn lb(id: &str, project: &str) -> LoadBalancer {
        let spec: LoadBalancerSpec = serde_json::from_value(serde_json::json!({
            "name": id,
            "labels": {"project": project},
        }))
        .unwrap();
        LoadBalancer {
            id: LoadBalancerId(id.into()),
            spec,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn project(p: &'static str) -> Scope {
        Scope::limited(format!("project {p}"), move |lb| {
            lb.spec.labels.get("project").map(String::as_str) == Some(p)
        })
    }

    fn config(lbs: &[LoadBalancer]) -> Config {
        Config {
            loadbalancers: lbs
                .iter()
                .map(|l| {
                    (
                        l.id.clone(),
                        Versioned {
                            value: l.clone(),
                            create_revision: 1,
                            mod_revision: 1,
                            stored: None,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            ..Config::default()
        }
    }

    fn wr(lb: Option<&str>, principal: &str) -> WorkRequest {
        WorkRequest {
            id: WorkRequestId("w".into()),
            operation: "UpdateMember".into(),
            loadbalancer_id: lb.map(|l| LoadBalancerId(l.into())),
            resources: Vec::new(),
            status: WorkRequestStatus::Succeeded,
            revision: 1,
            request_id: String::new(),
            principal: principal.into(),
            message: String::new(),
            error: None,
            accepted_at: chrono::DateTime::UNIX_EPOCH,
            finished_at: None,
        }
    }

    #[test]
    fn changes_are_checked_before_and_after() {
        let (mine, theirs) = (lb("a", "p1"), lb("b", "p2"));
        let s = project("p1");
        let id = |l: &LoadBalancer| Some(l.id.clone());
        let check = |lb: Option<LoadBalancerId>, before, after| {
            s.check_change(lb.as_ref(), before, after)
                .map_err(|e| e.code())
        };
        assert_eq!(check(id(&mine), Some(&mine), Some(&mine)), Ok(()));
        assert_eq!(check(id(&mine), None, Some(&mine)), Ok(()), "create");
        assert_eq!(check(id(&mine), Some(&mine), None), Ok(()), "under it");
        assert_eq!(
            check(id(&theirs), Some(&theirs), None),
            Err("not_found"),
            "another's is as if absent"
        );
        assert_eq!(
            check(id(&theirs), Some(&theirs), Some(&mine)),
            Err("not_found"),
            "taking another's in is no way in"
        );
        assert_eq!(
            check(id(&theirs), None, Some(&theirs)),
            Err("forbidden"),
            "creating outside"
        );
        assert_eq!(
            check(id(&mine), Some(&mine), Some(&theirs)),
            Err("forbidden"),
            "moving out"
        );
        assert_eq!(check(None, None, None), Err("forbidden"), "subnets");
        assert_eq!(
            Scope::All
                .check_change(None, None, None)
                .map_err(|e| e.code()),
            Ok(())
        );
        assert_eq!(
            Scope::All
                .check_change(id(&theirs).as_ref(), Some(&theirs), Some(&theirs))
                .map_err(|e| e.code()),
            Ok(())
        );
    }

    #[test]
    fn the_scoped_view_holds_only_what_is_in_scope() {
        let cfg = config(&[lb("a", "p1"), lb("b", "p2"), lb("c", "p1")]);
        let scoped = cfg.scoped(&project("p1"));
        let ids: Vec<&str> = scoped.loadbalancers.keys().map(|k| k.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert!(matches!(
            cfg.scoped(&Scope::All),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(cfg.scoped(&project("p3")).loadbalancers.is_empty());
    }

    #[test]
    fn work_requests_follow_their_load_balancer_or_their_maker() {
        let cfg = config(&[lb("a", "p1"), lb("b", "p2")]);
        let s = project("p1");
        assert!(s.admits_work_request(&cfg, "me", &wr(Some("a"), "other")));
        assert!(!s.admits_work_request(&cfg, "me", &wr(Some("b"), "other")));
        assert!(
            !s.admits_work_request(&cfg, "me", &wr(Some("gone"), "other")),
            "a deleted load balancer's"
        );
        assert!(
            s.admits_work_request(&cfg, "me", &wr(Some("gone"), "me")),
            "unless it made it"
        );
        assert!(!s.admits_work_request(&cfg, "me", &wr(None, "other")));
        assert!(
            !s.admits_work_request(&cfg, "", &wr(None, "")),
            "no principal"
        );
        assert!(Scope::All.admits_work_request(&cfg, "me", &wr(Some("b"), "x")));
    }
}
