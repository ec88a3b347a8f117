#include "flashsale/ranking.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <thread>
#include <vector>

using flashsale::InvalidArgument;
using flashsale::RankEntry;
using flashsale::RankMetric;
using flashsale::SlidingWindowRanking;

namespace {

// 3 buckets of 60 s.
constexpr std::int64_t kBucket = 60;
constexpr std::int64_t kWindow = 180;

double at(std::int64_t bucket, double offset = 5.0) {
  return static_cast<double>(bucket * kBucket) + offset;
}

// The window rule written the slow, obvious way (the SQL audit does the same).
class Model {
 public:
  explicit Model(std::int64_t n_buckets) : n_buckets_(n_buckets) {}

  void record(std::int64_t product, std::int64_t quantity, std::int64_t orders,
              std::int64_t bucket) {
    if (has_horizon_ && bucket <= horizon_ - n_buckets_) return;
    auto& c = buckets_[bucket][product];
    c.first += quantity;
    c.second += orders;
  }

  std::vector<RankEntry> totals(std::int64_t cur, std::int64_t nb) {
    if (!has_horizon_ || cur > horizon_) {
      has_horizon_ = true;
      horizon_ = cur;
      buckets_.erase(buckets_.begin(), buckets_.upper_bound(horizon_ - n_buckets_));
    }
    std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>> sum;
    for (const auto& [b, products] : buckets_) {
      if (b <= cur - nb || b > cur) continue;
      for (const auto& [p, c] : products) {
        sum[p].first += c.first;
        sum[p].second += c.second;
      }
    }
    std::vector<RankEntry> out;
    for (const auto& [p, c] : sum) {
      if (c.first != 0 || c.second != 0) out.push_back({p, c.first, c.second});
    }
    return out;
  }

 private:
  std::int64_t n_buckets_;
  bool has_horizon_ = false;
  std::int64_t horizon_ = 0;
  std::map<std::int64_t, std::map<std::int64_t, std::pair<std::int64_t, std::int64_t>>> buckets_;
};

std::vector<RankEntry> model_top(const std::vector<RankEntry>& totals, std::size_t k,
                                 RankMetric metric) {
  std::vector<RankEntry> out;
  for (const RankEntry& e : totals) {
    if ((metric == RankMetric::Quantity ? e.quantity : e.orders) > 0) out.push_back(e);
  }
  std::sort(out.begin(), out.end(), [metric](const RankEntry& a, const RankEntry& b) {
    const auto va = metric == RankMetric::Quantity ? a.quantity : a.orders;
    const auto vb = metric == RankMetric::Quantity ? b.quantity : b.orders;
    return va != vb ? va > vb : a.product_id < b.product_id;
  });
  if (out.size() > k) out.resize(k);
  return out;
}

}  // namespace

TEST(Ranking, ConstructorValidates) {
  EXPECT_THROW(SlidingWindowRanking(0, 60), InvalidArgument);
  EXPECT_THROW(SlidingWindowRanking(180, 0), InvalidArgument);
  EXPECT_THROW(SlidingWindowRanking(-180, 60), InvalidArgument);
  EXPECT_THROW(SlidingWindowRanking(100, 60), InvalidArgument);
  SlidingWindowRanking r;
  EXPECT_EQ(r.window_seconds(), 259200);
  EXPECT_EQ(r.bucket_seconds(), 60);
}

TEST(Ranking, WindowBoundariesAreExact) {
  SlidingWindowRanking r(kWindow, kBucket);
  r.record(1, 1, 1, at(10));
  r.record(2, 2, 1, at(11, 0.0));   // first second of bucket 11
  r.record(3, 3, 1, at(13, 59.5));  // last instant of bucket 13
  r.record(4, 4, 1, at(14, 0.0));   // the next bucket: in the future at now = bucket 13
  const double now = at(13, 30.0);
  // cur = 13: buckets 11, 12, 13.
  EXPECT_EQ(r.top(10, now), (std::vector<RankEntry>{{3, 3, 1}, {2, 2, 1}}));
  EXPECT_EQ(r.top(10, now, RankMetric::Quantity, 60), (std::vector<RankEntry>{{3, 3, 1}}));
  EXPECT_EQ(r.top(10, now, RankMetric::Quantity, 120), (std::vector<RankEntry>{{3, 3, 1}}));
  EXPECT_EQ(r.top(10, at(14, 0.0)), (std::vector<RankEntry>{{4, 4, 1}, {3, 3, 1}}));
}

