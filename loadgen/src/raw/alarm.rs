//! The open model's start times, kept to the kernel's precision.
//!
//! Tokio's timer has a 1 ms grain and rounds up, so a request started by
//! it is up to a millisecond late; the earlier fix, yielding through the
//! last 2 ms, kept the generator runnable for 2 ms of every request and so
//! cost it the CPU scheduler's favour on a shared core. On Linux an
//! [`Alarm`] is a `timerfd` armed at the absolute `CLOCK_MONOTONIC` time
//! the request is due (the clock [`Instant`] reads) and awaited through the
//! runtime's own `epoll`: the thread sleeps until the kernel's
//! high-resolution timer fires, some microseconds past the due time (the
//! thread's timer slack, 50 µs by default). Without a `timerfd` (another
//! system, or no descriptor left) it is tokio's timer.

use std::time::Instant;

/// One connection's start timer, re-armed for each of its starts.
pub struct Alarm {
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl Default for Alarm {
    fn default() -> Alarm {
        Alarm {
            #[cfg(target_os = "linux")]
            timer: linux::timerfd().ok(),
        }
    }
}

impl Alarm {
    /// Returns at `at` (at once when it is past).
    pub async fn until(&mut self, at: Instant) {
        if at <= Instant::now() {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(timer) = &self.timer {
            if linux::wait(timer, at).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep_until(at.into()).await;
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Instant;

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub fn timerfd() -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: a plain system call; a non-negative result is a new
        // descriptor nothing else owns.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is the open descriptor just created, owned here only.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the descriptor is owned by the `AsyncFd` and closed only
        // when it drops, after its deregistration.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
    }

    /// Arms `timer` at `at` and waits for it to fire.
    pub async fn wait(timer: &AsyncFd<OwnedFd>, at: Instant) -> io::Result<()> {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to fill.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        // `Instant` reads CLOCK_MONOTONIC too: the due time on that clock.
        let wait = at.saturating_duration_since(Instant::now());
        let nanos = now.tv_nsec as u64 + u64::from(wait.subsec_nanos());
        let deadline = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: now.tv_sec + (wait.as_secs() + nanos / 1_000_000_000) as libc::time_t,
                tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the descriptor is the open timerfd `timer` owns; `deadline`
        // outlives the call; the old setting is not asked for.
        let armed = unsafe {
            libc::timerfd_settime(
                timer.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &deadline,
                std::ptr::null_mut(),
            )
        };
        if armed != 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut ready = timer.readable().await?;
            let fired = ready.try_io(|fd| {
                let mut expirations = 0u64;
                // SAFETY: reads the 8-byte expiration count into a u64.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        std::ptr::from_mut(&mut expirations).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            if let Ok(result) = fired {
                return result;
            }
        }
    }
}
