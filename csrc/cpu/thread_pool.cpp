#include "cpu/thread_pool.h"

#include <unistd.h>

#include <algorithm>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PYSEG_PAUSE() _mm_pause()
#else
#define PYSEG_PAUSE() std::this_thread::yield()
#endif

namespace pyseg {
namespace cpu {

void Executor::parallel_chunks(int64_t n, int nchunks, const std::function<void(int, int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (nchunks < 1) nchunks = 1;
  run(nchunks, [&](int c) {
    const int64_t b = n * c / nchunks, e = n * (c + 1) / nchunks;
    if (b < e) fn(c, b, e);
  });
}

void Executor::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_per_chunk) {
  if (n <= 0) return;
  // Up to 8 chunks per thread: a thread that the OS deschedules (busy machine) holds the others up by one chunk
  // at most, as they take what is left of its share. Every element is computed by exactly one chunk, so results
  // do not depend on this.
  const int64_t t = threads();
  int64_t nc = std::min<int64_t>(t == 1 ? 1 : 8 * t, std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_chunk)));
  if (nc <= 1) {
    fn(0, n);
    return;
  }
  parallel_chunks(n, (int)nc, [&](int, int64_t b, int64_t e) { fn(b, e); });
}

ThreadPool::ThreadPool(int threads) : threads_(threads < 1 ? 1 : threads), ranges_(new Range[threads_]) {
  for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::drain(int self) {
  const int t = threads();
  for (int i = 0; i < t; ++i) {
    Range& r = ranges_[(self + i) % t];
    for (;;) {
      const int c = r.next.fetch_add(1, std::memory_order_relaxed);
      if (c >= r.end) break;
      try {
        (*fn_)(c);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_mu_);
        if (!err_) err_ = std::current_exception();
      }
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

void ThreadPool::run(int nchunks, const std::function<void(int)>& fn) {
  if (nchunks <= 0) return;
  if (workers_.empty() || nchunks == 1) {
    for (int c = 0; c < nchunks; ++c) fn(c);
    return;
  }
  {
    // Workers register (active_) under this lock, so once active_ is 0 here nobody reads the job state.
    std::lock_guard<std::mutex> lk(mu_);
    while (active_.load(std::memory_order_acquire) > 0) PYSEG_PAUSE();
    fn_ = &fn;
    const int t = threads();
    for (int k = 0; k < t; ++k) {
      ranges_[k].next.store((int)share_begin(nchunks, k, t), std::memory_order_relaxed);
      ranges_[k].end = (int)share_begin(nchunks, k + 1, t);
    }
    pending_.store(nchunks);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  drain(0);
  int spins = 0;
  while (pending_.load(std::memory_order_acquire) > 0 || active_.load(std::memory_order_acquire) > 0) {
    if (++spins < 2000)
      PYSEG_PAUSE();
    else
      std::this_thread::yield();
  }
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lk(err_mu_);
    std::swap(err, err_);
  }
  if (err) std::rethrow_exception(err);
}

void ThreadPool::worker_loop(int self) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little for the next phase, then sleep.
    // Spin briefly (phases follow each other within microseconds), then yield, then sleep: on a busy
    // machine a spinning worker would only take time from the thread it waits for.
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < 4000) {
      if (++spins < 2000)
        PYSEG_PAUSE();
      else
        std::this_thread::yield();
    }
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      if (stop_) return;
      active_.fetch_add(1, std::memory_order_acq_rel);
    }
    drain(self);
    active_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

namespace {
std::atomic<int> g_default_threads{0};
std::mutex g_pool_mu;
std::unique_ptr<ThreadPool> g_pool;
pid_t g_pool_pid = 0;
}  // namespace

int default_threads() {
  const int n = g_default_threads.load();
  if (n > 0) return n;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : (int)hc;
}

void set_default_threads(int n) { g_default_threads.store(n > 0 ? n : 0); }

void with_executor(int threads, const std::function<void(Executor&)>& fn) {
  if (threads <= 0) threads = default_threads();
  if (threads <= 1) {
    SerialExecutor ex;
    fn(ex);
    return;
  }
  std::unique_lock<std::mutex> lk(g_pool_mu, std::try_to_lock);
  if (!lk.owns_lock()) {  // pool busy with another caller
    ThreadPool own(threads);
    fn(own);
    return;
  }
  if (g_pool && g_pool_pid != getpid()) {
    // After fork() the workers do not exist in this process: abandon (never join) the old pool.
    (void)g_pool.release();
  }
  if (!g_pool || g_pool->threads() != threads) {
    g_pool.reset();
    g_pool.reset(new ThreadPool(threads));
    g_pool_pid = getpid();
  }
  fn(*g_pool);
}

}  // namespace cpu
}  // namespace pyseg
