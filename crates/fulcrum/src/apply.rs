//! `fulcrum apply`: make the configuration match a declarative file.
//!
//! ```yaml
//! subnets:
//!   - {name: backends, cidr: 10.0.0.0/24, vpc_id: vpc-1}
//! loadbalancers:
//!   - name: web                       # matched by name
//!     vip_address: 127.0.0.1
//!     pools:
//!       - name: app                   # matched by name within the load balancer
//!         protocol: HTTP
//!         health_monitor: {type: HTTP, url_path: /health}
//!         members:                    # the pool's members become exactly these
//!           - {address: 10.0.0.5, port: 8080, weight: 3, subnet: backends}
//!     listeners:
//!       - name: http                  # matched by name
//!         protocol: HTTP
//!         port: 8080
//!         default_pool: app           # a pool of the file, by name
//!         routes: [{path_prefix: /api, pool: app}]
//! ```
//! Every other field is the native API's, validated by the server. Fields a file leaves
//! out keep their current values. Applying the same file twice changes nothing.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::Client;

#[derive(Default)]
pub struct Summary {
    created: usize,
    updated: usize,
    unchanged: usize,
    deleted: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "applied: {} created, {} updated, {} unchanged, {} deleted",
            self.created, self.updated, self.unchanged, self.deleted
        )
    }
}

pub async fn apply_file(client: &Client, path: &Path, prune: bool) -> anyhow::Result<Summary> {
    let doc = crate::commands::read_document(&path.to_path_buf())?;
    apply_document(client, doc, prune).await
}

pub async fn apply_document(client: &Client, doc: Value, prune: bool) -> anyhow::Result<Summary> {
    let mut doc = match doc {
        Value::Object(o) => o,
        _ => bail!("the file must hold an object with `subnets` and `loadbalancers`"),
    };
    for key in doc.keys() {
        if key != "subnets" && key != "loadbalancers" {
            bail!("unknown top-level key {key:?} (expected subnets, loadbalancers)");
        }
    }
    let mut a = Applier {
        client,
        summary: Summary::default(),
        prune,
    };
    let subnets = a
        .subnets(list(doc.remove("subnets"), "subnets")?)
        .await
        .context("subnets")?;
    for (i, lb) in list(doc.remove("loadbalancers"), "loadbalancers")?
        .into_iter()
        .enumerate()
    {
        a.loadbalancer(lb, &subnets)
            .await
            .with_context(|| format!("loadbalancers[{i}]"))?;
    }
    Ok(a.summary)
}

struct Applier<'a> {
    client: &'a Client,
    summary: Summary,
    prune: bool,
}

fn list(v: Option<Value>, what: &str) -> anyhow::Result<Vec<Map<String, Value>>> {
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

fn name_of(o: &Map<String, Value>, what: &str) -> anyhow::Result<String> {
    o.get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("every {what} in the file needs a name"))
}

/// Whether `existing` lacks anything `desired` sets.
fn differs(existing: &Value, desired: &Value) -> bool {
    match (existing, desired) {
        (Value::Object(e), Value::Object(d)) => d
            .iter()
            .any(|(k, dv)| e.get(k).is_none_or(|ev| differs(ev, dv))),
        (Value::Array(e), Value::Array(d)) => {
            e.len() != d.len() || e.iter().zip(d).any(|(ev, dv)| differs(ev, dv))
        }
        (e, d) => e != d,
    }
}

fn id_of(v: &Value) -> anyhow::Result<String> {
    v.get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("the API returned an object without an id"))
}

