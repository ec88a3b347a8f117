// Domain errors of the core. The bindings map InvalidArgument to ValueError and
// UnknownId to KeyError; C++ callers catch them like any std::exception.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace flashsale {

// A caller passed an argument that can never be valid (quantity <= 0, negative stock, ...).
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// An id (sku, coupon) that was never created.
class UnknownId : public std::out_of_range {
 public:
  UnknownId(const char* what_kind, std::int64_t id)
      : std::out_of_range(std::string("unknown ") + what_kind + " " + std::to_string(id)),
        id_(id) {}

  [[nodiscard]] std::int64_t id() const noexcept { return id_; }

 private:
  std::int64_t id_;
};

}  // namespace flashsale
