//! Apply files (`fulcrum apply -f`, `serve --apply`, `validate --file`): their text
//! parsed, and their shape checked without a server.

use anyhow::bail;
use serde_json::Value;

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
/// what the file defines (the control plane's own check, which `apply` runs again).
/// Returns what it holds, for a summary line.
pub fn check_document(doc: &Value) -> anyhow::Result<String> {
    match fulcrum_control::check_document(doc) {
        Ok(holds) => Ok(holds),
        Err(fulcrum_control::ControlError::Invalid(v)) => {
            let e = v.first();
            if e.field.is_empty() {
                bail!("{}", e.message)
            }
            bail!("{}: {}", e.field, e.message)
        }
        Err(e) => bail!("{e}"),
    }
}
