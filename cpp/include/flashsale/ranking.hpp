// Time-bucketed sales counts with a sliding-window top-k.
//
// Producers enqueue events through a fixed-capacity lock-free MPMC queue; every
// reader drains it under one mutex before answering, so a record() that
// returned in any thread is visible to the next top(). State:
//   - buckets_: bucket number -> (product -> counts), only pairs that sold;
//   - totals_: product -> counts over the full window ending at the horizon
//     (the largest `now` seen), kept up to date on ingest and on expiry, so the
//     full-window top-k is one pass over the products.
#pragma once

#include <boost/lockfree/queue.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "flashsale/errors.hpp"
#include "flashsale/flat_map.hpp"

namespace flashsale {

struct RankEntry {
  std::int64_t product_id = 0;
  std::int64_t quantity = 0;
  std::int64_t orders = 0;

  friend bool operator==(const RankEntry&, const RankEntry&) = default;
};

enum class RankMetric { Quantity, Orders };

namespace detail {

// product -> (quantity, orders) kept dense: top() scans a packed array instead
// of a sparse hash table, and a hash index finds a product's row on update.
class RunningTotals {
 public:
  struct Row {
    std::int64_t product_id;
    std::int64_t quantity;
    std::int64_t orders;
  };

  // Adds the deltas (wrapping); a product whose counts reach (0, 0) is removed.
  void add(std::int64_t product_id, std::int64_t quantity, std::int64_t orders);
  // Bulk loads look ahead: the index is larger than the caches.
  void prefetch(std::int64_t product_id) const noexcept { index_.prefetch(product_id); }
  [[nodiscard]] const std::vector<Row>& rows() const noexcept { return rows_; }
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return index_.memory_bytes() + rows_.capacity() * sizeof(Row);
  }
  void clear() noexcept;
  void shrink_to_fit();

 private:
  FlatMap<std::uint32_t> index_;  // product -> position in rows_ + 1
  std::vector<Row> rows_;
};

}  // namespace detail

// Throws InvalidArgument unless metric is "quantity" or "orders".
RankMetric parse_metric(std::string_view metric);

// A column of n values at data + i * stride (bytes), e.g. a buffer from Python.
template <class T>
struct Column {
  const std::byte* data = nullptr;
  std::ptrdiff_t stride = sizeof(T);

  [[nodiscard]] T operator[](std::size_t i) const noexcept;
};

// Timestamps as float64 seconds or int64 seconds.
struct TimeColumn {
  const std::byte* data = nullptr;
  std::ptrdiff_t stride = sizeof(double);
  bool is_int64 = false;
};

class SlidingWindowRanking {
 public:
  static constexpr std::size_t kQueueCapacity = 65534;  // the queue's 16-bit node index limit

  // Throws InvalidArgument unless both > 0 and window a multiple of bucket.
  explicit SlidingWindowRanking(std::int64_t window_seconds = 259200,
                                std::int64_t bucket_seconds = 60);
  SlidingWindowRanking(const SlidingWindowRanking&) = delete;
  SlidingWindowRanking& operator=(const SlidingWindowRanking&) = delete;

  [[nodiscard]] std::int64_t window_seconds() const noexcept { return window_seconds_; }
  [[nodiscard]] std::int64_t bucket_seconds() const noexcept { return bucket_seconds_; }

  // Enqueues one event (negative values undo a cancelled sale). Never drops:
  // when the queue is full the caller drains it. Throws InvalidArgument if
  // quantity == 0 and orders == 0, or ts is not a finite time.
  void record(std::int64_t product_id, std::int64_t quantity, std::int64_t orders, double ts);

  // Bulk load with record()'s semantics; validates everything before applying anything.
  void record_many(std::size_t n, Column<std::int64_t> product_ids, Column<std::int64_t> quantities,
                   Column<std::int64_t> orders, TimeColumn timestamps);
  void record_many(std::span<const std::int64_t> product_ids,
                   std::span<const std::int64_t> quantities, std::span<const std::int64_t> orders,
                   std::span<const double> timestamps);

  // Top k by metric (desc, ties by lower product id) among products whose metric
  // total over the window is > 0. Bucket b is in the window iff
  // cur - w/bucket < b <= cur, cur = floor(now / bucket), w = window_seconds or
  // the full window. Throws InvalidArgument for k < 1 or a bad window.
  std::vector<RankEntry> top(std::size_t k, double now, RankMetric metric = RankMetric::Quantity,
                             std::optional<std::int64_t> window_seconds = std::nullopt);

  // Every product with non-zero counts over the same window, sorted by product id.
  std::vector<RankEntry> totals(double now,
                                std::optional<std::int64_t> window_seconds = std::nullopt);

  void clear();
  [[nodiscard]] std::size_t pair_count();
  [[nodiscard]] std::size_t memory_bytes();
  // Applies the events waiting in the queue now; returns how many.
  std::size_t drain();

 private:
  struct Event {
    std::int64_t product_id;
    std::int64_t quantity;
    std::int64_t orders;
    std::int64_t bucket;
  };
  struct Counts {
    std::int64_t quantity;
    std::int64_t orders;
  };
  using CountMap = detail::FlatMap<Counts>;

  [[nodiscard]] std::int64_t bucket_of(double ts) const;
  [[nodiscard]] std::int64_t bucket_of_int(std::int64_t ts) const noexcept;
  [[nodiscard]] std::int64_t window_buckets(std::optional<std::int64_t> window_seconds) const;

  // All below require mutex_.
  std::size_t drain_locked();
  void apply_locked(const Event& e);
  void advance_locked(std::int64_t cur);
  CountMap& bucket_locked(std::int64_t bucket);
  static void add_counts(CountMap& map, std::int64_t product_id, std::int64_t quantity,
                         std::int64_t orders);
  template <bool kLive, class Ts>
  void apply_column_locked(std::size_t n, Column<std::int64_t> ids, Column<std::int64_t> qty,
                           Column<std::int64_t> orders, Column<Ts> ts);
  // Calls fn(product_id, quantity, orders) for every product with counts in
  // the window: from totals_ when that is exactly the window, else summed from
  // the buckets.
  template <class Fn>
  void for_each_in_window_locked(double now, std::optional<std::int64_t> window_seconds, Fn&& fn);

  const std::int64_t window_seconds_;
  const std::int64_t bucket_seconds_;
  const std::int64_t n_buckets_;

  boost::lockfree::queue<Event, boost::lockfree::fixed_sized<true>> queue_;

  std::mutex mutex_;  // guards everything below
  bool has_horizon_ = false;
  std::int64_t horizon_ = 0;  // bucket of the largest `now` seen
  std::map<std::int64_t, CountMap> buckets_;
  detail::RunningTotals totals_;  // over buckets in (horizon_ - n_buckets_, horizon_]
  std::int64_t cached_bucket_ = 0;
  CountMap* cached_map_ = nullptr;  // bucket_locked()'s last answer; reset when buckets_ shrinks
};

template <class T>
T Column<T>::operator[](std::size_t i) const noexcept {
  T value;
  std::memcpy(&value, data + static_cast<std::ptrdiff_t>(i) * stride, sizeof(T));
  return value;
}

}  // namespace flashsale
