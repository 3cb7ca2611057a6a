//! The one Tokio runtime every reactor of this VM shares.
//!
//! Its threads are not BEAM scheduler threads, which is what lets the
//! library send messages from them without a caller environment.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// How many Tokio threads to run: `PACKETFLOW_THREADS` if set, else one.
/// Most work runs inside NIFs on the BEAM's own schedulers (see `exec`);
/// this thread drives timers, network connections and what they wake.
fn worker_threads() -> usize {
    std::env::var("PACKETFLOW_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// The shared runtime's handle, building the runtime on first use.
pub fn handle() -> &'static Handle {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(worker_threads())
                .thread_name("packetflow")
                .enable_all()
                .build()
                .expect("cannot start the PacketFlow runtime threads")
        })
        .handle()
}
