// Small helpers shared by the register_*.cpp files (argument parsing only).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>

namespace flashsale::bindings {

namespace py = pybind11;

// An int that fits int64, or nullopt (for __contains__, which answers False
// rather than raising for keys that cannot be ids).
inline std::optional<std::int64_t> as_id(py::handle key) {
  if (!PyLong_Check(key.ptr())) return std::nullopt;
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(key.ptr(), &overflow);
  if (overflow != 0 || (value == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    return std::nullopt;
  }
  return static_cast<std::int64_t>(value);
}

// PyLong_AsLongLong, raising the pending Python error (TypeError, OverflowError).
inline std::int64_t to_int64(PyObject* obj) {
  const long long value = PyLong_AsLongLong(obj);
  if (value == -1 && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<std::int64_t>(value);
}

// A list or tuple view of `obj` that stays valid while we read it. With the GIL
// that is the object itself; free-threaded builds take a tuple snapshot, since
// another thread could resize a list under us.
inline py::object fast_sequence(py::handle obj, const char* message) {
#ifdef Py_GIL_DISABLED
  (void)message;
  PyObject* seq = PySequence_Tuple(obj.ptr());
#else
  PyObject* seq = PySequence_Fast(obj.ptr(), message);
#endif
  if (seq == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(seq);
}

}  // namespace flashsale::bindings
