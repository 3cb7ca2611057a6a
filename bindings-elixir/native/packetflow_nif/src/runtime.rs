//! The one Tokio runtime every reactor of this VM shares.
//!
//! Its threads are not BEAM scheduler threads, which is what lets the
//! library send messages from them without a caller environment.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: OnceLock<&'static Runtime> = OnceLock::new();

/// Tokio worker threads: `PACKETFLOW_THREADS` when set (N > 0: a
/// multi-thread runtime with N workers), else 0: a current-thread runtime
/// driven by one thread of its own. Most work runs inside NIFs on the
/// BEAM's own schedulers (see `exec`); this thread drives timers, network
/// connections and what they wake. Measured (bench/elixir/RESULTS.md): with
/// an Elixir handler served over the network, the current-thread runtime
/// costs less CPU per packet than one multi-thread worker.
fn worker_threads() -> usize {
    std::env::var("PACKETFLOW_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0)
}

/// The shared runtime's handle, building the runtime on first use.
pub fn handle() -> &'static Handle {
    RUNTIME.get_or_init(build).handle()
}

fn build() -> &'static Runtime {
    let threads = worker_threads();
    let mut builder = if threads == 0 {
        Builder::new_current_thread()
    } else {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let built =
        builder.thread_name("packetflow").enable_all().build().expect("cannot start the PacketFlow runtime");
    // It lives as long as the VM (the library is never unloaded).
    let runtime: &'static Runtime = Box::leak(Box::new(built));
    if threads == 0 {
        // A current-thread runtime runs its tasks, timers and sockets only
        // inside `block_on`: one thread of its own does that forever.
        std::thread::Builder::new()
            .name("packetflow".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("cannot start the PacketFlow runtime thread");
    }
    runtime
}
