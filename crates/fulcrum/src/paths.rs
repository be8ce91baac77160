//! Where fulcrum keeps its files by default.

use std::path::PathBuf;

/// `$FULCRUM_DATA_DIR`, else `$XDG_DATA_HOME/fulcrum`, else `~/.local/share/fulcrum`,
/// else `./fulcrum-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FULCRUM_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("fulcrum");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".local/share/fulcrum");
    }
    PathBuf::from("fulcrum-data")
}

/// The file `serve` writes its generated API token to, when no token is configured.
pub fn token_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("api-token")
}

/// The key that seals secrets at rest (unless `FULCRUM_SECRET_KEY` gives one).
pub fn secret_key_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("secret.key")
}

pub fn store_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("fulcrum.redb")
}

/// A fleet node's copy of its last configuration.
pub fn snapshot_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("fleet-snapshot.json")
}

/// Where a running `serve --demo` says how to reach it (its API and token), so the CLI
/// finds it with no flags: `$XDG_RUNTIME_DIR/fulcrum-demo.json`, else in the temporary
/// directory, per user.
pub fn demo_file() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("fulcrum-demo.json"),
        None => {
            let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
            std::env::temp_dir().join(format!("fulcrum-demo-{user}.json"))
        }
    }
}
