// flashsale._core: Python bindings of the C++ core. The files here only
// translate (arguments, results, errors, the GIL); the logic lives in cpp/src.
#include <pybind11/pybind11.h>

#include "flashsale/errors.hpp"

namespace py = pybind11;

void register_stock(py::module_& m);
void register_coupons(py::module_& m);
void register_ranking(py::module_& m);

// Declares that the module keeps no state guarded by the GIL: every class
// synchronizes with its own atomics and mutexes, so free-threaded Python may
// run it without the GIL.
PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
  m.doc() = "C++ concurrency core of flashsale (private: import from flashsale).";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const flashsale::UnknownId& e) {
      // KeyError(id), like a dict lookup.
      py::set_error(PyExc_KeyError, py::int_(e.id()));
    } catch (const flashsale::InvalidArgument& e) {
      py::set_error(PyExc_ValueError, e.what());
    }
  });

  register_stock(m);
  register_coupons(m);
  register_ranking(m);

#ifdef FLASHSALE_VERSION
  m.attr("__version__") = FLASHSALE_VERSION;
#endif
}
