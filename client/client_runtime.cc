#include "client/client_runtime.h"

#include <chrono>
#include <future>
#include <map>
#include <optional>
#include <thread>

#include "algorithms/registry.h"
#include "core/logging.h"

namespace fl::internal {
namespace {

using Clock = std::chrono::steady_clock;

// Seconds from `start` to now, and `start` moved to now: consecutive phases of one task.
double Lap(Clock::time_point* start) {
  const Clock::time_point now = Clock::now();
  const double seconds = std::chrono::duration<double>(now - *start).count();
  *start = now;
  return seconds;
}

}  // namespace

TaskTimes& TaskTimes::operator+=(const TaskTimes& o) {
  fetch += o.fetch;
  set_params += o.set_params;
  train += o.train;
  get_params += o.get_params;
  encode += o.encode;
  push += o.push;
  return *this;
}

ClientRuntime::ClientRuntime(ServerLink* link, ClientRuntimeOptions options)
    : link_(link), options_(std::move(options)) {}

ClientRuntime::~ClientRuntime() = default;

Status ClientRuntime::Join() {
  if (options_.client_name.empty()) return Status::InvalidArgument("client name is empty");
  FL_ASSIGN_OR_RETURN(JoinReply reply, link_->Join(options_.enrollment_token, options_.client_name));
  client_id_ = reply.client_id;
  joined_ = true;
  return Status::Ok();
}

Result<Task> ClientRuntime::Pull(std::chrono::milliseconds wait) {
  if (!joined_) return Status::FailedPrecondition("Pull before Join");
  return link_->PullTask(wait);
}

Result<ExecuteReport> ClientRuntime::Execute(const Task& task, Trainer& trainer,
                                             const CancelToken& cancel) {
  ExecuteReport report;
  FL_RETURN_IF_ERROR(Prepare(task, trainer, &report));
  FL_ASSIGN_OR_RETURN(TrainedUpdate update, Train(task, trainer, cancel, report));
  return Send(std::move(update));
}

Status ClientRuntime::Prepare(const Task& task, Trainer& trainer, ExecuteReport* report) {
  if (task.kind != TaskKind::kTrain) return Status::InvalidArgument("Execute: not a training task");
  report->round = task.round;
  if (cached_model_.params == nullptr || cached_model_.version != task.model_version) {
    Clock::time_point start = Clock::now();
    FL_RETURN_IF_ERROR(UpdateCachedModel(task, report));
    report->times.fetch += Lap(&start);
  }
  if (cached_model_.params->layout().hash() != trainer.layout().hash()) {
    return Status::FailedPrecondition("the server's model layout differs from the trainer's");
  }
  if (learner_ == nullptr || learner_algorithm_ != task.algorithm) {
    FL_ASSIGN_OR_RETURN(learner_, CreateLearner(task.algorithm));
    learner_algorithm_ = task.algorithm;
  }
  return Status::Ok();
}

namespace {

// The user's trainer, keeping the TrainStats::metrics of its last Train (the Learner
// returns only the payload, and the task's report carries the trainer's own figures) and
// the time the Learner spent in each of its calls.
class MetricsRecorder final : public Trainer {
 public:
  MetricsRecorder(Trainer& target, TaskTimes* times) : target_(target), times_(times) {}
  const Layout& layout() const override { return target_.layout(); }
  Status GetParameters(ParamSet* out) override {
    Clock::time_point start = Clock::now();
    Status s = target_.GetParameters(out);
    times_->get_params += Lap(&start);
    return s;
  }
  Status SetParameters(const ParamSet& params) override {
    Clock::time_point start = Clock::now();
    Status s = target_.SetParameters(params);
    times_->set_params += Lap(&start);
    return s;
  }
  Result<TrainStats> Train(const TrainConfig& config, const CancelToken& cancel) override {
    Clock::time_point start = Clock::now();
    Result<TrainStats> stats = target_.Train(config, cancel);
    times_->train += Lap(&start);
    if (stats.ok()) metrics_ = stats->metrics;
    return stats;
  }
  Result<EvalStats> Evaluate() override { return target_.Evaluate(); }
  std::map<std::string, double> TakeMetrics() { return std::move(metrics_); }

