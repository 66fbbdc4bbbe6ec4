#include "simulations/async_loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "simulations/sim_run.h"

namespace fl::internal {
namespace {

// What an asynchronous task will move, known when it is handed out (the clock must time
// it before it runs): the base model's download, the examples it trains (client size x
// epochs, or steps x batch) and an upload the size of the dense model in the task's
// encoding. Compressed payloads (Ferret, subsets) are charged at that dense size.
TaskWork EstimateTaskWork(const ModelSnapshot& base, const TrainConfig& config,
                          uint64_t client_examples) {
  TaskWork w;
  const uint64_t values = base.params != nullptr ? base.params->size() : 0;
  w.bytes_down = base.wire_bytes > 0 ? base.wire_bytes : values * 4;
  w.examples = config.local_steps > 0
                   ? static_cast<uint64_t>(config.local_steps) *
                         static_cast<uint64_t>(std::max(config.batch_size, 1))
                   : client_examples * static_cast<uint64_t>(std::max(config.local_epochs, 1));
  const bool half = config.upload_encoding == Encoding::kDenseF16 ||
                    config.upload_encoding == Encoding::kDenseBF16;
  w.bytes_up = values * (half ? 2 : 4);
  return w;
}

}  // namespace

AsyncLoop::AsyncLoop(SimulationRun* run)
    : run_(*run), busy_(run->num_clients_, false), uplink_free_(run->num_clients_, 0.0) {}

Status AsyncLoop::Run() {
  while (run_.rounds_done_ < run_.total_rounds_) {
    bool done = false;
    FL_ASSIGN_OR_RETURN(bool slots_free, HandOut(&done));
    if (done) return Status::Ok();
    const double next_online = slots_free ? NextIdleOnline() : run_.sim_now_;
    if (events_.empty()) {
      FL_RETURN_IF_ERROR(WaitWhileIdle(next_online));
      continue;
    }
    stalls_ = 0;
    // A client coming online before the next event is handed a task first.
    if (slots_free && next_online < events_.Top().time) {
      run_.sim_now_ = next_online;
      continue;
    }
    FL_RETURN_IF_ERROR(ProcessNextEvent());
  }
  return Status::Ok();
}

// ---- hand-out ----

Result<bool> AsyncLoop::HandOut(bool* done) {
  const size_t num_clients = run_.num_clients_;
  size_t next_cursor = cursor_;
  for (size_t n = 0; n < num_clients; ++n) {
    const size_t i = (cursor_ + n) % num_clients;
    if (busy_[i] || !run_.clock_->IsOnline(i, run_.sim_now_)) continue;
    FL_ASSIGN_OR_RETURN(Grant grant, Offer(i));
    if (grant == Grant::kDone) {
      *done = true;
      return true;
    }
    if (grant == Grant::kRefused) {
      cursor_ = next_cursor;
      return false;
    }
    next_cursor = (i + 1) % num_clients;
  }
  cursor_ = next_cursor;
  return true;
}

Result<AsyncLoop::Grant> AsyncLoop::Offer(size_t client) {
  FL_ASSIGN_OR_RETURN(VirtualClient * c, run_.Materialise(client));
  Result<Task> task = c->runtime->Pull(std::chrono::milliseconds(0));
  if (!task.ok()) return task.status().WithContext(ClientName(client) + " pull");
  if (task->kind != TaskKind::kTrain) {
    if (!HoldsTask(client)) run_.Release(client);
    return task->kind == TaskKind::kDone ? Grant::kDone : Grant::kRefused;
  }
  FL_RETURN_IF_ERROR(Start(client, std::move(*task)));
  return Grant::kTask;
}

Status AsyncLoop::Start(size_t client, Task task) {
  FL_ASSIGN_OR_RETURN(VirtualClient * held, run_.Materialise(client));
  VirtualClient& c = *held;
  Result<ModelSnapshot> base = c.link->FetchModel(task.model_version);
  if (!base.ok()) return base.status().WithContext(ClientName(client) + " fetch");
  const TaskWork work = EstimateTaskWork(*base, task.config, run_.workload_->ClientSize(client));
  const uint64_t number = task.round;
  c.deferred->Hold(number, std::move(*base));
  // Without overlap the uplink is free by now (the client was busy until then).
  const TaskTimeline timeline =
      run_.clock_->RunTask(client, run_.sim_now_, work, uplink_free_[client]);
  uplink_free_[client] = timeline.finish;
  if (run_.overlap_) events_.Push(timeline.uploading, client, AsyncEvent{number, false});
  events_.Push(timeline.finish, client, AsyncEvent{number, true});
  busy_[client] = true;
  untrained_.push_back(number);
  held_[number] = Held{client, std::move(task)};
  return Status::Ok();
}

bool AsyncLoop::HoldsTask(size_t client) const {
  for (const auto& [number, held] : held_) {
    if (held.client == client) return true;
  }
  return false;
}

double AsyncLoop::NextIdleOnline() const {
  double next = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < run_.num_clients_; ++i) {
    if (!busy_[i] && !run_.clock_->IsOnline(i, run_.sim_now_)) {
      next = std::min(next, run_.clock_->NextOnline(i, run_.sim_now_));
    }
  }
  return next;
}

