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

use fulcrum::document::{list, name_of};

use crate::client::Client;

#[derive(Default)]
pub struct Summary {
    created: usize,
    updated: usize,
    unchanged: usize,
    deleted: usize,
    /// Every resource the file touches, in the order it is (or would be) changed.
    pub plan: Vec<Step>,
}

/// What `apply` does (or, with `--dry-run`, would do) to one resource.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    /// `create`, `update`, `delete` or `unchanged`.
    pub action: &'static str,
    /// `subnet`, `loadbalancer`, `pool`, `members`, `healthmonitor` or `listener`.
    pub kind: &'static str,
    /// By name: `web`, `web/app` (a pool of load balancer web)...
    pub name: String,
    /// For an update: the fields that change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl Summary {
    /// Whether anything would change.
    pub fn pending(&self) -> bool {
        self.plan.iter().any(|s| s.action != "unchanged")
    }

    /// The counts, whether anything changes (or would), and the plan.
    pub fn to_json(&self) -> Value {
        json!({
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "changes": self.pending(),
            "plan": self.plan,
        })
    }

    /// The plan, one line a resource: `+` create, `~` update (with the fields), `-` delete,
    /// `=` unchanged.
    pub fn plan_text(&self) -> String {
        let mut out = String::new();
        for s in &self.plan {
            let sign = match s.action {
                "create" => '+',
                "update" => '~',
                "delete" => '-',
                _ => '=',
            };
            out.push_str(&format!("{sign} {} {}", s.kind, s.name));
            if !s.fields.is_empty() {
                out.push_str(&format!(" ({})", s.fields.join(", ")));
            }
            out.push('\n');
        }
        out
    }
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

/// What applying the file would change, without changing anything.
pub async fn plan_file(client: &Client, path: &Path, prune: bool) -> anyhow::Result<Summary> {
    let doc = crate::commands::read_document(&path.to_path_buf())?;
    run(client, doc, prune, true).await
}

/// Plans first (names, references and ambiguities are checked before anything is written),
/// then applies.
pub async fn apply_document(client: &Client, doc: Value, prune: bool) -> anyhow::Result<Summary> {
    run(client, doc.clone(), prune, true).await?;
    run(client, doc, prune, false).await
}

async fn run(client: &Client, doc: Value, prune: bool, dry_run: bool) -> anyhow::Result<Summary> {
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
        dry_run,
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
    /// Plan only: nothing is written, and what would be created gets a placeholder id.
    dry_run: bool,
}

/// The id a planned resource would get; what is listed under it is empty.
const PLANNED: &str = "(planned)";

/// The one existing resource named `name`; several are an error naming them.
fn by_name<'v>(existing: &'v [Value], name: &str, what: &str) -> anyhow::Result<Option<&'v Value>> {
    let mut found = existing
        .iter()
        .filter(|e| e.get("name").and_then(Value::as_str) == Some(name));
    let first = found.next();
    if let Some(second) = found.next() {
        let ids: Vec<String> = [first, Some(second)]
            .into_iter()
            .flatten()
            .chain(found)
            .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        bail!(
            "{} {what}s are named {name:?} ({}): rename all but one; nothing was changed",
            ids.len(),
            ids.join(", ")
        );
    }
    Ok(first)
}

