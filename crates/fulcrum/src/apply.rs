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
//! Every other field is the native API's. Fields a file leaves out keep their current
//! values. Applying the same file twice changes nothing.
//!
//! The server plans and applies the whole file as one change (`POST /v1/apply`, see
//! `fulcrum_control::apply`): a file that fails anywhere changes nothing.

use std::path::Path;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::Client;

/// What the server answered: every step with counts, and the change's work request.
#[derive(Debug, Default, Deserialize)]
pub struct Summary {
    created: usize,
    updated: usize,
    unchanged: usize,
    deleted: usize,
    /// Every resource the file touches, in the order it is (or would be) changed.
    pub plan: Vec<Step>,
    /// The change's work request id; none when only planned or nothing changed.
    #[serde(default, deserialize_with = "work_request_id")]
    pub work_request: Option<String>,
}

fn work_request_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.and_then(|wr| wr.get("id").and_then(Value::as_str).map(str::to_owned)))
}

/// What `apply` does (or, with `--dry-run`, would do) to one resource.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct Step {
    /// `create`, `update`, `delete` or `unchanged`.
    pub action: String,
    /// `subnet`, `loadbalancer`, `pool`, `members`, `healthmonitor` or `listener`.
    pub kind: String,
    /// By name: `web`, `web/app` (a pool of load balancer web)...
    pub name: String,
    /// For an update: the fields that change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl Summary {
    /// Whether anything would change.
    pub fn pending(&self) -> bool {
        self.plan.iter().any(|s| s.action != "unchanged")
    }

    /// The counts, whether anything changes (or would), the plan and the work request.
    pub fn to_json(&self) -> Value {
        json!({
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "changes": self.pending(),
            "plan": self.plan,
            "work_request_id": self.work_request,
        })
    }

    /// The plan, one line a resource: `+` create, `~` update (with the fields), `-` delete,
    /// `=` unchanged.
    pub fn plan_text(&self) -> String {
        let mut out = String::new();
        for s in &self.plan {
            let sign = match s.action.as_str() {
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
        )?;
        if let Some(id) = &self.work_request {
            write!(f, " (work request {id})")?;
        }
        Ok(())
    }
}

pub async fn apply_file(client: &Client, path: &Path, prune: bool) -> anyhow::Result<Summary> {
    let doc = crate::commands::read_document(&path.to_path_buf())?;
    apply_document(client, doc, prune).await
}

/// What applying the file would change, without changing anything.
pub async fn plan_file(client: &Client, path: &Path, prune: bool) -> anyhow::Result<Summary> {
    let doc = crate::commands::read_document(&path.to_path_buf())?;
    send(client, doc, prune, true).await
}

/// Applies a document in one change: all of it, or (on any error) nothing.
pub async fn apply_document(client: &Client, doc: Value, prune: bool) -> anyhow::Result<Summary> {
    send(client, doc, prune, false).await
}

async fn send(client: &Client, doc: Value, prune: bool, dry_run: bool) -> anyhow::Result<Summary> {
    // Shape and references are checked here too, so a broken file is refused before the
    // server is asked (and by `fulcrum validate -f` with no server at all).
    fulcrum::document::check_document(&doc)?;
    let body = json!({"document": doc, "prune": prune, "dry_run": dry_run});
    let reply = client
        .call(Method::POST, "/v1/apply", Some(&body), None)
        .await?;
    Ok(serde_json::from_value(reply.body)?)
}
