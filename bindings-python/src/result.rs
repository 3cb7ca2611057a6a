//! `packetflow.Result`: the answer to one submitted packet.

use packetflow::PacketResult;
use pyo3::prelude::*;

use crate::{convert, errors};

/// The outcome of one packet.
///
/// ``status`` is ``"success"`` (``data`` holds the handler's value) or
/// ``"error"`` (``error`` holds a :class:`PacketFlowError` with its code and
/// message; ``data`` is ``None``). ``duration_ms`` is the time from
/// acceptance to answer, in whole milliseconds.
#[pyclass(frozen, name = "Result", module = "packetflow")]
pub(crate) struct PyPacketResult {
    /// The id of the packet this answers.
    #[pyo3(get)]
    packet_id: String,
    /// The handler's value (``None`` on error).
    #[pyo3(get)]
    data: Py<PyAny>,
    /// The error, or ``None`` on success.
    #[pyo3(get)]
    error: Option<Py<PyAny>>,
    /// Milliseconds from acceptance to answer.
    #[pyo3(get)]
    duration_ms: u64,
}

impl PyPacketResult {
    /// Converts a core result (with the GIL, on the thread that delivers it).
    pub(crate) fn from_core(py: Python<'_>, result: PacketResult) -> PyPacketResult {
        let PacketResult { packet_id, outcome, duration_ms } = result;
        let (data, error) = match outcome {
            Ok(value) => match convert::to_py(py, &value) {
                Ok(data) => (data.unbind(), None),
                Err(e) => (py.None(), Some(e.into_value(py).into_any())),
            },
            Err(err) => {
                let exc = errors::exception(py, &err)
                    .map(Bound::unbind)
                    .unwrap_or_else(|e| e.into_value(py).into_any());
                (py.None(), Some(exc))
            }
        };
        PyPacketResult { packet_id: packet_id.as_str().to_owned(), data, error, duration_ms }
    }
}

#[pymethods]
impl PyPacketResult {
    /// ``"success"`` or ``"error"``.
    #[getter]
    fn status(&self) -> &'static str {
        if self.error.is_none() {
            "success"
        } else {
            "error"
        }
    }

    /// Whether the packet succeeded.
    #[getter]
    fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Returns ``data`` on success; raises ``error`` otherwise.
    fn unwrap(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &self.error {
            None => Ok(self.data.clone_ref(py)),
            Some(exc) => Err(PyErr::from_value(exc.bind(py).clone())),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let shown = |obj: &Py<PyAny>| obj.bind(py).repr().map(|r| r.to_string()).unwrap_or_default();
        let id = pyo3::types::PyString::new(py, &self.packet_id).into_any().unbind();
        match &self.error {
            None => format!(
                "Result(packet_id={}, status='success', data={}, duration_ms={})",
                shown(&id),
                shown(&self.data),
                self.duration_ms
            ),
            Some(e) => format!(
                "Result(packet_id={}, status='error', error={}, duration_ms={})",
                shown(&id),
                shown(e),
                self.duration_ms
            ),
        }
    }
}
