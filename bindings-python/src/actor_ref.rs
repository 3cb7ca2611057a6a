//! `packetflow.ActorRef`: an actor's address, the core's `ActorRef`.

use packetflow::ActorRef;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::{errors, pystr};

/// The address of an actor: its type and its id.
///
/// ``ActorRef("counter", "c1")`` names actor ``c1`` of type ``counter``;
/// the core checks both parts (``InvalidPacketError``, PF400, naming the
/// part that breaks its rule). :meth:`Actors.create` returns one. Two refs
/// with the same type and id are equal and hash alike.
#[pyclass(frozen, eq, hash, name = "ActorRef", module = "packetflow")]
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct PyActorRef {
    inner: ActorRef,
}

impl PyActorRef {
    pub(crate) fn from_core(inner: ActorRef) -> PyActorRef {
        PyActorRef { inner }
    }
}

/// The address `obj` holds; a `TypeError` naming the argument `what` if it
/// is not an [`ActorRef`](PyActorRef).
pub(crate) fn address(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<ActorRef> {
    match obj.cast::<PyActorRef>() {
        Ok(actor) => Ok(actor.get().inner.clone()),
        Err(_) => {
            let got = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "object".to_owned());
            Err(PyTypeError::new_err(format!("{what} must be an ActorRef(type, id), got {got}")))
        }
    }
}

#[pymethods]
impl PyActorRef {
    #[new]
    #[pyo3(signature = (actor_type, id))]
    fn new(py: Python<'_>, actor_type: &Bound<'_, PyString>, id: &Bound<'_, PyString>) -> PyResult<Self> {
        ActorRef::new(pystr::as_str(actor_type)?, pystr::as_str(id)?)
            .map(PyActorRef::from_core)
            .map_err(|e| errors::to_pyerr(py, &e))
    }

    /// The actor's type (``"counter"``).
    #[getter(r#type)]
    fn actor_type(&self) -> &str {
        self.inner.actor_type()
    }

    /// The actor's id within its type.
    #[getter]
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let actor_type = PyString::new(py, self.inner.actor_type()).repr()?;
        let id = PyString::new(py, self.inner.id()).repr()?;
        Ok(format!("ActorRef({actor_type}, {id})"))
    }
}
