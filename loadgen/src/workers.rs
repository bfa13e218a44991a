//! The VUs' runtimes: `--threads` current-thread tokio runtimes, each
//! driven on its own thread. A VU and everything it spawns (its session
//! follow-ups) stay on one runtime, so a response wakes the task on the
//! thread that is already polling the socket. A work-stealing
//! scheduler instead hands tasks between its threads, and those wake-ups
//! (futex, context switches) were a large share of loadgen's CPU. The
//! runtime that calls [`crate::run::execute`] only coordinates: executors,
//! aggregation.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with the pool; each thread then drops its runtime (and the
    /// tasks still on it) and ends.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// `count` runtimes, each on its own thread.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("loadgen-vus-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stops: stops,
        })
    }

    /// The runtimes in turn, so VUs spread evenly over the threads.
    pub fn pick(&self) -> Handle {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[index].clone()
    }
}
