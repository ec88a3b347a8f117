#include "flashsale/stock_pool.hpp"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

using flashsale::InvalidArgument;
using flashsale::StockLine;
using flashsale::StockPool;
using flashsale::UnknownId;

namespace {

bool reserve(StockPool& pool, std::initializer_list<StockLine> lines) {
  return pool.try_reserve(std::span<const StockLine>(lines.begin(), lines.size()));
}

void release(StockPool& pool, std::initializer_list<StockLine> lines) {
  pool.release(std::span<const StockLine>(lines.begin(), lines.size()));
}

}  // namespace

TEST(StockPool, SetAvailableContains) {
  StockPool pool;
  EXPECT_EQ(pool.size(), 0u);
  EXPECT_FALSE(pool.contains(1));
  pool.set(1, 10);
  pool.set(-5, 0);
  EXPECT_TRUE(pool.contains(1));
  EXPECT_TRUE(pool.contains(-5));
  EXPECT_EQ(pool.available(1), 10);
  pool.set(1, 3);  // overwrite
  EXPECT_EQ(pool.available(1), 3);
  EXPECT_EQ(pool.size(), 2u);
  EXPECT_THROW(pool.set(2, -1), InvalidArgument);
  EXPECT_FALSE(pool.contains(2));
  EXPECT_THROW((void)pool.available(2), UnknownId);
}

TEST(StockPool, ManySkusGrowTheIndex) {
  StockPool pool;
  for (std::int64_t sku = 0; sku < 10'000; ++sku) pool.set(sku * 7919, sku);
  EXPECT_EQ(pool.size(), 10'000u);
  for (std::int64_t sku = 0; sku < 10'000; ++sku) ASSERT_EQ(pool.available(sku * 7919), sku);
}

TEST(StockPool, AllOrNothing) {
  StockPool pool;
  pool.set(1, 5);
  pool.set(2, 1);
  EXPECT_FALSE(reserve(pool, {{1, 2}, {2, 2}}));
  EXPECT_EQ(pool.available(1), 5);
  EXPECT_EQ(pool.available(2), 1);
  EXPECT_TRUE(reserve(pool, {{2, 1}, {1, 5}}));
  EXPECT_EQ(pool.available(1), 0);
  EXPECT_EQ(pool.available(2), 0);
  EXPECT_FALSE(reserve(pool, {{1, 1}}));
  release(pool, {{1, 2}, {2, 1}});
  EXPECT_EQ(pool.available(1), 2);
  EXPECT_EQ(pool.available(2), 1);
}

TEST(StockPool, BadArgumentsChangeNothing) {
  StockPool pool;
  pool.set(1, 5);
  pool.set(2, 5);
  EXPECT_THROW(pool.try_reserve({}), InvalidArgument);
  EXPECT_THROW(reserve(pool, {{1, 1}, {2, 0}}), InvalidArgument);
  EXPECT_THROW(reserve(pool, {{1, -1}}), InvalidArgument);
  EXPECT_THROW(reserve(pool, {{1, 1}, {2, 1}, {1, 1}}), InvalidArgument);
  EXPECT_THROW(reserve(pool, {{1, 1}, {3, 1}}), UnknownId);
  EXPECT_THROW(release(pool, {{1, 1}, {3, 1}}), UnknownId);
  EXPECT_THROW(release(pool, {{1, 0}}), InvalidArgument);
  EXPECT_THROW(pool.release({}), InvalidArgument);
  try {
    reserve(pool, {{1, 1}, {9, 1}, {8, 1}});
    FAIL();
  } catch (const UnknownId& e) {
    EXPECT_EQ(e.id(), 9);  // the first unknown in the caller's order
  }
  EXPECT_EQ(pool.available(1), 5);
  EXPECT_EQ(pool.available(2), 5);
}

TEST(StockPool, LongRequestsUseTheHeapPath) {
  StockPool pool;
  std::vector<StockLine> lines;
  for (std::int64_t sku = 40; sku > 0; --sku) {
    pool.set(sku, 2);
    lines.push_back({sku, 2});
  }
  EXPECT_TRUE(pool.try_reserve(lines));
  EXPECT_FALSE(pool.try_reserve(lines));
  pool.release(lines);
  lines.push_back({40, 1});
  EXPECT_THROW(pool.try_reserve(lines), InvalidArgument);
  for (std::int64_t sku = 1; sku <= 40; ++sku) EXPECT_EQ(pool.available(sku), 2);
}

// The flash-sale race: many threads, single units of a few SKUs. Exactly the
// stock is granted, never more.
TEST(StockPoolStress, NeverOversells) {
  constexpr int kThreads = 4;
  constexpr int kOpsPerThread = 250'000;
  constexpr std::int64_t kStock = 100'000;
  StockPool pool;
  for (std::int64_t sku = 0; sku < 4; ++sku) pool.set(sku, kStock);
  std::array<std::atomic<std::int64_t>, 4> granted{};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::array<std::int64_t, 4> mine{};
      for (int i = 0; i < kOpsPerThread; ++i) {
        const std::int64_t sku = (i + t) % 4;
        if (reserve(pool, {{sku, 1}})) ++mine[static_cast<std::size_t>(sku)];
      }
      for (std::size_t s = 0; s < 4; ++s) granted[s].fetch_add(mine[s]);
    });
  }
  for (auto& th : threads) th.join();
  for (std::int64_t sku = 0; sku < 4; ++sku) {
    const auto s = static_cast<std::size_t>(sku);
    EXPECT_EQ(granted[s].load(), kStock) << "sku " << sku;  // demand 250k > stock 100k
    EXPECT_EQ(pool.available(sku), 0) << "sku " << sku;
  }
}

