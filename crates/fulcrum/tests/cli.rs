//! The CLI as a user runs it: `apply` twice, client commands, error lines.

mod common;

use std::process::Command;

use common::{Server, TOKEN};

const STACK: &str = r#"
subnets:
  - {name: backends, cidr: 10.0.0.0/24, vpc_id: vpc-1}
loadbalancers:
  - name: web
    vip_address: 127.0.0.1
    vpc_id: vpc-1
    pools:
      - name: app
        protocol: HTTP
        algorithm: LEAST_CONNECTIONS
        health_monitor: {type: HTTP, url_path: /health, interval_ms: 2000, timeout_ms: 1000}
        members:
          - {address: 10.0.0.5, port: 8080, weight: 3, subnet: backends}
          - {address: 10.0.0.6, port: 8080, subnet: backends}
    listeners:
      - name: http
        protocol: HTTP
        port: LISTENER_PORT
        default_pool: app
        routes: [{path_prefix: /api, pool: app}]
"#;

/// The stack with a listener port free now.
fn stack() -> String {
    STACK.replace("LISTENER_PORT", &common::free_port().to_string())
}

/// A server, and `stack.yaml` (the stack on a free port) beside its data directory.
fn serve_with_stack_file() -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack();
    std::fs::write(dir.path().join("stack.yaml"), &stack).expect("write stack.yaml");
    let server = Server::start(&dir.path().join("data"));
    (dir, server, stack)
}

fn fulcrum(server: &Server, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = fulcrum_code(server, args);
    (code == Some(0), out, err)
}

