#include <pybind11/pybind11.h>

#include <array>
#include <span>
#include <vector>

#include "flashsale/stock_pool.hpp"
#include "py_args.hpp"

namespace py = pybind11;
using namespace pybind11::literals;
using flashsale::StockLine;
using flashsale::StockPool;
using flashsale::bindings::as_id;
using flashsale::bindings::fast_sequence;
using flashsale::bindings::to_int64;

namespace {

// [(sku, quantity), ...] read with the C API: pybind11's list-of-tuples caster
// costs several times the reservation itself. Carts are small, so up to 8
// lines stay on the stack.
class Lines {
 public:
  explicit Lines(py::handle obj) {
    const py::object seq = fast_sequence(obj, "lines must be a sequence of (sku, quantity) pairs");
    const auto n = static_cast<std::size_t>(PySequence_Fast_GET_SIZE(seq.ptr()));
    PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
    StockLine* out = inline_.data();
    if (n > inline_.size()) {
      heap_.resize(n);
      out = heap_.data();
    }
    for (std::size_t i = 0; i < n; ++i) {
      PyObject* item = items[i];
      if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2) {
        out[i] =
            StockLine{to_int64(PyTuple_GET_ITEM(item, 0)), to_int64(PyTuple_GET_ITEM(item, 1))};
        continue;
      }
      const py::object pair = fast_sequence(item, "each line must be a (sku, quantity) pair");
      if (PySequence_Fast_GET_SIZE(pair.ptr()) != 2) {
        throw py::type_error("each line must be a (sku, quantity) pair");
      }
      PyObject** fields = PySequence_Fast_ITEMS(pair.ptr());
      out[i] = StockLine{to_int64(fields[0]), to_int64(fields[1])};
    }
    lines_ = std::span<const StockLine>(out, n);
  }

  Lines(const Lines&) = delete;
  Lines& operator=(const Lines&) = delete;

  [[nodiscard]] std::span<const StockLine> span() const noexcept { return lines_; }

 private:
  std::array<StockLine, 8> inline_{};
  std::vector<StockLine> heap_;
  std::span<const StockLine> lines_;
};

}  // namespace

void register_stock(py::module_& m) {
  py::class_<StockPool>(m, "StockPool",
                        "Per-SKU stock counters with all-or-nothing, lock-free reservations.")
      .def(py::init<>())
      .def("set", &StockPool::set, "sku"_a, "available"_a,
           "Create the SKU or overwrite its counter. ValueError if available < 0.")
      .def("available", &StockPool::available, "sku"_a, "Units left. KeyError for an unknown SKU.")
      // try_reserve and release keep the GIL: the C++ work (~20-50 ns) is cheaper
      // than releasing and re-taking it; `flashsale bench core` measures both.
      // They stay correct without the GIL (atomics only), e.g. free-threaded.
      .def(
          "try_reserve",
          [](StockPool& pool, py::handle lines) {
            const Lines parsed(lines);
            return pool.try_reserve(parsed.span());
          },
          "lines"_a,
          "All-or-nothing over [(sku, quantity), ...]: True and every counter decremented, "
          "or False and nothing changed.")
      // Benchmark API, not used by the service: the same call with the GIL released
      // around the C++ work. `flashsale bench core` times it against try_reserve to
      // show the choice above is right (docs/performance.md); CouponGate's
      // _try_issue_nogil and SlidingWindowRanking's _record_nogil are its siblings.
      // Private (leading underscore) and typed in _core.pyi.
      .def(
          "_try_reserve_nogil",
          [](StockPool& pool, py::handle lines) {
            const Lines parsed(lines);
            // Safe: `parsed` is a C++ copy of the lines and StockPool needs no GIL.
            py::gil_scoped_release release;
            return pool.try_reserve(parsed.span());
          },
          "lines"_a,
          "Benchmark API (`flashsale bench core`), not for the service: try_reserve with the "
          "GIL released around the reservation, to measure what releasing it would cost. Same "
          "arguments, result and errors as try_reserve.")
      .def(
          "release",
          [](StockPool& pool, py::handle lines) {
            const Lines parsed(lines);
            pool.release(parsed.span());
          },
          "lines"_a, "Add the quantities back; same validation as try_reserve.")
      .def("__contains__",
           [](const StockPool& pool, py::handle sku) {
             const auto id = as_id(sku);
             return id.has_value() && pool.contains(*id);
           })
      .def("__len__", &StockPool::size);
}
