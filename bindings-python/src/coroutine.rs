//! Stepping a coroutine once from Rust.
//!
//! `PyIter_Send` (CPython ≥ 3.10) returns a coroutine's result without
//! raising `StopIteration`, which saves an exception per handler that
//! finishes at once. The wheel targets the 3.9 stable ABI, where the
//! function does not exist, so it is looked up when first needed and
//! `coro.send(None)` is the fallback.

use std::os::raw::c_int;
use std::sync::OnceLock;

use pyo3::exceptions::{PyAttributeError, PyStopIteration};
use pyo3::ffi;
use pyo3::prelude::*;

type SendFn = unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject, *mut *mut ffi::PyObject) -> c_int;

const PYGEN_RETURN: c_int = 0;
const PYGEN_NEXT: c_int = 1;

fn iter_send() -> Option<SendFn> {
    static SEND: OnceLock<Option<SendFn>> = OnceLock::new();
    *SEND.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; the symbol, when found,
        // is CPython's PyIter_Send, whose signature is the one above.
        unsafe {
            let sym = libc::dlsym(libc::RTLD_DEFAULT, c"PyIter_Send".as_ptr());
            if sym.is_null() {
                None
            } else {
                Some(std::mem::transmute::<*mut libc::c_void, SendFn>(sym))
            }
        }
    })
}

/// What one step of a coroutine gave.
pub(crate) enum Step<'py> {
    /// It suspended, waiting on this (a future, or `None` for a bare yield).
    Yielded(Bound<'py, PyAny>),
    /// It finished with this value.
    Returned(Bound<'py, PyAny>),
    /// It raised.
    Raised(PyErr),
    /// The object has no `send`: not a coroutine.
    NotACoroutine,
}

/// Sends `None` into `coro`.
pub(crate) fn step<'py>(coro: &Bound<'py, PyAny>) -> Step<'py> {
    let py = coro.py();
    if let Some(send) = iter_send() {
        // PyIter_Send accepts generators, coroutines and anything with
        // `send`; for other objects it would fail with an AttributeError
        // the same way.
        let mut out: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: live objects, GIL held (a `Bound` proves it); `out` gets
        // a new reference or stays null on error.
        let status = unsafe { send(coro.as_ptr(), ffi::Py_None(), &mut out) };
        return match status {
            PYGEN_RETURN => Step::Returned(unsafe { Bound::from_owned_ptr(py, out) }),
            PYGEN_NEXT => Step::Yielded(unsafe { Bound::from_owned_ptr(py, out) }),
            _ => {
                let err = PyErr::fetch(py);
                if err.is_instance_of::<PyAttributeError>(py) && !coro.hasattr("send").unwrap_or(false) {
                    Step::NotACoroutine
                } else {
                    Step::Raised(err)
                }
            }
        };
    }
    match coro.call_method1(pyo3::intern!(py, "send"), (py.None(),)) {
        Ok(pending) => Step::Yielded(pending),
        Err(err) if err.is_instance_of::<PyStopIteration>(py) => {
            match err.value(py).getattr(pyo3::intern!(py, "value")) {
                Ok(value) => Step::Returned(value),
                Err(e) => Step::Raised(e),
            }
        }
        Err(err) if err.is_instance_of::<PyAttributeError>(py) && !coro.hasattr("send").unwrap_or(false) => {
            Step::NotACoroutine
        }
        Err(err) => Step::Raised(err),
    }
}
