// A map id -> Entry whose lookups never lock.
//
// Entries are allocated once and never move or die before the table does, so a
// pointer returned by find() stays valid. The index is an open-addressing array
// of atomic Entry pointers; inserts happen under a mutex, and growing publishes
// a new array while keeping the old ones alive (a reader that loaded the old
// array still probes valid memory and, at worst, misses an id inserted
// concurrently with its lookup, which is a legitimate linearization).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "flashsale/hash.hpp"

namespace flashsale::detail {

template <class Entry>  // Entry has a `const std::int64_t id` and a constructor (id, args...)
class IdTable {
 public:
  IdTable() {
    tables_.push_back(make_table(16));
    current_.store(tables_.back().get());
  }

  IdTable(const IdTable&) = delete;
  IdTable& operator=(const IdTable&) = delete;

  [[nodiscard]] Entry* find(std::int64_t id) const noexcept {
    const Table* table = current_.load(std::memory_order_acquire);
    std::size_t i = mix_id(id) & table->mask;
    for (;;) {
      Entry* e = table->slots[i].load(std::memory_order_acquire);
      if (e == nullptr) return nullptr;
      if (e->id == id) return e;
      i = (i + 1) & table->mask;
    }
  }

  // Returns the entry and whether this call created it (with Entry(id, args...)).
  template <class... Args>
  std::pair<Entry*, bool> find_or_create(std::int64_t id, Args&&... args) {
    if (Entry* e = find(id)) return {e, false};
    std::lock_guard<std::mutex> lock(mutex_);
    if (Entry* e = find(id)) return {e, false};
    entries_.push_back(std::make_unique<Entry>(id, std::forward<Args>(args)...));
    Entry* created = entries_.back().get();
    Table* table = current_.load(std::memory_order_relaxed);
    if (entries_.size() * 2 > table->mask + 1) {
      // Keep the load factor <= 1/2 so probe sequences stay short.
      tables_.push_back(make_table((table->mask + 1) * 2));
      Table* grown = tables_.back().get();
      for (const auto& e : entries_) insert(*grown, e.get());
      current_.store(grown, std::memory_order_release);
    } else {
      insert(*table, created);
    }
    size_.store(entries_.size(), std::memory_order_release);
    return {created, true};
  }

  [[nodiscard]] std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }

  // Heap bytes of the index arrays and the entries (an estimate for reports).
  [[nodiscard]] std::size_t memory_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    std::size_t bytes = entries_.size() * (sizeof(Entry) + sizeof(void*));
    for (const auto& t : tables_) bytes += (t->mask + 1) * sizeof(std::atomic<Entry*>);
    return bytes;
  }

 private:
  struct Table {
    std::size_t mask;
    std::unique_ptr<std::atomic<Entry*>[]> slots;
  };

  static std::unique_ptr<Table> make_table(std::size_t capacity) {
    auto t = std::make_unique<Table>();
    t->mask = capacity - 1;
    t->slots = std::make_unique<std::atomic<Entry*>[]>(capacity);
    for (std::size_t i = 0; i < capacity; ++i)
      t->slots[i].store(nullptr, std::memory_order_relaxed);
    return t;
  }

  static void insert(Table& table, Entry* e) noexcept {
    std::size_t i = mix_id(e->id) & table.mask;
    while (table.slots[i].load(std::memory_order_relaxed) != nullptr) i = (i + 1) & table.mask;
    // Release: the entry's fields are visible to whoever finds the pointer.
    table.slots[i].store(e, std::memory_order_release);
  }

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Entry>> entries_;  // guarded by mutex_
  std::vector<std::unique_ptr<Table>> tables_;   // guarded by mutex_; old ones kept for readers
  std::atomic<Table*> current_{nullptr};
  std::atomic<std::size_t> size_{0};
};

}  // namespace flashsale::detail
