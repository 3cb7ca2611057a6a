//! The one place where PacketFlow errors become Python exceptions, and
//! where exceptions raised by handlers become PacketFlow errors.
//!
//! The exception classes live in `packetflow/_errors.py` (a class per code
//! family, some also deriving from a builtin such as `TimeoutError`).

use packetflow::{ErrorCode, PfError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyType};

use crate::pystr;

struct Classes {
    base: Py<PyType>,
    by_code: Py<PyDict>,
}

static CLASSES: PyOnceLock<Classes> = PyOnceLock::new();

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    CLASSES.get_or_try_init(py, || {
        let module = py.import("packetflow._errors")?;
        Ok(Classes {
            base: module.getattr("PacketFlowError")?.cast_into::<PyType>()?.unbind(),
            by_code: module.getattr("_BY_CODE")?.cast_into::<PyDict>()?.unbind(),
        })
    })
}

/// The exception instance for `err`: the class registered for its code, or
/// `PacketFlowError` for a code this version does not know.
pub(crate) fn exception<'py>(py: Python<'py>, err: &PfError) -> PyResult<Bound<'py, PyAny>> {
    let classes = classes(py)?;
    let by_code = classes.by_code.bind(py);
    let class = match by_code.get_item(&err.code)? {
        Some(class) => class,
        None => classes.base.bind(py).clone().into_any(),
    };
    class.call1((err.code.as_str(), err.message.as_str()))
}

/// `err` as a raisable `PyErr`.
pub(crate) fn to_pyerr(py: Python<'_>, err: &PfError) -> PyErr {
    match exception(py, err) {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// Turns an exception raised by a handler into the packet's error: a
/// `PacketFlowError` keeps its code (a handler may pass on the failure of
/// an inner call), anything else is PF500 with the exception's type and
/// message.
pub(crate) fn from_handler_exception(py: Python<'_>, err: &PyErr) -> PfError {
    let value = err.value(py);
    if let Ok(classes) = classes(py) {
        if value.is_instance(classes.base.bind(py)).unwrap_or(false) {
            let code = value.getattr("code").ok();
            let message = value.getattr("message").ok();
            if let (Some(code), Some(message)) = (code, message) {
                if let (Ok(code), Ok(message)) = (code.cast::<PyString>(), message.cast::<PyString>()) {
                    if let (Ok(code), Ok(message)) = (pystr::as_str(code), pystr::as_str(message)) {
                        return PfError { code: code.to_owned(), message: message.to_owned() };
                    }
                }
            }
        }
    }
    let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "Exception".to_owned());
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    let message = if text.is_empty() { type_name } else { format!("{type_name}: {text}") };
    PfError::new(ErrorCode::HandlerFailed, message)
}
