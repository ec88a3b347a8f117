// First-come coupon counters with at most per_user_limit coupons per user.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "flashsale/errors.hpp"
#include "flashsale/id_table.hpp"

namespace flashsale {

enum class IssueResult : int { Issued = 0, SoldOut = 1, AlreadyIssued = 2 };

class CouponGate {
 public:
  CouponGate() = default;

  // Creates the coupon or updates remaining and limit, keeping per-user records.
  // Throws InvalidArgument if remaining < 0 or per_user_limit < 1.
  void configure(std::int64_t coupon_id, std::int64_t remaining, std::int64_t per_user_limit = 1);

  // AlreadyIssued if the user holds per_user_limit (checked first), else SoldOut
  // if none remain, else takes one. Throws UnknownId.
  IssueResult try_issue(std::int64_t coupon_id, std::int64_t user_id);

  // Undoes one Issued. Throws InvalidArgument if the user holds none, UnknownId.
  void revoke(std::int64_t coupon_id, std::int64_t user_id);

  // The database says the user holds `count`: count = max(count, current). Does
  // not change remaining; idempotent. Throws InvalidArgument if count < 0, UnknownId.
  void mark_issued(std::int64_t coupon_id, std::int64_t user_id, std::int64_t count = 1);

  [[nodiscard]] std::int64_t remaining(std::int64_t coupon_id) const;
  [[nodiscard]] std::int64_t per_user_limit(std::int64_t coupon_id) const;
  [[nodiscard]] std::int64_t issued_to(std::int64_t coupon_id, std::int64_t user_id) const;
  [[nodiscard]] bool contains(std::int64_t coupon_id) const noexcept {
    return table_.find(coupon_id) != nullptr;
  }
  [[nodiscard]] std::size_t size() const noexcept { return table_.size(); }

 private:
  // Per-user counts are sharded by user so that a crowd on one coupon spreads
  // over many mutexes; the check-then-increment of one user is under one mutex,
  // which makes per_user_limit exact.
  struct alignas(64) UserShard {
    mutable std::mutex mutex;
    std::unordered_map<std::int64_t, std::int64_t> counts;
  };
  static constexpr std::size_t kShards = 64;

  struct Entry {
    Entry(std::int64_t id_, std::int64_t remaining_, std::int64_t limit_)
        : id(id_), remaining(remaining_), per_user_limit(limit_) {}
    const std::int64_t id;
    alignas(64) std::atomic<std::int64_t> remaining;
    std::atomic<std::int64_t> per_user_limit;
    std::array<UserShard, kShards> shards;
  };

  [[nodiscard]] Entry& entry(std::int64_t coupon_id) const;
  [[nodiscard]] static UserShard& shard(Entry& e, std::int64_t user_id) noexcept;

  detail::IdTable<Entry> table_;
};

}  // namespace flashsale
