//! `loadgen audit`: the ledger invariants I1–I7 on any database with the
//! Cooly schema (ours or the real backend's), printed ✓/✗ or as JSON.
//!
//! The database is only connected to, never migrated: it may be the real
//! backend's, and an audit must not change what it audits. For the same
//! reason a `sqlite:` file that does not exist is an error rather than a
//! new empty database. Exit codes are `exit`'s: 0 clean,
//! `AUDIT_FAILED` when a violation is found, `INVALID_CONFIG` for bad
//! arguments, `SETUP_FAILED` when the audit cannot run (no connection, not
//! the Cooly schema).

use std::fmt::Write as _;
use std::path::Path;

use store::audit::{audit, AuditReport, INVARIANTS};
use store::db::{redact_url, Db, DbError, Timestamp};

use crate::cli::AuditArgs;
use crate::exit::{self, Failure};

const INDENT: &str = "     ";
const PASS: &str = "✓";
const FAIL: &str = "✗";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

pub async fn command(args: AuditArgs) -> Result<i32, Failure> {
    let format = match args.format.as_str() {
        "text" => Format::Text,
        "json" => Format::Json,
        other => {
            return Err(Failure::invalid_config(format!(
                "invalid --format {other:?}: expected text or json"
            )))
        }
    };
    let since = args
        .since
        .as_deref()
        .map(parse_since)
        .transpose()
        .map_err(Failure::invalid_config)?;
    let url = args.database_url.as_str();
    if let Some(path) = sqlite_file(url) {
        if !path.exists() {
            return Err(Failure::setup_failed(format!(
                "cannot audit {}: no such database file",
                redact_url(url)
            )));
        }
    }
    let db = Db::connect(url).await.map_err(|e| {
        let code = match e {
            DbError::UnknownScheme(_) => exit::INVALID_CONFIG,
            _ => exit::SETUP_FAILED,
        };
        Failure::new(code, one_line(&e.to_string()))
    })?;
    let outcome = audit(&db, since).await;
    db.close().await;
    let report = outcome.map_err(|e| {
        Failure::setup_failed(format!(
            "cannot audit {}: {}",
            redact_url(url),
            one_line(&e.to_string())
        ))
    })?;
    match format {
        Format::Text => print!("{}", render_text(&report)),
        Format::Json => {
            let mut json = to_json(&report);
            if let Some(object) = json.as_object_mut() {
                object.insert("database".into(), redact_url(url).into());
                object.insert(
                    "since".into(),
                    since
                        .map(|t| t.to_rfc3339())
                        .map_or(serde_json::Value::Null, Into::into),
                );
            }
            let text = serde_json::to_string_pretty(&json)
                .map_err(|e| Failure::setup_failed(format!("cannot write the report: {e}")))?;
            println!("{text}");
        }
    }
    Ok(if report.is_clean() {
        exit::OK
    } else {
        exit::AUDIT_FAILED
    })
}

/// `--since` as RFC 3339, or a one-line reason.
fn parse_since(text: &str) -> Result<Timestamp, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!("invalid --since {text:?}: {e} (expected RFC 3339, e.g. 2026-01-31T12:00:00Z)")
        })
}

/// The file of a `sqlite:` URL, unless it is an in-memory database.
fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return None;
    }
    Some(Path::new(path))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The report as JSON: the serialized [`AuditReport`] plus `"clean"`.
pub fn to_json(report: &AuditReport) -> serde_json::Value {
    let mut json = serde_json::to_value(report).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = json.as_object_mut() {
        object.insert("clean".into(), report.is_clean().into());
    }
    json
}

/// The audit as a block of the end-of-run summary, in the layout of k6's
/// checks: an `AUDIT` header, then one ✓/✗ line per invariant, each
/// failing check under its invariant with `↳`, its count and sample ids,
/// then the row counts. Blank line before and after, like the summary.
pub fn render_text(report: &AuditReport) -> String {
    let mut out = String::from("\n");
    let failing = INVARIANTS
        .iter()
        .filter(|(id, _)| report.violations_of(id).next().is_some())
        .count();
    if failing == 0 {
        let _ = writeln!(
            out,
            "{INDENT}AUDIT {PASS} all {} ledger invariants hold",
            INVARIANTS.len()
        );
    } else {
        let _ = writeln!(
            out,
            "{INDENT}AUDIT {FAIL} {failing} of {} ledger invariants violated",
            INVARIANTS.len()
        );
    }
    out.push('\n');
    for (id, statement) in INVARIANTS {
        let violations: Vec<_> = report.violations_of(id).collect();
        if violations.is_empty() {
            let _ = writeln!(out, "{INDENT}{PASS} {id} {statement}");
            continue;
        }
        let _ = writeln!(out, "{INDENT}{FAIL} {id} {statement}");
        for violation in violations {
            let _ = writeln!(
                out,
                "{INDENT} ↳  {} — {FAIL} {}",
                violation.description, violation.count
            );
            if !violation.samples.is_empty() {
                let _ = writeln!(out, "{INDENT}    samples: {}", violation.samples.join(", "));
            }
        }
    }
    let c = &report.counts;
    out.push('\n');
    let _ = writeln!(
        out,
        "{INDENT}users={} sessions={} (completed={} failed={} processing={}) images={}",
        c.users, c.sessions, c.completed, c.failed, c.processing, c.images
    );
    let _ = writeln!(
        out,
        "{INDENT}reservations={} (with a session={} captured={} released={} expired={} reserved={}) outbox={} captured_credits={}",
        c.reservations,
        c.reservations_with_session,
        c.captured,
        c.released,
        c.expired,
        c.reserved,
        c.outbox_rows,
        c.captured_credits
    );
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::audit::{AuditCounts, Violation};

    #[test]
    fn since_must_be_rfc3339() {
        assert!(parse_since("2026-01-31T12:00:00Z").is_ok());
        assert!(parse_since("2026-01-31T12:00:00+02:00").is_ok());
        let err = parse_since("yesterday").unwrap_err();
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn sqlite_files_are_recognised() {
        assert_eq!(sqlite_file("sqlite:a.db"), Some(Path::new("a.db")));
        assert_eq!(
            sqlite_file("sqlite:///tmp/a.db?mode=ro"),
            Some(Path::new("/tmp/a.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }

    #[test]
    fn text_names_every_invariant_and_the_failures() {
        let report = AuditReport {
            violations: vec![Violation {
                invariant: "I6",
                description: "users.credits ≠ Σ remaining of open lots".into(),
                count: 1,
                samples: vec!["0000-user".into()],
            }],
            counts: AuditCounts::default(),
        };
        let text = render_text(&report);
        assert!(text.contains("AUDIT ✗ 1 of 7"), "{text}");
        for id in ["I1", "I2", "I3", "I4", "I5", "I7"] {
            assert!(text.contains(&format!("✓ {id} ")), "{text}");
        }
        assert!(text.contains("✗ I6 "), "{text}");
        assert!(text.contains("0000-user"), "{text}");
        let json = to_json(&report);
        assert_eq!(json["clean"], false);
        assert_eq!(json["violations"][0]["invariant"], "I6");
    }
}
