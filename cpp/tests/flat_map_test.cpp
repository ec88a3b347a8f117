#include "flashsale/flat_map.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <map>
#include <random>

using flashsale::detail::FlatMap;

TEST(FlatMap, MatchesStdMapUnderInsertEraseChurn) {
  std::mt19937_64 rng(5);
  FlatMap<std::int64_t> map;
  std::map<std::int64_t, std::int64_t> model;
  const std::int64_t min_key = std::numeric_limits<std::int64_t>::min();
  for (int step = 0; step < 200'000; ++step) {
    // Few distinct keys (long probe runs, many backward shifts), plus INT64_MIN.
    const std::int64_t key =
        rng() % 50 == 0 ? min_key : static_cast<std::int64_t>(rng() % 3'000) - 1'500;
    if (rng() % 3 == 0) {
      ASSERT_EQ(map.erase(key), model.erase(key) == 1);
    } else {
      map[key] += 1;
      model[key] += 1;
    }
    if (step % 20'000 == 0) map.shrink_to_fit();
  }
  ASSERT_EQ(map.size(), model.size());
  std::map<std::int64_t, std::int64_t> seen;
  map.for_each([&seen](std::int64_t k, std::int64_t v) { seen[k] = v; });
  EXPECT_EQ(seen, model);
  for (const auto& [k, v] : model) {
    ASSERT_NE(map.find(k), nullptr);
    EXPECT_EQ(*map.find(k), v);
  }
  EXPECT_EQ(map.find(1'000'000), nullptr);
}

// reserve() then trim_reserve() keeps the contents, and leaves the capacity
// that inserting the keys one by one reaches (memory follows the keys).
TEST(FlatMap, ReserveThenTrimMatchesGrowth) {
  for (std::size_t reserved : {0u, 1u, 6u, 7u, 100u, 5'000u}) {
    for (std::size_t distinct : {0u, 1u, 6u, 7u, 100u, 700u}) {
      FlatMap<std::int64_t> map;
      FlatMap<std::int64_t> grown;
      map.reserve(reserved);
      EXPECT_EQ(map.capacity(), FlatMap<std::int64_t>::capacity_for(reserved));
      for (std::size_t i = 0; i < 1'000; ++i) {
        const auto key = static_cast<std::int64_t>(distinct == 0 ? 0 : i % distinct) * 7919;
        map[key] += 1;
        grown[key] += 1;
      }
      map.trim_reserve(0);
      EXPECT_EQ(map.capacity(), grown.capacity()) << reserved << " " << distinct;
      std::map<std::int64_t, std::int64_t> a;
      std::map<std::int64_t, std::int64_t> b;
      map.for_each([&a](std::int64_t k, std::int64_t v) { a[k] = v; });
      grown.for_each([&b](std::int64_t k, std::int64_t v) { b[k] = v; });
      EXPECT_EQ(a, b);
    }
  }
  FlatMap<std::int64_t> empty;
  empty.reserve(100);
  empty.trim_reserve(0);
  EXPECT_EQ(empty.capacity(), 0u);
  EXPECT_EQ(empty.find(3), nullptr);
  empty[3] = 4;
  EXPECT_EQ(*empty.find(3), 4);
  FlatMap<std::int64_t> kept;
  kept.reserve(100);
  kept[1] = 1;
  kept.trim_reserve(64);  // not below the floor
  EXPECT_EQ(kept.capacity(), 64u);
}
