use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{
    Checker, L7Route, LoadBalancerId, MAX_NAME_LEN, Timestamp, ValidationError,
    is_virtual_host_name,
};

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
    /// Named virtual host names that this load balancer's listeners name (`hostnames` on
    /// a listener; OCI's hostnames).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<Hostname>,
}

/// A virtual host name under a name of its own: an exact host (`app.example.com`), or a
/// wildcard in place of the first label (`*.example.com`) or of the last (`app.example.*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hostname {
    pub name: String,
    pub hostname: String,
}

/// A named list of L7 routes. A listener that names it routes by its own `routes` first,
/// then by these, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSet {
    pub name: String,
    #[serde(default)]
    pub routes: Vec<L7Route>,
    /// What a dialect built `routes` from, kept so that it reads back as written (OCI's
    /// routing policy rules, as JSON). The data plane serves `routes` only. At most
    /// [`MAX_ROUTE_SET_SOURCE`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The longest `RouteSet::source`.
pub const MAX_ROUTE_SET_SOURCE: usize = 64 * 1024;

impl LoadBalancerSpec {
    /// The route set named `name`.
    pub fn route_set(&self, name: &str) -> Option<&RouteSet> {
        self.route_sets.iter().find(|s| s.name == name)
    }

    /// The hostname named `name`.
    pub fn hostname(&self, name: &str) -> Option<&Hostname> {
        self.hostnames.iter().find(|h| h.name == name)
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
            hostnames: Vec::new(),
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
            c.check(!k.is_empty() && k.chars().count() <= 128, "labels", || {
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
            if let Some(source) = &set.source {
                c.max_len(
                    &format!("route_sets[{i}].source"),
                    source,
                    MAX_ROUTE_SET_SOURCE,
                );
            }
        }
        for (i, h) in self.hostnames.iter().enumerate() {
            let field = format!("hostnames[{i}]");
            c.check(!h.name.is_empty(), &format!("{field}.name"), || {
                format!("{field}.name must not be empty")
            });
            c.max_len(&format!("{field}.name"), &h.name, MAX_NAME_LEN);
            if self.hostnames[..i].iter().any(|o| o.name == h.name) {
                c.fail(
                    format!("{field}.name"),
                    format!("{field}.name {:?} is taken by another hostname", h.name),
                );
            }
            c.check(
                is_virtual_host_name(&h.hostname),
                &format!("{field}.hostname"),
                || {
                    format!(
                        "{field}.hostname {:?} is not a host name, nor one with '*' in place of its first or last label",
                        h.hostname
                    )
                },
            );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> LoadBalancerSpec {
        let mut v = serde_json::json!({"name": "web"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn first_field(s: &LoadBalancerSpec) -> String {
        s.validate().unwrap_err().first().field.clone()
    }

    #[test]
    fn route_sets_and_hostnames_are_found_by_name() {
        let s = spec(serde_json::json!({
            "route_sets": [{"name": "a"}, {"name": "b", "source": "{}"}],
            "hostnames": [{"name": "x", "hostname": "x.example.com"},
                          {"name": "y", "hostname": "*.example.com"}],
        }));
        s.validate().unwrap();
        assert_eq!(
            s.route_set("b").and_then(|r| r.source.as_deref()),
            Some("{}")
        );
        assert!(s.route_set("c").is_none());
        assert_eq!(s.hostname("y").map(|h| &*h.hostname), Some("*.example.com"));
        assert!(s.hostname("z").is_none());
    }

    #[test]
    fn names_are_unique_and_hostnames_must_be_host_names() {
        let twice = spec(serde_json::json!({"route_sets": [{"name": "a"}, {"name": "a"}]}));
        assert_eq!(first_field(&twice), "route_sets[1].name");
        let twice = spec(serde_json::json!({"hostnames": [
            {"name": "x", "hostname": "a.example.com"}, {"name": "x", "hostname": "b.example.com"}]}));
        assert_eq!(first_field(&twice), "hostnames[1].name");
        let bad = spec(serde_json::json!({"hostnames": [{"name": "x", "hostname": "not a host"}]}));
        assert_eq!(first_field(&bad), "hostnames[0].hostname");
    }

    #[test]
    fn route_set_sources_may_take_64_kib_and_label_keys_128_characters() {
        let source = |n: usize| {
            spec(serde_json::json!({"route_sets": [{"name": "a", "source": "x".repeat(n)}]}))
        };
        source(64 * 1024).validate().unwrap();
        assert_eq!(first_field(&source(64 * 1024 + 1)), "route_sets[0].source");
        let label = |n: usize| spec(serde_json::json!({"labels": {"é".repeat(n): "v"}}));
        label(128).validate().unwrap();
        assert_eq!(first_field(&label(129)), "labels");
    }

    #[test]
    fn locks_are_told_apart_by_kind() {
        let s = spec(serde_json::json!({"locks": [{"type": "DELETE"}]}));
        assert!(s.has_lock(LockKind::Delete));
        assert!(!s.has_lock(LockKind::Full));
        assert!(!spec(serde_json::json!({})).has_lock(LockKind::Delete));
    }
}
