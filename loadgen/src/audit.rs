//! `loadgen audit`: the ledger invariants I1–I7 on any database with the
//! Cooly schema (ours or the real backend's), printed ✓/✗ or as JSON.

use crate::cli::AuditArgs;

pub async fn command(_args: AuditArgs) -> i32 {
    eprintln!("loadgen audit: not wired yet");
    1
}
