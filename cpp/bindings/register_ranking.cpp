#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <bit>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flashsale/ranking.hpp"
#include "py_args.hpp"

namespace py = pybind11;
using namespace pybind11::literals;
using flashsale::Column;
using flashsale::RankEntry;
using flashsale::SlidingWindowRanking;
using flashsale::TimeColumn;
using flashsale::bindings::fast_sequence;
using flashsale::bindings::to_int64;

namespace {

// Owns a Py_buffer; released in the destructor, which runs with the GIL held.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  // True if obj exports a 1-D buffer; then view() describes it.
  bool acquire(py::handle obj) {
    if (!PyObject_CheckBuffer(obj.ptr())) return false;
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_RECORDS_RO) != 0) {
      PyErr_Clear();
      return false;
    }
    held_ = true;
    if (view_.ndim != 1) {
      reset();
      return false;
    }
    return true;
  }

  void reset() {
    if (held_) PyBuffer_Release(&view_);
    held_ = false;
  }

  [[nodiscard]] const Py_buffer& view() const noexcept { return view_; }

 private:
  Py_buffer view_{};
  bool held_ = false;
};

// struct-module format of a native 8-byte value of the given kind ('i' int, 'f' float).
bool is_native_8_byte(const char* format, char kind) {
  if (format == nullptr) return false;
  std::string_view f(format);
  if (!f.empty() && (f[0] == '@' || f[0] == '=')) {
    f.remove_prefix(1);
  } else if (!f.empty() && f[0] == '<') {
    if constexpr (std::endian::native != std::endian::little) return false;
    f.remove_prefix(1);
  }
  if (kind == 'f') return f == "d";
  return f == "q" || (f == "l" && sizeof(long) == 8);
}

// One input column of record_many: a zero-copy view of an int64/float64 buffer
// (array.array('q'/'d'), numpy) or a converted copy of any other sequence.
template <class T>
class InputColumn {
 public:
  InputColumn(py::handle obj, const char* name) {
    if (buffer_.acquire(obj)) {
      const Py_buffer& v = buffer_.view();
      const bool is_int = is_native_8_byte(v.format, 'i');
      const bool is_float = is_native_8_byte(v.format, 'f');
      if (v.itemsize == 8 && (is_int || (std::is_same_v<T, double> && is_float))) {
        data_ = static_cast<const std::byte*>(v.buf);
        stride_ = v.strides != nullptr ? v.strides[0] : v.itemsize;
        size_ = static_cast<std::size_t>(v.shape[0]);
        is_int64_ = is_int;
        return;
      }
      buffer_.reset();  // another element type: convert it like any sequence
    }
    const py::object seq = fast_sequence(
        obj, (std::string(name) + " must be a sequence or an int64/float64 buffer").c_str());
    size_ = static_cast<std::size_t>(PySequence_Fast_GET_SIZE(seq.ptr()));
    PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
    copy_.resize(size_);
    for (std::size_t i = 0; i < size_; ++i) {
      if constexpr (std::is_same_v<T, double>) {
        const double value = PyFloat_AsDouble(items[i]);
        if (value == -1.0 && PyErr_Occurred()) throw py::error_already_set();
        copy_[i] = value;
      } else {
        copy_[i] = to_int64(items[i]);
      }
    }
    data_ = reinterpret_cast<const std::byte*>(copy_.data());
    stride_ = sizeof(T);
    is_int64_ = std::is_same_v<T, std::int64_t>;
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] Column<std::int64_t> int_column() const noexcept { return {data_, stride_}; }
  [[nodiscard]] TimeColumn time_column() const noexcept { return {data_, stride_, is_int64_}; }

 private:
  Buffer buffer_;
  std::vector<T> copy_;
  const std::byte* data_ = nullptr;
  std::ptrdiff_t stride_ = sizeof(T);
  std::size_t size_ = 0;
  bool is_int64_ = false;
};

std::string repr(const RankEntry& e) {
  return "RankEntry(product_id=" + std::to_string(e.product_id) +
         ", quantity=" + std::to_string(e.quantity) + ", orders=" + std::to_string(e.orders) + ")";
}

}  // namespace

