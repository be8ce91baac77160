//! Client commands: list/get/create/update/delete for every resource.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::ClientOpts;
use crate::client::Client;
use crate::output;

/// What every `list` takes besides its filters.
#[derive(Args, Clone, Copy)]
pub struct ListOpts {
    /// Show at most this many, in the API's order.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Subcommand)]
pub enum ResourceCommand {
    /// Load balancers.
    #[command(
        alias = "lb",
        after_help = "Examples:\n  \
          fulcrum lb create --name web --vip 127.0.0.1\n  \
          fulcrum lb list -o wide\n  \
          fulcrum lb delete web --cascade --wait"
    )]
    Loadbalancer {
        #[command(subcommand)]
        cmd: LbCmd,
    },
    /// Listeners: ports the data plane binds.
    #[command(after_help = "Examples:\n  \
        fulcrum listener create web --protocol HTTP --port 8080 --default-pool app --name http\n  \
        fulcrum listener update web/http --set default_pool_id=$(fulcrum pool get web/api -o id)\n  \
        fulcrum listener list")]
    Listener {
        #[command(subcommand)]
        cmd: ListenerCmd,
    },
    /// Pools of members.
    #[command(after_help = "Examples:\n  \
        fulcrum pool create web --protocol HTTP --name app --algorithm LEAST_CONNECTIONS\n  \
        fulcrum pool update app --set slow_start.enable=true --set slow_start.duration=30\n  \
        fulcrum pool get web/app -o yaml")]
    Pool {
        #[command(subcommand)]
        cmd: PoolCmd,
    },
    /// Members (backend servers) of a pool.
    #[command(after_help = "Examples:\n  \
        fulcrum member create app --address 10.0.0.5 --port 8080 --weight 2\n  \
        fulcrum member update app 10.0.0.5:8080 --drain --wait\n  \
        fulcrum member batch app --action replace -f members.yaml\n  \
        fulcrum member list app")]
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
    /// Health monitors.
    #[command(
        name = "healthmonitor",
        alias = "monitor",
        after_help = "Examples:\n  \
          fulcrum healthmonitor create app --type HTTP --url-path /health\n  \
          fulcrum healthmonitor list"
    )]
    HealthMonitor {
        #[command(subcommand)]
        cmd: MonitorCmd,
    },
    /// Subnets members' addresses must lie in.
    #[command(after_help = "Examples:\n  \
        fulcrum subnet create --name backends --cidr 10.0.0.0/24 --vpc-id vpc-1\n  \
        fulcrum subnet list")]
    Subnet {
        #[command(subcommand)]
        cmd: SubnetCmd,
    },
    /// OCI API signing keys the OCI front door accepts, registered at run time.
    #[command(
        name = "oci-api-key",
        after_help = "Examples:\n  \
          fulcrum oci-api-key create --tenancy ocid1.tenancy.oc1..aaaa --user ocid1.user.oc1..bbbb --public-key-file key.pub.pem --name ci\n  \
          fulcrum oci-api-key list\n  \
          fulcrum oci-api-key delete ci"
    )]
    OciApiKey {
        #[command(subcommand)]
        cmd: OciApiKeyCmd,
    },
    /// Work requests: where each change stands.
    #[command(
        name = "work-request",
        alias = "wr",
        after_help = "Examples:\n  \
          fulcrum work-request list --lb web --limit 5\n  \
          fulcrum work-request wait WORK_REQUEST_ID --timeout 30"
    )]
    WorkRequest {
        #[command(subcommand)]
        cmd: WorkRequestCmd,
    },
}

