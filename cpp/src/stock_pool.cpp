#include "flashsale/stock_pool.hpp"

#include <algorithm>
#include <array>
#include <vector>

namespace flashsale {

void StockPool::set(std::int64_t sku, std::int64_t available) {
  if (available < 0) throw InvalidArgument("available must be >= 0");
  auto [entry, created] = table_.find_or_create(sku, available);
  if (!created) entry->available.store(available, std::memory_order_release);
}

std::int64_t StockPool::available(std::int64_t sku) const {
  const Entry* entry = table_.find(sku);
  if (entry == nullptr) throw UnknownId("sku", sku);
  return entry->available.load(std::memory_order_acquire);
}

// Validates the lines, resolves them to entries sorted by SKU and calls fn(span<Resolved>).
// Requests are small (a cart), so up to 16 lines live on the stack.
template <class Fn>
void StockPool::with_resolved(std::span<const StockLine> lines, Fn&& fn) {
  if (lines.empty()) throw InvalidArgument("lines must not be empty");
  for (const StockLine& line : lines) {
    if (line.quantity <= 0) throw InvalidArgument("quantity must be > 0");
  }
  std::array<StockLine, 16> inline_sorted;
  std::vector<StockLine> heap_sorted;
  std::span<StockLine> sorted;
  if (lines.size() <= inline_sorted.size()) {
    sorted = std::span<StockLine>(inline_sorted.data(), lines.size());
  } else {
    heap_sorted.resize(lines.size());
    sorted = std::span<StockLine>(heap_sorted);
  }
  std::copy(lines.begin(), lines.end(), sorted.begin());
  std::sort(sorted.begin(), sorted.end(),
            [](const StockLine& a, const StockLine& b) { return a.sku < b.sku; });
  for (std::size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].sku == sorted[i - 1].sku) throw InvalidArgument("a sku appears twice in lines");
  }

  std::array<Resolved, 16> inline_resolved;
  std::vector<Resolved> heap_resolved;
  std::span<Resolved> resolved;
  if (sorted.size() <= inline_resolved.size()) {
    resolved = std::span<Resolved>(inline_resolved.data(), sorted.size());
  } else {
    heap_resolved.resize(sorted.size());
    resolved = std::span<Resolved>(heap_resolved);
  }
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    Entry* entry = table_.find(sorted[i].sku);
    if (entry == nullptr) {
      // Report the first unknown SKU in the caller's order, not the sorted one.
      for (const StockLine& line : lines) {
        if (table_.find(line.sku) == nullptr) throw UnknownId("sku", line.sku);
      }
      throw UnknownId("sku", sorted[i].sku);
    }
    resolved[i] = Resolved{entry, sorted[i].quantity};
  }
  fn(std::span<const Resolved>(resolved.data(), resolved.size()));
}

bool StockPool::try_reserve(std::span<const StockLine> lines) {
  bool reserved = false;
  with_resolved(lines, [&](std::span<const Resolved> resolved) {
    // Read-only pre-check: the hopeless majority (sold out) writes nothing, so it
    // neither contends on the cache lines nor disturbs concurrent reservations.
    for (const Resolved& r : resolved) {
      if (r.entry->available.load(std::memory_order_relaxed) < r.quantity) return;
    }
    // Decrement in SKU order; on the first line that no longer fits, give back
    // what was taken. Counters never go below zero, so nothing is oversold.
    for (std::size_t i = 0; i < resolved.size(); ++i) {
      std::atomic<std::int64_t>& available = resolved[i].entry->available;
      const std::int64_t quantity = resolved[i].quantity;
      std::int64_t current = available.load(std::memory_order_relaxed);
      bool taken = false;
      while (current >= quantity) {
        if (available.compare_exchange_weak(current, current - quantity, std::memory_order_acq_rel,
                                            std::memory_order_relaxed)) {
          taken = true;
          break;
        }
      }
      if (!taken) {
        for (std::size_t j = 0; j < i; ++j) {
          resolved[j].entry->available.fetch_add(resolved[j].quantity, std::memory_order_acq_rel);
        }
        return;
      }
    }
    reserved = true;
  });
  return reserved;
}

void StockPool::release(std::span<const StockLine> lines) {
  with_resolved(lines, [](std::span<const Resolved> resolved) {
    for (const Resolved& r : resolved) {
      r.entry->available.fetch_add(r.quantity, std::memory_order_acq_rel);
    }
  });
}

}  // namespace flashsale
