//! # packetflow (Node.js addon)
//!
//! The native half of the `packetflow` npm package: a PacketFlow
//! [`Reactor`](packetflow::Reactor) driven from JavaScript. `index.js` wraps
//! the `NativeReactor` class into the public `Reactor`; this crate holds no
//! protocol logic. It only
//! - converts values between JS and the core's JSON values ([`convert`]),
//! - maps errors to their JS idiom in one place ([`error`]),
//! - bridges the core's threads and the JS thread ([`bridge`]): handler
//!   invocations, actor turns ([`actors`]) and answers cross in batches
//!   through one weak threadsafe function per reactor; network connections
//!   run on the JS thread, their sockets watched by node's event loop
//!   ([`uv`]).
//!
//! The core runs on one Tokio runtime shared by every reactor of the process
//! (and every worker thread), started on first use: timers, the listening
//! sockets and connections' set-up, and the connections of reactors made
//! with `sockets: 'thread'`.

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

mod actors;
mod bridge;
mod convert;
mod error;
mod js;
mod probe;
mod reactor;
mod uv;

pub use reactor::NativeReactor;

/// Worker threads of the shared runtime: `PACKETFLOW_WORKER_THREADS` when
/// set (N > 0: a multi-thread runtime with N workers), else 0: a
/// current-thread runtime driven by one thread of its own. Measured (see
/// bench/node/RESULTS.md): with a JS handler served over the network, the
/// current-thread runtime needs far fewer context switches and less CPU per
/// packet than one multi-thread worker, and leaves the other core to the JS
/// thread; in-process calls cost the same with either.
fn worker_threads() -> usize {
    std::env::var("PACKETFLOW_WORKER_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0)
}

thread_local! {
    /// Set on the threads that run the runtime's tasks.
    static ON_RUNTIME: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread runs the runtime's tasks (it is not the JS thread).
pub(crate) fn on_runtime_thread() -> bool {
    ON_RUNTIME.with(|on| on.get())
}

/// The runtime every reactor of this process runs on.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<&'static Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let threads = worker_threads();
        let mut builder = if threads == 0 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(threads);
            b
        };
        let built = builder
            .thread_name("packetflow")
            .enable_all()
            .build()
            .expect("the packetflow runtime could not start");
        // It lives as long as the process (node never unloads the addon).
        let runtime: &'static Runtime = Box::leak(Box::new(built));
        if threads == 0 {
            // A current-thread runtime runs its tasks (and drives timers and
            // sockets) only inside `block_on`: one thread does that forever.
            std::thread::Builder::new()
                .name("packetflow".into())
                .spawn(move || {
                    ON_RUNTIME.with(|on| on.set(true));
                    runtime.block_on(std::future::pending::<()>())
                })
                .expect("the packetflow runtime thread could not start");
        }
        runtime
    })
}

/// The addon's own allocations (packets, tasks, values) use mimalloc: the
/// per-packet path allocates small objects at a high rate, where it is
/// markedly cheaper than the system allocator. Memory never crosses between
/// allocators: what Rust allocates, Rust frees.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
