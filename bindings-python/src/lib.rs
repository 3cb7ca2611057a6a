//! The native module of the `packetflow` Python package (`packetflow._native`).
//!
//! It holds no protocol logic: it converts values between Python and the
//! core ([`convert`]), maps errors ([`errors`]) and bridges asyncio to the
//! core's runtime ([`bridge`], [`pool`], [`blocking`]).

mod blocking;
mod bridge;
mod context;
mod convert;
mod coroutine;
mod errors;
mod handler;
mod options;
mod pool;
mod pystr;
mod reactor;
mod result;
mod runtime;

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

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    runtime::install_fork_hook();
    m.add_class::<reactor::PyReactor>()?;
    m.add_class::<context::PyContext>()?;
    m.add_class::<result::PyPacketResult>()?;
    m.add_class::<reactor::HandlerDecorator>()?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
