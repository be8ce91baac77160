//! `fulcrum status`: every load balancer on one screen, with its listeners (bound, or why
//! not), pools and members (state, health, weight, requests/s, errors), and the last work
//! requests; `--watch` redraws it.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::ClientOpts;
use crate::client::Client;
use crate::output::{self, Format};

/// Work requests shown.
const RECENT: usize = 5;

/// Everything the screen shows, as one JSON value (what `-o json|yaml` prints).
async fn gather(c: &Client) -> anyhow::Result<Value> {
    let stats = c.get("/v1/stats").await.unwrap_or(Value::Null);
    let mut lbs = c.list_all("/v1/loadbalancers").await?;
    for lb in &mut lbs {
        let id = lb["id"].as_str().unwrap_or_default().to_owned();
        let listeners = c
            .list_all(&format!("/v1/loadbalancers/{id}/listeners"))
            .await?;
        let mut pools = c.list_all(&format!("/v1/loadbalancers/{id}/pools")).await?;
        for pool in &mut pools {
            let pid = pool["id"].as_str().unwrap_or_default().to_owned();
            let mut members = c.list_all(&format!("/v1/pools/{pid}/members")).await?;
            crate::commands::annotate_traffic(&stats, &mut members);
            pool["members"] = Value::Array(members);
        }
        lb["listeners"] = Value::Array(listeners);
        lb["pools"] = Value::Array(pools);
    }
    let mut wrs = c.list_all("/v1/work-requests").await?;
    // Newest first, whatever order the API lists them in.
    wrs.sort_by(|a, b| {
        let key = |v: &Value| v["accepted_at"].as_str().unwrap_or_default().to_owned();
        key(b).cmp(&key(a))
    });
    wrs.truncate(RECENT);
    Ok(json!({"loadbalancers": lbs, "work_requests": wrs}))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The pool's name (or id) by id, within `lb`.
fn pool_name(lb: &Value, id: &Value) -> String {
    lb["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["id"] == *id))
        .map_or_else(
            || text(id),
            |p| match p["name"].as_str() {
                Some(n) if !n.is_empty() => n.to_owned(),
                _ => text(&p["id"]),
            },
        )
}

/// What a member is doing, in one word.
fn member_state(m: &Value) -> &'static str {
    if m["offline"] == true || m["admin_state_up"] == false {
        "offline"
    } else if m["drain"] == true {
        "draining"
    } else if m["backup"] == true {
        "backup"
    } else {
        "active"
    }
}

/// The screen, as text at most about 110 columns wide.
fn render(v: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let lbs = v["loadbalancers"].as_array().unwrap_or(&empty);
    if lbs.is_empty() {
        out.push_str("no load balancers yet (fulcrum lb create --name web)\n");
    }
    for lb in lbs {
        let _ = writeln!(
            out,
            "{}  {}  {} / {}",
            text(&lb["name"]),
            text(&lb["vip_address"]),
            text(&lb["provisioning_status"]),
            text(&lb["operating_status"])
        );
        for l in lb["listeners"].as_array().unwrap_or(&empty) {
            let bound = match l["status_reason"].as_str() {
                Some(reason) => format!("NOT SERVED: {reason}"),
                None => text(&l["operating_status"]),
            };
            let _ = writeln!(
                out,
                "  listener {:<14} {:<16} :{:<5} -> {:<14} {}",
                text(&l["name"]),
                text(&l["protocol"]),
                text(&l["port"]),
                pool_name(lb, &l["default_pool_id"]),
                bound
            );
        }
        for p in lb["pools"].as_array().unwrap_or(&empty) {
            let members = p["members"].as_array().unwrap_or(&empty);
            let up = members
                .iter()
                .filter(|m| m["operating_status"] != "ERROR" && m["operating_status"] != "OFFLINE")
                .count();
            let _ = writeln!(
                out,
                "  pool     {:<14} {:<16} {:<18} {}/{} members up",
                text(&p["name"]),
                text(&p["protocol"]),
                text(&p["algorithm"]),
                up,
                members.len()
            );
            for m in members {
                let endpoint = format!("{}:{}", text(&m["address"]), text(&m["port"]));
                let t = &m["traffic"];
                let _ = writeln!(
                    out,
                    "    {:<28} w{:<4} {:<8} {:<9} {:>9} req/s {:>6}% err  p99 {} ms",
                    endpoint,
                    text(&m["weight"]),
                    member_state(m),
                    text(&m["operating_status"]),
                    text(&t["requests_per_second"]),
                    text(&t["error_percent"]),
                    text(&t["p99_ms"]),
                );
            }
        }
    }
    let wrs = v["work_requests"].as_array().unwrap_or(&empty);
    if !wrs.is_empty() {
        out.push_str("recent work requests\n");
        for w in wrs {
            let _ = writeln!(
                out,
                "  {}  {:<28} {:<11} {}",
                text(&w["id"]),
                text(&w["operation"]),
                text(&w["status"]),
                text(&w["accepted_at"])
            );
        }
    }
    out
}

pub async fn run(
    c: &Client,
    opts: &ClientOpts,
    watch: bool,
    every: Duration,
) -> anyhow::Result<()> {
    loop {
        let v = gather(c).await?;
        match opts.format() {
            Format::Table | Format::Wide => {
                if watch {
                    // Clear the screen and go home, then draw.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&v));
            }
            other => output::print_one(&v, other),
        }
        if !watch {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_screen_names_pools_and_says_why_a_listener_is_not_served() {
        let v = json!({
            "loadbalancers": [{
                "name": "web", "vip_address": "127.0.0.1",
                "provisioning_status": "ACTIVE", "operating_status": "ONLINE",
                "listeners": [
                    {"name": "http", "protocol": "HTTP", "port": 8080, "default_pool_id": "p1",
                     "operating_status": "ONLINE"},
                    {"name": "busy", "protocol": "HTTP", "port": 80, "default_pool_id": "p1",
                     "operating_status": "ERROR", "status_reason": "cannot bind 127.0.0.1:80: Address in use"}
                ],
                "pools": [{
                    "id": "p1", "name": "app", "protocol": "HTTP", "algorithm": "ROUND_ROBIN",
                    "members": [
                        {"address": "10.0.0.5", "port": 8080, "weight": 3, "operating_status": "ONLINE",
                         "traffic": {"requests_per_second": 12.5, "error_percent": 0.0, "p99_ms": 3.1}},
                        {"address": "10.0.0.6", "port": 8080, "weight": 1, "drain": true,
                         "operating_status": "ERROR"}
                    ]
                }]
            }],
            "work_requests": [{"id": "w1", "operation": "UPDATE_MEMBER", "status": "SUCCEEDED",
                               "accepted_at": "2026-12-06T12:00:00Z"}]
        });
        let screen = render(&v);
        assert!(screen.contains("-> app"), "{screen}");
        assert!(
            screen.contains("NOT SERVED: cannot bind 127.0.0.1:80"),
            "{screen}"
        );
        assert!(screen.contains("1/2 members up"), "{screen}");
        assert!(screen.contains("draining"), "{screen}");
        assert!(screen.contains("12.5 req/s"), "{screen}");
        assert!(screen.contains("UPDATE_MEMBER"), "{screen}");
        assert!(screen.lines().all(|l| l.chars().count() <= 120), "{screen}");
    }
}
