//! The native module of the `packetflow` Python package (`packetflow._native`).
//!
//! It holds no protocol logic: it converts values between Python and the
//! core, maps errors, and bridges asyncio and Python threads to the core's
//! runtime. How the bridge works, and why, is told in `docs/bindings.md`.
//!
//! # Layers
//!
//! Each module uses only modules below it (no cycles), so each can be read
//! on its own, bottom up:
//!
//! ```text
//!   reactor     packetflow.Reactor: registers handlers, submits, listens   (+ options)
//!      |
//!   actors      packetflow.Actors (Reactor.actors): actor types, create, send, tell
//!      |
//!   handler     Python functions as core handlers        actor   Python behaviours as
//!      |                                                   |     actor types, ActorContext
//!   invoke      a Python call for the core: a task for an async call, a
//!      |        pool job per sync call (what is called: handler's / actor's)
//!   call_task   the asyncio tasks that serve async calls, one after another
//!      |
//!   context     packetflow.Context: a handler's view of its packet, ctx.call
//!      |
//!   awaitable   core futures awaited from Python (asyncio futures)
//!   blocking    core futures waited on by a thread (the _sync methods)
//!      |
//!   sockets     a node's connections run on a loop, its selector watching
//!      |        their sockets
//!   detached    core futures nobody awaits, driven on a loop or a handler
//!               thread (an actor's mailbox loop, a connection)
//!   pool        threads that run `def` handlers (generic jobs)
//!      |
//!   bridge      one asyncio loop's inbox, wake-up and drain (generic work)
//!      |
//!   eager       one loop's tasks made and their first step run at once,
//!      |        and tasks parked for another job
//!   runtime     the Tokio runtime, fork and exit guards
//!
//!   values, used by any layer:  convert (Python <-> JSON values), errors
//!   (PfError <-> exceptions), result (packetflow.Result), actor_ref
//!   (packetflow.ActorRef), outcome (a core future's output as a Python
//!   value), pystr (borrowed str text), coroutine (resuming a coroutine
//!   from Rust)
//! ```
//!
//! `eager` knows asyncio tasks but not what they run; `call_task` knows
//! what a call is (a function, two arguments, whoever waits) but not
//! handlers or actors. `bridge` knows loops
//! and threads but not packets: what it polls and runs
//! comes from above through `bridge::Pollable` and `bridge::LoopJob`;
//! `pool` knows threads but not handlers (`pool::PoolJob`); `invoke` makes
//! calls but knows neither handlers nor actors (`invoke::PyCall`).

mod actor;
mod actor_ref;
mod actors;
mod awaitable;
mod blocking;
mod bridge;
mod call_task;
mod context;
mod convert;
mod coroutine;
mod detached;
mod eager;
mod errors;
mod handler;
mod invoke;
mod options;
mod outcome;
mod pool;
mod pystr;
mod reactor;
mod result;
mod runtime;
mod sockets;

use pyo3::prelude::*;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Called at interpreter exit (registered with `atexit` by the package):
/// background threads stop touching Python, handler threads stop.
#[pyfunction]
fn _shutdown() {
    runtime::begin_shutdown();
    pool::stop_all();
}

/// The protocol's error codes, each with its one-line description, as the
/// core lists them: `[(code, description), ...]`. The package's exception
/// table is tested against it, so that a new code cannot be forgotten.
#[pyfunction]
fn error_codes() -> Vec<(&'static str, &'static str)> {
    packetflow::ErrorCode::ALL.iter().map(|code| (code.as_str(), code.description())).collect()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::install_fork_hook();
    m.add_class::<reactor::PyReactor>()?;
    m.add_class::<context::PyContext>()?;
    m.add_class::<result::PyPacketResult>()?;
    m.add_class::<reactor::HandlerDecorator>()?;
    m.add_class::<actor_ref::PyActorRef>()?;
    m.add_class::<actor::PyActorContext>()?;
    m.add_class::<actors::PyActors>()?;
    m.add_class::<actors::ActorDecorator>()?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(error_codes, m)?)?;
    m.add_function(wrap_pyfunction!(sockets::_socket_stats, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