#[tokio::test]
async fn apply_is_declarative_and_idempotent() {
    let (dir, server, stack) = serve_with_stack_file();
    let file = dir.path().join("stack.yaml");
    let path = file.to_str().unwrap();

    let (ok, out, err) = fulcrum(&server, &["apply", "-f", path]);
    assert!(ok, "{out}{err}");
    // subnet, lb, pool, its members, monitor, listener
    assert!(out.contains("6 created"), "{out}");
    let (ok, out, err) = fulcrum(&server, &["apply", "-f", path]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("0 created, 0 updated"),
        "second apply changed something: {out}"
    );

    let api = server.client();
    let pools = api.items("/v1/pools").await;
    assert_eq!(pools.len(), 1);
    let pool = pools[0]["id"].as_str().unwrap();
    let members = api.items(&format!("/v1/pools/{pool}/members")).await;
    assert_eq!(members.len(), 2);
    let listener = &api.items("/v1/listeners").await[0];
    assert_eq!(listener["default_pool_id"], pool);
    assert_eq!(listener["routes"][0]["pool_id"], pool);

    // Editing the file changes just what changed.
    std::fs::write(&file, stack.replace("weight: 3", "weight: 4")).unwrap();
    let (ok, out, _) = fulcrum(&server, &["apply", "-f", path]);
    assert!(ok);
    assert!(out.contains("0 created, 1 updated"), "{out}");
    let members = api.items(&format!("/v1/pools/{pool}/members")).await;
    assert!(members.iter().any(|m| m["weight"] == 4));

    // A member outside its subnet is refused with the field named, and nothing changes.
    std::fs::write(&file, stack.replace("10.0.0.6", "10.9.9.9")).unwrap();
    let (ok, _, err) = fulcrum(&server, &["apply", "-f", path]);
    assert!(!ok);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("members[1]") && err.contains("not in subnet"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert_eq!(
        api.items(&format!("/v1/pools/{pool}/members")).await.len(),
        2
    );
}

#[tokio::test]
async fn serve_applies_a_file_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stack.yaml");
    let stack = stack();
    std::fs::write(&file, &stack).unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--apply", file.to_str().unwrap()],
    );
    let api = server.client();
    let mut found = false;
    for _ in 0..100 {
        if api.items("/v1/listeners").await.len() == 1 {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(found, "the file was applied at start");
}

#[tokio::test]
async fn client_commands_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (ok, out, err) = fulcrum(&server, &["lb", "create", "--name", "web", "--json"]);
    assert!(ok, "{err}");
    let lb: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lb = lb["id"].as_str().unwrap();
    let (ok, out, _) = fulcrum(
        &server,
        &[
            "pool",
            "create",
            lb,
            "--protocol",
            "TCP",
            "--name",
            "p",
            "--json",
        ],
    );
    assert!(ok);
    let pool: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pool = pool["id"].as_str().unwrap();
    let (ok, out, _) = fulcrum(
        &server,
        &[
            "member",
            "create",
            pool,
            "--address",
            "127.0.0.1",
            "--port",
            "7000",
            "--json",
        ],
    );
    assert!(ok);
    let member: serde_json::Value = serde_json::from_str(&out).unwrap();
    let member = member["id"].as_str().unwrap();
    // Three changes made three work requests; `--limit` shows fewer.
    for (limit, shown) in [("1", 1), ("2", 2), ("10", 3)] {
        let (ok, out, err) = fulcrum(
            &server,
            &["work-request", "list", "--limit", limit, "--json"],
        );
        assert!(ok, "{err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(rows.len(), shown, "--limit {limit}");
    }

    let (ok, out, err) = fulcrum(
        &server,
        &[
            "member", "update", pool, member, "--weight", "3", "--drain", "--wait",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("DRAINING"), "{out}");
    // Printed as it stands once served, not as it was accepted.
    assert!(
        out.contains("ACTIVE") && !out.contains("PENDING_UPDATE"),
        "{out}"
    );
    let (ok, out, _) = fulcrum(&server, &["member", "list", pool]);
    assert!(ok);
    assert!(out.contains("127.0.0.1") && out.contains("WEIGHT"), "{out}");
    // With what the data plane saw of it (nothing yet), from /v1/stats.
    assert!(out.contains("REQ/S") && out.contains("P99 MS"), "{out}");
    let (ok, out, _) = fulcrum(&server, &["member", "list", pool, "--json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["traffic"]["requests_total"], 0, "{listed:#}");
    assert_eq!(listed[0]["traffic"]["in_flight"], 0, "{listed:#}");

    // Names where ids go: the pool by its name, the member by address:port.
    let (ok, out, err) = fulcrum(&server, &["member", "list", "p"]);
    assert!(ok && out.contains("127.0.0.1"), "{out}{err}");
    let (ok, out, err) = fulcrum(&server, &["member", "get", "p", "127.0.0.1:7000", "--json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"],
        member
    );
    // Also in body fields that hold an id: a listener's default pool.
    let port = common::free_port().to_string();
    let (ok, out, err) = fulcrum(
        &server,
        &[
            "listener",
            "create",
            "web",
            "--protocol",
            "TCP",
            "--port",
            &port,
            "--default-pool",
            "p",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["default_pool_id"],
        pool
    );
    // A name two resources share is refused, naming both.
    let (ok, _, err) = fulcrum(&server, &["lb", "create", "--name", "web"]);
    assert!(ok, "{err}");
    let (ok, _, err) = fulcrum(&server, &["lb", "get", "web"]);
    assert!(!ok);
    assert!(err.contains("2 resources") && err.contains(lb), "{err}");

    // Errors: one line, non-zero exit, no panic.
    let (ok, _, err) = fulcrum(
        &server,
        &["member", "update", pool, member, "--set", "priority=500"],
    );
    assert!(!ok);
    assert!(
        err.starts_with("error: priority") && err.contains("HTTP 400"),
        "{err}"
    );
    let (ok, _, err) = fulcrum(&server, &["pool", "get", "missing"]);
    assert!(!ok);
    assert!(
        err.contains("not found") && !err.contains("panicked"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args([
            "lb",
            "list",
            "--server",
            "http://127.0.0.1:1",
            "--token",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot reach fulcrum"), "{err}");
}

/// The demo balances over its three backends, on the usual ports or, where one is taken
/// (here: held by the test when it can), on free ones it prints.
#[tokio::test]
async fn demo_rotates_across_three_backends() {
    use std::io::BufRead;
    let held: Vec<std::net::TcpListener> = ["127.0.0.1:8080", "127.0.0.1:18081", "127.0.0.1:9000"]
        .iter()
        .filter_map(|a| std::net::TcpListener::bind(a).ok())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // A home and runtime directory of their own: the CLI below finds nothing but the demo.
    let (home, runtime) = (dir.path().join("home"), dir.path().join("run"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["serve", "--demo", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("XDG_DATA_HOME")
        .env_remove("FULCRUM_DATA_DIR")
        .env_remove("FULCRUM_API_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("the demo prints its URL").unwrap();
        if let Some(rest) = line.strip_prefix("fulcrum demo: ")
            && let Some(url) = rest.split_whitespace().next()
            && url.starts_with("http://")
        {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let http = common::http_client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(&url).send().await
            && let Ok(text) = r.text().await
        {
            seen.insert(text);
        }
        if seen.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The CLI finds the running demo with no flags at all.
    let status = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .arg("status")
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("XDG_DATA_HOME")
        .env_remove("FULCRUM_DATA_DIR")
        .env_remove("FULCRUM_SERVER")
        .env_remove("FULCRUM_TOKEN")
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success() && shown.contains("demo-backends"),
        "{shown}{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(seen.len(), 3, "{url}: {seen:?}");
    if held.len() == 3 {
        assert_ne!(url, "http://127.0.0.1:8080/", "8080 was taken");
    }
}

/// With no token configured, `fulcrum serve` generates one into `api-token` in the data
/// directory, readable by its owner only (as are the directory and the store), and the CLI
/// picks it up from `--data-dir`.
#[tokio::test]
async fn the_generated_token_is_private_and_found_by_the_cli() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // As a umask of 022 would leave it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
    serve.env_remove("FULCRUM_API_TOKEN");
    let server = Server::start_through(serve, dir.path(), &[]);
    let file = dir.path().join("api-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "api-token is {mode:o}");
    // The directory and the store hold secrets too (issue 19): the owner's only.
    let dir_mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "data directory is {dir_mode:o}");
    let store_mode = std::fs::metadata(dir.path().join("fulcrum.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(store_mode & 0o777, 0o600, "fulcrum.redb is {store_mode:o}");
    let token = std::fs::read_to_string(&file).unwrap();
    assert!(token.trim().len() >= 20, "a long random token");

    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args(args)
            .args(["--server", &server.base])
            .env_remove("FULCRUM_TOKEN")
            .env_remove("FULCRUM_DATA_DIR")
            .output()
            .unwrap()
    };
    let found = cli(&["lb", "list", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    // Client flags go before the subcommand as well as after it.
    let before = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--server",
            &server.base,
            "--json",
        ])
        .args(["lb", "list"])
        .env_remove("FULCRUM_TOKEN")
        .output()
        .unwrap();
    assert!(
        before.status.success(),
        "{}",
        String::from_utf8_lossy(&before.stderr)
    );
    assert!(
        String::from_utf8_lossy(&before.stdout)
            .trim_start()
            .starts_with('[')
    );
    // `--server host:port` without a scheme means http.
    let bare = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["lb", "list", "--data-dir", dir.path().to_str().unwrap()])
        .args(["--server", server.base.trim_start_matches("http://")])
        .env_remove("FULCRUM_TOKEN")
        .output()
        .unwrap();
    assert!(
        bare.status.success(),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    // The test suite's usual token is not accepted here: the generated one is the only one.
    let wrong = cli(&["lb", "list", "--token", TOKEN]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

/// A QUIC pool with its QUIC-LB config and members' server IDs, from an apply document; a
/// server ID of the wrong length is refused with the member named.
#[tokio::test]
async fn apply_takes_quic_pools_with_server_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"));
    let doc = r#"
loadbalancers:
  - name: quic
    vip_address: 127.0.0.1
    pools:
      - name: q
        protocol: QUIC
        algorithm: QUIC_CID
        session_persistence: {type: SOURCE_IP, persistence_timeout: 5}
        quic_lb: {server_id_len: 3, nonce_len: 6}
        members:
          - {address: 127.0.0.1, port: 4433, server_id: 0a0b0c}
          - {address: 127.0.0.1, port: 4434, server_id: 0a0b0d}
    listeners:
      - {name: udp, protocol: UDP, port: PORT, default_pool: q}
"#
    .replace("PORT", &common::free_port().to_string());
    let file = dir.path().join("quic.yaml");
    std::fs::write(&file, &doc).expect("write");
    let path = file.to_str().expect("path");
    let (ok, out, err) = fulcrum(&server, &["apply", "-f", path]);
    assert!(ok, "{out}{err}");
    let api = server.client();
    let pool = &api.items("/v1/pools").await[0];
    assert_eq!(pool["quic_lb"]["nonce_len"], 6, "{pool}");
    let members = api
        .items(&format!(
            "/v1/pools/{}/members",
            pool["id"].as_str().expect("id")
        ))
        .await;
    let mut ids: Vec<&str> = members
        .iter()
        .filter_map(|m| m["server_id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["0a0b0c", "0a0b0d"]);
    std::fs::write(&file, doc.replace("0a0b0d", "0a0b")).expect("write");
    let (ok, _, err) = fulcrum(&server, &["apply", "-f", path]);
    assert!(!ok);
    assert!(
        err.contains("members[1].server_id") && err.contains("must be 3 bytes"),
        "{err}"
    );
}

/// `apply --prune` deletes what the file no longer has; without it, only members follow the
/// file exactly and the rest stays.
#[tokio::test]
async fn apply_prune_deletes_what_the_file_dropped() {
    let (dir, server, stack) = serve_with_stack_file();
    let file = dir.path().join("stack.yaml");
    let path = file.to_str().unwrap();
    let (ok, out, err) = fulcrum(&server, &["apply", "-f", path]);
    assert!(ok, "{out}{err}");
    let api = server.client();
    assert_eq!(api.items("/v1/listeners").await.len(), 1);

    // The listener and the second member leave the file.
    let cut = stack.find("    listeners:").expect("a listeners section");
    let smaller = stack[..cut].replace(
        "          - {address: 10.0.0.6, port: 8080, subnet: backends}\n",
        "",
    );
    assert_ne!(smaller, stack[..cut], "the member line was removed");
    std::fs::write(&file, &smaller).unwrap();
    let (ok, out, err) = fulcrum(&server, &["apply", "-f", path]);
    assert!(ok, "{out}{err}");
    let pool = api.items("/v1/pools").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.items(&format!("/v1/pools/{pool}/members")).await.len(),
        1,
        "members always follow the file"
    );
    assert_eq!(
        api.items("/v1/listeners").await.len(),
        1,
        "kept without --prune"
    );

    let (ok, out, err) = fulcrum(&server, &["apply", "-f", path, "--prune"]);
    assert!(ok, "{out}{err}");
    assert!(api.items("/v1/listeners").await.is_empty(), "pruned");
    assert_eq!(
        api.items("/v1/pools").await.len(),
        1,
        "what the file has stays"
    );
    assert_eq!(api.items("/v1/healthmonitors").await.len(), 1);
}

/// The default build (the one the README's quick start makes) has no etcd: asked for a
/// fleet store, it says how to get one instead of failing obscurely.
#[cfg(not(feature = "etcd"))]
#[test]
fn the_default_build_says_it_has_no_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "etcd://127.0.0.1:1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built without etcd support") && err.contains("--features etcd"),
        "{err}"
    );
}

/// Every command and argument of the resource commands says what it is.
#[test]
fn help_describes_every_command_and_argument() {
    for resource in [
        "loadbalancer",
        "listener",
        "pool",
        "member",
        "healthmonitor",
        "subnet",
        "oci-api-key",
        "work-request",
    ] {
        let help = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
                .args(args)
                .arg("--help")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let top = help(&[resource]);
        let commands: Vec<String> = top
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(str::trim)
            .filter(|l| !l.starts_with("help "))
            .map(str::to_owned)
            .collect();
        assert!(!commands.is_empty(), "{top}");
        for line in &commands {
            assert!(
                line.split_whitespace().count() > 1,
                "`{resource} {line}` has no description:\n{top}"
            );
            let name = line.split_whitespace().next().unwrap_or_default();
            let sub = help(&[resource, name]);
            assert!(
                !sub.contains("Options every create"),
                "{resource} {name}:\n{sub}"
            );
            for arg in sub
                .lines()
                .skip_while(|l| !l.starts_with("Arguments:"))
                .skip(1)
                .take_while(|l| l.starts_with("  "))
            {
                assert!(
                    arg.split_whitespace().count() > 1,
                    "`{resource} {name}`: argument `{}` has no description",
                    arg.trim()
                );
            }
        }
    }
}

/// `--version` names the commit it was built from; `completion` prints a script each shell
/// loads, which knows the commands.
#[test]
fn version_names_the_commit_and_completion_scripts_load() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let version = run(&["--version"]);
    let commit = version
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_default();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{version}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completion", shell]);
        for command in ["loadbalancer", "member", "apply", "work-request"] {
            assert!(script.contains(command), "{shell} completes {command}");
        }
    }
    // bash loads it and registers the completion.
    let script = run(&["completion", "bash"]);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p fulcrum",
            file.path().display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("_fulcrum fulcrum"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `fulcrum`, with its exit code.
fn fulcrum_code(server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    common::cli(server, args)
}

/// `diff` and `apply --dry-run` print the plan (the fields an update changes) and change
/// nothing, exiting 2 while changes are pending and 0 once none are; `apply` checks the
/// whole file against what exists before it writes anything, so a name two load balancers
/// share stops it with nothing written.
#[tokio::test]
async fn diff_plans_and_apply_refuses_ambiguity_before_writing() {
    let (dir, server, stack) = serve_with_stack_file();
    let file = dir.path().join("stack.yaml");
    let file = file.to_str().unwrap();
    let (code, out, err) = fulcrum_code(&server, &["diff", "-f", file]);
    assert_eq!(code, Some(2), "{out}{err}");
    for line in [
        "+ subnet backends",
        "+ loadbalancer web",
        "+ pool web/app",
        "+ members web/app (2 member(s))",
        "+ healthmonitor web/app",
        "+ listener web/http",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    let api = server.client();
    assert!(
        api.items("/v1/loadbalancers").await.is_empty(),
        "diff changed nothing"
    );

    let (code, out, err) = fulcrum_code(&server, &["apply", "-f", file]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, _) = fulcrum_code(&server, &["diff", "-f", file]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("no changes") && out.contains("= pool web/app"),
        "{out}"
    );

    // An edited file: one field of the pool, one more listener, and (with --prune) a
    // listener dropped.
    let edited = stack
        .replace("algorithm: LEAST_CONNECTIONS", "algorithm: ROUND_ROBIN")
        .replace("      - name: http\n", "      - name: other\n");
    std::fs::write(file, &edited).unwrap();
    let (code, out, _) = fulcrum_code(&server, &["apply", "-f", file, "--dry-run", "--prune"]);
    assert_eq!(code, Some(2), "{out}");
    for line in [
        "~ pool web/app (algorithm)",
        "+ listener web/other",
        "- listener web/http",
        "= members web/app",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    // The plan is checked as the change would be: without --prune the renamed listener
    // would take a port the old one still holds.
    let (code, out, err) = fulcrum_code(&server, &["diff", "-f", file]);
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("listeners[0]: port"), "{err}");
    let (code, json, _) = fulcrum_code(&server, &["diff", "-f", file, "--prune", "--json"]);
    assert_eq!(code, Some(2));
    let plan: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(plan["changes"], true);
    assert!(
        plan["plan"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["action"] == "update"
                && s["kind"] == "pool"
                && s["fields"] == serde_json::json!(["algorithm"]))
    );
    let pools = api.items("/v1/pools").await;
    assert_eq!(
        pools[0]["algorithm"], "LEAST_CONNECTIONS",
        "the dry run changed nothing"
    );

    // A second load balancer named web: apply refuses before writing the subnet it adds.
    let (ok, _, err) = fulcrum(&server, &["lb", "create", "--name", "web"]);
    assert!(ok, "{err}");
    std::fs::write(
        file,
        edited.replace(
            "subnets:\n",
            "subnets:\n  - {name: more, cidr: 10.1.0.0/24, vpc_id: vpc-1}\n",
        ),
    )
    .unwrap();
    let (code, out, err) = fulcrum_code(&server, &["apply", "-f", file]);
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("2 load balancers are named \"web\""), "{err}");
    let subnets = api.items("/v1/subnets").await;
    assert_eq!(subnets.len(), 1, "nothing was written: {subnets:?}");
}

/// A file that fails at its last resource changes nothing: the subnet, load balancer,
/// pool, members and monitor it plans before the failing listener are not written either.
#[tokio::test]
async fn an_apply_that_fails_half_way_leaves_nothing_behind() {
    let (dir, server, stack) = serve_with_stack_file();
    let file = dir.path().join("stack.yaml");
    let path = file.to_str().unwrap();
    let (ok, out, err) = fulcrum(&server, &["apply", "-f", path]);
    assert!(ok, "{out}{err}");
    let api = server.client();
    let count = || async {
        let mut n = Vec::new();
        for kind in [
            "subnets",
            "loadbalancers",
            "pools",
            "healthmonitors",
            "listeners",
        ] {
            n.push(api.items(&format!("/v1/{kind}")).await.len());
        }
        n
    };
    let before = count().await;
    let wrs = api.items("/v1/work-requests").await.len();

    // A second stack whose listener takes the first one's port.
    let second = stack
        .replace("name: backends", "name: more")
        .replace("subnet: backends", "subnet: more")
        .replace("cidr: 10.0.0.0/24", "cidr: 10.2.0.0/24")
        .replace("10.0.0.", "10.2.0.")
        .replace("  - name: web\n", "  - name: api\n");
    let other = dir.path().join("second.yaml");
    std::fs::write(&other, second).unwrap();
    let (code, out, err) = fulcrum_code(&server, &["apply", "-f", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("loadbalancers[0].listeners[0]: port"),
        "the error names the listener: {err}"
    );
    assert_eq!(
        count().await,
        before,
        "nothing of the second file was written"
    );
    assert_eq!(
        api.items("/v1/work-requests").await.len(),
        wrs,
        "no work request either"
    );
    // The same file with a free port applies whole, as one work request.
    let fixed: String = std::fs::read_to_string(&other)
        .unwrap()
        .lines()
        .map(|l| match l.strip_prefix("        port: ") {
            Some(_) => format!("        port: {}\n", common::free_port()),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&other, fixed).unwrap();
    let (code, out, err) = fulcrum_code(&server, &["apply", "-f", other.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("6 created") && out.contains("work request"),
        "{out}"
    );
    let after = count().await;
    assert_eq!(after, before.iter().map(|n| n + 1).collect::<Vec<_>>());
    assert_eq!(api.items("/v1/work-requests").await.len(), wrs + 1);
}

/// `-o` on any command: `id` prints only ids (a create's output feeds the next command),
/// `yaml` and `json` parse, `wide` adds every field as a column.
#[tokio::test]
async fn output_formats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (ok, id, err) = fulcrum(&server, &["lb", "create", "--name", "web", "-o", "id"]);
    assert!(ok, "{err}");
    let id = id.trim();
    assert_eq!(id.len(), 36, "only the id: {id:?}");
    let (ok, out, err) = fulcrum(
        &server,
        &[
            "pool",
            "create",
            id,
            "--protocol",
            "HTTP",
            "--name",
            "app",
            "-o",
            "id",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim().len(), 36, "{out:?}");
    let (_, ids, _) = fulcrum(&server, &["lb", "list", "-o", "id"]);
    assert_eq!(ids.trim(), id);
    let (_, yaml, _) = fulcrum(&server, &["lb", "get", "web", "-o", "yaml"]);
    let parsed: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(parsed["name"], "web");
    let (_, json, _) = fulcrum(&server, &["pool", "list", "--lb", "web", "-o", "json"]);
    let pools: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(pools[0]["name"], "app");
    let (_, table, _) = fulcrum(&server, &["pool", "list", "--lb", "web"]);
    let (_, wide, _) = fulcrum(&server, &["pool", "list", "--lb", "web", "-o", "wide"]);
    assert!(
        !table.contains("SESSION_PERSISTENCE") && wide.contains("SESSION_PERSISTENCE"),
        "{wide}"
    );
    let (ok, _, err) = fulcrum(&server, &["lb", "list", "-o", "xml"]);
    assert!(!ok && err.contains("possible values"), "{err}");
}

/// `status` puts the whole configuration on one screen, and the same as data with `-o`.
#[tokio::test]
async fn status_shows_everything_on_one_screen() {
    let (dir, server, _) = serve_with_stack_file();
    let file = dir.path().join("stack.yaml");
    let (ok, _, err) = fulcrum(&server, &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, screen, err) = fulcrum(&server, &["status"]);
    assert!(ok, "{err}");
    for part in [
        "web  127.0.0.1",
        "listener http",
        "-> app",
        "pool     app",
        "/2 members up",
        "10.0.0.5:8080",
        "recent work requests",
    ] {
        assert!(screen.contains(part), "{part:?} in:\n{screen}");
    }
    assert!(screen.lines().all(|l| l.chars().count() <= 120), "{screen}");
    let (ok, json, _) = fulcrum(&server, &["status", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["loadbalancers"][0]["pools"][0]["members"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(!v["work_requests"].as_array().unwrap().is_empty());
}

/// `validate` checks an apply file or a `fulcrum.toml` with no server, naming what is wrong.
#[test]
fn validate_checks_files_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .arg("validate")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let good = write("stack.yaml", &stack());
    let (code, out) = run(&["-f", &good]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("1 load balancer(s), 1 pool(s) with 2 member(s), 1 listener(s)"),
        "{out}"
    );
    for (text, says) in [
        (
            stack().replace("default_pool: app", "default_pool: nope"),
            "pool \"nope\" is not defined",
        ),
        (
            stack().replace("subnet: backends}", "subnet: elsewhere}"),
            "subnet \"elsewhere\"",
        ),
        (
            stack().replace("  - name: web\n", "  - vip_address: 1.2.3.4\n"),
            "needs a name",
        ),
        (format!("{}\nextra: 1\n", stack()), "unknown top-level key"),
    ] {
        let bad = write("bad.yaml", &text);
        let (code, out) = run(&["-f", &bad]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(says), "{says:?} in {out}");
    }
    let config = write(
        "fulcrum.toml",
        "[api]\nlisten = \"127.0.0.1:9000\"\nheader_timeout_secs = 5\n",
    );
    assert_eq!(run(&["--config", &config]).0, Some(0));
    let config = write(
        "bad.toml",
        "[api]\nlisten = \"127.0.0.1:9000\"\nheadr_timeout_secs = 5\n",
    );
    let (code, out) = run(&["--config", &config]);
    assert_eq!(code, Some(1));
    assert!(out.contains("headr_timeout_secs"), "{out}");
    // Token roles and scopes.
    let token = |extra: &str| format!("[[api.tokens]]\nname = \"t\"\ntoken = \"x\"\n{extra}\n");
    let config = write(
        "roles.toml",
        &token("role = \"operate\"\nloadbalancers = [\"web\"]"),
    );
    assert_eq!(run(&["--config", &config]).0, Some(0));
    for (extra, says) in [
        ("role = \"reader\"", "unknown variant `reader`"),
        ("loadbalancers = []", "loadbalancers = [] would allow none"),
    ] {
        let config = write("bad-roles.toml", &token(extra));
        let (code, out) = run(&["--config", &config]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(says), "{says:?} in {out}");
    }
}

/// A pool or listener named the same in two load balancers is named `lb/name`.
#[tokio::test]
async fn pools_and_listeners_by_load_balancer_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for lb in ["web", "shop"] {
        let (ok, _, err) = fulcrum(&server, &["lb", "create", "--name", lb]);
        assert!(ok, "{err}");
        let (ok, _, err) = fulcrum(
            &server,
            &["pool", "create", lb, "--protocol", "HTTP", "--name", "app"],
        );
        assert!(ok, "{err}");
    }
    let (ok, _, err) = fulcrum(&server, &["pool", "get", "app"]);
    assert!(!ok && err.contains("<load balancer>/<name>"), "{err}");
    let (ok, out, err) = fulcrum(&server, &["pool", "get", "shop/app", "-o", "json"]);
    assert!(ok, "{err}");
    let pool: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (_, lb, _) = fulcrum(&server, &["lb", "get", "shop", "-o", "id"]);
    assert_eq!(pool["loadbalancer_id"], lb.trim());
    let (ok, _, err) = fulcrum(
        &server,
        &[
            "member",
            "create",
            "shop/app",
            "--address",
            "10.0.0.9",
            "--port",
            "80",
        ],
    );
    assert!(ok, "{err}");
    let (_, members, _) = fulcrum(&server, &["member", "list", "shop/app", "-o", "json"]);
    let members: Vec<serde_json::Value> = serde_json::from_str(&members).unwrap();
    assert_eq!(members.len(), 1);
    let (_, members, _) = fulcrum(&server, &["member", "list", "web/app", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&members)
            .unwrap()
            .len(),
        0
    );
    let (ok, _, err) = fulcrum(&server, &["pool", "get", "shop/nope"]);
    assert!(
        !ok && err.contains("load balancer \"shop\" has no pool named \"nope\""),
        "{err}"
    );
}
