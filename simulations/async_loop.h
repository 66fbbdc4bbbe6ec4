#ifndef FL_SIMULATIONS_ASYNC_LOOP_H_
#define FL_SIMULATIONS_ASYNC_LOOP_H_

// fl-sim's asynchronous mode (coordinator.mode=async, RunSimulation in simulator.h):
// tasks on the virtual clock's event queue (event_queue.h describes the loop). Tasks are
// handed to idle online clients, timed at hand-out, trained in batches on the workers
// and delivered to the coordinator in simulated-time order.
//
// LibTorch stays out of this header.

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "fl/status.h"
#include "fl/task.h"
#include "simulations/event_queue.h"

namespace fl::internal {

class SimulationRun;

// Runs the asynchronous federation of one SimulationRun to its end. Without
// client.overlap a client is busy from hand-out until its upload finishes; with it, only
// until its upload begins (an event of its own), so its next task downloads and trains
// while the update is still uploading. Not thread-safe; one Run per loop.
class AsyncLoop {
 public:
  // `run` is not owned, must outlive the loop and be set up (clients joined).
  explicit AsyncLoop(SimulationRun* run);
  AsyncLoop(const AsyncLoop&) = delete;
  AsyncLoop& operator=(const AsyncLoop&) = delete;

  // Until run.rounds are recorded or the coordinator says the run is done. Errors: the
  // first client or coordinator error, or DeadlineExceeded if the federation stalls.
  Status Run();

 private:
  // A task handed out and not yet delivered.
  struct Held {
    size_t client = 0;
    Task task;
    bool trained = false;
    uint64_t examples = 0;
  };
  struct AsyncEvent {
    uint64_t task = 0;
    bool delivery = true;  // false: the client's upload begins (overlap only)
  };
  // What the coordinator answered a client's pull.
  enum class Grant { kTask, kRefused, kDone };

  // Hands tasks to idle online clients while the coordinator grants them; false if it
  // refused one (every slot is held). *done once the coordinator says the run is over.
  Result<bool> HandOut(bool* done);
  Result<Grant> Offer(size_t client);
  // Whether `client` holds a task handed out and not yet delivered (then it stays
  // materialised).
  bool HoldsTask(size_t client) const;
  // Holds `task`'s base model for `client` and queues its simulated completion.
  Status Start(size_t client, Task task);
  // The first instant after now at which an idle client comes online (inf if none).
  double NextIdleOnline() const;
  // Nothing is running: moves the clock to `next_online` if that is later, else gives
  // the coordinator its tick (DeadlineExceeded after too many).
  Status WaitWhileIdle(double next_online);
  Status ProcessNextEvent();
  // Pushes a task's update at its simulated completion and records any flush it caused.
  Status Deliver(uint64_t task);
  Status RecordFlushes();
  Status TrainUntrained();
  Status TrainBatch(const std::vector<uint64_t>& batch);
  Status TrainTask(int worker, uint64_t task);

  SimulationRun& run_;
  EventQueue<AsyncEvent> events_;
  std::map<uint64_t, Held> held_;    // by task number
  std::vector<uint64_t> untrained_;  // task numbers whose training has not run, in order
  std::vector<bool> busy_;           // by client: not eligible for a new task
  // When each client's last upload ends: the next one starts no earlier.
  std::vector<double> uplink_free_;
  size_t cursor_ = 0;  // hand-out order rotates so no client index is favoured
  // Since the last recorded flush.
  uint64_t since_samples_ = 0;
  uint64_t since_attackers_ = 0;
  double since_train_seconds_ = 0;
  int stalls_ = 0;
};

}  // namespace fl::internal

#endif  // FL_SIMULATIONS_ASYNC_LOOP_H_