void register_ranking(py::module_& m) {
  py::class_<RankEntry>(m, "RankEntry", "One row of SlidingWindowRanking.top().")
      .def(py::init([](std::int64_t product_id, std::int64_t quantity, std::int64_t orders) {
             return RankEntry{product_id, quantity, orders};
           }),
           "product_id"_a, "quantity"_a, "orders"_a)
      .def_readonly("product_id", &RankEntry::product_id)
      .def_readonly("quantity", &RankEntry::quantity)
      .def_readonly("orders", &RankEntry::orders)
      .def("__repr__", &repr)
      .def("__eq__",
           [](const RankEntry& self, py::object other) -> py::object {
             if (!py::isinstance<RankEntry>(other))
               return py::reinterpret_borrow<py::object>(Py_NotImplemented);
             return py::bool_(self == other.cast<const RankEntry&>());
           })
      .def("__hash__", [](const RankEntry& self) {
        return py::hash(py::make_tuple(self.product_id, self.quantity, self.orders));
      });

  py::class_<SlidingWindowRanking>(m, "SlidingWindowRanking",
                                   "Time-bucketed sales counts with a sliding-window top-k.")
      .def(py::init<std::int64_t, std::int64_t>(), "window_seconds"_a = 259200,
           "bucket_seconds"_a = 60)
      .def_property_readonly("window_seconds", &SlidingWindowRanking::window_seconds)
      .def_property_readonly("bucket_seconds", &SlidingWindowRanking::bucket_seconds)
      // record keeps the GIL: a lock-free push is cheaper than a GIL hand-off
      // (`flashsale bench core` measures both); the queue needs no GIL.
      .def("record", &SlidingWindowRanking::record, "product_id"_a, "quantity"_a, "orders"_a,
           "ts"_a,
           "Enqueue a sale (negative values undo a cancelled one). ValueError if quantity and "
           "orders are both 0.")
      .def(
          "_record_nogil",
          [](SlidingWindowRanking& r, std::int64_t product_id, std::int64_t quantity,
             std::int64_t orders, double ts) {
            // Safe: plain numbers in; the queue and the drain mutex need no GIL.
            py::gil_scoped_release release;
            r.record(product_id, quantity, orders, ts);
          },
          "product_id"_a, "quantity"_a, "orders"_a, "ts"_a,
          "Benchmark API (`flashsale bench core`), not for the service: record with the GIL "
          "released, to measure what releasing it would cost. Same arguments and errors as "
          "record.")
      .def(
          "record_many",
          [](SlidingWindowRanking& r, py::handle product_ids, py::handle quantities,
             py::handle orders, py::handle timestamps) {
            const InputColumn<std::int64_t> ids(product_ids, "product_ids");
            const InputColumn<std::int64_t> qty(quantities, "quantities");
            const InputColumn<std::int64_t> ords(orders, "orders");
            const InputColumn<double> ts(timestamps, "timestamps");
            const std::size_t n = ids.size();
            if (qty.size() != n || ords.size() != n || ts.size() != n) {
              throw flashsale::InvalidArgument(
                  "product_ids, quantities, orders and timestamps must have the same length");
            }
            // Safe: the columns are C++ copies or Py_buffer views we hold (an
            // exported array.array cannot be resized), released only after the
            // GIL is back; the ranking locks for itself.
            py::gil_scoped_release release;
            r.record_many(n, ids.int_column(), qty.int_column(), ords.int_column(),
                          ts.time_column());
          },
          "product_ids"_a, "quantities"_a, "orders"_a, "timestamps"_a,
          "Bulk load; sequences or int64/float64 buffers (timestamps may be int64), all the same "
          "length. Validates everything before applying anything.")
      .def(
          "top",
          [](SlidingWindowRanking& r, std::int64_t k, double now, std::string_view metric,
             std::optional<std::int64_t> window_seconds) {
            if (k < 1) throw flashsale::InvalidArgument("k must be >= 1");
            const flashsale::RankMetric parsed = flashsale::parse_metric(metric);
            std::vector<RankEntry> result;
            {
              // Safe: only C++ values cross; draining and ranking may take
              // milliseconds and must not stall other Python threads.
              py::gil_scoped_release release;
              result = r.top(static_cast<std::size_t>(k), now, parsed, window_seconds);
            }
            return result;
          },
          "k"_a, "now"_a, "metric"_a = "quantity", "window_seconds"_a = py::none(),
          "Top k products by metric over the window ending at now.")
      .def(
          "totals",
          [](SlidingWindowRanking& r, double now, std::optional<std::int64_t> window_seconds) {
            std::vector<RankEntry> rows;
            {
              // Safe: as in top().
              py::gil_scoped_release release;
              rows = r.totals(now, window_seconds);
            }
            py::dict result;
            for (const RankEntry& e : rows) {
              result[py::int_(e.product_id)] = py::make_tuple(e.quantity, e.orders);
            }
            return result;
          },
          "now"_a, "window_seconds"_a = py::none(),
          "product_id -> (quantity, orders) over the window; a diagnostic (the tests check the "
          "ranking with it), not used by the service.")
      .def("clear",
           [](SlidingWindowRanking& r) {
             // Safe: no Python objects involved; freeing many buckets takes a while.
             py::gil_scoped_release release;
             r.clear();
           })
      .def(
          "pair_count",
          [](SlidingWindowRanking& r) {
            py::gil_scoped_release release;  // Safe: drains and counts C++ state only.
            return r.pair_count();
          },
          "Live (product, bucket) pairs.")
      .def(
          "memory_bytes",
          [](SlidingWindowRanking& r) {
            py::gil_scoped_release release;  // Safe: drains and sums C++ state only.
            return r.memory_bytes();
          },
          "Estimate of the heap bytes held (including the fixed-size queue).");
}
