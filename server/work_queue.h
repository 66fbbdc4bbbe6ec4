#ifndef FL_SERVER_WORK_QUEUE_H_
#define FL_SERVER_WORK_QUEUE_H_

// A few threads that run blocking work (an fsync'd Coordinator::PushUpdate, a ledger
// row) handed over by gRPC's callback handlers, which must never block.

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fl::internal {

class WorkQueue {
 public:
  // Starts `threads` (at least 1) worker threads.
  explicit WorkQueue(int threads);
  // Runs every job already posted, then joins the threads.
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  // Runs `job` on a worker thread, in posting order as threads free up. Thread-safe.
  void Post(std::function<void()> job);

 private:
  void Loop();

  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> jobs_;  // guarded by mu_
  bool stop_ = false;                       // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace fl::internal

#endif  // FL_SERVER_WORK_QUEUE_H_
