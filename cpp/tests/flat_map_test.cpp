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