impl Applier<'_> {
    /// Creates `desired` under `collection`, or patches `existing` if it differs.
    async fn upsert(
        &mut self,
        existing: Option<&Value>,
        collection: &str,
        item_path: impl Fn(&str) -> String,
        desired: Value,
    ) -> anyhow::Result<String> {
        match existing {
            None => {
                let reply = self
                    .client
                    .call(Method::POST, collection, Some(&desired), None)
                    .await?;
                self.summary.created += 1;
                id_of(&reply.body)
            }
            Some(e) => {
                let id = id_of(e)?;
                if differs(e, &desired) {
                    self.client
                        .call(Method::PATCH, &item_path(&id), Some(&desired), None)
                        .await?;
                    self.summary.updated += 1;
                } else {
                    self.summary.unchanged += 1;
                }
                Ok(id)
            }
        }
    }

    async fn delete(&mut self, path: &str) -> anyhow::Result<()> {
        self.client.call(Method::DELETE, path, None, None).await?;
        self.summary.deleted += 1;
        Ok(())
    }

    async fn subnets(
        &mut self,
        wanted: Vec<Map<String, Value>>,
    ) -> anyhow::Result<HashMap<String, String>> {
        let existing = self.client.list_all("/v1/subnets").await?;
        let mut ids = HashMap::new();
        for s in wanted {
            let name = name_of(&s, "subnet")?;
            let current = existing
                .iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(&name));
            let id = self
                .upsert(
                    current,
                    "/v1/subnets",
                    |id| format!("/v1/subnets/{id}"),
                    Value::Object(s),
                )
                .await
                .with_context(|| format!("subnet {name:?}"))?;
            ids.insert(name, id);
        }
        Ok(ids)
    }

    async fn loadbalancer(
        &mut self,
        mut lb: Map<String, Value>,
        subnets: &HashMap<String, String>,
    ) -> anyhow::Result<()> {
        let name = name_of(&lb, "load balancer")?;
        let pools = list(lb.remove("pools"), "pools")?;
        let listeners = list(lb.remove("listeners"), "listeners")?;
        let existing = self.client.list_all("/v1/loadbalancers").await?;
        let current = existing
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(&name));
        let lb_id = self
            .upsert(
                current,
                "/v1/loadbalancers",
                |id| format!("/v1/loadbalancers/{id}"),
                Value::Object(lb),
            )
            .await
            .with_context(|| format!("load balancer {name:?}"))?;

        let existing_pools = self
            .client
            .list_all(&format!("/v1/loadbalancers/{lb_id}/pools"))
            .await?;
        let mut pool_ids: HashMap<String, String> = HashMap::new();
        for mut pool in pools {
            let pname = name_of(&pool, "pool")?;
            let members = pool.remove("members");
            let monitor = pool.remove("health_monitor");
            let current = existing_pools
                .iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(&pname));
            let pool_id = self
                .upsert(
                    current,
                    &format!("/v1/loadbalancers/{lb_id}/pools"),
                    |id| format!("/v1/pools/{id}"),
                    Value::Object(pool),
                )
                .await
                .with_context(|| format!("pool {pname:?}"))?;
            self.members(&pool_id, members, subnets)
                .await
                .with_context(|| format!("pool {pname:?} members"))?;
            self.monitor(&pool_id, monitor)
                .await
                .with_context(|| format!("pool {pname:?} health_monitor"))?;
            pool_ids.insert(pname, pool_id);
        }

        let existing_listeners = self
            .client
            .list_all(&format!("/v1/loadbalancers/{lb_id}/listeners"))
            .await?;
        let mut kept_listeners = Vec::new();
        for mut l in listeners {
            let lname = name_of(&l, "listener")?;
            let resolve = |v: &Value| -> anyhow::Result<Value> {
                let n = v.as_str().context("pool references are pool names")?;
                pool_ids
                    .get(n)
                    .map(|id| Value::String(id.clone()))
                    .ok_or_else(|| anyhow!("no pool named {n:?} in this load balancer"))
            };
            if let Some(p) = l.remove("default_pool") {
                l.insert("default_pool_id".into(), resolve(&p)?);
            }
            if let Some(Value::Array(routes)) = l.get_mut("routes") {
                for r in routes.iter_mut() {
                    if let Some(obj) = r.as_object_mut()
                        && let Some(p) = obj.remove("pool")
                    {
                        obj.insert("pool_id".into(), resolve(&p)?);
                    }
                }
            }
            let current = existing_listeners
                .iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(&lname));
            let id = self
                .upsert(
                    current,
                    &format!("/v1/loadbalancers/{lb_id}/listeners"),
                    |id| format!("/v1/listeners/{id}"),
                    Value::Object(l),
                )
                .await
                .with_context(|| format!("listener {lname:?}"))?;
            kept_listeners.push(id);
        }

        if self.prune {
            for l in &existing_listeners {
                let id = id_of(l)?;
                if !kept_listeners.contains(&id) {
                    self.delete(&format!("/v1/listeners/{id}")).await?;
                }
            }
            for p in &existing_pools {
                let id = id_of(p)?;
                if !pool_ids.values().any(|k| *k == id) {
                    self.delete(&format!("/v1/pools/{id}")).await?;
                }
            }
        }
        Ok(())
    }

    /// Makes the pool's members exactly the file's (one atomic batch replace).
    async fn members(
        &mut self,
        pool_id: &str,
        members: Option<Value>,
        subnets: &HashMap<String, String>,
    ) -> anyhow::Result<()> {
        let Some(members) = members else {
            return Ok(());
        };
        let mut wanted = list(Some(members), "members")?;
        for m in &mut wanted {
            if let Some(s) = m.remove("subnet") {
                let n = s.as_str().context("subnet references are subnet names")?;
                let id = subnets
                    .get(n)
                    .ok_or_else(|| anyhow!("no subnet named {n:?} in the file"))?;
                m.insert("subnet_id".into(), Value::String(id.clone()));
            }
        }
        let existing = self
            .client
            .list_all(&format!("/v1/pools/{pool_id}/members"))
            .await?;
        let endpoint = |v: &Value| (v.get("address").cloned(), v.get("port").cloned());
        let same = existing.len() == wanted.len()
            && wanted.iter().all(|w| {
                let w = Value::Object(w.clone());
                existing
                    .iter()
                    .any(|e| endpoint(e) == endpoint(&w) && !differs(e, &w))
            });
        if same {
            self.summary.unchanged += 1;
            return Ok(());
        }
        self.client
            .call(
                Method::POST,
                &format!("/v1/pools/{pool_id}/members/batch"),
                Some(&json!({"action": "replace", "members": wanted})),
                None,
            )
            .await?;
        self.summary.updated += 1;
        Ok(())
    }

    async fn monitor(&mut self, pool_id: &str, monitor: Option<Value>) -> anyhow::Result<()> {
        let existing = self
            .client
            .list_all(&format!("/v1/healthmonitors?pool_id={pool_id}"))
            .await?;
        match monitor {
            None | Some(Value::Null) => {
                if self.prune
                    && let Some(m) = existing.first()
                {
                    self.delete(&format!("/v1/healthmonitors/{}", id_of(m)?))
                        .await?;
                }
                Ok(())
            }
            Some(Value::Object(mut m)) => {
                m.insert("pool_id".into(), Value::String(pool_id.to_owned()));
                self.upsert(
                    existing.first(),
                    "/v1/healthmonitors",
                    |id| format!("/v1/healthmonitors/{id}"),
                    Value::Object(m),
                )
                .await?;
                Ok(())
            }
            Some(_) => bail!("health_monitor must be an object"),
        }
    }
}
