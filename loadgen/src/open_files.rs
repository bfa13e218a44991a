//! The open-file limit: each VU holds a socket, so a run of N VUs needs
//! N descriptors and more. At start the soft limit (`ulimit -n`) is raised
//! to the hard one, and a plan that cannot fit is refused with one line
//! instead of failing connections with "too many open files".

/// Descriptors a run needs besides one per VU: stdio, the runtimes'
/// epoll and wake-up descriptors, output files, the setup login.
pub const RESERVED: u64 = 64;

/// The limit after raising: `soft` was raised to `hard` when it was lower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; `None` where the
/// limit cannot be read (not Unix).
#[cfg(unix)]
pub fn raise() -> Option<Limit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let before = limit.rlim_cur;
    let hard = limit.rlim_max;
    let mut soft = before;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            soft = hard;
        }
    }
    Some(Limit { before, soft, hard })
}

#[cfg(not(unix))]
pub fn raise() -> Option<Limit> {
    None
}

/// Why `vus` VUs (each connection `per_vu` descriptors: 2 when the mock
/// runs in this process and holds the other end) cannot run under `limit`.
pub fn check(limit: &Limit, vus: u64, per_vu: u64) -> Result<(), String> {
    let needed = vus.saturating_mul(per_vu).saturating_add(RESERVED);
    if needed <= limit.soft {
        return Ok(());
    }
    Err(format!(
        "{vus} VUs need about {needed} open files but the limit is {} (hard limit {}); \
         raise it (ulimit -Hn, systemd LimitNOFILE, docker --ulimit nofile) or split the \
         test over processes with --execution-segment",
        limit.soft, limit.hard
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_that_do_not_fit_the_limit_are_refused() {
        let limit = Limit {
            before: 1024,
            soft: 20_000,
            hard: 20_000,
        };
        assert!(check(&limit, 19_000, 1).is_ok());
        let why = check(&limit, 100_000, 1).unwrap_err();
        assert!(why.contains("100000 VUs need about 100064 open files but the limit is 20000"));
        assert!(!why.contains('\n'));
        assert!(check(&limit, 10_000, 2).is_err());
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let limit = raise().expect("RLIMIT_NOFILE is readable on Unix");
        assert!(limit.soft == limit.hard || limit.hard == libc::RLIM_INFINITY);
        assert!(limit.before <= limit.soft);
    }
}
