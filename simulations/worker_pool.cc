#include "simulations/worker_pool.h"

namespace fl::internal {

WorkerPool::WorkerPool(int workers, std::function<void(int)> init) {
  for (int w = 0; w < workers; ++w) {
    threads_.emplace_back([this, w, init] {
      if (init) init(w);
      Loop(w);
    });
  }
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void WorkerPool::Run(size_t count, const std::function<void(int, size_t)>& task) {
  if (count == 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  task_ = &task;
  count_ = count;
  next_ = 0;
  finished_ = 0;
  ++generation_;
  work_cv_.notify_all();
  done_cv_.wait(lock, [&] { return finished_ == count_; });
  task_ = nullptr;
}

void WorkerPool::Loop(int worker) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    while (next_ < count_) {
      const size_t item = next_++;
      const auto* task = task_;
      lock.unlock();
      (*task)(worker, item);
      lock.lock();
      if (++finished_ == count_) done_cv_.notify_all();
    }
  }
}

}  // namespace fl::internal