TEST(Ranking, TiesMetricsAndUndo) {
  SlidingWindowRanking r(kWindow, kBucket);
  r.record(7, 5, 1, at(1));
  r.record(3, 5, 2, at(1));
  r.record(9, 1, 3, at(2));
  r.record(4, 2, 0, at(2));  // quantity without an order (e.g. a correction)
  const double now = at(2);
  EXPECT_EQ(r.top(2, now), (std::vector<RankEntry>{{3, 5, 2}, {7, 5, 1}}));
  EXPECT_EQ(r.top(5, now, RankMetric::Orders),
            (std::vector<RankEntry>{{9, 1, 3}, {3, 5, 2}, {7, 5, 1}}));  // 4 has 0 orders
  r.record(3, -5, -2, at(1));                                            // cancelled
  EXPECT_EQ(r.top(5, now), (std::vector<RankEntry>{{7, 5, 1}, {4, 2, 0}, {9, 1, 3}}));
  EXPECT_EQ(r.pair_count(), 3u);  // (3, bucket 1) went back to zero and is gone
}

TEST(Ranking, HorizonOnlyMovesForward) {
  SlidingWindowRanking r(kWindow, kBucket);
  r.record(1, 1, 1, at(10));
  r.record(2, 1, 1, at(20));
  EXPECT_EQ(r.top(5, at(20)), (std::vector<RankEntry>{{2, 1, 1}}));
  EXPECT_EQ(r.pair_count(), 1u);  // bucket 10 expired
  // An older `now` does not bring bucket 10 back.
  EXPECT_TRUE(r.top(5, at(10)).empty());
  // Events older than the window at the horizon are ignored; recent ones count.
  r.record(3, 1, 1, at(17));
  r.record(4, 1, 1, at(18));
  EXPECT_EQ(r.top(5, at(20)), (std::vector<RankEntry>{{2, 1, 1}, {4, 1, 1}}));
  // A `now` behind the horizon ranks over its own (shorter) view.
  EXPECT_EQ(r.top(5, at(18)), (std::vector<RankEntry>{{4, 1, 1}}));
}

TEST(Ranking, NegativeTimesFloor) {
  SlidingWindowRanking r(kWindow, kBucket);
  r.record(1, 1, 1, -1.0);  // bucket -1
  const std::vector<std::int64_t> ids{2};
  const std::vector<std::int64_t> ones{1};
  const std::vector<std::int64_t> ts{-61};  // bucket -2
  r.record_many(1, {reinterpret_cast<const std::byte*>(ids.data())},
                {reinterpret_cast<const std::byte*>(ones.data())},
                {reinterpret_cast<const std::byte*>(ones.data())},
                {reinterpret_cast<const std::byte*>(ts.data()), sizeof(std::int64_t), true});
  EXPECT_EQ(r.top(5, -1.0, RankMetric::Quantity, 60), (std::vector<RankEntry>{{1, 1, 1}}));
  EXPECT_EQ(r.top(5, -1.0, RankMetric::Quantity, 120),
            (std::vector<RankEntry>{{1, 1, 1}, {2, 1, 1}}));
}

TEST(Ranking, BadArgumentsChangeNothing) {
  SlidingWindowRanking r(kWindow, kBucket);
  r.record(1, 1, 1, at(5));
  EXPECT_THROW(r.record(1, 0, 0, at(5)), InvalidArgument);
  EXPECT_THROW(r.record(1, 1, 1, std::nan("")), InvalidArgument);
  EXPECT_THROW(r.record(1, 1, 1, std::numeric_limits<double>::infinity()), InvalidArgument);
  EXPECT_THROW(r.top(0, at(5)), InvalidArgument);
  EXPECT_THROW(r.top(1, at(5), RankMetric::Quantity, 0), InvalidArgument);
  EXPECT_THROW(r.top(1, at(5), RankMetric::Quantity, 240), InvalidArgument);
  EXPECT_THROW(r.top(1, at(5), RankMetric::Quantity, 90), InvalidArgument);
  EXPECT_THROW(r.top(1, at(100) / 0.0 * 0.0), InvalidArgument);  // NaN now
  EXPECT_THROW((void)flashsale::parse_metric("revenue"), InvalidArgument);
  const std::vector<std::int64_t> ids{1, 2};
  const std::vector<std::int64_t> qty{1, 0};
  const std::vector<std::int64_t> ords{1, 0};
  const std::vector<double> ts{at(5), at(5)};
  EXPECT_THROW(r.record_many(ids, qty, ords, ts), InvalidArgument);  // the second is empty
  EXPECT_THROW(r.record_many(ids, qty, ords, std::vector<double>{at(5)}), InvalidArgument);
  const std::vector<double> bad_ts{at(5), std::nan("")};
  EXPECT_THROW(r.record_many(ids, std::vector<std::int64_t>{1, 1}, ords, bad_ts), InvalidArgument);
  EXPECT_EQ(r.totals(at(5)), (std::vector<RankEntry>{{1, 1, 1}}));
}

