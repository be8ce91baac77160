//! The `fulcrum` binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of glibc's allocator: per-thread free lists with no global lock, so the
/// control plane's many short-lived allocations (requests, JSON, views) and the workers'
/// occasional ones cost less and do not contend. Built with `no_thp`: transparent huge
/// pages cost a third more resident memory and slower large batches (ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod apply;
mod client;
mod commands;
mod demo;
mod handover;
mod output;
mod paths;
mod serve;
mod status;
mod store;

#[derive(Parser)]
#[command(
    name = "fulcrum",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("FULCRUM_COMMIT"), ")"),
    about = "A load balancer driven live through an API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Before or after the subcommand: `fulcrum --json pool list` and `fulcrum pool list --json`.
    #[command(flatten)]
    client: ClientOpts,
}

/// How client commands reach the API.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// The fulcrum API [default: http://127.0.0.1:9000, or a running `serve --demo`'s].
    #[arg(long, global = true, env = "FULCRUM_SERVER")]
    pub server: Option<String>,
    /// API bearer token (default: the token `fulcrum serve` generated in the data directory).
    #[arg(long, global = true, env = "FULCRUM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The data directory: where `serve` keeps the store and the API token it generates, and
    /// where the CLI finds that token when --token is not given.
    #[arg(long, global = true, env = "FULCRUM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Trust only the CAs in this PEM file for an https API (e.g. its own CA).
    #[arg(long, global = true, env = "FULCRUM_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept any certificate from an https API, unchecked: for testing only (anyone on
    /// the path could read the token).
    #[arg(long, global = true, conflicts_with = "ca")]
    pub insecure: bool,
    /// Print JSON instead of tables (as `-o json`).
    #[arg(long, global = true)]
    pub json: bool,
    /// How to print: `table`, `wide` (every field a column), `json`, `yaml`, or `id` (just
    /// the ids, one a line, for scripts).
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<output::Format>,
}

impl ClientOpts {
    /// The output format: `-o`, else `--json`, else a table.
    pub fn format(&self) -> output::Format {
        self.output.unwrap_or(if self.json {
            output::Format::Json
        } else {
            output::Format::Table
        })
    }

    /// Which certificates an https API is trusted with.
    pub fn trust(&self) -> client::Trust {
        match (&self.ca, self.insecure) {
            (_, true) => client::Trust::Insecure,
            (Some(path), false) => client::Trust::CaFile(path.clone()),
            (None, false) => client::Trust::System,
        }
    }

