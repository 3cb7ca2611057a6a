//! Borrowing a `str`'s UTF-8 text without a copy.
//!
//! The wheel targets the stable ABI of CPython 3.9, where pyo3 can only copy
//! text out through a temporary `bytes`. `PyUnicode_AsUTF8AndSize` has been
//! exported by every CPython 3 (it joined the limited API in 3.10 but exists
//! in 3.9's library), so it is declared here and used on every version.

use std::os::raw::c_char;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;

extern "C" {
    fn PyUnicode_AsUTF8AndSize(unicode: *mut ffi::PyObject, size: *mut ffi::Py_ssize_t) -> *const c_char;
}

/// The text of `s`, borrowed from the string object's UTF-8 cache.
pub(crate) fn as_str<'a>(s: &'a Bound<'_, PyString>) -> PyResult<&'a str> {
    let mut size: ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str object; the returned buffer lives as long
    // as the object, which `'a` ties to the borrow of `s`.
    unsafe {
        let data = PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut size);
        if data.is_null() {
            return Err(PyErr::fetch(s.py()));
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), size as usize);
        Ok(std::str::from_utf8_unchecked(bytes))
    }
}