TEST(Ranking, FullQueueIsDrainedNotDropped) {
  SlidingWindowRanking r(kWindow, kBucket);
  const std::int64_t n = 3 * static_cast<std::int64_t>(SlidingWindowRanking::kQueueCapacity) + 17;
  for (std::int64_t i = 0; i < n; ++i) r.record(i % 10, 1, 1, at(5));
  std::int64_t total = 0;
  for (const RankEntry& e : r.totals(at(5))) total += e.quantity;
  EXPECT_EQ(total, n);
}

TEST(Ranking, ClearPairsAndMemory) {
  SlidingWindowRanking r(kWindow, kBucket);
  const std::size_t empty_bytes = r.memory_bytes();
  for (std::int64_t p = 0; p < 1000; ++p) {
    r.record(p, 1, 1, at(1));
    r.record(p, 1, 1, at(2));
  }
  EXPECT_EQ(r.pair_count(), 2000u);
  EXPECT_GT(r.memory_bytes(), empty_bytes + 2000 * 25);
  r.clear();
  EXPECT_EQ(r.pair_count(), 0u);
  EXPECT_EQ(r.memory_bytes(), empty_bytes);
  EXPECT_TRUE(r.top(5, at(2)).empty());
}

// Random operations against the obvious model, covering the fast path (full
// window at the horizon), the bucket path and expiry.
TEST(Ranking, MatchesModel) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    SlidingWindowRanking r(300, 60);  // 5 buckets
    Model model(5);
    std::int64_t clock = 100;
    for (int step = 0; step < 2000; ++step) {
      const auto op = rng() % 10;
      if (op < 7) {
        const auto product = static_cast<std::int64_t>(rng() % 12);
        auto quantity = static_cast<std::int64_t>(rng() % 7) - 2;
        const auto orders = static_cast<std::int64_t>(rng() % 3) - 1;
        if (quantity == 0 && orders == 0) quantity = 1;
        const auto bucket = clock - 7 + static_cast<std::int64_t>(rng() % 10);
        r.record(product, quantity, orders, at(bucket, static_cast<double>(rng() % 60)));
        model.record(product, quantity, orders, bucket);
      } else {
        if (rng() % 3 == 0) clock += static_cast<std::int64_t>(rng() % 4);
        const auto cur = clock - static_cast<std::int64_t>(rng() % 3);
        const auto nb = 1 + static_cast<std::int64_t>(rng() % 5);
        const auto metric = rng() % 2 ? RankMetric::Quantity : RankMetric::Orders;
        const std::size_t k = 1 + rng() % 6;
        const auto expected = model.totals(cur, nb);
        ASSERT_EQ(r.totals(at(cur, 1.0), nb * 60), expected) << "seed " << seed << " step " << step;
        ASSERT_EQ(r.top(k, at(cur, 1.0), metric, nb * 60), model_top(expected, k, metric))
            << "seed " << seed << " step " << step;
      }
    }
  }
}

// record_many applies runs of one bucket at once: with products repeating in a
// bucket, undo to zero, expired and future buckets, before and after the first
// top() (cold and live), it ends where one record() per event ends, in counts,
// pairs and memory.
TEST(Ranking, RecordManyMatchesRecord) {
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    for (const bool live : {false, true}) {
      std::mt19937_64 rng(seed);
      SlidingWindowRanking bulk(300, 60);  // 5 buckets
      SlidingWindowRanking single(300, 60);
      const std::int64_t cur = 100;
      if (live) {
        (void)bulk.top(1, at(cur, 1.0));
        (void)single.top(1, at(cur, 1.0));
      }
      for (int batch = 0; batch < 5; ++batch) {
        std::vector<std::int64_t> ids;
        std::vector<std::int64_t> qty;
        std::vector<std::int64_t> ords;
        std::vector<double> ts;
        const auto n = static_cast<std::size_t>(rng() % 3'000);
        std::int64_t bucket = cur - 7;
        for (std::size_t i = 0; i < n; ++i) {
          if (rng() % 200 == 0) bucket = cur - 7 + static_cast<std::int64_t>(rng() % 10);
          const auto product = static_cast<std::int64_t>(rng() % (1 + rng() % 300));
          auto quantity = static_cast<std::int64_t>(rng() % 7) - 3;
          const auto orders = static_cast<std::int64_t>(rng() % 3) - 1;
          if (quantity == 0 && orders == 0) quantity = 1;
          ids.push_back(product);
          qty.push_back(quantity);
          ords.push_back(orders);
          ts.push_back(at(bucket, static_cast<double>(rng() % 60)));
          single.record(product, quantity, orders, ts.back());
        }
        bulk.record_many(ids, qty, ords, ts);
        ASSERT_EQ(bulk.pair_count(), single.pair_count()) << seed << " " << live;
        ASSERT_LE(bulk.memory_bytes(), single.memory_bytes()) << seed << " " << live;
        for (std::int64_t nb = 1; nb <= 5; ++nb) {
          ASSERT_EQ(bulk.totals(at(cur, 1.0), nb * 60), single.totals(at(cur, 1.0), nb * 60))
              << seed << " " << live << " " << nb;
        }
        ASSERT_EQ(bulk.top(7, at(cur, 1.0)), single.top(7, at(cur, 1.0)));
        ASSERT_EQ(bulk.top(7, at(cur + 2, 1.0), RankMetric::Orders),
                  single.top(7, at(cur + 2, 1.0), RankMetric::Orders));
      }
    }
  }
}

