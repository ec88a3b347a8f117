#include "flashsale/coupon_gate.hpp"

#include <algorithm>

#include "flashsale/hash.hpp"

namespace flashsale {

CouponGate::Entry& CouponGate::entry(std::int64_t coupon_id) const {
  Entry* e = table_.find(coupon_id);
  if (e == nullptr) throw UnknownId("coupon", coupon_id);
  return *e;
}

CouponGate::UserShard& CouponGate::shard(Entry& e, std::int64_t user_id) noexcept {
  // The top bits of the mixed id pick the shard, so sequential user ids spread evenly.
  return e.shards[static_cast<std::size_t>(detail::mix_id(user_id) >> 58) % kShards];
}

void CouponGate::configure(std::int64_t coupon_id, std::int64_t remaining,
                           std::int64_t per_user_limit) {
  if (remaining < 0) throw InvalidArgument("remaining must be >= 0");
  if (per_user_limit < 1) throw InvalidArgument("per_user_limit must be >= 1");
  auto [e, created] = table_.find_or_create(coupon_id, remaining, per_user_limit);
  if (!created) {
    e->per_user_limit.store(per_user_limit, std::memory_order_release);
    e->remaining.store(remaining, std::memory_order_release);
  }
}

IssueResult CouponGate::try_issue(std::int64_t coupon_id, std::int64_t user_id) {
  Entry& e = entry(coupon_id);
  UserShard& s = shard(e, user_id);
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.counts.find(user_id);
  const std::int64_t held = it == s.counts.end() ? 0 : it->second;
  if (held >= e.per_user_limit.load(std::memory_order_acquire)) return IssueResult::AlreadyIssued;
  std::int64_t current = e.remaining.load(std::memory_order_relaxed);
  do {
    if (current <= 0) return IssueResult::SoldOut;
  } while (!e.remaining.compare_exchange_weak(current, current - 1, std::memory_order_acq_rel,
                                              std::memory_order_relaxed));
  if (it == s.counts.end()) {
    s.counts.emplace(user_id, 1);
  } else {
    ++it->second;
  }
  return IssueResult::Issued;
}

void CouponGate::revoke(std::int64_t coupon_id, std::int64_t user_id) {
  Entry& e = entry(coupon_id);
  UserShard& s = shard(e, user_id);
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.counts.find(user_id);
  if (it == s.counts.end() || it->second <= 0) {
    throw InvalidArgument("the user holds no coupon " + std::to_string(coupon_id) + " in the gate");
  }
  if (--it->second == 0) s.counts.erase(it);
  e.remaining.fetch_add(1, std::memory_order_acq_rel);
}

void CouponGate::mark_issued(std::int64_t coupon_id, std::int64_t user_id, std::int64_t count) {
  if (count < 0) throw InvalidArgument("count must be >= 0");
  Entry& e = entry(coupon_id);
  if (count == 0) return;
  UserShard& s = shard(e, user_id);
  std::lock_guard<std::mutex> lock(s.mutex);
  std::int64_t& held = s.counts[user_id];
  held = std::max(held, count);
}

std::int64_t CouponGate::remaining(std::int64_t coupon_id) const {
  return entry(coupon_id).remaining.load(std::memory_order_acquire);
}

std::int64_t CouponGate::per_user_limit(std::int64_t coupon_id) const {
  return entry(coupon_id).per_user_limit.load(std::memory_order_acquire);
}

std::int64_t CouponGate::issued_to(std::int64_t coupon_id, std::int64_t user_id) const {
  Entry& e = entry(coupon_id);
  UserShard& s = shard(e, user_id);
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.counts.find(user_id);
  return it == s.counts.end() ? 0 : it->second;
}

}  // namespace flashsale
