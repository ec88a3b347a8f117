#include "flashsale/coupon_gate.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

using flashsale::CouponGate;
using flashsale::InvalidArgument;
using flashsale::IssueResult;
using flashsale::UnknownId;

TEST(CouponGate, IssueOrder) {
  CouponGate gate;
  gate.configure(1, 2);
  EXPECT_TRUE(gate.contains(1));
  EXPECT_FALSE(gate.contains(2));
  EXPECT_EQ(gate.try_issue(1, 10), IssueResult::Issued);
  EXPECT_EQ(gate.try_issue(1, 10), IssueResult::AlreadyIssued);
  EXPECT_EQ(gate.try_issue(1, 11), IssueResult::Issued);
  EXPECT_EQ(gate.try_issue(1, 12), IssueResult::SoldOut);
  // The per-user check comes first, even when sold out.
  EXPECT_EQ(gate.try_issue(1, 10), IssueResult::AlreadyIssued);
  EXPECT_EQ(gate.remaining(1), 0);
  EXPECT_EQ(gate.issued_to(1, 10), 1);
  EXPECT_EQ(gate.issued_to(1, 12), 0);
}

TEST(CouponGate, PerUserLimitAndReconfigure) {
  CouponGate gate;
  gate.configure(1, 10, 2);
  EXPECT_EQ(gate.try_issue(1, 5), IssueResult::Issued);
  EXPECT_EQ(gate.try_issue(1, 5), IssueResult::Issued);
  EXPECT_EQ(gate.try_issue(1, 5), IssueResult::AlreadyIssued);
  gate.configure(1, 3, 3);  // keeps the user's two
  EXPECT_EQ(gate.remaining(1), 3);
  EXPECT_EQ(gate.per_user_limit(1), 3);
  EXPECT_EQ(gate.issued_to(1, 5), 2);
  EXPECT_EQ(gate.try_issue(1, 5), IssueResult::Issued);
  EXPECT_EQ(gate.try_issue(1, 5), IssueResult::AlreadyIssued);
  EXPECT_EQ(gate.remaining(1), 2);
}

TEST(CouponGate, RevokeAndMarkIssued) {
  CouponGate gate;
  gate.configure(1, 1);
  EXPECT_THROW(gate.revoke(1, 7), InvalidArgument);
  EXPECT_EQ(gate.try_issue(1, 7), IssueResult::Issued);
  gate.revoke(1, 7);
  EXPECT_EQ(gate.remaining(1), 1);
  EXPECT_EQ(gate.issued_to(1, 7), 0);
  EXPECT_THROW(gate.revoke(1, 7), InvalidArgument);

  gate.mark_issued(1, 8);
  gate.mark_issued(1, 8);  // idempotent
  EXPECT_EQ(gate.issued_to(1, 8), 1);
  EXPECT_EQ(gate.remaining(1), 1);  // unchanged
  EXPECT_EQ(gate.try_issue(1, 8), IssueResult::AlreadyIssued);
  gate.mark_issued(1, 8, 3);
  gate.mark_issued(1, 8, 2);  // max, not overwrite
  EXPECT_EQ(gate.issued_to(1, 8), 3);
  gate.mark_issued(1, 8, 0);
  EXPECT_EQ(gate.issued_to(1, 8), 3);
  EXPECT_THROW(gate.mark_issued(1, 8, -1), InvalidArgument);
}

TEST(CouponGate, BadArguments) {
  CouponGate gate;
  EXPECT_THROW(gate.configure(1, -1), InvalidArgument);
  EXPECT_THROW(gate.configure(1, 5, 0), InvalidArgument);
  EXPECT_FALSE(gate.contains(1));
  EXPECT_THROW(gate.try_issue(1, 1), UnknownId);
  EXPECT_THROW(gate.revoke(1, 1), UnknownId);
  EXPECT_THROW(gate.mark_issued(1, 1), UnknownId);
  EXPECT_THROW((void)gate.remaining(1), UnknownId);
  EXPECT_THROW((void)gate.issued_to(1, 1), UnknownId);
}

