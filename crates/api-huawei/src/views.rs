//! Huawei wire shapes of fulcrum resources (v2: LBaaS v2 shapes; v3: ELB v3 shapes), and
//! the list machinery (filters, `marker`/`limit`, `page_info`). Pure translation.

use fulcrum_control::{Config, ControlPlane, Versioned};
use fulcrum_model::{
    HealthMonitor, HealthMonitorType, Listener, ListenerProtocol, LoadBalancer, Member,
    OperatingStatus, Pool, Timestamp,
};
use serde_json::{Value, json};

use super::Api;
use super::error::HuaweiError;

/// Label keys under which Huawei-only load balancer facts are kept (model `labels`).
pub(crate) const LABEL_PROJECT: &str = "huawei.project_id";
pub(crate) const LABEL_VIP_SUBNET: &str = "huawei.vip_subnet_id";
pub(crate) const LABEL_ZONES: &str = "huawei.availability_zones";

/// `yyyy-MM-dd'T'HH:mm:ss'Z'`.
pub(crate) fn time(t: &Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn upper<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn refs<'a>(ids: impl Iterator<Item = &'a str>) -> Value {
    Value::Array(ids.map(|id| json!({ "id": id })).collect())
}

/// The project a load balancer belongs to: where it was created, else the caller's.
fn project_of(lb: Option<&LoadBalancer>, caller_project: &str) -> String {
    lb.and_then(|lb| lb.spec.labels.get(LABEL_PROJECT))
        .cloned()
        .unwrap_or_else(|| caller_project.to_owned())
}

fn admin(up: bool) -> OperatingStatus {
    if up {
        OperatingStatus::Online
    } else {
        OperatingStatus::Offline
    }
}

pub(crate) fn loadbalancer(
    api: Api,
    cp: &ControlPlane,
    cfg: &Config,
    v: &Versioned<LoadBalancer>,
    project: &str,
) -> Value {
    let lb = &v.value;
    let project = project_of(Some(lb), project);
    let label = |k: &str| lb.spec.labels.get(k).cloned().unwrap_or_default();
    let listeners = refs(cfg.listeners_of(&lb.id).map(|l| l.value.id.as_str()));
    let pools = refs(cfg.pools_of(&lb.id).map(|p| p.value.id.as_str()));
    let mut out = json!({
        "id": lb.id,
        "name": lb.spec.name,
        "description": lb.spec.description,
        "vip_address": lb.spec.vip_address.to_string(),
        "vip_port_id": "",
        "admin_state_up": lb.spec.admin_state_up,
        "provisioning_status": upper(&cp.load_balancer_status(cfg, v)),
        "operating_status": upper(&admin(lb.spec.admin_state_up)),
        "provider": "vlb",
        "listeners": listeners,
        "pools": pools,
        "project_id": project,
        "tags": [],
        "created_at": time(&lb.created_at),
        "updated_at": time(&lb.updated_at),
        "protection_status": "nonProtection",
        "protection_reason": "",
    });
    match api {
        Api::V2 => {
            out["tenant_id"] = json!(project);
            out["vip_subnet_id"] = json!(label(LABEL_VIP_SUBNET));
        }
        Api::V3 => {
            let zones: Vec<String> = label(LABEL_ZONES)
                .split(',')
                .filter(|z| !z.is_empty())
                .map(str::to_owned)
                .collect();
            out["vip_subnet_cidr_id"] = json!(label(LABEL_VIP_SUBNET));
            out["vpc_id"] = json!(lb.spec.vpc_id);
            out["availability_zone_list"] = json!(zones);
            out["guaranteed"] = json!(lb.spec.kind == fulcrum_model::LoadBalancerKind::Dedicated);
            out["eips"] = json!([]);
            out["publicips"] = json!([]);
            out["elb_virsubnet_ids"] = json!([]);
            out["ip_target_enable"] = json!(false);
            out["deletion_protection_enable"] = json!(false);
            out["enterprise_project_id"] = json!("0");
        }
    }
    out
}

