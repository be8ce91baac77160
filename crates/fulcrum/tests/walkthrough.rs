//! The README's walk-through, run as a user runs it: every command of its CLI block typed
//! into bash on a pseudo-terminal, by names only, against a real `fulcrum serve`; then what
//! a user meets next: a `--wait` that fails, a `diff` that shows a plan, and an `apply`
//! that fails half-way and leaves nothing behind.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, TOKEN};
use rexpect::session::PtyReplSession;

/// The commands of the walk-through's first `sh` block, as the README shows them.
fn readme_walkthrough() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("\n## A walk-through")
        .nth(1)
        .expect("README has a walk-through");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the walk-through has a sh block");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// bash on a pseudo-terminal, with `fulcrum` on its PATH and pointed at `server`.
fn shell(server: &Server) -> PtyReplSession {
    let mut sh = rexpect::spawn_bash(Some(60_000)).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_fulcrum"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    sh.send_line(&format!(
        "export PATH={bin}:$PATH FULCRUM_SERVER={} FULCRUM_TOKEN={TOKEN}; unset FULCRUM_DATA_DIR",
        server.base
    ))
    .unwrap();
    sh.wait_for_prompt().unwrap();
    sh
}

/// Types `line`, returns what it printed (stdout and stderr, as the terminal shows them)
/// and its exit code.
fn run(sh: &mut PtyReplSession, line: &str) -> (String, i32) {
    sh.send_line(line).unwrap();
    let out = sh.wait_for_prompt().unwrap();
    sh.send_line("echo \"exit=$?\"").unwrap();
    let status = sh.wait_for_prompt().unwrap();
    let code = status
        .split("exit=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no exit status after {line:?}: {status:?}"));
    (out.replace('\r', ""), code)
}

/// Leaves bash (dropped while running, the session would wait out its timeout).
fn exit(mut sh: PtyReplSession) {
    sh.send_line("exit").unwrap();
    sh.exp_eof().unwrap();
}

#[test]
fn the_readme_walkthrough_runs_as_written_by_names() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let mut sh = shell(&server);
    let commands = readme_walkthrough();
    assert!(commands.len() >= 8, "{commands:?}");
    let mut outputs = Vec::new();
    for cmd in &commands {
        assert!(
            !cmd.contains('<') && !cmd.contains("$("),
            "the walk-through uses names, not placeholders: {cmd}"
        );
        let (out, code) = run(&mut sh, cmd);
        assert_eq!(code, 0, "{cmd}\n{out}");
        outputs.push((cmd.clone(), out));
    }
    let output_of = |prefix: &str| {
        outputs
            .iter()
            .find(|(c, _)| c.starts_with(prefix))
            .map(|(_, o)| o.as_str())
            .unwrap_or_else(|| panic!("the walk-through runs {prefix:?}"))
    };
    // `--wait` prints the member as it is once its change is served.
    let waited = output_of("fulcrum member update");
    assert!(
        waited.contains("10.0.0.5") && waited.contains("DRAINING") && !waited.contains("PENDING"),
        "{waited}"
    );
    let members = output_of("fulcrum member list app");
    assert!(
        members.contains("10.0.0.5") && members.contains("10.0.0.6"),
        "{members}"
    );
    let wrs = output_of("fulcrum work-request list");
    assert!(
        wrs.contains("SUCCEEDED") && wrs.contains("UpdateMember"),
        "{wrs}"
    );
    let status = output_of("fulcrum status");
    for name in ["web", "app", "http", "10.0.0.5"] {
        assert!(status.contains(name), "{name} in status:\n{status}");
    }
    exit(sh);
}

#[test]
fn a_failed_wait_a_diff_and_an_apply_that_fails_half_way() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let mut sh = shell(&server);
    let (out, code) = run(&mut sh, "fulcrum lb create --name web --vip 127.0.0.1");
    assert_eq!(code, 0, "{out}");

    // A listener on a port something else holds: its work request fails, and --wait
    // says why with a non-zero exit.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (out, code) = run(
        &mut sh,
        &format!("fulcrum listener create web --protocol TCP --port {port} --name busy --wait"),
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("FAILED") || out.contains("failed"), "{out}");
    assert!(out.to_lowercase().contains("in use"), "the reason: {out}");
    let (out, code) = run(&mut sh, "fulcrum listener delete web/busy");
    assert_eq!(code, 0, "{out}");

    // A file: diff shows the plan and exits 2; nothing is written.
    let free = common::free_port();
    let stack = format!(
        "loadbalancers:\n  - name: web\n    pools:\n      - name: app\n        protocol: HTTP\n        members:\n          - {{address: 10.0.0.5, port: 8080}}\n    listeners:\n      - name: http\n        protocol: HTTP\n        port: {free}\n        default_pool: app\n"
    );
    let file = dir.path().join("stack.yaml");
    std::fs::write(&file, &stack).unwrap();
    let file = file.display().to_string();
    let (out, code) = run(&mut sh, &format!("fulcrum diff -f {file}"));
    assert_eq!(code, 2, "{out}");
    for line in [
        "= loadbalancer web",
        "+ pool web/app",
        "+ members web/app",
        "+ listener web/http",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    let (out, _) = run(&mut sh, "fulcrum pool list -o id");
    assert!(out.trim().is_empty(), "the diff wrote nothing: {out}");

    // The same file with its listener on the taken port fails at its last resource and
    // leaves nothing behind: no pool, no members, no work request.
    let (before, _) = run(&mut sh, "fulcrum work-request list -o id");
    let (_, code) = run(&mut sh, &format!("fulcrum apply -f {file}"));
    assert_eq!(code, 0);
    let (out, code) = run(&mut sh, "fulcrum pool delete web/app");
    assert_ne!(code, 0, "a listener uses it: {out}");
    let bad = stack.replace("  - name: web\n", "  - name: api\n");
    std::fs::write(dir.path().join("bad.yaml"), bad).unwrap();
    let bad = dir.path().join("bad.yaml").display().to_string();
    let (out, code) = run(&mut sh, &format!("fulcrum apply -f {bad}"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("loadbalancers[0].listeners[0]: port"), "{out}");
    let (out, _) = run(&mut sh, "fulcrum lb list -o id");
    assert_eq!(out.trim().lines().count(), 1, "no load balancer api: {out}");
    let (after, _) = run(&mut sh, "fulcrum work-request list -o id");
    assert_eq!(
        after.trim().lines().count(),
        before.trim().lines().count() + 1,
        "one work request: the good apply's"
    );
    drop(taken);
    exit(sh);
}
