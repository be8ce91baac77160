//! Apply files (`fulcrum apply -f`, `serve --apply`, `validate --file`): their text
//! parsed, and their shape checked without a server.

use anyhow::{anyhow, bail};
use serde_json::{Map, Value};

/// The format of a document, from its file name's extension: `toml`, `json`, else YAML.
pub fn parse_document(text: &str, extension: &str) -> anyhow::Result<Value> {
    Ok(match extension {
        "toml" => toml::from_str::<Value>(text)?,
        "json" => serde_json::from_str(text)?,
        _ => serde_yaml_ng::from_str(text)?,
    })
}

/// Checks an apply file without a server: its shape, a name on everything, no name twice
/// where names must be unique, and references (a listener's pools, a member's subnet) to
/// what the file defines. Returns what it holds, for a summary line.
pub fn check_document(doc: &Value) -> anyhow::Result<String> {
    let Value::Object(doc) = doc else {
        bail!("the file must hold an object with `subnets` and `loadbalancers`");
    };
    for key in doc.keys() {
        if key != "subnets" && key != "loadbalancers" {
            bail!("unknown top-level key {key:?} (expected subnets, loadbalancers)");
        }
    }
    let unique = |names: &[String], what: &str| -> anyhow::Result<()> {
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                bail!("two {what}s are named {n:?}");
            }
        }
        Ok(())
    };
    let subnets = list(doc.get("subnets").cloned(), "subnets")?;
    let subnet_names = subnets
        .iter()
        .map(|s| name_of(s, "subnet"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    unique(&subnet_names, "subnet")?;
    let lbs = list(doc.get("loadbalancers").cloned(), "loadbalancers")?;
    let lb_names = lbs
        .iter()
        .map(|l| name_of(l, "load balancer"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    unique(&lb_names, "load balancer")?;
    let (mut pool_count, mut listener_count, mut member_count) = (0, 0, 0);
    for (lb, lb_name) in lbs.iter().zip(&lb_names) {
        let within = |e: anyhow::Error| e.context(format!("load balancer {lb_name:?}"));
        let pools = list(lb.get("pools").cloned(), "pools").map_err(within)?;
        let pool_names = pools
            .iter()
            .map(|p| name_of(p, "pool"))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(within)?;
        unique(&pool_names, "pool").map_err(within)?;
        for (pool, pname) in pools.iter().zip(&pool_names) {
            let members = list(pool.get("members").cloned(), "members")
                .map_err(|e| within(e.context(format!("pool {pname:?}"))))?;
            for m in &members {
                if let Some(s) = m.get("subnet") {
                    let s = s.as_str().unwrap_or_default();
                    if !subnet_names.iter().any(|n| n == s) {
                        return Err(within(anyhow!(
                            "pool {pname:?}: a member names subnet {s:?}, which the file does not define"
                        )));
                    }
                }
            }
            member_count += members.len();
        }
        let listeners = list(lb.get("listeners").cloned(), "listeners").map_err(within)?;
        let listener_names = listeners
            .iter()
            .map(|l| name_of(l, "listener"))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(within)?;
        unique(&listener_names, "listener").map_err(within)?;
        for (l, lname) in listeners.iter().zip(&listener_names) {
            let routes = l.get("routes").and_then(Value::as_array);
            let references = l
                .get("default_pool")
                .into_iter()
                .chain(routes.into_iter().flatten().filter_map(|r| r.get("pool")));
            for p in references {
                let p = p.as_str().unwrap_or_default();
                if !pool_names.iter().any(|n| n == p) {
                    return Err(within(anyhow!(
                        "listener {lname:?} sends to pool {p:?}, which this load balancer does not define"
                    )));
                }
            }
        }
        pool_count += pools.len();
        listener_count += listeners.len();
    }
    Ok(format!(
        "{} subnet(s), {} load balancer(s), {pool_count} pool(s) with {member_count} member(s), {listener_count} listener(s)",
        subnet_names.len(),
        lb_names.len()
    ))
}

/// A list of objects (`subnets`, `pools`…); absent or null is an empty list.
pub fn list(v: Option<Value>, what: &str) -> anyhow::Result<Vec<Map<String, Value>>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(o) => Ok(o),
                _ => Err(anyhow!("{what}[{i}] must be an object")),
            })
            .collect(),
        Some(_) => Err(anyhow!("{what} must be a list")),
    }
}

pub fn name_of(o: &Map<String, Value>, what: &str) -> anyhow::Result<String> {
    o.get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("every {what} in the file needs a name"))
}
