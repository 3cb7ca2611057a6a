//! What a core future awaited from Python ends with, as the Python value
//! (or exception) its asyncio future is resolved with. Converted on the
//! loop's thread, with the GIL.

use packetflow::{ActorRef, PacketResult, PfError, Value};
use pyo3::prelude::*;

use crate::actor_ref::PyActorRef;
use crate::result::PyPacketResult;
use crate::{convert, errors};

/// The output of a core future, made into Python on the loop that awaits it.
pub(crate) trait Outcome: Send + 'static {
    /// The asyncio future's result, or the exception it raises.
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>>;
}

/// `submit`: a `Result` object.
impl Outcome for PacketResult {
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        Ok(Py::new(py, PyPacketResult::from_core(py, self))?.into_bound(py).into_any())
    }
}

/// `call`, `ctx.call`, `listen`: the data, or the error raised.
impl Outcome for Result<Value, PfError> {
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Ok(value) => convert::to_py(py, &value),
            Err(e) => Err(errors::to_pyerr(py, &e)),
        }
    }
}

/// `connect`, `stop`: `None`, or the error raised.
impl Outcome for Result<(), PfError> {
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Ok(()) => Ok(py.None().into_bound(py)),
            Err(e) => Err(errors::to_pyerr(py, &e)),
        }
    }
}

/// `actors.create`: the new actor's :class:`ActorRef`.
impl Outcome for Result<ActorRef, PfError> {
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Ok(actor) => Ok(Bound::new(py, PyActorRef::from_core(actor))?.into_any()),
            Err(e) => Err(errors::to_pyerr(py, &e)),
        }
    }
}

/// `actors.list`: the ids.
impl Outcome for Result<Vec<String>, PfError> {
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Ok(ids) => Ok(pyo3::types::PyList::new(py, ids)?.into_any()),
            Err(e) => Err(errors::to_pyerr(py, &e)),
        }
    }
}

/// `actors.count`, `actors.passivate_idle`: a number.
impl Outcome for Result<usize, PfError> {
    fn into_py(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Ok(n) => Ok(n.into_pyobject(py)?.into_any()),
            Err(e) => Err(errors::to_pyerr(py, &e)),
        }
    }
}