/// Options every create and update takes.
#[derive(Args, Clone, Default)]
pub struct WriteOpts {
    /// Set any field: `--set weight=3`, `--set upstream.tls.validate_certificate_chain=false`.
    /// Values are JSON when they parse as JSON, else strings.
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Read the fields from a file (JSON, YAML or TOML); flags override it.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Only change the resource if its ETag still matches.
    #[arg(long)]
    if_match: Option<String>,
    /// Wait until the data plane serves the change.
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand)]
pub enum LbCmd {
    /// List them (a table; `--json` for every field).
    List {
        #[command(flatten)]
        show: ListOpts,
    },
    /// Show one, every field.
    Get {
        /// Its id or name.
        id: String,
    },
    /// Create one (`--wait`: until the data plane serves it).
    Create {
        #[arg(long)]
        name: String,
        /// Address the listeners bind [default: 0.0.0.0].
        #[arg(long)]
        vip: Option<String>,
        #[arg(long)]
        vpc_id: Option<String>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Change the given fields; the others stay as they are.
    Update {
        /// Its id or name.
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Delete one (`--wait`: until the data plane serves the change).
    Delete {
        /// Its id or name.
        id: String,
        /// Also delete its listeners, pools, members and health monitors.
        #[arg(long)]
        cascade: bool,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum ListenerCmd {
    /// List them (a table; `--json` for every field).
    List {
        #[command(flatten)]
        show: ListOpts,
        /// Only this load balancer's (its id or name).
        #[arg(long)]
        lb: Option<String>,
    },
    /// Show one, every field.
    Get {
        /// Its id or name.
        id: String,
    },
    /// Create one (`--wait`: until the data plane serves it).
    Create {
        /// The load balancer (its id or name).
        lb: String,
        #[arg(long)]
        protocol: String,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        default_pool: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Change the given fields; the others stay as they are.
    Update {
        /// Its id or name.
        id: String,
        #[arg(long)]
        default_pool: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Delete one (`--wait`: until the data plane serves the change).
    Delete {
        /// Its id or name.
        id: String,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum PoolCmd {
    /// List them (a table; `--json` for every field).
    List {
        #[command(flatten)]
        show: ListOpts,
        /// Only this load balancer's (its id or name).
        #[arg(long)]
        lb: Option<String>,
    },
    /// Show one, every field.
    Get {
        /// Its id or name.
        id: String,
    },
    /// Create one (`--wait`: until the data plane serves it).
    Create {
        /// The load balancer (its id or name).
        lb: String,
        #[arg(long)]
        protocol: String,
        #[arg(long)]
        name: Option<String>,
        /// ROUND_ROBIN, LEAST_CONNECTIONS, SOURCE_IP or QUIC_CID.
        #[arg(long)]
        algorithm: Option<String>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Change the given fields; the others stay as they are.
    Update {
        /// Its id or name.
        id: String,
        #[arg(long)]
        algorithm: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Delete one (`--wait`: until the data plane serves the change).
    Delete {
        /// Its id or name.
        id: String,
        #[arg(long)]
        wait: bool,
    },
}

/// Member fields settable by flag.
#[derive(Args, Clone, Default)]
pub struct MemberFlags {
    #[arg(long)]
    weight: Option<u32>,
    /// No new requests; in-flight ones finish. `--drain false` undrains.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    drain: Option<bool>,
    /// Only used while no non-backup member is available.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    backup: Option<bool>,
    /// No traffic at all.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    offline: Option<bool>,
    #[arg(long)]
    admin_state_up: Option<bool>,
    /// Priority group, 0..100; lower is preferred.
    #[arg(long)]
    priority: Option<u8>,
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    subnet_id: Option<String>,
}

#[derive(Subcommand)]
pub enum MemberCmd {
    /// List them (a table; `--json` for every field).
    List {
        #[command(flatten)]
        show: ListOpts,
        /// The pool (its id or name).
        pool: String,
    },
    /// Show one, every field.
    Get {
        /// The pool (its id or name).
        pool: String,
        /// Its id or name.
        id: String,
    },
    /// Create one (`--wait`: until the data plane serves it).
    Create {
        /// The pool (its id or name).
        pool: String,
        #[arg(long)]
        address: String,
        #[arg(long)]
        port: u16,
        #[command(flatten)]
        fields: MemberFlags,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// e.g. `fulcrum member update POOL MEMBER --weight 3 --drain`
    Update {
        /// The pool (its id or name).
        pool: String,
        /// Its id or name.
        id: String,
        #[command(flatten)]
        fields: MemberFlags,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Delete one (`--wait`: until the data plane serves the change).
    Delete {
        /// The pool (its id or name).
        pool: String,
        /// Its id or name.
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// Add, replace or delete up to 200 members at once, all or nothing.
    Batch {
        /// The pool (its id or name).
        pool: String,
        /// add, replace or delete.
        #[arg(long)]
        action: String,
        /// A list of members (JSON, YAML or TOML under `members`); for delete, their ids.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Wait until the data plane serves the change.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum MonitorCmd {
    /// List them (a table; `--json` for every field).
    List {
        #[command(flatten)]
        show: ListOpts,
        /// Only this pool's (its id or name).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Show one, every field.
    Get {
        /// Its id or name.
        id: String,
    },
    /// Create one (`--wait`: until the data plane serves it).
    Create {
        /// The pool (its id or name).
        pool: String,
        /// TCP, HTTP, HTTPS or UDP_CONNECT.
        #[arg(long = "type")]
        kind: String,
        #[arg(long)]
        interval_ms: Option<u32>,
        #[arg(long)]
        url_path: Option<String>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Change the given fields; the others stay as they are.
    Update {
        /// Its id or name.
        id: String,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Delete one (`--wait`: until the data plane serves the change).
    Delete {
        /// Its id or name.
        id: String,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum SubnetCmd {
    /// List them (a table; `--json` for every field).
    List {
        #[command(flatten)]
        show: ListOpts,
    },
    /// Show one, every field.
    Get {
        /// Its id or name.
        id: String,
    },
    /// Create one (`--wait`: until the data plane serves it).
    Create {
        /// The address range, e.g. 10.0.0.0/24 (no host bits set).
        #[arg(long)]
        cidr: String,
        /// The VPC (network) it belongs to: any label up to 36 characters.
        #[arg(long)]
        vpc_id: String,
        /// A name, unique among subnets, usable wherever a subnet id is.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Change the given fields; the others stay as they are.
    Update {
        /// Its id or name.
        id: String,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Delete one (`--wait`: until the data plane serves the change).
    Delete {
        /// Its id or name.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum OciApiKeyCmd {
    /// List them (a table; `--json` for every field).
    List {
        #[command(flatten)]
        show: ListOpts,
    },
    /// Show one, every field.
    Get {
        /// Its id or name.
        id: String,
    },
    /// Register a public key; prints the key id an OCI SDK config names
    /// (`tenancy/user/fingerprint`).
    Create {
        /// The tenancy OCID (the SDK config's `tenancy`).
        #[arg(long)]
        tenancy: String,
        /// The user OCID (the SDK config's `user`).
        #[arg(long)]
        user: String,
        /// The RSA public key in PEM (`openssl rsa -in key.pem -pubout`).
        #[arg(long)]
        public_key_file: PathBuf,
        /// The principal its requests act as [default: the key id].
        #[arg(long)]
        name: Option<String>,
        /// A compartment OCID the key is limited to; repeat for several [default: all].
        #[arg(long = "compartment")]
        compartments: Vec<String>,
        #[command(flatten)]
        opts: WriteOpts,
    },
    /// Remove one: requests it signs are refused from then on.
    Delete {
        /// Its id or name.
        id: String,
        /// Wait until every part of fulcrum has dropped it.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum WorkRequestCmd {
    /// List them (a table; `--json` for every field).
    List {
        #[command(flatten)]
        show: ListOpts,
        /// Only this load balancer's (its id or name).
        #[arg(long)]
        lb: Option<String>,
    },
    /// Show one, every field.
    Get {
        /// Its id or name.
        id: String,
    },
    /// Wait until the change is served (or failed), with a progress indicator.
    Wait {
        /// Its id or name.
        id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

/// A client for the options given: the token from the flag, the environment, or the file
/// `fulcrum serve` generated.
pub fn connect(opts: &ClientOpts) -> anyhow::Result<Client> {
    const DEFAULT_SERVER: &str = "http://127.0.0.1:9000";
    let token = match &opts.token {
        Some(t) => t.clone(),
        None => {
            let dir = opts
                .data_dir
                .clone()
                .unwrap_or_else(crate::paths::default_data_dir);
            let path = crate::paths::token_file(&dir);
            match std::fs::read_to_string(&path) {
                Ok(t) => t.trim().to_owned(),
                // No token here, no flags: a running demo, if there is one.
                Err(_) if opts.data_dir.is_none() && opts.server.is_none() => {
                    if let Some((server, token)) = running_demo() {
                        return Client::new(server, token, &opts.trust());
                    }
                    bail!(
                        "no API token: pass --token or FULCRUM_TOKEN (none found in {}, and no `fulcrum serve --demo` is running)",
                        path.display()
                    )
                }
                Err(_) => bail!(
                    "no API token: pass --token or FULCRUM_TOKEN (none found in {})",
                    path.display()
                ),
            }
        }
    };
    let server = opts.server.clone().unwrap_or_else(|| DEFAULT_SERVER.into());
    Client::new(server, token, &opts.trust())
}

/// The API and token of a `serve --demo` still running (its file names a live process).
fn running_demo() -> Option<(String, String)> {
    let text = std::fs::read_to_string(crate::paths::demo_file()).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    let pid = v["pid"].as_u64()?;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then(|| {
            Some((
                v["server"].as_str()?.to_owned(),
                v["token"].as_str()?.to_owned(),
            ))
        })
        .flatten()
}

/// Reads a JSON, YAML or TOML file by its extension (YAML also reads JSON).
pub fn read_document(path: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    fulcrum::document::parse_document(&text, ext)
        .with_context(|| format!("cannot parse {}", path.display()))
}

/// Builds a request body from a file, named flags and `--set` pairs (later wins).
fn body(opts: &WriteOpts, named: Vec<(&str, Option<Value>)>) -> anyhow::Result<Value> {
    let mut doc = match &opts.file {
        Some(f) => read_document(f)?,
        None => json!({}),
    };
    if !doc.is_object() {
        bail!("the file must hold an object of fields");
    }
    for (k, v) in named {
        if let Some(v) = v {
            set_path(&mut doc, k, v);
        }
    }
    for pair in &opts.set {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--set takes FIELD=VALUE (got {pair:?})"))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        set_path(&mut doc, k, v);
    }
    Ok(doc)
}

fn set_path(doc: &mut Value, path: &str, value: Value) {
    let mut cur = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(map) = cur else { return };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        cur = map.entry(part.to_owned()).or_insert_with(|| json!({}));
    }
}

fn s(v: &Option<String>) -> Option<Value> {
    v.clone().map(Value::String)
}

/// A pool given by name or id, as the id a request body needs.
async fn pool_id(c: &Client, pool: Option<String>) -> anyhow::Result<Option<String>> {
    match pool {
        Some(p) => Ok(Some(c.id_of("pools", &p).await?)),
        None => Ok(None),
    }
}

fn j<T: serde::Serialize>(v: Option<T>) -> Option<Value> {
    v.and_then(|v| serde_json::to_value(v).ok())
}

pub async fn run(cmd: ResourceCommand, client: ClientOpts) -> anyhow::Result<()> {
    use ResourceCommand as R;
    match cmd {
        R::Loadbalancer { cmd } => {
            let c = connect(&client)?;
            let view = output::LOADBALANCER;
            match cmd {
                LbCmd::List { show } => list(&c, &client, show, &view, "/v1/loadbalancers").await,
                LbCmd::Get { id } => get(&c, &client, &format!("/v1/loadbalancers/{id}")).await,
                LbCmd::Create {
                    name,
                    vip,
                    vpc_id,
                    opts,
                } => {
                    let b = body(
                        &opts,
                        vec![
                            ("name", Some(Value::String(name))),
                            ("vip_address", s(&vip)),
                            ("vpc_id", s(&vpc_id)),
                        ],
                    )?;
                    write(
                        &c,
                        &client,
                        Method::POST,
                        "/v1/loadbalancers".into(),
                        b,
                        &opts,
                    )
                    .await
                }
                LbCmd::Update { id, name, opts } => {
                    let b = body(&opts, vec![("name", s(&name))])?;
                    write(
                        &c,
                        &client,
                        Method::PATCH,
                        format!("/v1/loadbalancers/{id}"),
                        b,
                        &opts,
                    )
                    .await
                }
                LbCmd::Delete { id, cascade, wait } => {
                    delete(
                        &c,
                        &client,
                        &format!("/v1/loadbalancers/{id}?cascade={cascade}"),
                        wait,
                    )
                    .await
                }
            }
        }
        R::Listener { cmd } => {
            let c = connect(&client)?;
            match cmd {
                ListenerCmd::List { show, lb } => {
                    let path = under_loadbalancer(lb.as_deref(), "listeners");
                    list(&c, &client, show, &output::LISTENER, &path).await
                }
                ListenerCmd::Get { id } => get(&c, &client, &format!("/v1/listeners/{id}")).await,
                ListenerCmd::Create {
                    lb,
                    protocol,
                    port,
                    default_pool,
                    name,
                    opts,
                } => {
                    let b = body(
                        &opts,
                        vec![
                            ("protocol", Some(Value::String(protocol))),
                            ("port", j(Some(port))),
                            ("default_pool_id", s(&pool_id(&c, default_pool).await?)),
                            ("name", s(&name)),
                        ],
                    )?;
                    write(
                        &c,
                        &client,
                        Method::POST,
                        format!("/v1/loadbalancers/{lb}/listeners"),
                        b,
                        &opts,
                    )
                    .await
                }
                ListenerCmd::Update {
                    id,
                    default_pool,
                    port,
                    opts,
                } => {
                    let b = body(
                        &opts,
                        vec![
                            ("default_pool_id", s(&pool_id(&c, default_pool).await?)),
                            ("port", j(port)),
                        ],
                    )?;
                    write(
                        &c,
                        &client,
                        Method::PATCH,
                        format!("/v1/listeners/{id}"),
                        b,
                        &opts,
                    )
                    .await
                }
                ListenerCmd::Delete { id, wait } => {
                    delete(&c, &client, &format!("/v1/listeners/{id}"), wait).await
                }
            }
        }
        R::Pool { cmd } => {
            let c = connect(&client)?;
            match cmd {
                PoolCmd::List { show, lb } => {
                    let path = under_loadbalancer(lb.as_deref(), "pools");
                    list(&c, &client, show, &output::POOL, &path).await
                }
                PoolCmd::Get { id } => get(&c, &client, &format!("/v1/pools/{id}")).await,
                PoolCmd::Create {
                    lb,
                    protocol,
                    name,
                    algorithm,
                    opts,
                } => {
                    let b = body(
                        &opts,
                        vec![
                            ("protocol", Some(Value::String(protocol))),
                            ("name", s(&name)),
                            ("algorithm", s(&algorithm)),
                        ],
                    )?;
                    write(
                        &c,
                        &client,
                        Method::POST,
                        format!("/v1/loadbalancers/{lb}/pools"),
                        b,
                        &opts,
                    )
                    .await
                }
                PoolCmd::Update {
                    id,
                    algorithm,
                    name,
                    opts,
                } => {
                    let b = body(
                        &opts,
                        vec![("algorithm", s(&algorithm)), ("name", s(&name))],
                    )?;
                    write(
                        &c,
                        &client,
                        Method::PATCH,
                        format!("/v1/pools/{id}"),
                        b,
                        &opts,
                    )
                    .await
                }
                PoolCmd::Delete { id, wait } => {
                    delete(&c, &client, &format!("/v1/pools/{id}"), wait).await
                }
            }
        }
        R::Member { cmd } => {
            let c = connect(&client)?;
            match cmd {
                MemberCmd::List { show, pool } => {
                    let mut items = c.list_all(&format!("/v1/pools/{pool}/members")).await?;
                    if let Some(n) = show.limit {
                        items.truncate(n);
                    }
                    with_traffic(&c, &mut items).await;
                    output::print_list(&output::MEMBER, &items, client.format());
                    Ok(())
                }
                MemberCmd::Get { pool, id } => {
                    get(&c, &client, &format!("/v1/pools/{pool}/members/{id}")).await
                }
                MemberCmd::Create {
                    pool,
                    address,
                    port,
                    fields,
                    opts,
                } => {
                    let mut named = member_fields(&fields);
                    named.push(("address", Some(Value::String(address))));
                    named.push(("port", j(Some(port))));
                    let b = body(&opts, named)?;
                    write(
                        &c,
                        &client,
                        Method::POST,
                        format!("/v1/pools/{pool}/members"),
                        b,
                        &opts,
                    )
                    .await
                }
                MemberCmd::Update {
                    pool,
                    id,
                    fields,
                    opts,
                } => {
                    let b = body(&opts, member_fields(&fields))?;
                    write(
                        &c,
                        &client,
                        Method::PATCH,
                        format!("/v1/pools/{pool}/members/{id}"),
                        b,
                        &opts,
                    )
                    .await
                }
                MemberCmd::Delete { pool, id, wait } => {
                    delete(&c, &client, &format!("/v1/pools/{pool}/members/{id}"), wait).await
                }
                MemberCmd::Batch {
                    pool,
                    action,
                    file,
                    wait,
                } => {
                    let doc = read_document(&file)?;
                    let members = match doc {
                        Value::Array(a) => Value::Array(a),
                        Value::Object(mut o) => o
                            .remove("members")
                            .context("the file needs a `members` list")?,
                        _ => bail!("the file must hold a list of members"),
                    };
                    let opts = WriteOpts {
                        wait,
                        ..Default::default()
                    };
                    write(
                        &c,
                        &client,
                        Method::POST,
                        format!("/v1/pools/{pool}/members/batch"),
                        json!({"action": action, "members": members}),
                        &opts,
                    )
                    .await
                }
            }
        }
        R::HealthMonitor { cmd } => {
            let c = connect(&client)?;
            match cmd {
                MonitorCmd::List { show, pool } => {
                    let path = match pool {
                        Some(p) => {
                            format!("/v1/healthmonitors?pool_id={}", c.id_of("pools", &p).await?)
                        }
                        None => "/v1/healthmonitors".into(),
                    };
                    list(&c, &client, show, &output::MONITOR, &path).await
                }
                MonitorCmd::Get { id } => {
                    get(&c, &client, &format!("/v1/healthmonitors/{id}")).await
                }
                MonitorCmd::Create {
                    pool,
                    kind,
                    interval_ms,
                    url_path,
                    opts,
                } => {
                    let b = body(
                        &opts,
                        vec![
                            (
                                "pool_id",
                                Some(Value::String(c.id_of("pools", &pool).await?)),
                            ),
                            ("type", Some(Value::String(kind))),
                            ("interval_ms", j(interval_ms)),
                            ("url_path", s(&url_path)),
                        ],
                    )?;
                    write(
                        &c,
                        &client,
                        Method::POST,
                        "/v1/healthmonitors".into(),
                        b,
                        &opts,
                    )
                    .await
                }
                MonitorCmd::Update { id, opts } => {
                    let b = body(&opts, vec![])?;
                    write(
                        &c,
                        &client,
                        Method::PATCH,
                        format!("/v1/healthmonitors/{id}"),
                        b,
                        &opts,
                    )
                    .await
                }
                MonitorCmd::Delete { id, wait } => {
                    delete(&c, &client, &format!("/v1/healthmonitors/{id}"), wait).await
                }
            }
        }
        R::Subnet { cmd } => {
            let c = connect(&client)?;
            match cmd {
                SubnetCmd::List { show } => {
                    list(&c, &client, show, &output::SUBNET, "/v1/subnets").await
                }
                SubnetCmd::Get { id } => get(&c, &client, &format!("/v1/subnets/{id}")).await,
                SubnetCmd::Create {
                    cidr,
                    vpc_id,
                    name,
                    opts,
                } => {
                    let b = body(
                        &opts,
                        vec![
                            ("cidr", Some(Value::String(cidr))),
                            ("vpc_id", Some(Value::String(vpc_id))),
                            ("name", s(&name)),
                        ],
                    )?;
                    write(&c, &client, Method::POST, "/v1/subnets".into(), b, &opts).await
                }
                SubnetCmd::Update { id, opts } => {
                    let b = body(&opts, vec![])?;
                    write(
                        &c,
                        &client,
                        Method::PATCH,
                        format!("/v1/subnets/{id}"),
                        b,
                        &opts,
                    )
                    .await
                }
                SubnetCmd::Delete { id } => {
                    delete(&c, &client, &format!("/v1/subnets/{id}"), false).await
                }
            }
        }
        R::OciApiKey { cmd } => {
            let c = connect(&client)?;
            match cmd {
                OciApiKeyCmd::List { show } => {
                    list(&c, &client, show, &output::OCI_API_KEY, "/v1/oci-api-keys").await
                }
                OciApiKeyCmd::Get { id } => {
                    get(&c, &client, &format!("/v1/oci-api-keys/{id}")).await
                }
                OciApiKeyCmd::Create {
                    tenancy,
                    user,
                    public_key_file,
                    name,
                    compartments,
                    opts,
                } => {
                    let pem = std::fs::read_to_string(&public_key_file).with_context(|| {
                        format!("reading the public key {}", public_key_file.display())
                    })?;
                    let b = body(
                        &opts,
                        vec![
                            ("tenancy", Some(Value::String(tenancy))),
                            ("user", Some(Value::String(user))),
                            ("public_key_pem", Some(Value::String(pem))),
                            ("name", s(&name)),
                            (
                                "compartments",
                                (!compartments.is_empty()).then(|| json!(compartments)),
                            ),
                        ],
                    )?;
                    write(
                        &c,
                        &client,
                        Method::POST,
                        "/v1/oci-api-keys".into(),
                        b,
                        &opts,
                    )
                    .await
                }
                OciApiKeyCmd::Delete { id, wait } => {
                    delete(&c, &client, &format!("/v1/oci-api-keys/{id}"), wait).await
                }
            }
        }
        R::WorkRequest { cmd } => {
            let c = connect(&client)?;
            match cmd {
                WorkRequestCmd::List { show, lb } => {
                    let path = match lb {
                        Some(lb) => format!("/v1/work-requests?loadbalancer_id={lb}"),
                        None => "/v1/work-requests".into(),
                    };
                    list(&c, &client, show, &output::WORK_REQUEST, &path).await
                }
                WorkRequestCmd::Get { id } => {
                    get(&c, &client, &format!("/v1/work-requests/{id}")).await
                }
                WorkRequestCmd::Wait { id, timeout } => {
                    let wr =
                        wait_for(&c, &id, Duration::from_secs(timeout), !client.machine()).await?;
                    output::print_one(&wr, client.format());
                    Ok(())
                }
            }
        }
    }
}

/// `/v1/loadbalancers/{lb}/{what}` for one load balancer's, `/v1/{what}` for all.
fn under_loadbalancer(lb: Option<&str>, what: &str) -> String {
    match lb {
        Some(lb) => format!("/v1/loadbalancers/{lb}/{what}"),
        None => format!("/v1/{what}"),
    }
}

fn member_fields(f: &MemberFlags) -> Vec<(&'static str, Option<Value>)> {
    vec![
        ("weight", j(f.weight)),
        ("drain", j(f.drain)),
        ("backup", j(f.backup)),
        ("offline", j(f.offline)),
        ("admin_state_up", j(f.admin_state_up)),
        ("priority", j(f.priority)),
        ("name", s(&f.name)),
        ("subnet_id", s(&f.subnet_id)),
    ]
}

/// Adds each member's recent traffic (`/v1/stats`, the last 5-10 s on the node that
/// answers) as `traffic`; members without figures (or a server without stats) get none.
async fn with_traffic(c: &Client, members: &mut [Value]) {
    let Ok(stats) = c.get("/v1/stats").await else {
        return;
    };
    annotate_traffic(&stats, members);
}

/// Adds each member's figures from `/v1/stats` (`stats`) as its `traffic`.
pub fn annotate_traffic(stats: &Value, members: &mut [Value]) {
    let round = |v: &Value, scale: f64| v.as_f64().map(|x| (x * scale * 100.0).round() / 100.0);
    for m in members.iter_mut() {
        let figures = stats["members"]
            .as_array()
            .and_then(|all| all.iter().find(|f| f["id"] == m["id"]));
        if let (Some(f), Some(obj)) = (figures, m.as_object_mut()) {
            obj.insert(
                "traffic".into(),
                json!({
                    "requests_per_second": round(&f["requests_per_second"], 1.0),
                    "error_percent": round(&f["error_rate"], 100.0),
                    "p50_ms": round(&f["p50_ms"], 1.0),
                    "p99_ms": round(&f["p99_ms"], 1.0),
                    "in_flight": f["in_flight"],
                    "requests_total": f["requests_total"],
                }),
            );
        }
    }
}

async fn list(
    c: &Client,
    opts: &ClientOpts,
    show: ListOpts,
    view: &output::Columns,
    path: &str,
) -> anyhow::Result<()> {
    let mut items = c.list_all(path).await?;
    if let Some(n) = show.limit {
        items.truncate(n);
    }
    output::print_list(view, &items, opts.format());
    Ok(())
}

async fn get(c: &Client, opts: &ClientOpts, path: &str) -> anyhow::Result<()> {
    let v = c.get(path).await?;
    output::print_one(&v, opts.format());
    Ok(())
}

/// Where a written resource can be read back: the path itself for an update, the new
/// resource's own path for a create (by the collection it was created in).
fn resource_path(method: &str, path: &str, body: &Value) -> Option<String> {
    if method != "POST" {
        return Some(path.to_owned());
    }
    let id = body["id"].as_str()?;
    let collection = path.rsplit('/').next()?;
    Some(match collection {
        "members" => format!("{path}/{id}"),
        "listeners" | "pools" | "loadbalancers" | "healthmonitors" | "subnets" | "oci-api-keys" => {
            format!("/v1/{collection}/{id}")
        }
        _ => return None,
    })
}

async fn write(
    c: &Client,
    opts: &ClientOpts,
    method: Method,
    path: String,
    body: Value,
    w: &WriteOpts,
) -> anyhow::Result<()> {
    let method_name = method.as_str().to_owned();
    let reply = c
        .call(method, &path, Some(&body), w.if_match.as_deref())
        .await?;
    let mut shown = reply.body.clone();
    if w.wait
        && let Some(id) = &reply.work_request_id
    {
        wait_for(c, id, Duration::from_secs(120), !opts.machine()).await?;
        // The resource as it stands now that the change is served, not as it was accepted.
        if let Some(now) = resource_path(&method_name, &path, &reply.body) {
            shown = c.get(&now).await?;
        }
    }
    output::print_one(&shown, opts.format());
    if !opts.machine() {
        if let Some(etag) = reply.etag {
            eprintln!("etag: {etag}");
        }
        if let Some(id) = reply.work_request_id {
            eprintln!("work request: {id}");
        }
    }
    Ok(())
}

async fn delete(c: &Client, opts: &ClientOpts, path: &str, wait: bool) -> anyhow::Result<()> {
    let reply = c.call(Method::DELETE, path, None, None).await?;
    let mut wr = reply.body;
    if wait && let Some(id) = wr.get("id").and_then(Value::as_str).map(str::to_owned) {
        wr = wait_for(c, &id, Duration::from_secs(120), !opts.machine()).await?;
    }
    output::print_one(&wr, opts.format());
    Ok(())
}

/// Polls a work request until it is final, showing a spinner on a terminal.
pub async fn wait_for(
    c: &Client,
    id: &str,
    timeout: Duration,
    progress: bool,
) -> anyhow::Result<Value> {
    let bar = if progress {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(100));
        b.set_message(format!("waiting for work request {id}"));
        Some(b)
    } else {
        None
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let wr = c
            .get(&format!("/v1/work-requests/{id}/wait?timeout_ms=1000"))
            .await?;
        let status = wr
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if let Some(b) = &bar {
            b.set_message(format!("work request {id}: {status}"));
        }
        if status == "SUCCEEDED" || status == "FAILED" {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if status == "FAILED" {
                let why = wr
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given");
                bail!("work request {id} failed: {why}");
            }
            return Ok(wr);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "work request {id} is still {status} after {}s",
                timeout.as_secs()
            );
        }
    }
}