    /// Whether the output is for a program (no progress, no side notes).
    pub fn machine(&self) -> bool {
        !matches!(self.format(), output::Format::Table | output::Format::Wide)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run fulcrum: embedded store, control plane and API.
    #[command(after_help = "Examples:\n  \
        fulcrum serve                                  # API on 127.0.0.1:9000\n  \
        fulcrum serve --demo                           # three local backends behind :8080\n  \
        fulcrum serve --config /etc/fulcrum/fulcrum.toml --apply stack.yaml\n  \
        fulcrum serve --store etcd://10.0.0.1:2379,10.0.0.2:2379 --node-id edge-1")]
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address of the management API [default: 127.0.0.1:9000].
        #[arg(long, env = "FULCRUM_LISTEN")]
        listen: Option<SocketAddr>,
        /// Apply this declarative file (YAML, TOML or JSON) once the API is up.
        #[arg(long)]
        apply: Option<PathBuf>,
        /// Also start three local demo backends and a listener on 127.0.0.1:8080 balancing
        /// over them (in a throwaway data directory unless --data-dir is given).
        #[arg(long)]
        demo: bool,
        /// Shared store for a fleet: etcd://host:port[,host:port…] (etcds:// for TLS)
        /// [default: the embedded store in the data directory].
        #[arg(long, env = "FULCRUM_STORE")]
        store: Option<String>,
        /// `all` (API and data plane) or `data-plane` (only the proxy; fleet mode).
        #[arg(long, value_enum, default_value_t = serve::Role::All)]
        role: serve::Role,
        /// This node's name in a fleet [default: generated once, kept in the data directory].
        #[arg(long, env = "FULCRUM_NODE_ID")]
        node_id: Option<String>,
        /// Write an access log (one record per request and TCP session) to this file, or
        /// `-` for standard output [default: `[access_log] path` in the config, else none].
        /// SIGHUP reopens the file (after logrotate moved it).
        #[arg(long, env = "FULCRUM_ACCESS_LOG")]
        access_log: Option<String>,
        /// The access log's format [default: json].
        #[arg(long, value_enum, env = "FULCRUM_ACCESS_LOG_FORMAT")]
        access_log_format: Option<serve::AccessLogFormat>,
        /// How logs are written to stderr: `text`, or `json` (one object per line)
        /// [default: the config's `[log] format`, else text].
        #[arg(long, value_enum, env = "FULCRUM_LOG_FORMAT")]
        log_format: Option<serve::LogFormat>,
    },
    /// Make the configuration match a declarative file (YAML, TOML or JSON). Idempotent.
    #[command(after_help = "Examples:\n  \
        fulcrum validate -f stack.yaml     # check the file, no server needed\n  \
        fulcrum apply -f stack.yaml --dry-run\n  \
        fulcrum apply -f stack.yaml --prune")]
    Apply {
        /// The file: load balancers with their pools, members, monitors and listeners, and
        /// subnets, by name.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Delete members not in the file (members always match the file exactly) and also
        /// listeners, pools and health monitors of the file's load balancers not in it.
        #[arg(long)]
        prune: bool,
        /// Print the plan (create, update with the fields, delete) and change nothing; exit
        /// 2 when there are changes, 0 when none (as `fulcrum diff`).
        #[arg(long)]
        dry_run: bool,
    },
    /// What `apply -f FILE` would change, per resource, changing nothing: exit 2 when there
    /// are changes, 0 when none. `fulcrum diff -f stack.yaml --prune`.
    Diff {
        /// The file, as `apply` takes it.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Plan the deletions `apply --prune` would make too.
        #[arg(long)]
        prune: bool,
    },
    /// Check an apply file (`-f`) or a server configuration (`--config`) without a server,
    /// as `haproxy -c` does: exit 0 and a summary when valid, 1 and the reason when not.
    Validate {
        /// An apply file (YAML, TOML or JSON).
        #[arg(short = 'f', long, required_unless_present = "config")]
        file: Option<PathBuf>,
        /// A `fulcrum.toml`.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Every load balancer on one screen: listeners (bound, or why not), pools, members
    /// (state, health, weight, requests/s, errors), the last work requests.
    #[command(after_help = "Examples:\n  \
        fulcrum status\n  \
        fulcrum status --watch --every 1")]
    Status {
        /// Redraw every `--every` seconds until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with `--watch`.
        #[arg(long, default_value_t = 2)]
        every: u64,
    },
    /// Print the native API's OpenAPI document.
    Openapi,
    /// Print a shell completion script: `fulcrum completion bash > /etc/bash_completion.d/fulcrum`,
    /// or `source <(fulcrum completion zsh)`.
    Completion {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Resource(commands::ResourceCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` reads its config first: it may choose the log format.
    let (file, format) = match &cli.command {
        Command::Serve {
            config, log_format, ..
        } => match serve::read_config(config.as_deref()) {
            Ok(file) => {
                let format = log_format.or(file.log.format).unwrap_or_default();
                (Some(file), format)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => (None, serve::LogFormat::Text),
    };
    init_logging(format);
    // reqwest is built without a crypto provider of its own: it takes the process's, the
    // ring provider the rest of fulcrum's TLS uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Serve { .. }) {
        // The API and the control plane; the proxy gets a runtime of its own (serve.rs).
        builder.worker_threads(1).thread_name("fulcrum-control");
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, file.unwrap_or_default())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One clear line, with the causes, never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, filtered by `FULCRUM_LOG` (default `info`; audit records have the
/// target `fulcrum::audit`), coloured only when stderr is a terminal.
fn init_logging(format: serve::LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FULCRUM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        serve::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object per line, the event's fields beside `timestamp`, `level`, `target`
        // and `message`.
        serve::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

async fn run(cli: Cli, file: serve::FileConfig) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config: _,
            log_format: _,
            listen,
            apply,
            demo,
            store,
            role,
            node_id,
            access_log,
            access_log_format,
        } => {
            serve::run(serve::ServeArgs {
                file,
                data_dir: cli.client.data_dir,
                listen,
                apply,
                demo,
                store,
                access_log,
                access_log_format,
                role,
                node_id,
            })
            .await
        }
        Command::Apply {
            file,
            prune,
            dry_run: false,
        } => {
            let c = commands::connect(&cli.client)?;
            let summary = apply::apply_file(&c, &file, prune).await?;
            if cli.client.machine() {
                output::print_one(&summary.to_json(), cli.client.format());
            } else {
                print!("{}", summary.plan_text());
                println!("{summary}");
            }
            Ok(())
        }
        Command::Apply {
            file,
            prune,
            dry_run: true,
        }
        | Command::Diff { file, prune } => {
            let c = commands::connect(&cli.client)?;
            let plan = apply::plan_file(&c, &file, prune).await?;
            if cli.client.machine() {
                output::print_one(&plan.to_json(), cli.client.format());
            } else {
                print!("{}", plan.plan_text());
                println!(
                    "{}",
                    if plan.pending() {
                        "changes pending (nothing was changed)"
                    } else {
                        "no changes"
                    }
                );
            }
            if plan.pending() {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Completion { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fulcrum", &mut script);
            match std::io::stdout().write_all(&script) {
                // `fulcrum completion bash | head` is no error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                written => Ok(written?),
            }
        }
        Command::Validate { file, config } => {
            if let Some(path) = config {
                let file = serve::read_config(Some(&path))?;
                if let Some(files) = file.check()? {
                    fulcrum_api::ApiTls::load(files)?;
                }
                println!("{}: valid", path.display());
            }
            if let Some(path) = file {
                let doc = commands::read_document(&path)?;
                let holds =
                    anyhow::Context::with_context(fulcrum::document::check_document(&doc), || {
                        format!("{} is not a valid apply file", path.display())
                    })?;
                println!("{}: valid ({holds})", path.display());
            }
            Ok(())
        }
        Command::Status { watch, every } => {
            let c = commands::connect(&cli.client)?;
            status::run(
                &c,
                &cli.client,
                watch,
                std::time::Duration::from_secs(every.max(1)),
            )
            .await
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&fulcrum_api::openapi_document())?
            );
            Ok(())
        }
        Command::Resource(cmd) => commands::run(cmd, cli.client).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// The examples in `--help` lines: every `fulcrum …` line of an `Examples:` block.
    fn examples(cmd: &clap::Command, out: &mut Vec<String>) {
        if let Some(help) = cmd.get_after_help() {
            let text = help.to_string();
            for line in text.lines().skip_while(|l| !l.starts_with("Examples:")) {
                if let Some(example) = line.trim().strip_prefix("fulcrum ") {
                    out.push(example.to_owned());
                }
            }
        }
        for sub in cmd.get_subcommands() {
            examples(sub, out);
        }
    }

    #[test]
    fn every_help_example_parses() {
        let mut found = Vec::new();
        examples(&Cli::command(), &mut found);
        assert!(found.len() >= 20, "examples in --help: {found:?}");
        for example in found {
            // A trailing comment is for the reader; `$(…)` stands for an id.
            let mut args = example.split(" #").next().unwrap_or_default().to_owned();
            while let Some(start) = args.find("$(") {
                let end = args[start..]
                    .find(')')
                    .map_or(args.len(), |e| start + e + 1);
                args.replace_range(start..end, "SOME_ID");
            }
            let argv = std::iter::once("fulcrum").chain(args.split_whitespace());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("`fulcrum {example}` from --help does not parse: {e}");
            }
        }
    }

    #[test]
    fn command_groups_show_examples() {
        let mut cmd = Cli::command();
        for group in [
            "serve",
            "apply",
            "status",
            "loadbalancer",
            "listener",
            "pool",
            "member",
            "healthmonitor",
            "subnet",
            "work-request",
        ] {
            let sub = cmd
                .find_subcommand_mut(group)
                .unwrap_or_else(|| panic!("no {group} command"));
            let help = sub.render_long_help().to_string();
            assert!(help.contains("Examples:"), "{group} --help: {help}");
        }
    }
}
