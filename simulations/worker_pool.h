#ifndef FL_SIMULATIONS_WORKER_POOL_H_
#define FL_SIMULATIONS_WORKER_POOL_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fl::internal {

// A fixed set of threads that run batches of items; each thread keeps its identity
// (worker index), so per-worker state such as a trainer needs no locking.
class WorkerPool {
 public:
  // `init` runs first on each worker thread (e.g. to set per-thread LibTorch options).
  WorkerPool(int workers, std::function<void(int)> init);
  // Joins every worker thread.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Runs task(worker, item) for every item in [0, count); returns when all are done.
  // REQUIRES: one Run at a time.
  void Run(size_t count, const std::function<void(int, size_t)>& task);

 private:
  void Loop(int worker);

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(int, size_t)>* task_ = nullptr;
  size_t count_ = 0;
  size_t next_ = 0;
  size_t finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_WORKER_POOL_H_
