//! The process's exit codes (k6's, plus the audit's) and [`Failure`], the
//! one error that carries a code and its one-line message up to `main`.
pub const OK: i32 = 0;
pub const THRESHOLDS_FAILED: i32 = 99;
/// `PATCH /v1/status` with `stopped: true` (k6's `ScriptStoppedFromRESTAPI`).
pub const STOPPED_FROM_REST_API: i32 = 103;
pub const INVALID_CONFIG: i32 = 104;
pub const INTERRUPTED: i32 = 105;
/// `--address` could not be bound (k6's `CannotStartRESTAPI`).
pub const CANNOT_START_REST_API: i32 = 106;
pub const SETUP_FAILED: i32 = 107;
pub const ABORTED_BY_THRESHOLD: i32 = 108;
/// Not k6's: a ledger invariant failed in the audit after the run.
pub const AUDIT_FAILED: i32 = 113;
/// Not k6's: the instance reached `--start-at` later than `--start-tolerance`.
pub const START_MISSED: i32 = 114;
/// Not k6's: the process could not start its runtimes.
pub const RUNTIME_FAILED: i32 = 1;

/// A command that ends early: the exit code and the line `main` prints
/// (`loadgen: <message>`).
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_config(message: impl Into<String>) -> Failure {
        Failure::new(INVALID_CONFIG, message)
    }

    pub fn setup_failed(message: impl Into<String>) -> Failure {
        Failure::new(SETUP_FAILED, message)
    }

    /// Prints the line on stderr and gives the code back.
    pub fn report(self) -> i32 {
        eprintln!("loadgen: {}", self.message);
        self.code
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A finished run's `code` after a step that may have failed (writing the
/// files): the failure keeps its line and takes the larger of the codes.
pub fn after(code: i32, step: Result<(), Failure>) -> Result<i32, Failure> {
    match step {
        Ok(()) => Ok(code),
        Err(failure) => Err(Failure::new(failure.code.max(code), failure.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanError;
    use crate::run::RunError;

    #[test]
    fn a_failed_step_keeps_its_line_and_the_larger_code() {
        assert_eq!(after(THRESHOLDS_FAILED, Ok(())), Ok(THRESHOLDS_FAILED));
        let write = || Err(Failure::invalid_config("cannot write x: denied"));
        assert_eq!(
            after(THRESHOLDS_FAILED, write()),
            Err(Failure::invalid_config("cannot write x: denied"))
        );
        assert_eq!(
            after(AUDIT_FAILED, write()),
            Err(Failure::new(AUDIT_FAILED, "cannot write x: denied"))
        );
    }

    #[test]
    fn plan_and_run_errors_keep_their_codes() {
        let plan: Failure = PlanError::new("vus", "must be at least 1").into();
        assert_eq!(plan.code, INVALID_CONFIG);
        assert_eq!(plan.message, "invalid --vus: must be at least 1");
        let run: Failure = RunError::Runtime(std::io::Error::other("no threads")).into();
        assert_eq!(run.code, RUNTIME_FAILED);
    }
}
