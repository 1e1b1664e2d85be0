// Optional wall-clock phase timing of the CPU driver, compiled in with -DPYSEG_PROFILE (a profiling build:
// cmake -DCMAKE_CXX_FLAGS=-DPYSEG_PROFILE); otherwise the macros are empty.
//
//   PYSEG_PROFILE_CLOCK(prof, "lattice d=5");  // starts a clock
//   PYSEG_PROFILE_TICK(prof, "points");        // adds the ms since the last tick (or the start) to "points"
// At the end of its scope the clock prints each name's total to stderr, in first-tick order.
#pragma once

#ifdef PYSEG_PROFILE
#include <chrono>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace pyseg {
namespace cpu {

class ProfileClock {
 public:
  explicit ProfileClock(std::string scope) : scope_(std::move(scope)) {}
  ProfileClock(const ProfileClock&) = delete;
  ProfileClock& operator=(const ProfileClock&) = delete;
  ~ProfileClock() {
    for (const auto& e : totals_) std::fprintf(stderr, "%s %-12s %.2f ms\n", scope_.c_str(), e.first, e.second);
  }
  void tick(const char* name) {
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - t_).count();
    t_ = now;
    for (auto& e : totals_)
      if (e.first == name) {
        e.second += ms;
        return;
      }
    totals_.emplace_back(name, ms);
  }

 private:
  std::string scope_;
  std::chrono::steady_clock::time_point t_ = std::chrono::steady_clock::now();
  std::vector<std::pair<const char*, double>> totals_;
};

}  // namespace cpu
}  // namespace pyseg

#define PYSEG_PROFILE_CLOCK(var, scope) ::pyseg::cpu::ProfileClock var(scope)
#define PYSEG_PROFILE_TICK(var, name) (var).tick(name)
#else
#define PYSEG_PROFILE_CLOCK(var, scope) \
  do {                                  \
  } while (0)
#define PYSEG_PROFILE_TICK(var, name) \
  do {                                \
  } while (0)
#endif