// A crowd of users hammering a few coupons: exactly `remaining` issued per
// coupon, never more than per_user_limit per user, and the gate's per-user
// records equal what the threads were told.
TEST(CouponGateStress, ExactUnderContention) {
  constexpr int kThreads = 4;
  constexpr int kOpsPerThread = 300'000;
  constexpr std::int64_t kCoupons = 3;
  constexpr std::int64_t kRemaining = 40'000;
  constexpr std::int64_t kLimit = 2;
  constexpr std::uint64_t kUsers = 30'000;
  CouponGate gate;
  for (std::int64_t c = 0; c < kCoupons; ++c) gate.configure(c, kRemaining, kLimit);

  using Counts = std::unordered_map<std::int64_t, std::int64_t>;
  std::vector<std::vector<Counts>> issued(kThreads, std::vector<Counts>(kCoupons));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 42);
      auto& mine = issued[static_cast<std::size_t>(t)];
      for (int i = 0; i < kOpsPerThread; ++i) {
        const auto coupon = static_cast<std::int64_t>(rng() % kCoupons);
        const auto user = static_cast<std::int64_t>(rng() % kUsers);
        if (gate.try_issue(coupon, user) == IssueResult::Issued)
          ++mine[static_cast<std::size_t>(coupon)][user];
      }
    });
  }
  for (auto& th : threads) th.join();

  for (std::int64_t c = 0; c < kCoupons; ++c) {
    Counts per_user;
    std::int64_t total = 0;
    for (const auto& mine : issued) {
      for (const auto& [user, n] : mine[static_cast<std::size_t>(c)]) {
        per_user[user] += n;
        total += n;
      }
    }
    // Demand (400k tries over 30k users x 2) exceeds the 40k coupons.
    EXPECT_EQ(total, kRemaining) << "coupon " << c;
    EXPECT_EQ(gate.remaining(c), 0);
    for (const auto& [user, n] : per_user) {
      ASSERT_LE(n, kLimit) << "user " << user;
      ASSERT_EQ(gate.issued_to(c, user), n) << "user " << user;
    }
  }
}

// Issues, revokes and database corrections racing: the books still balance.
TEST(CouponGateStress, RevokeAndMarkIssuedRacingIssue) {
  constexpr int kThreads = 4;
  constexpr int kOpsPerThread = 250'000;
  constexpr std::int64_t kRemaining = 1'000'000;  // never sells out: counts stay checkable
  constexpr std::int64_t kLimit = 3;
  constexpr std::int64_t kUsers = 5'000;
  CouponGate gate;
  gate.configure(9, kRemaining, kLimit);
  std::atomic<std::int64_t> net_issued{0};
  std::atomic<bool> over_limit{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 7);
      std::int64_t mine = 0;
      for (int i = 0; i < kOpsPerThread; ++i) {
        // Threads own disjoint users for revoke, so a revoke never races a revoke of the same
        // coupon.
        const std::int64_t user =
            static_cast<std::int64_t>(rng() % (kUsers / kThreads)) * kThreads + t;
        const auto op = rng() % 8;
        if (op < 5) {
          if (gate.try_issue(9, user) == IssueResult::Issued) ++mine;
        } else if (op < 7) {
          if (gate.issued_to(9, user) > 0) {
            gate.revoke(9, user);
            --mine;
          }
        } else {
          const std::int64_t other = static_cast<std::int64_t>(rng() % kUsers);
          if (gate.issued_to(9, other) > kLimit) over_limit.store(true);
        }
      }
      net_issued.fetch_add(mine);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(over_limit.load());
  EXPECT_EQ(kRemaining - gate.remaining(9), net_issued.load());
  std::int64_t held = 0;
  for (std::int64_t user = 0; user < kUsers; ++user) held += gate.issued_to(9, user);
  EXPECT_EQ(held, net_issued.load());
}
