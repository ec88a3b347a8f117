// Per-SKU stock counters with all-or-nothing, lock-free reservations.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "flashsale/errors.hpp"
#include "flashsale/id_table.hpp"

namespace flashsale {

struct StockLine {
  std::int64_t sku;
  std::int64_t quantity;
};

class StockPool {
 public:
  StockPool() = default;

  // Creates the SKU or overwrites its counter. Throws InvalidArgument if available < 0.
  void set(std::int64_t sku, std::int64_t available);

  // Throws UnknownId.
  [[nodiscard]] std::int64_t available(std::int64_t sku) const;

  // All-or-nothing over the lines: true and every counter decremented, or false
  // and nothing changed. Never locks, so no order of lines can deadlock.
  // Throws InvalidArgument (no lines, quantity <= 0, a SKU twice) or UnknownId,
  // in both cases before changing anything.
  bool try_reserve(std::span<const StockLine> lines);

  // Adds the quantities back; same validation as try_reserve.
  void release(std::span<const StockLine> lines);

  [[nodiscard]] bool contains(std::int64_t sku) const noexcept {
    return table_.find(sku) != nullptr;
  }
  [[nodiscard]] std::size_t size() const noexcept { return table_.size(); }

 private:
  // One cache line per SKU: reservations of different SKUs never share a line.
  struct alignas(64) Entry {
    Entry(std::int64_t id_, std::int64_t available_) : id(id_), available(available_) {}
    const std::int64_t id;
    std::atomic<std::int64_t> available;
  };

  struct Resolved {
    Entry* entry;
    std::int64_t quantity;
  };

  template <class Fn>
  void with_resolved(std::span<const StockLine> lines, Fn&& fn);

  detail::IdTable<Entry> table_;
};

}  // namespace flashsale
