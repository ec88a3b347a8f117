#include "flashsale/ranking.hpp"

#include <algorithm>
#include <cmath>
#include <string>

namespace flashsale {

namespace {

// Counts are sums of caller-supplied int64s; wrap instead of overflowing (UB).
std::int64_t wrapping_add(std::int64_t a, std::int64_t b) noexcept {
  return static_cast<std::int64_t>(static_cast<std::uint64_t>(a) + static_cast<std::uint64_t>(b));
}

// Buckets stay far from the int64 limits so `bucket - n_buckets` cannot overflow.
constexpr double kMaxAbsBucket = 4.0e18;

}  // namespace

namespace detail {

void RunningTotals::add(std::int64_t product_id, std::int64_t quantity, std::int64_t orders) {
  if (std::uint32_t* pos = index_.find(product_id)) {
    Row& row = rows_[*pos - 1];
    row.quantity = wrapping_add(row.quantity, quantity);
    row.orders = wrapping_add(row.orders, orders);
    if (row.quantity != 0 || row.orders != 0) return;
    // Back to nothing: move the last row into the hole.
    const Row& last = rows_.back();
    if (last.product_id != product_id) {
      row = last;
      *index_.find(last.product_id) = *pos;
    }
    rows_.pop_back();
    index_.erase(product_id);
    return;
  }
  if (quantity == 0 && orders == 0) return;
  rows_.push_back(Row{product_id, quantity, orders});
  index_[product_id] = static_cast<std::uint32_t>(rows_.size());
}

void RunningTotals::clear() noexcept {
  index_.clear();
  rows_ = {};
}

void RunningTotals::shrink_to_fit() {
  index_.shrink_to_fit();
  rows_.shrink_to_fit();
}

}  // namespace detail

RankMetric parse_metric(std::string_view metric) {
  if (metric == "quantity") return RankMetric::Quantity;
  if (metric == "orders") return RankMetric::Orders;
  throw InvalidArgument("metric must be 'quantity' or 'orders', not '" + std::string(metric) + "'");
}

SlidingWindowRanking::SlidingWindowRanking(std::int64_t window_seconds, std::int64_t bucket_seconds)
    : window_seconds_(window_seconds),
      bucket_seconds_(bucket_seconds),
      n_buckets_(bucket_seconds > 0 ? window_seconds / bucket_seconds : 0),
      queue_(kQueueCapacity) {
  if (window_seconds <= 0 || bucket_seconds <= 0) {
    throw InvalidArgument("window_seconds and bucket_seconds must be > 0");
  }
  if (window_seconds % bucket_seconds != 0) {
    throw InvalidArgument("window_seconds must be a multiple of bucket_seconds");
  }
}

std::int64_t SlidingWindowRanking::bucket_of(double ts) const {
  const double b = std::floor(ts / static_cast<double>(bucket_seconds_));
  if (!(std::fabs(b) <= kMaxAbsBucket)) {  // also rejects NaN
    throw InvalidArgument("timestamp must be a finite number of seconds");
  }
  return static_cast<std::int64_t>(b);
}

std::int64_t SlidingWindowRanking::bucket_of_int(std::int64_t ts) const noexcept {
  std::int64_t b = ts / bucket_seconds_;
  if (ts % bucket_seconds_ != 0 && ts < 0) --b;  // floor, not truncation
  return b;
}

std::int64_t SlidingWindowRanking::window_buckets(
    std::optional<std::int64_t> window_seconds) const {
  if (!window_seconds) return n_buckets_;
  const std::int64_t w = *window_seconds;
  if (w <= 0 || w > window_seconds_ || w % bucket_seconds_ != 0) {
    throw InvalidArgument("window_seconds must be > 0, <= " + std::to_string(window_seconds_) +
                          " and a multiple of " + std::to_string(bucket_seconds_));
  }
  return w / bucket_seconds_;
}

void SlidingWindowRanking::record(std::int64_t product_id, std::int64_t quantity,
                                  std::int64_t orders, double ts) {
  if (quantity == 0 && orders == 0) throw InvalidArgument("quantity and orders are both 0");
  const Event event{product_id, quantity, orders, bucket_of(ts)};
  while (!queue_.bounded_push(event)) {
    // Full: make room ourselves rather than drop a sale.
    std::lock_guard<std::mutex> lock(mutex_);
    drain_locked();
  }
}

std::size_t SlidingWindowRanking::drain() {
  std::lock_guard<std::mutex> lock(mutex_);
  return drain_locked();
}

std::size_t SlidingWindowRanking::drain_locked() {
  // Bounded so that producers faster than us cannot keep a reader here forever;
  // everything enqueued before the call (at most the capacity) is still taken.
  std::size_t n = 0;
  Event event{};
  while (n < 2 * kQueueCapacity && queue_.pop(event)) {
    apply_locked(event);
    ++n;
  }
  return n;
}

void SlidingWindowRanking::add_counts(CountMap& map, std::int64_t product_id, std::int64_t quantity,
                                      std::int64_t orders) {
  Counts& c = map[product_id];
  c.quantity = wrapping_add(c.quantity, quantity);
  c.orders = wrapping_add(c.orders, orders);
  if (c.quantity == 0 && c.orders == 0) map.erase(product_id);
}

SlidingWindowRanking::CountMap& SlidingWindowRanking::bucket_locked(std::int64_t bucket) {
  if (cached_map_ != nullptr && cached_bucket_ == bucket) return *cached_map_;
  CountMap& map = buckets_.try_emplace(bucket).first->second;
  cached_bucket_ = bucket;
  cached_map_ = &map;
  return map;
}

void SlidingWindowRanking::apply_locked(const Event& e) {
  if (has_horizon_ && e.bucket <= horizon_ - n_buckets_) return;  // older than the window: expired
  add_counts(bucket_locked(e.bucket), e.product_id, e.quantity, e.orders);
  if (has_horizon_ && e.bucket <= horizon_) totals_.add(e.product_id, e.quantity, e.orders);
}

void SlidingWindowRanking::advance_locked(std::int64_t cur) {
  if (has_horizon_ && cur <= horizon_) return;  // the horizon only moves forward
  const bool had_horizon = has_horizon_;
  const std::int64_t old = horizon_;
  has_horizon_ = true;
  horizon_ = cur;
  const std::int64_t oldest_kept = cur - n_buckets_ + 1;

  // Expire: buckets that were in the totals are subtracted; never-counted ones just go.
  bool erased = false;
  while (!buckets_.empty() && buckets_.begin()->first < oldest_kept) {
    auto it = buckets_.begin();
    if (had_horizon && it->first <= old) {
      it->second.for_each([this](std::int64_t product_id, const Counts& c) {
        totals_.add(product_id, -c.quantity, -c.orders);
      });
    }
    buckets_.erase(it);
    erased = true;
  }
  if (erased) {
    cached_map_ = nullptr;
    if (totals_.rows().size() * 4 < totals_.rows().capacity()) totals_.shrink_to_fit();
  }

  // Enter: buckets in (old, cur] that are still inside the window.
  const std::int64_t first_new = had_horizon ? std::max(old + 1, oldest_kept) : oldest_kept;
  for (auto it = buckets_.lower_bound(first_new); it != buckets_.end() && it->first <= cur; ++it) {
    it->second.for_each([this](std::int64_t product_id, const Counts& c) {
      totals_.add(product_id, c.quantity, c.orders);
    });
  }
}

template <bool kLive, class Ts>
void SlidingWindowRanking::apply_column_locked(std::size_t n, Column<std::int64_t> ids,
                                               Column<std::int64_t> qty,
                                               Column<std::int64_t> orders, Column<Ts> ts) {
  // Chunks of events are split into runs of one bucket (loads come in time
  // order): the bucket is checked and looked up once per run, and its map is
  // sized once for the run instead of growing step by step.
  constexpr std::size_t kChunk = 1024;
  // The running totals are larger than the caches: ask for the index slot of
  // the event a few places ahead while this one is applied.
  constexpr std::size_t kLookahead = 16;
  std::int64_t buckets[kChunk];
  for (std::size_t start = 0; start < n; start += kChunk) {
    const std::size_t m = std::min(kChunk, n - start);
    for (std::size_t j = 0; j < m; ++j) {
      if constexpr (std::is_same_v<Ts, double>) {
        buckets[j] = bucket_of(ts[start + j]);
      } else {
        buckets[j] = bucket_of_int(ts[start + j]);
      }
    }
    std::size_t j = 0;
    while (j < m) {
      const std::int64_t bucket = buckets[j];
      std::size_t end = j + 1;
      while (end < m && buckets[end] == bucket) ++end;
      if (has_horizon_ && bucket <= horizon_ - n_buckets_) {  // older than the window: expired
        j = end;
        continue;
      }
      CountMap& map = bucket_locked(bucket);
      const std::size_t capacity_before = map.capacity();
      map.reserve(map.size() + (end - j));
      const bool counted = kLive && bucket <= horizon_;
      for (; j < end; ++j) {
        const std::size_t i = start + j;
        const std::int64_t product_id = ids[i];
        const std::int64_t quantity = qty[i];
        const std::int64_t ord = orders[i];
        add_counts(map, product_id, quantity, ord);
        if (counted) {
          if (i + kLookahead < n) totals_.prefetch(ids[i + kLookahead]);
          totals_.add(product_id, quantity, ord);
        }
      }
      map.trim_reserve(capacity_before);
    }
  }
}

void SlidingWindowRanking::record_many(std::size_t n, Column<std::int64_t> product_ids,
                                       Column<std::int64_t> quantities, Column<std::int64_t> orders,
                                       TimeColumn timestamps) {
  const Column<double> ts_double{timestamps.data, timestamps.stride};
  const Column<std::int64_t> ts_int{timestamps.data, timestamps.stride};
  // Validate everything first: a refused bulk load changes nothing.
  for (std::size_t i = 0; i < n; ++i) {
    if (quantities[i] == 0 && orders[i] == 0) {
      throw InvalidArgument("quantity and orders are both 0 at index " + std::to_string(i));
    }
    if (!timestamps.is_int64) (void)bucket_of(ts_double[i]);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  // Queued events first, so a bulk load cannot overtake earlier records.
  drain_locked();
  if (has_horizon_) {
    if (timestamps.is_int64) {
      apply_column_locked<true>(n, product_ids, quantities, orders, ts_int);
    } else {
      apply_column_locked<true>(n, product_ids, quantities, orders, ts_double);
    }
  } else if (timestamps.is_int64) {
    apply_column_locked<false>(n, product_ids, quantities, orders, ts_int);
  } else {
    apply_column_locked<false>(n, product_ids, quantities, orders, ts_double);
  }
}

void SlidingWindowRanking::record_many(std::span<const std::int64_t> product_ids,
                                       std::span<const std::int64_t> quantities,
                                       std::span<const std::int64_t> orders,
                                       std::span<const double> timestamps) {
  const std::size_t n = product_ids.size();
  if (quantities.size() != n || orders.size() != n || timestamps.size() != n) {
    throw InvalidArgument(
        "product_ids, quantities, orders and timestamps must have the same length");
  }
  auto col = [](std::span<const std::int64_t> s) {
    return Column<std::int64_t>{reinterpret_cast<const std::byte*>(s.data()), sizeof(std::int64_t)};
  };
  record_many(
      n, col(product_ids), col(quantities), col(orders),
      TimeColumn{reinterpret_cast<const std::byte*>(timestamps.data()), sizeof(double), false});
}

template <class Fn>
void SlidingWindowRanking::for_each_in_window_locked(double now,
                                                     std::optional<std::int64_t> window_seconds,
                                                     Fn&& fn) {
  const std::int64_t nb = window_buckets(window_seconds);
  const std::int64_t cur = bucket_of(now);
  drain_locked();
  advance_locked(cur);
  if (cur == horizon_ && nb == n_buckets_) {
    // The full window at the horizon is what the running totals hold.
    for (const auto& row : totals_.rows()) fn(row.product_id, row.quantity, row.orders);
    return;
  }
  CountMap sum;
  for (auto it = buckets_.upper_bound(cur - nb); it != buckets_.end() && it->first <= cur; ++it) {
    it->second.for_each([&sum](std::int64_t product_id, const Counts& c) {
      add_counts(sum, product_id, c.quantity, c.orders);
    });
  }
  sum.for_each(
      [&fn](std::int64_t product_id, const Counts& c) { fn(product_id, c.quantity, c.orders); });
}

std::vector<RankEntry> SlidingWindowRanking::top(std::size_t k, double now, RankMetric metric,
                                                 std::optional<std::int64_t> window_seconds) {
  if (k < 1) throw InvalidArgument("k must be >= 1");
  (void)window_buckets(window_seconds);  // validate before touching any state
  (void)bucket_of(now);

  const bool by_quantity = metric == RankMetric::Quantity;
  auto value = [by_quantity](const RankEntry& e) { return by_quantity ? e.quantity : e.orders; };
  // `better` is a strict weak order: higher metric first, then lower product id.
  auto better = [&value](const RankEntry& a, const RankEntry& b) {
    const std::int64_t va = value(a);
    const std::int64_t vb = value(b);
    return va != vb ? va > vb : a.product_id < b.product_id;
  };

  std::vector<RankEntry> heap;  // a max-heap under `better`: front() is the worst kept
  heap.reserve(std::min<std::size_t>(k, 1024));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for_each_in_window_locked(
        now, window_seconds,
        [&](std::int64_t product_id, std::int64_t quantity, std::int64_t orders) {
          const RankEntry entry{product_id, quantity, orders};
          if (value(entry) <= 0) return;
          if (heap.size() < k) {
            heap.push_back(entry);
            std::push_heap(heap.begin(), heap.end(), better);
          } else if (better(entry, heap.front())) {
            std::pop_heap(heap.begin(), heap.end(), better);
            heap.back() = entry;
            std::push_heap(heap.begin(), heap.end(), better);
          }
        });
  }
  std::sort_heap(heap.begin(), heap.end(), better);
  return heap;
}

std::vector<RankEntry> SlidingWindowRanking::totals(double now,
                                                    std::optional<std::int64_t> window_seconds) {
  (void)window_buckets(window_seconds);
  (void)bucket_of(now);
  std::vector<RankEntry> result;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for_each_in_window_locked(
        now, window_seconds,
        [&result](std::int64_t product_id, std::int64_t quantity, std::int64_t orders) {
          result.push_back(RankEntry{product_id, quantity, orders});
        });
  }
  std::sort(result.begin(), result.end(),
            [](const RankEntry& a, const RankEntry& b) { return a.product_id < b.product_id; });
  return result;
}

