use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{Checker, L7Route, LoadBalancerId, MAX_NAME_LEN, Timestamp, ValidationError};

/// Huawei distinguishes shared and dedicated load balancers; a few pool rules differ
/// (APP_COOKIE persistence, cookie name characters and length).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancerKind {
    #[default]
    Shared,
    Dedicated,
}

/// A lock on a load balancer (OCI resource locks). Overridden per request with an explicit
/// flag (`isLockOverride`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLock {
    #[serde(rename = "type")]
    pub kind: LockKind,
    #[serde(default)]
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LockKind {
    /// No change at all to the load balancer or anything under it.
    Full,
    /// The load balancer cannot be deleted.
    Delete,
}

/// What a user sets on a load balancer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The address its listeners bind (0.0.0.0 or :: for every interface).
    #[serde(default = "default_vip")]
    #[schema(value_type = String, example = "0.0.0.0")]
    pub vip_address: IpAddr,
    /// Members' subnets must belong to this VPC (empty: no VPC rule).
    #[serde(default)]
    pub vpc_id: String,
    #[serde(default)]
    pub kind: LoadBalancerKind,
    #[serde(default = "crate::default_true")]
    pub admin_state_up: bool,
    #[serde(default)]
    pub locks: Vec<ResourceLock>,
    /// Free-form labels; dialects keep their own identifiers here (e.g. an Azure service name).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Named lists of L7 routes that this load balancer's listeners share (`route_set` on a
    /// listener; OCI's path route sets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_sets: Vec<RouteSet>,
}

/// A named list of L7 routes. A listener that names it routes by its own `routes` first,
/// then by these, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSet {
    pub name: String,
    #[serde(default)]
    pub routes: Vec<L7Route>,
}

impl LoadBalancerSpec {
    /// The route set named `name`.
    pub fn route_set(&self, name: &str) -> Option<&RouteSet> {
        self.route_sets.iter().find(|s| s.name == name)
    }
}

fn default_vip() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}

pub(crate) fn default_true() -> bool {
    true
}

impl LoadBalancerSpec {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            vip_address: default_vip(),
            vpc_id: String::new(),
            kind: LoadBalancerKind::default(),
            admin_state_up: true,
            locks: Vec::new(),
            labels: BTreeMap::new(),
            route_sets: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut c = Checker::new();
        c.check(!self.name.trim().is_empty(), "name", || {
            "name must not be empty".into()
        });
        c.max_len("name", &self.name, MAX_NAME_LEN);
        c.max_len("description", &self.description, MAX_NAME_LEN);
        c.max_len("vpc_id", &self.vpc_id, 36);
        for (k, v) in &self.labels {
            c.check(!k.is_empty() && k.len() <= 128, "labels", || {
                format!("label keys must be 1..128 characters (got {k:?})")
            });
            c.max_len("labels", v, 1024);
        }
        for (i, set) in self.route_sets.iter().enumerate() {
            let field = format!("route_sets[{i}].name");
            c.check(!set.name.is_empty(), &field, || {
                format!("{field} must not be empty")
            });
            c.max_len(&field, &set.name, MAX_NAME_LEN);
            if self.route_sets[..i].iter().any(|o| o.name == set.name) {
                c.fail(
                    field.clone(),
                    format!("{field} {:?} is taken by another route set", set.name),
                );
            }
            for (j, r) in set.routes.iter().enumerate() {
                r.check(&mut c, &format!("route_sets[{i}].routes[{j}]"));
            }
        }
        c.finish()
    }

    pub fn has_lock(&self, kind: LockKind) -> bool {
        self.locks.iter().any(|l| l.kind == kind)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoadBalancer {
    pub id: LoadBalancerId,
    #[serde(flatten)]
    pub spec: LoadBalancerSpec,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}