pub(crate) fn listener(api: Api, cfg: &Config, v: &Versioned<Listener>, project: &str) -> Value {
    let l = &v.value;
    let lb = cfg.loadbalancers.get(&l.loadbalancer_id).map(|v| &v.value);
    let project = project_of(lb, project);
    let t = &l.spec.timeouts;
    let mut out = json!({
        "id": l.id,
        "name": l.spec.name,
        "description": l.spec.description,
        "admin_state_up": l.spec.admin_state_up,
        "protocol": match (api, l.spec.protocol) {
            // v3's HTTPS is terminated TLS (its pass-through is TCP).
            (Api::V3, ListenerProtocol::TerminatedHttps) => json!("HTTPS"),
            (_, p) => upper(&p),
        },
        "protocol_port": l.spec.port,
        "default_pool_id": l.spec.default_pool_id,
        "loadbalancers": refs(std::iter::once(l.loadbalancer_id.as_str())),
        "connection_limit": l.spec.connection_limit.map_or(-1, i64::from),
        "http2_enable": false,
        "default_tls_container_ref": l.spec.tls.as_ref().and_then(|t| t.certificate_id.clone()),
        "client_ca_tls_container_ref": null,
        "sni_container_refs": l.spec.tls.as_ref().map(|t| t.sni_certificate_ids.clone()).unwrap_or_default(),
        "tags": [],
        "project_id": project,
        "created_at": time(&l.created_at),
        "updated_at": time(&l.updated_at),
        "protection_status": "nonProtection",
        "protection_reason": "",
    });
    match api {
        Api::V2 => out["tenant_id"] = json!(project),
        Api::V3 => {
            out["keepalive_timeout"] = json!(t.idle_ms / 1000);
            out["client_timeout"] = json!(t.client_header_ms / 1000);
            out["member_timeout"] = json!(t.upstream_response_ms / 1000);
            out["enterprise_project_id"] = json!("0");
        }
    }
    out
}

fn persistence_json(p: &Pool) -> Value {
    match &p.spec.session_persistence {
        None => Value::Null,
        Some(sp) => {
            let (_, _, default) = p.spec.protocol.persistence_timeout_range();
            json!({
                "type": upper(&sp.kind),
                "cookie_name": sp.cookie_name,
                "persistence_timeout": sp.persistence_timeout.unwrap_or(default),
            })
        }
    }
}

pub(crate) fn pool(api: Api, cfg: &Config, v: &Versioned<Pool>, project: &str) -> Value {
    let p = &v.value;
    let lb = cfg.loadbalancers.get(&p.loadbalancer_id).map(|v| &v.value);
    let project = project_of(lb, project);
    let listeners = refs(cfg.listeners_using(&p.id).map(|l| l.value.id.as_str()));
    let members = refs(cfg.members_of(&p.id).map(|m| m.value.id.as_str()));
    let mut out = json!({
        "id": p.id,
        "name": p.spec.name,
        "description": p.spec.description,
        "admin_state_up": p.spec.admin_state_up,
        "protocol": upper(&p.spec.protocol),
        "lb_algorithm": upper(&p.spec.algorithm),
        "loadbalancers": refs(std::iter::once(p.loadbalancer_id.as_str())),
        "listeners": listeners,
        "members": members,
        "healthmonitor_id": cfg.monitor_of(&p.id).map(|m| m.value.id.clone()),
        "session_persistence": persistence_json(p),
        "project_id": project,
        "protection_status": upper(&p.spec.protection_status),
        "protection_reason": p.spec.protection_reason,
    });
    match api {
        Api::V2 => out["tenant_id"] = json!(project),
        Api::V3 => {
            out["ip_version"] = upper(&p.spec.ip_version);
            out["slow_start"] = match p.spec.slow_start {
                Some(s) => json!({ "enable": s.enable, "duration": s.duration }),
                None => Value::Null,
            };
            out["member_deletion_protection_enable"] = json!(p.spec.member_deletion_protection);
            out["vpc_id"] = json!(p.spec.vpc_id);
            out["type"] = upper(&p.spec.pool_type);
            out["created_at"] = json!(time(&p.created_at));
            out["updated_at"] = json!(time(&p.updated_at));
            out["any_port_enable"] = json!(false);
            out["enterprise_project_id"] = json!("0");
        }
    }
    out
}