// Multi-line reservations in random orders (which would deadlock a naive
// lock-per-SKU design) mixed with releases, while an observer checks that no
// counter goes negative and new SKUs are created concurrently.
TEST(StockPoolStress, MultiLineReserveAndReleaseKeepTheBooks) {
  constexpr int kThreads = 4;
  constexpr int kOpsPerThread = 300'000;
  constexpr std::int64_t kSkus = 16;
  constexpr std::int64_t kInitial = 5'000;
  StockPool pool;
  for (std::int64_t sku = 0; sku < kSkus; ++sku) pool.set(sku, kInitial);

  std::vector<std::array<std::int64_t, kSkus>> net(kThreads);  // reserved - released, per thread
  std::atomic<bool> done{false};
  std::atomic<bool> negative_seen{false};
  std::thread observer([&] {
    std::int64_t extra_sku = 1'000;
    while (!done.load(std::memory_order_acquire)) {
      for (std::int64_t sku = 0; sku < kSkus; ++sku) {
        if (pool.available(sku) < 0) negative_seen.store(true);
      }
      if (extra_sku < 50'000) pool.set(extra_sku++, 1);  // grows the index under the readers
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) * 7919 + 1);
      auto& mine = net[static_cast<std::size_t>(t)];
      mine.fill(0);
      std::vector<std::vector<StockLine>> held;
      std::vector<StockLine> lines;
      for (int i = 0; i < kOpsPerThread; ++i) {
        if (!held.empty() && (rng() % 3 == 0 || held.size() > 64)) {
          const std::size_t pick = rng() % held.size();
          pool.release(held[pick]);
          for (const StockLine& l : held[pick]) mine[static_cast<std::size_t>(l.sku)] -= l.quantity;
          held[pick] = std::move(held.back());
          held.pop_back();
          continue;
        }
        lines.clear();
        const std::size_t n = 1 + rng() % 4;
        while (lines.size() < n) {
          const auto sku = static_cast<std::int64_t>(rng() % kSkus);
          bool dup = false;
          for (const StockLine& l : lines) dup = dup || l.sku == sku;
          if (!dup) lines.push_back({sku, static_cast<std::int64_t>(1 + rng() % 20)});
        }
        if (pool.try_reserve(lines)) {
          for (const StockLine& l : lines) mine[static_cast<std::size_t>(l.sku)] += l.quantity;
          held.push_back(lines);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  done.store(true, std::memory_order_release);
  observer.join();

  EXPECT_FALSE(negative_seen.load());
  for (std::int64_t sku = 0; sku < kSkus; ++sku) {
    std::int64_t reserved = 0;
    for (const auto& mine : net) reserved += mine[static_cast<std::size_t>(sku)];
    const std::int64_t final_available = pool.available(sku);
    EXPECT_GE(final_available, 0);
    EXPECT_EQ(reserved, kInitial - final_available) << "sku " << sku;
  }
}
