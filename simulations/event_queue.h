#ifndef FL_SIMULATIONS_EVENT_QUEUE_H_
#define FL_SIMULATIONS_EVENT_QUEUE_H_

// A queue of simulated events, popped in the order (simulated time, client index,
// insertion sequence). The two tie-breaks make the order a pure function of what was
// pushed: equal times are common (latency-only tasks, clients released together) and
// a heap alone would pop them in an order that depends on its history.
//
// How an asynchronous fl-sim loop drives it (coordinator.mode = async):
//
//   EventQueue<Completion> queue;   // Completion: client, task, its TaskTimeline
//   double now = 0;
//   hand out tasks to idle clients at `now` while the coordinator grants them
//     (async.concurrency): for each, base version v = the coordinator's current one;
//     the finish time is known at once, because it depends only on the task's sizes
//     (model bytes down, examples, payload bytes up) and the client's profile:
//       timeline = clock.RunTask(client, now, work);
//       queue.Push(timeline.finish, client, {client, task, timeline});
//     and its training starts on a worker immediately (wall time is not simulated time:
//     the worker may finish long before or after others; only its result is kept).
//   loop:
//     event = queue.Pop();            // the earliest simulated completion
//     now = event.time;
//     wait for that task's worker result (already trained, computed against v);
//     push the update to the coordinator; staleness = current version - v is decided
//     here, in simulated-time order, so it is the same for any worker count;
//     a buffer flush advances the version at `now` (+ server cost);
//     hand the freed client (or the next eligible one) a new task at `now`.
//
// Because every completion is processed in (time, client) order and every finish time
// is computed from sizes, the sequence of versions, staleness values and sim_time_s is
// identical whatever the number of workers or the host's speed. A client whose next
// task may start before its upload finishes (client overlap) is the same pattern with
// two events per task: "upload begins" (hand the client its next task) and "upload
// done" (push); the upload begins when training is done and the client's previous
// upload has finished (VirtualClock::RunTask with uplink_free).
//
// RunSimulation's asynchronous mode (async_loop.cc) is this loop; it estimates a task's
// sizes at hand-out (the payload is charged at the dense model's size) and trains the
// handed-out tasks in one batch on the workers when the earliest completion needs its
// update.
//
// Not thread-safe: one thread (the simulation loop) owns a queue.

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace fl::internal {

template <typename Payload>
struct SimEvent {
  double time = 0;        // simulated seconds
  uint64_t client = 0;    // first tie-break
  uint64_t sequence = 0;  // second tie-break: push order
  Payload payload{};
};

template <typename Payload>
class EventQueue {
 public:
  using Event = SimEvent<Payload>;

  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }

  // Adds an event. `time` must not be NaN.
  void Push(double time, uint64_t client, Payload payload) {
    heap_.push_back(Event{time, client, next_sequence_++, std::move(payload)});
    std::push_heap(heap_.begin(), heap_.end(), Later());
  }

  // The earliest event. REQUIRES: !empty().
  const Event& Top() const { return heap_.front(); }

  // Removes and returns the earliest event. REQUIRES: !empty().
  Event Pop() {
    std::pop_heap(heap_.begin(), heap_.end(), Later());
    Event e = std::move(heap_.back());
    heap_.pop_back();
    return e;
  }

 private:
  // A max-heap under Later keeps the earliest event at the front.
  struct Later {
    bool operator()(const Event& a, const Event& b) const {
      if (a.time != b.time) return a.time > b.time;
      if (a.client != b.client) return a.client > b.client;
      return a.sequence > b.sequence;
    }
  };

  std::vector<Event> heap_;
  uint64_t next_sequence_ = 0;
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_EVENT_QUEUE_H_
