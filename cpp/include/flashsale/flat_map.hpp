// Open-addressing hash map int64 -> V (linear probing, backward-shift erase).
//
// The ranking keeps one per bucket (and one as the running totals' index). A
// slot is just the key and the value (INT64_MIN marks an empty slot; that one
// key is kept aside), so a lookup usually touches a single cache line and an
// entry costs 8 + sizeof(V) bytes divided by the load factor (<= 3/4).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>

#include "flashsale/hash.hpp"

namespace flashsale::detail {

template <class V>
class FlatMap {
 public:
  struct Slot {
    std::int64_t key;
    V value;
  };

  FlatMap() = default;
  FlatMap(FlatMap&&) noexcept = default;
  FlatMap& operator=(FlatMap&&) noexcept = default;

  [[nodiscard]] std::size_t size() const noexcept { return size_ + (has_min_key_ ? 1 : 0); }
  [[nodiscard]] bool empty() const noexcept { return size() == 0; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }

  // Value-initialized on insert.
  V& operator[](std::int64_t key) {
    if (key == kEmpty) [[unlikely]] {
      if (!has_min_key_) {
        has_min_key_ = true;
        min_key_value_ = V{};
      }
      return min_key_value_;
    }
    if (V* found = find(key)) return *found;
    if ((size_ + 1) * 4 > capacity_ * 3) rehash(capacity_ == 0 ? 8 : capacity_ * 2);
    std::size_t i = home(key);
    for (;;) {
      Slot& slot = slots_[i];
      if (slot.key == kEmpty) {
        slot.key = key;
        slot.value = V{};
        ++size_;
        return slot.value;
      }
      i = (i + 1) & mask();
    }
  }

  [[nodiscard]] V* find(std::int64_t key) noexcept {
    return const_cast<V*>(std::as_const(*this).find(key));
  }

  [[nodiscard]] const V* find(std::int64_t key) const noexcept {
    if (key == kEmpty) [[unlikely]] {
      return has_min_key_ ? &min_key_value_ : nullptr;
    }
    if (size_ == 0) return nullptr;
    std::size_t i = home(key);
    for (;;) {
      const Slot& slot = slots_[i];
      if (slot.key == key) return &slot.value;
      if (slot.key == kEmpty) return nullptr;
      i = (i + 1) & mask();
    }
  }

  bool erase(std::int64_t key) noexcept {
    if (key == kEmpty) [[unlikely]] {
      const bool had = has_min_key_;
      has_min_key_ = false;
      return had;
    }
    if (size_ == 0) return false;
    std::size_t i = home(key);
    for (;;) {
      if (slots_[i].key == key) {
        erase_at(i);
        return true;
      }
      if (slots_[i].key == kEmpty) return false;
      i = (i + 1) & mask();
    }
  }

  // Hint that `key` is about to be looked up (bulk loads look ahead).
  void prefetch(std::int64_t key) const noexcept {
    if (capacity_ != 0) __builtin_prefetch(&slots_[home(key)]);
  }

  template <class Fn>
  void for_each(Fn&& fn) const {
    for (std::size_t i = 0; i < capacity_; ++i) {
      if (slots_[i].key != kEmpty) fn(slots_[i].key, slots_[i].value);
    }
    if (has_min_key_) fn(kEmpty, min_key_value_);
  }

  void clear() noexcept {
    slots_.reset();
    capacity_ = 0;
    size_ = 0;
    has_min_key_ = false;
  }

  // Room for n keys without growing while they are inserted (bulk loads).
  void reserve(std::size_t n) {
    const std::size_t want = capacity_for(n);
    if (want > capacity_) rehash(want);
  }

  // Undoes a reserve() that was larger than the keys inserted since: shrinks
  // to at least `floor` slots, and to what inserting the current keys one by
  // one would have grown to, so memory stays proportional to the keys.
  void trim_reserve(std::size_t floor) {
    const std::size_t want = std::max(floor, capacity_for(size_));
    if (want >= capacity_) return;
    if (want == 0) {
      slots_.reset();
      capacity_ = 0;
    } else {
      rehash(want);
    }
  }

  // The capacity that inserting n keys one by one into an empty map reaches.
  [[nodiscard]] static std::size_t capacity_for(std::size_t n) noexcept {
    if (n == 0) return 0;
    std::size_t want = 8;
    while (n * 4 > want * 3) want *= 2;
    return want;
  }

  // Gives memory back after many erases (e.g. bucket expiry).
  void shrink_to_fit() {
    if (size_ == 0) {
      slots_.reset();
      capacity_ = 0;
      return;
    }
    std::size_t want = 8;
    while (size_ * 2 > want) want *= 2;  // load <= 1/2 after shrinking
    if (want < capacity_) rehash(want);
  }

  [[nodiscard]] std::size_t memory_bytes() const noexcept { return capacity_ * sizeof(Slot); }

 private:
  static constexpr std::int64_t kEmpty = std::numeric_limits<std::int64_t>::min();

  [[nodiscard]] std::size_t mask() const noexcept { return capacity_ - 1; }
  [[nodiscard]] std::size_t home(std::int64_t key) const noexcept {
    return static_cast<std::size_t>(mix_id(key)) & mask();
  }

  void erase_at(std::size_t i) noexcept {
    // Backward shift: pull later members of the probe run into the hole so
    // lookups never need tombstones.
    std::size_t hole = i;
    std::size_t j = i;
    for (;;) {
      j = (j + 1) & mask();
      if (slots_[j].key == kEmpty) break;
      const std::size_t h = home(slots_[j].key);
      // slots_[j] may move into the hole iff its home is not cyclically in (hole, j].
      const bool home_in_between = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
      if (!home_in_between) {
        slots_[hole] = std::move(slots_[j]);
        hole = j;
      }
    }
    slots_[hole].key = kEmpty;
    --size_;
  }

  void rehash(std::size_t new_capacity) {
    std::unique_ptr<Slot[]> old_slots = std::move(slots_);
    const std::size_t old_capacity = capacity_;
    slots_ = std::unique_ptr<Slot[]>(new Slot[new_capacity]);
    for (std::size_t k = 0; k < new_capacity; ++k) slots_[k].key = kEmpty;
    capacity_ = new_capacity;
    for (std::size_t k = 0; k < old_capacity; ++k) {
      if (old_slots[k].key == kEmpty) continue;
      std::size_t i = home(old_slots[k].key);
      while (slots_[i].key != kEmpty) i = (i + 1) & mask();
      slots_[i] = std::move(old_slots[k]);
    }
  }

  std::unique_ptr<Slot[]> slots_;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;  // keys in slots_ (not counting INT64_MIN)
  bool has_min_key_ = false;
  V min_key_value_{};
};

}  // namespace flashsale::detail