/// The top-level fields of `desired` that `existing` does not already have.
fn changed_fields(existing: &Value, desired: &Value) -> Vec<String> {
    match (existing, desired) {
        (Value::Object(e), Value::Object(d)) => d
            .iter()
            .filter(|(k, dv)| e.get(k.as_str()).is_none_or(|ev| differs(ev, dv)))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => Vec::new(),
    }
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
    fn step(&mut self, action: &'static str, kind: &'static str, name: &str, fields: Vec<String>) {
        self.summary.plan.push(Step {
            action,
            kind,
            name: name.to_owned(),
            fields,
        });
    }

    /// The resources under `path`; none under a resource only planned.
    async fn list_under(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        if path.contains(PLANNED) {
            return Ok(Vec::new());
        }
        self.client.list_all(path).await
    }

    /// Creates `desired` under `collection`, or patches `existing` if it differs.
    #[allow(clippy::too_many_arguments)]
    async fn upsert(
        &mut self,
        kind: &'static str,
        name: &str,
        existing: Option<&Value>,
        collection: &str,
        item_path: impl Fn(&str) -> String,
        desired: Value,
    ) -> anyhow::Result<String> {
        match existing {
            None => {
                self.step("create", kind, name, Vec::new());
                self.summary.created += 1;
                if self.dry_run {
                    return Ok(PLANNED.to_owned());
                }
                let reply = self
                    .client
                    .call(Method::POST, collection, Some(&desired), None)
                    .await?;
                id_of(&reply.body)
            }
            Some(e) => {
                let id = id_of(e)?;
                let fields = changed_fields(e, &desired);
                if differs(e, &desired) {
                    self.step("update", kind, name, fields);
                    self.summary.updated += 1;
                    if !self.dry_run {
                        self.client
                            .call(Method::PATCH, &item_path(&id), Some(&desired), None)
                            .await?;
                    }
                } else {
                    self.step("unchanged", kind, name, Vec::new());
                    self.summary.unchanged += 1;
                }
                Ok(id)
            }
        }
    }

    async fn delete(&mut self, kind: &'static str, name: &str, path: &str) -> anyhow::Result<()> {
        self.step("delete", kind, name, Vec::new());
        self.summary.deleted += 1;
        if !self.dry_run {
            self.client.call(Method::DELETE, path, None, None).await?;
        }
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
            let current = by_name(&existing, &name, "subnet")?;
            let id = self
                .upsert(
                    "subnet",
                    &name,
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
        let current = by_name(&existing, &name, "load balancer")?;
        let lb_id = self
            .upsert(
                "loadbalancer",
                &name,
                current,
                "/v1/loadbalancers",
                |id| format!("/v1/loadbalancers/{id}"),
                Value::Object(lb),
            )
            .await
            .with_context(|| format!("load balancer {name:?}"))?;

        let existing_pools = self
            .list_under(&format!("/v1/loadbalancers/{lb_id}/pools"))
            .await?;
        let mut pool_ids: HashMap<String, String> = HashMap::new();
        for mut pool in pools {
            let pname = name_of(&pool, "pool")?;
            let members = pool.remove("members");
            let monitor = pool.remove("health_monitor");
            let current = by_name(&existing_pools, &pname, "pool")?;
            let path = format!("{name}/{pname}");
            let pool_id = self
                .upsert(
                    "pool",
                    &path,
                    current,
                    &format!("/v1/loadbalancers/{lb_id}/pools"),
                    |id| format!("/v1/pools/{id}"),
                    Value::Object(pool),
                )
                .await
                .with_context(|| format!("pool {pname:?}"))?;
            self.members(&path, &pool_id, members, subnets)
                .await
                .with_context(|| format!("pool {pname:?} members"))?;
            self.monitor(&path, &pool_id, monitor)
                .await
                .with_context(|| format!("pool {pname:?} health_monitor"))?;
            pool_ids.insert(pname, pool_id);
        }

        let existing_listeners = self
            .list_under(&format!("/v1/loadbalancers/{lb_id}/listeners"))
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
            let current = by_name(&existing_listeners, &lname, "listener")?;
            let id = self
                .upsert(
                    "listener",
                    &format!("{name}/{lname}"),
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
            let label = |v: &Value, id: &str| {
                let n = v.get("name").and_then(Value::as_str).unwrap_or_default();
                format!("{name}/{}", if n.is_empty() { id } else { n })
            };
            for l in &existing_listeners {
                let id = id_of(l)?;
                if !kept_listeners.contains(&id) {
                    self.delete("listener", &label(l, &id), &format!("/v1/listeners/{id}"))
                        .await?;
                }
            }
            for p in &existing_pools {
                let id = id_of(p)?;
                if !pool_ids.values().any(|k| *k == id) {
                    self.delete("pool", &label(p, &id), &format!("/v1/pools/{id}"))
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Makes the pool's members exactly the file's (one atomic batch replace).
    async fn members(
        &mut self,
        pool: &str,
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
            .list_under(&format!("/v1/pools/{pool_id}/members"))
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
            self.step("unchanged", "members", pool, Vec::new());
            self.summary.unchanged += 1;
            return Ok(());
        }
        let count = format!("{} member(s)", wanted.len());
        let action = if existing.is_empty() {
            "create"
        } else {
            "update"
        };
        self.step(action, "members", pool, vec![count]);
        self.summary.updated += 1;
        if self.dry_run {
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
        Ok(())
    }

    async fn monitor(
        &mut self,
        pool: &str,
        pool_id: &str,
        monitor: Option<Value>,
    ) -> anyhow::Result<()> {
        let existing = self
            .list_under(&format!("/v1/healthmonitors?pool_id={pool_id}"))
            .await?;
        match monitor {
            None | Some(Value::Null) => {
                if self.prune
                    && let Some(m) = existing.first()
                {
                    self.delete(
                        "healthmonitor",
                        pool,
                        &format!("/v1/healthmonitors/{}", id_of(m)?),
                    )
                    .await?;
                }
                Ok(())
            }
            Some(Value::Object(mut m)) => {
                m.insert("pool_id".into(), Value::String(pool_id.to_owned()));
                self.upsert(
                    "healthmonitor",
                    pool,
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