 private:
  Trainer& target_;
  TaskTimes* times_;
  std::map<std::string, double> metrics_;
};

}  // namespace

Result<ClientRuntime::TrainedUpdate> ClientRuntime::Train(const Task& task, Trainer& trainer,
                                                          const CancelToken& cancel,
                                                          ExecuteReport report) {
  TaskTimes& times = report.times;  // Prepare timed only the fetch
  MetricsRecorder recorder(trainer, &times);
  Clock::time_point start = Clock::now();
  Result<Payload> payload = learner_->Train(task, *cached_model_.params, recorder, cancel);
  // What the Learner did around the trainer's calls.
  times.encode = Lap(&start) - times.set_params - times.train - times.get_params;
  if (!keep_model_cache_) cached_model_ = {};
  if (!payload.ok()) return payload.status();
  payload->meta.client_id = client_id_;
  report.train.metrics = recorder.TakeMetrics();
  report.train.num_examples = payload->meta.num_examples;
  report.train.dataset_size = static_cast<uint64_t>(payload->meta.weight);
  report.train.mean_loss = payload->meta.train_loss;
  report.bytes_up = payload->bytes.size();
  return TrainedUpdate{std::move(payload).value(), report};
}

Result<ExecuteReport> ClientRuntime::Send(TrainedUpdate update) {
  Clock::time_point start = Clock::now();
  FL_ASSIGN_OR_RETURN(PushAck ack, link_->PushUpdate(update.payload));
  update.report.times.push += Lap(&start);
  update.report.duplicate = ack.duplicate;
  return update.report;
}

Status ClientRuntime::UpdateCachedModel(const Task& task, ExecuteReport* report) {
  if (keep_model_cache_ && cached_model_.params != nullptr &&
      cached_model_.version < task.model_version) {
    const uint64_t have = cached_model_.version;
    FL_ASSIGN_OR_RETURN(ModelSnapshot got, link_->FetchModelOrReplay(task.model_version, have));
    report->bytes_down += got.wire_bytes;
    if (!got.is_replay()) {
      if (got.params == nullptr) return Status::DataLoss("the server sent neither a model nor records");
      cached_model_ = std::move(got);
      return Status::Ok();
    }
    Status replayed;
    if (got.replay_base_version != have || got.version != task.model_version ||
        got.replay_records.size() != task.model_version - have) {
      replayed = Status::DataLoss("replay records do not lead from version " +
                                  std::to_string(have) + " to " +
                                  std::to_string(task.model_version));
    } else {
      // The cached model may be shared (an in-process link hands out the server's copy):
      // replay into a private copy.
      auto model = std::make_shared<ParamSet>(*cached_model_.params);
      for (const auto& record : got.replay_records) {
        replayed = ApplyReplayRecord(task.algorithm, *record, model.get());
        if (!replayed.ok()) break;
      }
      if (replayed.ok()) {
        cached_model_.version = task.model_version;
        cached_model_.params = std::move(model);
        cached_model_.wire_bytes = got.wire_bytes;
        report->replayed_versions = got.replay_records.size();
        return Status::Ok();
      }
    }
    FL_LOG(WARNING) << "client " << options_.client_name << ": cannot replay version " << have
                    << " to " << task.model_version << " (" << replayed.ToString()
                    << "); downloading the full model";
  }
  cached_model_ = {};  // the old model is freed before the new one arrives
  FL_ASSIGN_OR_RETURN(cached_model_, link_->FetchModel(task.model_version));
  if (cached_model_.params == nullptr) return Status::DataLoss("the server sent no model");
  report->bytes_down += cached_model_.wire_bytes;
  return Status::Ok();
}

Status ClientRuntime::Run(Trainer& trainer, const CancelToken& cancel, const RunLimits& limits) {
  int failures = 0;
  uint64_t tasks_trained = 0;
  uint64_t tasks_done = 0;
  // options_.overlap: the trained update waiting to be sent with the next training.
  std::optional<TrainedUpdate> unsent;
  auto failed = [&](const Status& s) -> Status {
    ++failures;
    FL_LOG(WARNING) << "client " << options_.client_name << ": " << s.ToString();
    if (options_.max_consecutive_failures > 0 && failures >= options_.max_consecutive_failures) {
      return Status::Unavailable("giving up after " + std::to_string(failures) +
                                 " consecutive failures; last: " + s.ToString());
    }
    std::this_thread::sleep_for(options_.failure_backoff);
    return Status::Ok();
  };
  // The outcome of one Send: reported, or counted as a failure.
  auto sent = [&](Result<ExecuteReport> r) -> Status {
    if (!r.ok()) return failed(r.status());
    failures = 0;
    FL_LOG(INFO) << "client " << options_.client_name << ": round " << r->round
                 << " trained on " << r->train.num_examples << " examples, loss "
                 << r->train.mean_loss << ", " << r->bytes_up << " bytes up";
    ++tasks_done;
    if (limits.on_task) limits.on_task(*r, tasks_done);
    return Status::Ok();
  };
  auto send_unsent = [&]() -> Status {
    if (!unsent.has_value()) return Status::Ok();
    TrainedUpdate update = std::move(*unsent);
    unsent.reset();
    return sent(Send(std::move(update)));
  };
  while (!cancel.cancelled()) {
    if (limits.max_tasks > 0 && tasks_trained >= limits.max_tasks) return send_unsent();
    if (!joined_) {
      Status s = Join();
      if (s.code() == StatusCode::kUnauthenticated || s.code() == StatusCode::kInvalidArgument) {
        return s;  // retrying cannot help
      }
      if (!s.ok()) {
        FL_RETURN_IF_ERROR(failed(s));
        continue;
      }
      FL_LOG(INFO) << "client " << options_.client_name << " joined as id " << client_id_;
    }
    Result<Task> task = Pull(options_.poll_wait);
    if (!task.ok()) {
      if (task.status().code() == StatusCode::kUnauthenticated) joined_ = false;  // re-join
      FL_RETURN_IF_ERROR(failed(task.status()));
      continue;
    }
    switch (task->kind) {
      case TaskKind::kDone:
        // The server takes no more updates: one still unsent was trained in vain.
        if (unsent.has_value()) {
          FL_LOG(INFO) << "client " << options_.client_name << ": update of task "
                       << unsent->report.round << " not sent, the federation finished";
        }
        FL_LOG(INFO) << "client " << options_.client_name << ": federation finished";
        return Status::Ok();
      case TaskKind::kWait:
        failures = 0;
        FL_RETURN_IF_ERROR(send_unsent());  // nothing to overlap it with
        break;
      case TaskKind::kTrain: {
        Result<TrainedUpdate> trained = TrainOverlapping(*task, trainer, cancel, &unsent, sent);
        if (!trained.ok()) {
          if (trained.status().code() == StatusCode::kCancelled) return trained.status();
          FL_RETURN_IF_ERROR(failed(trained.status()));
          continue;
        }
        ++tasks_trained;
        if (options_.overlap) {
          unsent = std::move(trained).value();
        } else {
          FL_RETURN_IF_ERROR(sent(Send(std::move(trained).value())));
        }
        break;
      }
    }
  }
  return Status::Cancelled("client run cancelled");
}

Result<ClientRuntime::TrainedUpdate> ClientRuntime::TrainOverlapping(
    const Task& task, Trainer& trainer, const CancelToken& cancel,
    std::optional<TrainedUpdate>* unsent,
    const std::function<Status(Result<ExecuteReport>)>& sent) {
  ExecuteReport report;
  FL_RETURN_IF_ERROR(Prepare(task, trainer, &report));
  // The link is idle from here until training ends, so the earlier update goes out now,
  // on its own thread (a ServerLink is used by one thread at a time).
  std::future<Result<ExecuteReport>> sending;
  if (unsent->has_value()) {
    sending = std::async(std::launch::async,
                         [this, update = std::move(**unsent)]() mutable {
                           return Send(std::move(update));
                         });
    unsent->reset();
  }
  Result<TrainedUpdate> trained = Train(task, trainer, cancel, report);
  if (sending.valid()) FL_RETURN_IF_ERROR(sent(sending.get()));
  return trained;
}

}  // namespace fl::internal