pub(crate) fn member(
    api: Api,
    cp: &ControlPlane,
    cfg: &Config,
    v: &Versioned<Member>,
    project: &str,
) -> Value {
    let m = &v.value;
    let lb = cfg
        .pools
        .get(&m.pool_id)
        .and_then(|p| cfg.loadbalancers.get(&p.value.loadbalancer_id))
        .map(|v| &v.value);
    let project = project_of(lb, project);
    let mut out = json!({
        "id": m.id,
        "name": m.spec.name,
        "project_id": project,
        "admin_state_up": m.spec.admin_state_up,
        "protocol_port": m.spec.port,
        "address": m.spec.address,
        "weight": m.spec.weight,
        "operating_status": upper(&cp.member_status(cfg, m)),
    });
    match api {
        Api::V2 => {
            out["tenant_id"] = json!(project);
            out["subnet_id"] = json!(m.spec.subnet_id);
        }
        Api::V3 => {
            let v6 = m.spec.address.parse::<std::net::Ipv6Addr>().is_ok();
            out["subnet_cidr_id"] = json!(m.spec.subnet_id);
            out["ip_version"] = json!(if v6 { "v6" } else { "v4" });
            out["member_type"] = json!(if m.spec.subnet_id.is_some() {
                "instance"
            } else {
                "ip"
            });
            out["instance_id"] = json!("");
            out["availability_zone"] = json!("");
            out["status"] = json!([]);
            out["created_at"] = json!(time(&m.created_at));
            out["updated_at"] = json!(time(&m.updated_at));
        }
    }
    out
}

pub(crate) fn monitor_type_name(t: HealthMonitorType) -> &'static str {
    match t {
        HealthMonitorType::Tcp => "TCP",
        HealthMonitorType::Http => "HTTP",
        HealthMonitorType::Https => "HTTPS",
        HealthMonitorType::UdpConnect => "UDP_CONNECT",
    }
}

pub(crate) fn monitor(
    api: Api,
    cfg: &Config,
    v: &Versioned<HealthMonitor>,
    project: &str,
) -> Value {
    let h = &v.value;
    let lb = cfg.loadbalancers.get(&h.loadbalancer_id).map(|v| &v.value);
    let project = project_of(lb, project);
    let s = &h.spec;
    let http = s.kind.is_http();
    let mut out = json!({
        "id": h.id,
        "name": s.name,
        "admin_state_up": s.admin_state_up,
        "type": monitor_type_name(s.kind),
        "delay": s.interval_ms / 1000,
        "timeout": s.timeout_ms / 1000,
        "max_retries": s.healthy_threshold,
        "max_retries_down": s.unhealthy_threshold,
        "monitor_port": s.port,
        "url_path": if http { json!(s.url_path) } else { Value::Null },
        "http_method": if http { json!(s.http_method) } else { Value::Null },
        "expected_codes": if http { json!(s.expected_codes) } else { Value::Null },
        "domain_name": s.domain_name,
        "pools": refs(std::iter::once(s.pool_id.as_str())),
        "project_id": project,
    });
    match api {
        Api::V2 => out["tenant_id"] = json!(project),
        Api::V3 => {
            out["created_at"] = json!(time(&h.created_at));
            out["updated_at"] = json!(time(&h.updated_at));
        }
    }
    out
}

/// Query keys that page rather than filter.
const PAGING_KEYS: &[&str] = &["marker", "limit", "page_reverse"];