// Producers record through the queue (and in bulk) while readers rank: after
// the run, the totals are exactly what was recorded, and every top() was sorted.
TEST(RankingStress, ConcurrentRecordAndTop) {
  constexpr int kProducers = 4;
  constexpr int kRecordsPerProducer = 250'000;
  constexpr std::int64_t kProducts = 500;
  SlidingWindowRanking r;  // 3 days of 60 s buckets
  const double now = 1'700'000'000.0;
  (void)r.top(1, now);  // sets the horizon: later events are counted as they drain

  std::vector<std::vector<std::int64_t>> sent(kProducers + 1,
                                              std::vector<std::int64_t>(kProducts, 0));
  std::atomic<bool> done{false};
  std::atomic<bool> unsorted{false};
  std::atomic<int> tops{0};
  std::thread reader([&] {
    while (!done.load(std::memory_order_acquire)) {
      const auto top = r.top(5, now);
      for (std::size_t i = 1; i < top.size(); ++i) {
        if (top[i - 1].quantity < top[i].quantity) unsorted.store(true);
      }
      (void)r.top(3, now, RankMetric::Orders, 3600);
      tops.fetch_add(1);
    }
  });
  std::vector<std::thread> producers;
  for (int t = 0; t < kProducers; ++t) {
    producers.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 99);
      auto& mine = sent[static_cast<std::size_t>(t)];
      for (int i = 0; i < kRecordsPerProducer; ++i) {
        const auto product = static_cast<std::int64_t>(rng() % kProducts);
        const auto quantity = static_cast<std::int64_t>(1 + rng() % 3);
        const double ts = now - static_cast<double>(rng() % 250'000);
        r.record(product, quantity, 1, ts);
        mine[static_cast<std::size_t>(product)] += quantity;
      }
    });
  }
  std::thread bulk([&] {
    auto& mine = sent[kProducers];
    std::vector<std::int64_t> ids(1000), qty(1000, 2), ords(1000, 1);
    std::vector<double> ts(1000);
    for (int batch = 0; batch < 50; ++batch) {
      for (std::size_t i = 0; i < ids.size(); ++i) {
        ids[i] = static_cast<std::int64_t>((i * 7 + static_cast<std::size_t>(batch)) % kProducts);
        ts[i] = now - static_cast<double>(i * 13);
        mine[static_cast<std::size_t>(ids[i])] += 2;
      }
      r.record_many(ids, qty, ords, ts);
    }
  });
  for (auto& th : producers) th.join();
  bulk.join();
  done.store(true, std::memory_order_release);
  reader.join();

  EXPECT_FALSE(unsorted.load());
  EXPECT_GT(tops.load(), 0);
  std::vector<std::int64_t> expected(kProducts, 0);
  for (const auto& mine : sent) {
    for (std::size_t p = 0; p < expected.size(); ++p) expected[p] += mine[p];
  }
  const auto totals = r.totals(now);
  ASSERT_EQ(totals.size(), static_cast<std::size_t>(kProducts));
  std::int64_t orders = 0;
  for (const RankEntry& e : totals) {
    EXPECT_EQ(e.quantity, expected[static_cast<std::size_t>(e.product_id)])
        << "product " << e.product_id;
    orders += e.orders;
  }
  EXPECT_EQ(orders, kProducers * kRecordsPerProducer + 50 * 1000);
}
