// A small fork-aware thread pool for the CPU driver: run(nchunks, fn) calls fn(chunk) for every chunk in
// 0..nchunks-1 on the pool's threads and the caller, and returns when all are done. Workers spin briefly
// between jobs (the CRF issues several short phases per iteration) and then sleep.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pyseg {
namespace cpu {

// Where parallel work runs: a pool, or inline (serial) when already inside a parallel region.
class Executor {
 public:
  virtual ~Executor() = default;
  virtual int threads() const = 0;
  // fn(chunk) for chunk in [0, nchunks); which thread runs a chunk never changes results. A pool gives thread k
  // (0 = the caller) the chunks [nchunks k / T, nchunks (k + 1) / T) first, so that the same chunk index goes to
  // the same thread from one phase to the next (it then reads rows that it wrote itself, from its own cache);
  // a thread that runs out takes the others' remaining chunks.
  virtual void run(int nchunks, const std::function<void(int)>& fn) = 0;
  // The first of thread k's chunks when n chunks go to t threads (k = t: n).
  static int64_t share_begin(int64_t n, int64_t k, int64_t t) { return n * k / t; }

  // fn(b, e) over [0, n) in contiguous pieces of at least min_per_chunk (up to 8 per thread), run as the chunks
  // of run(): thread k starts on the k-th share of [0, n).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_per_chunk = 1024);
  void parallel_chunks(int64_t n, int nchunks, const std::function<void(int, int64_t, int64_t)>& fn);
};

class SerialExecutor final : public Executor {
 public:
  int threads() const override { return 1; }
  void run(int nchunks, const std::function<void(int)>& fn) override {
    for (int c = 0; c < nchunks; ++c) fn(c);
  }
};

class ThreadPool final : public Executor {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  int threads() const override { return threads_; }
  void run(int nchunks, const std::function<void(int)>& fn) override;

 private:
  void worker_loop(int self);
  void drain(int self);
  // Thread k's chunks: [next, end); a thread takes from its own range first, then from the others'.
  struct alignas(64) Range {
    std::atomic<int> next{0};
    int end = 0;
  };
  const int threads_;
  std::unique_ptr<Range[]> ranges_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> active_{0};
  const std::function<void(int)>* fn_ = nullptr;
  bool stop_ = false;
  std::mutex err_mu_;
  std::exception_ptr err_;  // first exception thrown by a chunk, rethrown by run()
};

// Threads to use when the caller does not say: set_default_threads(n), n <= 0 -> hardware concurrency.
int default_threads();
void set_default_threads(int n);

// Runs fn with an executor of `threads` threads (<= 0: default). The shared pool is used when it is free;
// a concurrent caller (another Python thread) gets its own short-lived pool. Re-created after fork().
void with_executor(int threads, const std::function<void(Executor&)>& fn);

}  // namespace cpu
}  // namespace pyseg