/// Filters name a field of the rendered item; `loadbalancer_id`, `listener_id` and
/// `pool_id` match against the item's reference lists. Values of a repeated key are
/// alternatives. A filter on a field the item does not have is refused.
fn matches(item: &Value, key: &str, values: &[&str]) -> Result<bool, HuaweiError> {
    let (field, in_refs) = match key {
        "loadbalancer_id" if item.get("loadbalancers").is_some() => ("loadbalancers", true),
        "listener_id" if item.get("listeners").is_some() => ("listeners", true),
        "pool_id" if item.get("pools").is_some() => ("pools", true),
        other => (other, false),
    };
    let Some(v) = item.get(field) else {
        return Err(HuaweiError::invalid(format!(
            "filtering by {key} is not supported"
        )));
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Ok(if in_refs {
        v.as_array().is_some_and(|refs| {
            refs.iter()
                .any(|r| values.contains(&text(&r["id"]).as_str()))
        })
    } else {
        values.contains(&text(v).as_str())
    })
}

/// A page of rendered items, sorted by id: `marker` is the last id of the previous page
/// (the first, with `page_reverse=true`); `limit` 1..2000, default 2000.
pub(crate) struct Page {
    pub items: Vec<Value>,
    pub previous_marker: Option<String>,
    pub next_marker: Option<String>,
}

pub(crate) fn page(items: Vec<Value>, query: &[(String, String)]) -> Result<Page, HuaweiError> {
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let limit = match get("limit") {
        None | Some("") => 2000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=2000).contains(n))
            .ok_or_else(|| {
                HuaweiError::invalid(format!("limit must be between 1 and 2000 (got {l:?})"))
            })?,
    };
    let reverse = match get("page_reverse") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(HuaweiError::invalid(format!(
                "page_reverse must be true or false (got {other:?})"
            )));
        }
    };
    let marker = get("marker").filter(|m| !m.is_empty());
    let mut filters: Vec<(&str, Vec<&str>)> = Vec::new();
    for (k, v) in query {
        if PAGING_KEYS.contains(&k.as_str()) {
            continue;
        }
        match filters.iter_mut().find(|(key, _)| key == k) {
            Some((_, vs)) => vs.push(v),
            None => filters.push((k, vec![v])),
        }
    }
    let mut kept = Vec::new();
    for item in items {
        let mut keep = true;
        for (k, vs) in &filters {
            keep &= matches(&item, k, vs)?;
        }
        if keep {
            kept.push(item);
        }
    }
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
    kept.sort_by_key(id);
    let mut selected: Vec<Value> = if reverse {
        let before: Vec<Value> = kept
            .into_iter()
            .filter(|v| marker.is_none_or(|m| id(v).as_str() < m))
            .collect();
        let skip = before.len().saturating_sub(limit + 1);
        before.into_iter().skip(skip).collect()
    } else {
        kept.into_iter()
            .filter(|v| marker.is_none_or(|m| id(v).as_str() > m))
            .take(limit + 1)
            .collect()
    };
    let more = selected.len() > limit;
    if more {
        if reverse {
            selected.remove(0);
        } else {
            selected.truncate(limit);
        }
    }
    let (first, last) = (selected.first().map(id), selected.last().map(id));
    let (previous_marker, next_marker) = if reverse {
        (first.filter(|_| more), last)
    } else {
        (first, last.filter(|_| more))
    };
    Ok(Page {
        items: selected,
        previous_marker,
        next_marker,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn items(ids: &[&str]) -> Vec<Value> {
        ids.iter()
            .map(
                |id| json!({"id": id, "name": format!("n-{id}"), "loadbalancers": [{"id": "lb1"}]}),
            )
            .collect()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ids(p: &Page) -> Vec<&str> {
        p.items.iter().map(|v| v["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn pages_with_marker_and_limit() {
        let all = items(&["c", "a", "d", "b"]);
        let p = page(all.clone(), &q(&[("limit", "2")])).unwrap();
        assert_eq!(ids(&p), ["a", "b"]);
        assert_eq!(p.next_marker.as_deref(), Some("b"));
        let p = page(all.clone(), &q(&[("limit", "2"), ("marker", "b")])).unwrap();
        assert_eq!(ids(&p), ["c", "d"]);
        assert_eq!(p.next_marker, None);
        let p = page(
            all.clone(),
            &q(&[("limit", "2"), ("marker", "d"), ("page_reverse", "true")]),
        )
        .unwrap();
        assert_eq!(ids(&p), ["b", "c"]);
        assert_eq!(p.previous_marker.as_deref(), Some("b"));
        assert!(page(all.clone(), &q(&[("limit", "0")])).is_err());
        assert!(page(all, &q(&[("limit", "x")])).is_err());
    }

    #[test]
    fn filters_by_field_and_reference() {
        let all = items(&["a", "b", "c"]);
        let p = page(all.clone(), &q(&[("name", "n-a"), ("name", "n-c")])).unwrap();
        assert_eq!(ids(&p), ["a", "c"]);
        let p = page(all.clone(), &q(&[("loadbalancer_id", "lb2")])).unwrap();
        assert!(p.items.is_empty());
        let p = page(all.clone(), &q(&[("loadbalancer_id", "lb1")])).unwrap();
        assert_eq!(p.items.len(), 3);
        assert!(page(all, &q(&[("colour", "red")])).is_err());
    }

    #[test]
    fn timestamps_have_no_fraction() {
        let t = chrono::DateTime::parse_from_rfc3339("2024-05-01T10:00:00.123456Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(time(&t), "2024-05-01T10:00:00Z");
    }
}