void SlidingWindowRanking::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  Event event{};
  for (std::size_t n = 0; n < 2 * kQueueCapacity && queue_.pop(event); ++n) {
  }
  buckets_.clear();
  totals_.clear();
  cached_map_ = nullptr;
  has_horizon_ = false;
  horizon_ = 0;
}

std::size_t SlidingWindowRanking::pair_count() {
  std::lock_guard<std::mutex> lock(mutex_);
  drain_locked();
  std::size_t pairs = 0;
  for (const auto& [bucket, map] : buckets_) pairs += map.size();
  return pairs;
}

std::size_t SlidingWindowRanking::memory_bytes() {
  // The queue's nodes are cache-line aligned (Boost.Lockfree), one per slot plus a dummy.
  constexpr std::size_t kQueueNodeBytes = 64 * ((sizeof(Event) + sizeof(void*) + 63) / 64);
  // A std::map node: the value plus three pointers and a colour, rounded by malloc.
  constexpr std::size_t kMapNodeBytes = sizeof(std::pair<const std::int64_t, CountMap>) + 32 + 16;
  std::lock_guard<std::mutex> lock(mutex_);
  drain_locked();
  std::size_t bytes =
      sizeof(*this) + (kQueueCapacity + 1) * kQueueNodeBytes + totals_.memory_bytes();
  for (const auto& [bucket, map] : buckets_) bytes += kMapNodeBytes + map.memory_bytes();
  return bytes;
}

}  // namespace flashsale
