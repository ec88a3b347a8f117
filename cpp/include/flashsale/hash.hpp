#pragma once

#include <cstdint>

namespace flashsale::detail {

// splitmix64 finalizer: ids are often sequential, so the low bits must be mixed
// before they index a power-of-two table.
inline std::uint64_t mix_id(std::int64_t id) noexcept {
  auto x = static_cast<std::uint64_t>(id);
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace flashsale::detail
