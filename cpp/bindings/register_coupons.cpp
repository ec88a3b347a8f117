#include <pybind11/native_enum.h>
#include <pybind11/pybind11.h>

#include <array>

#include "flashsale/coupon_gate.hpp"
#include "py_args.hpp"

namespace py = pybind11;
using namespace pybind11::literals;
using flashsale::CouponGate;
using flashsale::IssueResult;
using flashsale::bindings::as_id;

namespace {

// The three IssueResult members, fetched once: converting a C++ enum to a
// Python enum.Enum looks the member up by value, which costs more than try_issue.
// Set during module init (under the import lock) and only read afterwards.
std::array<PyObject*, 3> g_issue_results{};

py::object to_python(IssueResult result) {
  return py::reinterpret_borrow<py::object>(g_issue_results[static_cast<std::size_t>(result)]);
}

}  // namespace

void register_coupons(py::module_& m) {
  py::native_enum<IssueResult>(m, "IssueResult", "enum.Enum", "Answer of CouponGate.try_issue.")
      .value("ISSUED", IssueResult::Issued)
      .value("SOLD_OUT", IssueResult::SoldOut)
      .value("ALREADY_ISSUED", IssueResult::AlreadyIssued)
      .finalize();
  const py::object enum_type = m.attr("IssueResult");
  for (const char* name : {"ISSUED", "SOLD_OUT", "ALREADY_ISSUED"}) {
    py::object member = enum_type.attr(name);
    const auto index = member.attr("value").cast<std::size_t>();
    // Enum members live as long as their class, which the module keeps; hold
    // one more reference so the cache never dangles at interpreter shutdown.
    g_issue_results.at(index) = member.release().ptr();
  }

  py::class_<CouponGate>(m, "CouponGate",
                         "First-come coupon counters, at most per_user_limit coupons per user.")
      .def(py::init<>())
      .def("configure", &CouponGate::configure, "coupon_id"_a, "remaining"_a,
           "per_user_limit"_a = 1,
           "Create the coupon or update remaining and limit, keeping per-user records. "
           "ValueError if remaining < 0 or per_user_limit < 1.")
      // try_issue keeps the GIL: one uncontended mutex and a CAS are cheaper than a
      // GIL hand-off (`flashsale bench core` measures both). Its own locking makes
      // it correct without the GIL.
      .def(
          "try_issue",
          [](CouponGate& gate, std::int64_t coupon_id, std::int64_t user_id) {
            return to_python(gate.try_issue(coupon_id, user_id));
          },
          "coupon_id"_a, "user_id"_a,
          "ALREADY_ISSUED if the user holds per_user_limit, else SOLD_OUT if none remain, "
          "else ISSUED. KeyError for an unknown coupon.")
      .def(
          "_try_issue_nogil",
          [](CouponGate& gate, std::int64_t coupon_id, std::int64_t user_id) {
            IssueResult result{};
            {
              // Safe: plain integers in, an enum out; the gate locks for itself.
              py::gil_scoped_release release;
              result = gate.try_issue(coupon_id, user_id);
            }
            return to_python(result);
          },
          "coupon_id"_a, "user_id"_a,
          "Benchmark API (`flashsale bench core`), not for the service: try_issue with the "
          "GIL released, to measure what releasing it would cost. Same arguments, result "
          "and errors as try_issue.")
      .def("revoke", &CouponGate::revoke, "coupon_id"_a, "user_id"_a,
           "Undo one ISSUED (the database refused it). ValueError if the user holds none.")
      .def("mark_issued", &CouponGate::mark_issued, "coupon_id"_a, "user_id"_a, "count"_a = 1,
           "The database says the user holds `count`: keep max(count, current); "
           "remaining is unchanged.")
      .def("remaining", &CouponGate::remaining, "coupon_id"_a)
      .def("issued_to", &CouponGate::issued_to, "coupon_id"_a, "user_id"_a)
      .def("__contains__", [](const CouponGate& gate, py::handle coupon_id) {
        const auto id = as_id(coupon_id);
        return id.has_value() && gate.contains(*id);
      });
}
