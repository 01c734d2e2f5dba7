//! Event loops for client sessions: one single-threaded Tokio runtime per thread, each session
//! pinned to one of them (round robin at accept). A session's two sockets are then always polled
//! by the same thread, as in PgBouncer's event loop, instead of being woken across the worker
//! threads of a shared runtime; the benchmark (bench/README.md) showed those cross-thread
//! wake-ups to be a measurable part of the relay's cost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub struct SessionLoops {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl SessionLoops {
    /// Starts `n` loops (at least one).
    pub fn start(n: usize) -> std::io::Result<SessionLoops> {
        let mut loops = SessionLoops {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
            next: AtomicUsize::new(0),
        };
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            loops.handles.push(rt.handle().clone());
            loops.stops.push(stop_tx);
            loops
                .threads
                .push(std::thread::Builder::new().name(format!("dyngate-session-{i}")).spawn(move || {
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                })?);
        }
        Ok(loops)
    }

    /// The loop for the next session.
    pub fn next(&self) -> &Handle {
        &self.handles[self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len()]
    }

    /// Stops the loops (their remaining tasks are dropped) and waits for the threads.
    pub fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The number of session loops for `--session-threads 0`: one per two CPUs (at least one).
///
/// The relay is a small share of a statement's CPU next to PostgreSQL's and the client's, and
/// usually shares the machine with PostgreSQL. On two CPUs, one loop instead of two gave 1.19-1.23x
/// the throughput at 8 pgbench clients, with 17-30% less CPU per transaction (more ready sockets
/// per wake-up, fewer context switches), and the same at 1 client (bench/README.md).
pub fn default_threads() -> usize {
    threads_for(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

fn threads_for(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_loop_per_two_cpus() {
        for (cpus, loops) in [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)] {
            assert_eq!(super::threads_for(cpus), loops, "{cpus} CPUs");
        }
    }
}
