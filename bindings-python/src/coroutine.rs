//! Resuming a coroutine (or any awaitable's iterator) once from Rust.
//!
//! `PyIter_Send` (CPython 3.10 and later) hands back a coroutine's return
//! value without raising `StopIteration`, which saves an exception object
//! per call that ends. The module is built for the 3.9 stable ABI, which
//! does not have it, so it is looked up in the running interpreter when
//! first needed; `send`/`throw` method calls are the fallback.

use std::os::raw::c_int;
use std::sync::OnceLock;

use pyo3::exceptions::PyStopIteration;
use pyo3::ffi;
use pyo3::prelude::*;

/// What resuming gave.
pub(crate) enum Resumed<'py> {
    /// It suspended, yielding this (a future, or `None` for a bare yield).
    Yielded(Bound<'py, PyAny>),
    /// It ended, returning this.
    Returned(Bound<'py, PyAny>),
    /// It raised this.
    Raised(PyErr),
}

type SendFn = unsafe extern "C" fn(*mut ffi::PyObject, *mut ffi::PyObject, *mut *mut ffi::PyObject) -> c_int;

/// `PySendResult` values.
const PYGEN_RETURN: c_int = 0;
const PYGEN_NEXT: c_int = 1;

fn iter_send() -> Option<SendFn> {
    static SEND: OnceLock<Option<SendFn>> = OnceLock::new();
    *SEND.get_or_init(|| {
        // SAFETY: `dlsym` is given a NUL-terminated name. The symbol, when
        // the interpreter has it, is CPython's `PyIter_Send`, whose C
        // signature is `SendFn`'s.
        unsafe {
            let symbol = libc::dlsym(libc::RTLD_DEFAULT, c"PyIter_Send".as_ptr());
            (!symbol.is_null()).then(|| std::mem::transmute::<*mut libc::c_void, SendFn>(symbol))
        }
    })
}

/// Sends `value` into `iter` (`None` resumes it as `next` would).
pub(crate) fn send<'py>(iter: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>) -> Resumed<'py> {
    let py = iter.py();
    if let Some(send) = iter_send() {
        let mut out: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: both objects are alive and the GIL is held (`Bound`s);
        // `out` receives a new reference, or stays null when it fails.
        let status = unsafe { send(iter.as_ptr(), value.as_ptr(), &mut out) };
        return match status {
            // SAFETY: on these two results `out` is a new, non-null reference.
            PYGEN_RETURN => Resumed::Returned(unsafe { Bound::from_owned_ptr(py, out) }),
            PYGEN_NEXT => Resumed::Yielded(unsafe { Bound::from_owned_ptr(py, out) }),
            _ => Resumed::Raised(PyErr::fetch(py)),
        };
    }
    let sent = if value.is_none() {
        iter.call_method0(pyo3::intern!(py, "__next__"))
    } else {
        iter.call_method1(pyo3::intern!(py, "send"), (value,))
    };
    from_call(py, sent)
}

/// Throws `exc` into `iter` at the point where it is suspended. An
/// iterator without `throw` (a plain iterator returned by `__await__`)
/// cannot take it: it is raised where the iterator was awaited, as `await`
/// does.
pub(crate) fn throw<'py>(iter: &Bound<'py, PyAny>, exc: PyErr) -> Resumed<'py> {
    let py = iter.py();
    match iter.getattr(pyo3::intern!(py, "throw")) {
        Ok(throw) => from_call(py, throw.call1((exc.into_value(py),))),
        Err(_) => Resumed::Raised(exc),
    }
}

fn from_call<'py>(py: Python<'py>, result: PyResult<Bound<'py, PyAny>>) -> Resumed<'py> {
    match result {
        Ok(value) => Resumed::Yielded(value),
        Err(err) if err.is_instance_of::<PyStopIteration>(py) => {
            match err.value(py).getattr(pyo3::intern!(py, "value")) {
                Ok(value) => Resumed::Returned(value),
                Err(err) => Resumed::Raised(err),
            }
        }
        Err(err) => Resumed::Raised(err),
    }
}

type ContextFn = unsafe extern "C" fn(*mut ffi::PyObject) -> c_int;

/// CPython's `PyContext_Enter` and `PyContext_Exit` (outside the stable
/// ABI, so looked up as `PyIter_Send` is).
fn context_functions() -> Option<(ContextFn, ContextFn)> {
    static FUNCTIONS: OnceLock<Option<(ContextFn, ContextFn)>> = OnceLock::new();
    *FUNCTIONS.get_or_init(|| {
        // SAFETY: `dlsym` is given NUL-terminated names. The symbols, when
        // the interpreter has them, are CPython's `PyContext_Enter` and
        // `PyContext_Exit`, whose C signature is `ContextFn`'s.
        unsafe {
            let enter = libc::dlsym(libc::RTLD_DEFAULT, c"PyContext_Enter".as_ptr());
            let exit = libc::dlsym(libc::RTLD_DEFAULT, c"PyContext_Exit".as_ptr());
            (!enter.is_null() && !exit.is_null()).then(|| {
                (
                    std::mem::transmute::<*mut libc::c_void, ContextFn>(enter),
                    std::mem::transmute::<*mut libc::c_void, ContextFn>(exit),
                )
            })
        }
    })
}

/// Whether [`in_context`] can run code here.
pub(crate) fn can_enter_contexts() -> bool {
    context_functions().is_some()
}

/// Runs `f` with `context` (a `contextvars.Context`) the current context,
/// as `context.run(f)` would, without making `f` a Python callable. `Err`:
/// the context could not be entered (it is entered already, or this
/// interpreter cannot: see [`can_enter_contexts`]); `f` did not run.
pub(crate) fn in_context<R>(context: &Bound<'_, PyAny>, f: impl FnOnce() -> R) -> PyResult<R> {
    let py = context.py();
    let Some((enter, exit)) = context_functions() else {
        return Err(pyo3::exceptions::PyRuntimeError::new_err("contexts cannot be entered here"));
    };
    // SAFETY: the GIL is held and `context` is alive (a `Bound`); CPython
    // checks that it is a Context and not entered already.
    if unsafe { enter(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    let ran = f();
    // SAFETY: as above; `context` is the one entered on this thread just
    // now, and whatever `f` entered since has been exited (a Context can
    // only be exited by whoever entered it, in order).
    if unsafe { exit(context.as_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(ran)
}
