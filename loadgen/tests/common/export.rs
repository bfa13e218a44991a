//! What a run wrote: `--summary-export` files, shards, `--out json`
//! samples.

use std::path::Path;

use serde_json::Value;

/// The JSON document in `path`.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The samples (`"type": "Point"` lines) of an `--out json` file.
pub fn points(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|v| v["type"] == "Point")
        .collect()
}

/// A metric's `count` in a `--summary-export` document.
pub fn count(export: &Value, metric: &str) -> f64 {
    export["metrics"][metric]["count"]
        .as_f64()
        .unwrap_or_else(|| panic!("no count of {metric} in {export}"))
}

/// A metric's `count` in a `--summary-export` file.
pub fn export_count(export: &Path, metric: &str) -> f64 {
    count(&read_json(export), metric)
}