// ---- the clock ----

Status AsyncLoop::WaitWhileIdle(double next_online) {
  if (std::isfinite(next_online) && next_online > run_.sim_now_) {
    run_.sim_now_ = next_online;  // everyone idle is offline: wait for the first back
    return Status::Ok();
  }
  // Nothing runs and an online client got no task: only the coordinator's tick (e.g.
  // opening the next buffer) can move it on.
  run_.coordinator_->Poll();
  if (++stalls_ > 100) {
    return Status::DeadlineExceeded(
        "asynchronous simulation stalled: no task is running and the coordinator "
        "hands out none");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return Status::Ok();
}

Status AsyncLoop::ProcessNextEvent() {
  const SimEvent<AsyncEvent> event = events_.Pop();
  run_.sim_now_ = event.time;
  if (event.payload.delivery) return Deliver(event.payload.task);
  busy_[event.client] = false;  // its upload begins: it may take the next task
  return Status::Ok();
}

// ---- delivery ----

Status AsyncLoop::Deliver(uint64_t task) {
  if (!held_.at(task).trained) FL_RETURN_IF_ERROR(TrainUntrained());
  const Held h = std::move(held_.at(task));
  held_.erase(task);
  if (!run_.overlap_) busy_[h.client] = false;
  Result<PushAck> ack = run_.active_.at(h.client).deferred->Deliver(task);
  if (!HoldsTask(h.client)) run_.Release(h.client);
  if (ack.ok()) {
    since_samples_ += h.examples;
    const uint64_t attacker = run_.byzantine_->attacks(h.client) ? 1 : 0;
    since_attackers_ += attacker;
    run_.result_.byzantine_updates += attacker;
  } else if (ack.status().code() != StatusCode::kFailedPrecondition) {
    return ack.status().WithContext(ClientName(h.client) + " push");
  }
  // FailedPrecondition: too stale. The coordinator refused it with a ledger row, as it
  // would a real client's; the client simply takes a new task.
  return RecordFlushes();
}

// Records every flush the coordinator made since the last call, each closing
// clock.server_seconds after the previous instant.
Status AsyncLoop::RecordFlushes() {
  for (auto& [summary, snapshot] : run_.TakeClosedRounds()) {
    run_.sim_now_ += run_.clock_options_.server_seconds;
    FL_RETURN_IF_ERROR(run_.RecordRound(summary, snapshot, since_samples_, since_train_seconds_,
                                        since_attackers_, held_.size() + 1, run_.sim_now_));
    since_samples_ = since_attackers_ = 0;
    since_train_seconds_ = 0;
  }
  return Status::Ok();
}

// ---- training ----

// Trains every task handed out so far. A client's runtime is not thread-safe and its
// learner may carry state from task to task, so an overlapping client's two tasks
// train one after the other, oldest first, as on a real device.
Status AsyncLoop::TrainUntrained() {
  const auto t0 = std::chrono::steady_clock::now();
  while (!untrained_.empty()) {
    std::vector<uint64_t> batch, later;
    std::set<size_t> in_batch;
    for (uint64_t t : untrained_) {
      (in_batch.insert(held_.at(t).client).second ? batch : later).push_back(t);
    }
    FL_RETURN_IF_ERROR(TrainBatch(batch));
    untrained_.swap(later);
  }
  const double seconds = SecondsSince(t0);
  run_.train_seconds_total_ += seconds;
  since_train_seconds_ += seconds;
  return Status::Ok();
}

// Trains `batch` (at most one task per client) in parallel; each trains against the
// base model held for it, so it does not matter when it runs.
Status AsyncLoop::TrainBatch(const std::vector<uint64_t>& batch) {
  std::vector<Status> errors(batch.size());
  run_.pool_->Run(batch.size(), [&](int w, size_t k) { errors[k] = TrainTask(w, batch[k]); });
  for (size_t k = 0; k < batch.size(); ++k) {
    Held& h = held_.at(batch[k]);
    if (!errors[k].ok()) {
      return errors[k].WithContext(ClientName(h.client) + " task " + std::to_string(h.task.round));
    }
    h.trained = true;
    run_.result_.train_samples += h.examples;
  }
  return Status::Ok();
}

// Runs on worker `worker`; touches only the task's own entry of held_.
Status AsyncLoop::TrainTask(int worker, uint64_t task) {
  Held& h = held_.at(task);
  FL_ASSIGN_OR_RETURN(Trainer * trainer,
                      run_.byzantine_->Bind(*run_.trainers_[worker], worker, h.client));
  VirtualClient& c = run_.active_.at(h.client);  // materialised at hand-out
  run_.trainers_[worker]->UseLink(c.link.get());
  c.deferred->BeginTraining(task);
  FL_ASSIGN_OR_RETURN(ExecuteReport r, c.runtime->Execute(h.task, *trainer, run_.cancel_));
  h.examples = r.train.num_examples;
  run_.AddClientMetrics(r);
  return Status::Ok();
}

}  // namespace fl::internal
