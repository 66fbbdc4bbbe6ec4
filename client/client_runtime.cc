#include "client/client_runtime.h"

#include <thread>

#include "algorithms/registry.h"
#include "core/logging.h"

namespace fl::internal {

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
  if (task.kind != TaskKind::kTrain) return Status::InvalidArgument("Execute: not a training task");
  ExecuteReport report;
  report.round = task.round;
  if (cached_model_.params == nullptr || cached_model_.version != task.model_version) {
    FL_RETURN_IF_ERROR(UpdateCachedModel(task, &report));
  }
  if (cached_model_.params->layout().hash() != trainer.layout().hash()) {
    return Status::FailedPrecondition("the server's model layout differs from the trainer's");
  }
  if (learner_ == nullptr || learner_algorithm_ != task.algorithm) {
    FL_ASSIGN_OR_RETURN(learner_, CreateLearner(task.algorithm));
    learner_algorithm_ = task.algorithm;
  }
  Result<Payload> payload = learner_->Train(task, *cached_model_.params, trainer, cancel);
  if (!keep_model_cache_) cached_model_ = {};
  if (!payload.ok()) return payload.status();
  payload->meta.client_id = client_id_;
  report.train.num_examples = payload->meta.num_examples;
  report.train.dataset_size = static_cast<uint64_t>(payload->meta.weight);
  report.train.mean_loss = payload->meta.train_loss;
  report.bytes_up = payload->bytes.size();
  FL_ASSIGN_OR_RETURN(PushAck ack, link_->PushUpdate(*payload));
  report.duplicate = ack.duplicate;
  return report;
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
  uint64_t tasks_done = 0;
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
  while (!cancel.cancelled()) {
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
        FL_LOG(INFO) << "client " << options_.client_name << ": federation finished";
        return Status::Ok();
      case TaskKind::kWait:
        failures = 0;
        break;
      case TaskKind::kTrain: {
        Result<ExecuteReport> r = Execute(*task, trainer, cancel);
        if (!r.ok()) {
          if (r.status().code() == StatusCode::kCancelled) return r.status();
          FL_RETURN_IF_ERROR(failed(r.status()));
          continue;
        }
        failures = 0;
        FL_LOG(INFO) << "client " << options_.client_name << ": round " << r->round
                     << " trained on " << r->train.num_examples << " examples, loss "
                     << r->train.mean_loss << ", " << r->bytes_up << " bytes up";
        ++tasks_done;
        if (limits.on_task) limits.on_task(*r, tasks_done);
        if (limits.max_tasks > 0 && tasks_done >= limits.max_tasks) return Status::Ok();
        break;
      }
    }
  }
  return Status::Cancelled("client run cancelled");
}

}  // namespace fl::internal
