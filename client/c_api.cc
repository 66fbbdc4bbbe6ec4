// The C ABI of the client (fl/fl_client.h) over fl::Client and fl::Trainer.
//
// Every entry point runs its body inside Guard(): a C++ exception (std::bad_alloc from a
// huge layout, anything thrown by the runtime) becomes FL_EINTERNAL with a message instead
// of unwinding into C frames, which is undefined behaviour. Failures leave their message
// in a thread-local string, so concurrent clients on different threads do not overwrite
// each other's errors.

#include "fl/fl_client.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "fl/adaptive_predictor.h"
#include "fl/client.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "fl/trainer.h"

#ifndef FL_VERSION_STRING
#define FL_VERSION_STRING "0.0.0"
#endif

// The handles: plain structs around the C++ objects. Named in the global namespace
// because fl_client.h declares them there.
struct fl_client_options {
  fl::ClientOptions options;
};

struct fl_client {
  std::unique_ptr<fl::Client> client;
  fl::Layout layout;
  fl_task_callback task_callback = nullptr;
  void* task_callback_data = nullptr;
  // Set while fl_client_run is inside fl::Client::Run: the layout and the callback must
  // not change under it, and fl_client_free must not free it.
  std::atomic<bool> running{false};
};

struct fl_predictor {
  std::unique_ptr<fl::AdaptivePredictor> predictor;
};

namespace {

// Limits on what a caller can declare. They reject garbage (an uninitialized ndim, a
// negative or absurd dimension) before anything is allocated, and keep every size
// computation below far from size_t overflow.
constexpr size_t kMaxNameBytes = 1024;
constexpr size_t kMaxRank = 16;
constexpr size_t kMaxTensors = 1 << 20;
constexpr uint64_t kMaxParameters = uint64_t{1} << 32;  // 16 GiB of float32
// Longest option string (paths, tokens, addresses): a bound, not a format rule.
constexpr size_t kMaxOptionBytes = 4096;
// fl_client_options_set_poll_wait_ms: at most an hour, as fl-client's client.poll_wait_s.
constexpr int64_t kMaxPollWaitMs = int64_t{3600} * 1000;
// The callbacks' message buffer: 255 bytes and a NUL, as fl_client.h promises.
constexpr size_t kMessageBytes = 256;

thread_local std::string g_last_error;

int Fail(int code, std::string message) {
  g_last_error = std::move(message);
  return code;
}

int FromStatus(const fl::Status& status) {
  if (status.ok()) return FL_OK;
  g_last_error = status.ToString();
  return static_cast<int>(status.code());
}

// Records an error from inside a catch handler, where a second exception (building the
// message can allocate) would reach the noexcept boundary and terminate the app: an
// error without its message is the better outcome.
int FailNoThrow(int code, const char* function, const char* what) noexcept {
  try {
    g_last_error = std::string(function) + ": " + what;
  } catch (...) {
    g_last_error.clear();
  }
  return code;
}

// Runs `body` (returning an FL_* code) so that no exception leaves the library.
template <typename Body>
int Guard(const char* function, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return FailNoThrow(FL_ERESOURCE_EXHAUSTED, function, "out of memory");
  } catch (const std::exception& e) {
    return FailNoThrow(FL_EINTERNAL, function, e.what());
  } catch (...) {
    return FailNoThrow(FL_EINTERNAL, function, "unknown exception");
  }
}

// A NUL-terminated string of at most kMaxOptionBytes bytes; `what` names the argument.
fl::Result<std::string> CopyString(const char* value, const char* what, bool allow_empty) {
  if (value == nullptr) return fl::Status::InvalidArgument(std::string(what) + " is NULL");
  const size_t length = ::strnlen(value, kMaxOptionBytes + 1);
  if (length > kMaxOptionBytes) {
    return fl::Status::InvalidArgument(std::string(what) + " is longer than " +
                                       std::to_string(kMaxOptionBytes) + " bytes");
  }
  if (length == 0 && !allow_empty) {
    return fl::Status::InvalidArgument(std::string(what) + " is empty");
  }
  return std::string(value, length);
}

// Sets *field from a C string argument of an fl_client_options setter.
int SetStringOption(fl_client_options* options, std::string fl::ClientOptions::*field,
                    const char* value, const char* function, const char* what,
                    bool allow_empty) {
  return Guard(function, [&]() -> int {
    if (options == nullptr) return Fail(FL_EINVALID_ARGUMENT, std::string(function) + ": options is NULL");
    fl::Result<std::string> copied = CopyString(value, what, allow_empty);
    if (!copied.ok()) return FromStatus(copied.status().WithContext(function));
    options->options.*field = std::move(copied).value();
    return FL_OK;
  });
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Names the first tensor where `got` differs from `declared`, for an error message that
// tells the app what to fix instead of two hashes.
std::string DescribeLayoutMismatch(const fl::Layout& declared, const fl::Layout& got) {
  const size_t n = std::min(declared.num_tensors(), got.num_tensors());
  for (size_t i = 0; i < n; ++i) {
    const fl::TensorSpec& d = declared.tensors()[i];
    const fl::TensorSpec& g = got.tensors()[i];
    if (d.name != g.name || d.shape != g.shape) {
      return "tensor " + std::to_string(i) + " is \"" + g.name + "\" " + ShapeString(g.shape) +
             " on the server but was declared as \"" + d.name + "\" " + ShapeString(d.shape);
    }
  }
  return "the server's model has " + std::to_string(got.num_tensors()) +
         " tensors, fl_client_add_tensor declared " + std::to_string(declared.num_tensors());
}

// A callback's return code and message as a Status. Codes outside the FL_E* range are
// the app's bug; they become Unknown rather than a code the SDK would misinterpret.
fl::Status CallbackStatus(const char* callback, int code, char* message) {
  if (code == FL_OK) return fl::Status::Ok();
  message[kMessageBytes - 1] = '\0';  // the callback may have filled all 256 bytes
  std::string text = std::string(callback) + " callback failed";
  if (message[0] != '\0') text += std::string(": ") + message;
  if (code < FL_ECANCELLED || code > FL_EUNAUTHENTICATED) {
    return fl::Status::Unknown(text + " (unknown status code " + std::to_string(code) + ")");
  }
  return fl::Status(static_cast<fl::StatusCode>(code), text);
}

// The app's fl_trainer as an fl::Trainer. The callbacks run on the fl_client_run thread;
// a callback cannot be interrupted, so fl_client_cancel takes effect when it returns.
class CTrainer final : public fl::Trainer {
 public:
  CTrainer(const fl_trainer& callbacks, const fl::Layout& layout)
      : callbacks_(callbacks), layout_(layout) {}

  const fl::Layout& layout() const override { return layout_; }

  fl::Status GetParameters(fl::ParamSet* out) override {
    if (out->empty() || out->layout().hash() != layout_.hash() ||
        out->size() != layout_.total_numel()) {
      *out = fl::ParamSet(layout_);
    }
    char message[kMessageBytes] = {};
    FL_RETURN_IF_ERROR(CallbackStatus(
        "get_parameters",
        callbacks_.get_parameters(callbacks_.user_data, out->data(), out->size(), message),
        message));
    // Caught here, the app learns which side produced the NaN; the server would only
    // say that the update was rejected.
    if (!out->AllFinite()) {
      return fl::Status::InvalidArgument("get_parameters returned non-finite values");
    }
    return fl::Status::Ok();
  }

  fl::Status SetParameters(const fl::ParamSet& params) override {
    if (params.layout().hash() != layout_.hash() || params.size() != layout_.total_numel()) {
      return fl::Status::InvalidArgument("set_parameters: " +
                                         DescribeLayoutMismatch(layout_, params.layout()));
    }
    char message[kMessageBytes] = {};
    return CallbackStatus(
        "set_parameters",
        callbacks_.set_parameters(callbacks_.user_data, params.data(), params.size(), message),
        message);
  }

  fl::Result<fl::TrainStats> Train(const fl::TrainConfig& config,
                                   const fl::CancelToken& cancel) override {
    if (cancel.cancelled()) return fl::Status::Cancelled("training cancelled");
    fl_train_config c = {};
    c.local_epochs = config.local_epochs;
    c.local_steps = config.local_steps;
    c.batch_size = config.batch_size;
    c.lr = config.lr;
    c.momentum = config.momentum;
    c.weight_decay = config.weight_decay;
    c.prox_mu = config.prox_mu;
    c.seed = config.seed;
    c.round = config.round;
    fl_train_result r = {};
    char message[kMessageBytes] = {};
    FL_RETURN_IF_ERROR(
        CallbackStatus("train", callbacks_.train(callbacks_.user_data, &c, &r, message), message));
    // The result becomes the update's aggregation weight and reported loss: refuse what
    // the server would reject, with a message that names the callback.
    if (r.dataset_size == 0) {
      return fl::Status::InvalidArgument(
          "train callback reported dataset_size 0 (the update's aggregation weight)");
    }
    if (!std::isfinite(r.mean_loss)) {
      return fl::Status::InvalidArgument("train callback reported a non-finite mean_loss");
    }
    fl::TrainStats stats;
    stats.num_examples = r.num_examples;
    stats.dataset_size = r.dataset_size;
    stats.mean_loss = r.mean_loss;
    return stats;
  }

  fl::Result<fl::EvalStats> Evaluate() override {
    if (callbacks_.evaluate == nullptr) {
      return fl::Status::Unimplemented("the fl_trainer has no evaluate callback");
    }
    fl_eval_result r = {};
    char message[kMessageBytes] = {};
    FL_RETURN_IF_ERROR(
        CallbackStatus("evaluate", callbacks_.evaluate(callbacks_.user_data, &r, message), message));
    if (!std::isfinite(r.loss) || !(r.accuracy >= 0 && r.accuracy <= 1)) {
      return fl::Status::InvalidArgument(
          "evaluate callback reported a non-finite loss or an accuracy outside [0, 1]");
    }
    fl::EvalStats stats;
    stats.num_examples = r.num_examples;
    stats.loss = r.loss;
    stats.accuracy = r.accuracy;
    return stats;
  }

 private:
  fl_trainer callbacks_;  // a copy: the caller's struct may go away during the run
  const fl::Layout& layout_;
};

// The model file at `path` (`what` names the argument); an empty set for a NULL
// tuned_path, which means "no tuned part".
fl::Result<fl::ParamSet> ReadModel(const char* path, const char* what, bool null_is_empty) {
  if (path == nullptr && null_is_empty) return fl::ParamSet();
  FL_ASSIGN_OR_RETURN(const std::string copied, CopyString(path, what, /*allow_empty=*/false));
  return fl::ReadModelFile(copied);
}

// Clears fl_client::running on every way out of fl_client_run.
class RunningScope {
 public:
  explicit RunningScope(std::atomic<bool>* running) : running_(running) {}
  ~RunningScope() { running_->store(false); }
  RunningScope(const RunningScope&) = delete;
  RunningScope& operator=(const RunningScope&) = delete;

 private:
  std::atomic<bool>* running_;
};

}  // namespace

extern "C" {

const char* fl_last_error(void) { return g_last_error.c_str(); }

const char* fl_version(void) { return FL_VERSION_STRING; }

fl_client_options* fl_client_options_new(void) {
  // new (std::nothrow): the one entry point without a status code reports failure as NULL.
  fl_client_options* options = new (std::nothrow) fl_client_options();
  if (options == nullptr) Fail(FL_ERESOURCE_EXHAUSTED, "fl_client_options_new: out of memory");
  return options;
}

void fl_client_options_free(fl_client_options* options) { delete options; }

int fl_client_options_set_server(fl_client_options* options, const char* address) {
  return SetStringOption(options, &fl::ClientOptions::server, address,
                         "fl_client_options_set_server", "address", /*allow_empty=*/false);
}

int fl_client_options_set_tls_ca_file(fl_client_options* options, const char* path) {
  return SetStringOption(options, &fl::ClientOptions::tls_ca_file, path,
                         "fl_client_options_set_tls_ca_file", "path", /*allow_empty=*/true);
}

int fl_client_options_set_tls_client_cert(fl_client_options* options, const char* cert_path,
                                          const char* key_path) {
  return Guard("fl_client_options_set_tls_client_cert", [&]() -> int {
    if (options == nullptr) {
      return Fail(FL_EINVALID_ARGUMENT, "fl_client_options_set_tls_client_cert: options is NULL");
    }
    fl::Result<std::string> cert = CopyString(cert_path, "cert_path", /*allow_empty=*/true);
    fl::Result<std::string> key = CopyString(key_path, "key_path", /*allow_empty=*/true);
    if (!cert.ok()) return FromStatus(cert.status().WithContext("fl_client_options_set_tls_client_cert"));
    if (!key.ok()) return FromStatus(key.status().WithContext("fl_client_options_set_tls_client_cert"));
    if (cert->empty() != key->empty()) {
      return Fail(FL_EINVALID_ARGUMENT,
                  "fl_client_options_set_tls_client_cert: give both the certificate and the "
                  "key, or neither");
    }
    options->options.tls_cert_file = std::move(cert).value();
    options->options.tls_key_file = std::move(key).value();
    return FL_OK;
  });
}

int fl_client_options_set_insecure(fl_client_options* options, int insecure) {
  return Guard("fl_client_options_set_insecure", [&]() -> int {
    if (options == nullptr) {
      return Fail(FL_EINVALID_ARGUMENT, "fl_client_options_set_insecure: options is NULL");
    }
    options->options.insecure = insecure != 0;
    return FL_OK;
  });
}

int fl_client_options_set_enrollment_token(fl_client_options* options, const char* token) {
  return SetStringOption(options, &fl::ClientOptions::enrollment_token, token,
                         "fl_client_options_set_enrollment_token", "token", /*allow_empty=*/true);
}

int fl_client_options_set_name(fl_client_options* options, const char* name) {
  return SetStringOption(options, &fl::ClientOptions::name, name, "fl_client_options_set_name",
                         "name", /*allow_empty=*/false);
}

int fl_client_options_set_poll_wait_ms(fl_client_options* options, int64_t ms) {
  return Guard("fl_client_options_set_poll_wait_ms", [&]() -> int {
    const std::string fn = "fl_client_options_set_poll_wait_ms: ";
    if (options == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "options is NULL");
    if (ms < 0 || ms > kMaxPollWaitMs) {
      return Fail(FL_EINVALID_ARGUMENT, fn + std::to_string(ms) + " ms is outside [0, " +
                                            std::to_string(kMaxPollWaitMs) + "]");
    }
    options->options.poll_wait = std::chrono::milliseconds(ms);
    return FL_OK;
  });
}

int fl_client_options_set_max_failures(fl_client_options* options, int32_t count) {
  return Guard("fl_client_options_set_max_failures", [&]() -> int {
    const std::string fn = "fl_client_options_set_max_failures: ";
    if (options == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "options is NULL");
    if (count < 0) return Fail(FL_EINVALID_ARGUMENT, fn + std::to_string(count) + " is < 0");
    options->options.max_consecutive_failures = count;
    return FL_OK;
  });
}

int fl_client_options_set_overlap(fl_client_options* options, int overlap) {
  return Guard("fl_client_options_set_overlap", [&]() -> int {
    if (options == nullptr) {
      return Fail(FL_EINVALID_ARGUMENT, "fl_client_options_set_overlap: options is NULL");
    }
    options->options.overlap = overlap != 0;
    return FL_OK;
  });
}

int fl_client_create(const fl_client_options* options, fl_client** out) {
  return Guard("fl_client_create", [&]() -> int {
    if (out == nullptr) return Fail(FL_EINVALID_ARGUMENT, "fl_client_create: out is NULL");
    *out = nullptr;
    if (options == nullptr) return Fail(FL_EINVALID_ARGUMENT, "fl_client_create: options is NULL");
    fl::Result<std::unique_ptr<fl::Client>> client = fl::Client::Connect(options->options);
    if (!client.ok()) return FromStatus(client.status().WithContext("fl_client_create"));
    auto handle = std::make_unique<fl_client>();
    handle->client = std::move(client).value();
    *out = handle.release();
    return FL_OK;
  });
}

void fl_client_free(fl_client* client) {
  if (client == nullptr) return;
  // Freeing a client under a running fl_client_run would pull the objects out from
  // under it; the contract forbids it, and leaking is the only safe answer to a breach.
  if (client->running.load()) {
    FailNoThrow(FL_EFAILED_PRECONDITION, "fl_client_free", "fl_client_run is in progress (not freed)");
    return;
  }
  delete client;
}

int fl_client_add_tensor(fl_client* client, const char* name, const int64_t* shape, size_t ndim) {
  return Guard("fl_client_add_tensor", [&]() -> int {
    const std::string fn = "fl_client_add_tensor: ";
    if (client == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "client is NULL");
    if (client->running.load()) {
      return Fail(FL_EFAILED_PRECONDITION, fn + "the layout cannot change during fl_client_run");
    }
    if (name == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "name is NULL");
    const size_t name_length = ::strnlen(name, kMaxNameBytes + 1);
    if (name_length == 0 || name_length > kMaxNameBytes) {
      return Fail(FL_EINVALID_ARGUMENT, fn + "name must have 1 to " +
                                            std::to_string(kMaxNameBytes) + " bytes");
    }
    const std::string tensor(name, name_length);
    if (ndim > kMaxRank) {
      return Fail(FL_EINVALID_ARGUMENT, fn + "\"" + tensor + "\" has " + std::to_string(ndim) +
                                            " dimensions (at most " + std::to_string(kMaxRank) +
                                            ")");
    }
    if (ndim > 0 && shape == nullptr) {
      return Fail(FL_EINVALID_ARGUMENT, fn + "shape is NULL with ndim " + std::to_string(ndim));
    }
    if (client->layout.num_tensors() >= kMaxTensors) {
      return Fail(FL_ERESOURCE_EXHAUSTED, fn + "more than " + std::to_string(kMaxTensors) +
                                              " tensors");
    }
    if (client->layout.Find(tensor) >= 0) {
      return Fail(FL_EALREADY_EXISTS, fn + "tensor \"" + tensor + "\" was already declared");
    }
    std::vector<int64_t> dims(shape, shape + ndim);
    uint64_t numel = 1;
    for (int64_t d : dims) {
      // Each factor is <= kMaxParameters and the running product stays <= kMaxParameters,
      // so the product fits in 64 bits before it is checked.
      if (d < 0 || static_cast<uint64_t>(d) > kMaxParameters) {
        return Fail(FL_EINVALID_ARGUMENT,
                    fn + "\"" + tensor + "\" has a dimension outside [0, 2^32]: " + ShapeString(dims));
      }
      numel *= static_cast<uint64_t>(d);
      if (numel > kMaxParameters) break;
    }
    if (numel > kMaxParameters - client->layout.total_numel()) {
      return Fail(FL_ERESOURCE_EXHAUSTED, fn + "the model would exceed 2^32 parameters with \"" +
                                              tensor + "\" " + ShapeString(dims));
    }
    client->layout.Add(tensor, std::move(dims));
    return FL_OK;
  });
}

size_t fl_client_num_parameters(const fl_client* client) {
  return client == nullptr ? 0 : client->layout.total_numel();
}

int fl_client_set_task_callback(fl_client* client, fl_task_callback callback, void* user_data) {
  return Guard("fl_client_set_task_callback", [&]() -> int {
    const std::string fn = "fl_client_set_task_callback: ";
    if (client == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "client is NULL");
    if (client->running.load()) {
      return Fail(FL_EFAILED_PRECONDITION, fn + "cannot change during fl_client_run");
    }
    client->task_callback = callback;
    client->task_callback_data = user_data;
    return FL_OK;
  });
}

int fl_client_run(fl_client* client, const fl_trainer* trainer, uint64_t max_tasks) {
  return Guard("fl_client_run", [&]() -> int {
    const std::string fn = "fl_client_run: ";
    if (client == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "client is NULL");
    if (trainer == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "trainer is NULL");
    if (trainer->get_parameters == nullptr || trainer->set_parameters == nullptr ||
        trainer->train == nullptr) {
      return Fail(FL_EINVALID_ARGUMENT,
                  fn + "get_parameters, set_parameters and train must all be set");
    }
    if (client->layout.num_tensors() == 0) {
      return Fail(FL_EFAILED_PRECONDITION,
                  fn + "no tensors declared (call fl_client_add_tensor for each of the model's "
                       "tensors first)");
    }
    bool expected = false;
    if (!client->running.compare_exchange_strong(expected, true)) {
      return Fail(FL_EFAILED_PRECONDITION, fn + "already running on another thread");
    }
    RunningScope scope(&client->running);
    CTrainer adapter(*trainer, client->layout);
    fl::ClientRunOptions run_options;
    run_options.max_tasks = max_tasks;
    if (client->task_callback != nullptr) {
      const fl_task_callback callback = client->task_callback;
      void* const data = client->task_callback_data;
      run_options.on_task = [callback, data](const fl::ClientProgress& p) {
        fl_train_result r = {};
        r.num_examples = p.train.num_examples;
        r.dataset_size = p.train.dataset_size;
        r.mean_loss = p.train.mean_loss;
        callback(data, p.round, p.tasks_done, &r);
      };
    }
    return FromStatus(client->client->Run(adapter, run_options).WithContext("fl_client_run"));
  });
}

void fl_client_cancel(fl_client* client) {
  if (client == nullptr) return;
  // fl::Client::Cancel only stores to an atomic flag: safe from any thread, no throw.
  client->client->Cancel();
}

int fl_client_fetch_global_model(fl_client* client, float* values, size_t count,
                                 uint64_t* version) {
  return Guard("fl_client_fetch_global_model", [&]() -> int {
    const std::string fn = "fl_client_fetch_global_model: ";
    if (client == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "client is NULL");
    if (values == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "values is NULL");
    if (client->running.load()) {
      return Fail(FL_EFAILED_PRECONDITION, fn + "not while fl_client_run is in progress");
    }
    if (client->layout.num_tensors() == 0) {
      return Fail(FL_EFAILED_PRECONDITION, fn + "no tensors declared with fl_client_add_tensor");
    }
    if (count != client->layout.total_numel()) {
      return Fail(FL_EINVALID_ARGUMENT, fn + "count " + std::to_string(count) +
                                            " differs from the declared layout's " +
                                            std::to_string(client->layout.total_numel()) +
                                            " values");
    }
    // fl::Client::FetchGlobalModel does not say which version it downloaded. The status
    // read before and after brackets it: equal versions mean the download is that
    // version. A round closing in between is retried a few times; a federation whose
    // rounds close faster than a download completes gets FL_EABORTED.
    constexpr int kAttempts = 4;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      uint64_t before = 0;
      if (version != nullptr) {
        fl::Result<fl::ServerStatusInfo> status = client->client->GetStatus();
        if (!status.ok()) return FromStatus(status.status().WithContext("fl_client_fetch_global_model"));
        before = status->model_version;
      }
      fl::Result<fl::ParamSet> model = client->client->FetchGlobalModel();
      if (!model.ok()) return FromStatus(model.status().WithContext("fl_client_fetch_global_model"));
      if (model->layout().hash() != client->layout.hash() ||
          model->size() != client->layout.total_numel()) {
        return Fail(FL_EFAILED_PRECONDITION,
                    fn + DescribeLayoutMismatch(client->layout, model->layout()));
      }
      if (version != nullptr) {
        fl::Result<fl::ServerStatusInfo> status = client->client->GetStatus();
        if (!status.ok()) return FromStatus(status.status().WithContext("fl_client_fetch_global_model"));
        if (status->model_version != before) continue;
        *version = before;
      }
      std::memcpy(values, model->data(), model->size() * sizeof(float));
      return FL_OK;
    }
    return Fail(FL_EABORTED, fn + "the global model changed during each of " +
                                 std::to_string(kAttempts) + " downloads");
  });
}

int fl_predictor_create(const char* backbone_path, const char* tuned_path, int32_t heads,
                        int32_t top_k, fl_predictor** out) {
  return Guard("fl_predictor_create", [&]() -> int {
    if (out == nullptr) return Fail(FL_EINVALID_ARGUMENT, "fl_predictor_create: out is NULL");
    *out = nullptr;
    fl::Result<fl::ParamSet> backbone =
        ReadModel(backbone_path, "backbone_path", /*null_is_empty=*/false);
    if (!backbone.ok()) return FromStatus(backbone.status().WithContext("fl_predictor_create"));
    fl::Result<fl::ParamSet> tuned = ReadModel(tuned_path, "tuned_path", /*null_is_empty=*/true);
    if (!tuned.ok()) return FromStatus(tuned.status().WithContext("fl_predictor_create"));
    fl::PredictorOptions options;
    options.heads = heads;
    options.top_k = top_k;
    fl::Result<std::unique_ptr<fl::AdaptivePredictor>> predictor =
        fl::AdaptivePredictor::Create(*backbone, *tuned, options);
    if (!predictor.ok()) return FromStatus(predictor.status().WithContext("fl_predictor_create"));
    auto handle = std::make_unique<fl_predictor>();
    handle->predictor = std::move(predictor).value();
    *out = handle.release();
    return FL_OK;
  });
}

void fl_predictor_free(fl_predictor* predictor) { delete predictor; }

int fl_predictor_set_tuned(fl_predictor* predictor, const char* tuned_path) {
  return Guard("fl_predictor_set_tuned", [&]() -> int {
    if (predictor == nullptr)
      return Fail(FL_EINVALID_ARGUMENT, "fl_predictor_set_tuned: predictor is NULL");
    fl::Result<fl::ParamSet> tuned = ReadModel(tuned_path, "tuned_path", /*null_is_empty=*/true);
    if (!tuned.ok()) return FromStatus(tuned.status().WithContext("fl_predictor_set_tuned"));
    return FromStatus(predictor->predictor->SetTuned(*tuned).WithContext("fl_predictor_set_tuned"));
  });
}

int32_t fl_predictor_num_classes(const fl_predictor* predictor) {
  return predictor == nullptr ? 0 : predictor->predictor->num_classes();
}

int32_t fl_predictor_image_size(const fl_predictor* predictor) {
  return predictor == nullptr ? 0 : predictor->predictor->image_size();
}

int32_t fl_predictor_pool_entries(const fl_predictor* predictor) {
  return predictor == nullptr ? 0 : predictor->predictor->pool_entries();
}

int fl_predictor_predict(const fl_predictor* predictor, const uint8_t* pixels, size_t count,
                         int32_t* labels, float* logits, int32_t* entries) {
  return Guard("fl_predictor_predict", [&]() -> int {
    const std::string fn = "fl_predictor_predict: ";
    if (predictor == nullptr) return Fail(FL_EINVALID_ARGUMENT, fn + "predictor is NULL");
    if (count > 0 && (pixels == nullptr || labels == nullptr)) {
      return Fail(FL_EINVALID_ARGUMENT, fn + "pixels and labels must not be NULL");
    }
    fl::Result<std::vector<fl::Prediction>> predictions =
        predictor->predictor->Predict(pixels, count);
    if (!predictions.ok())
      return FromStatus(predictions.status().WithContext("fl_predictor_predict"));
    const auto classes = static_cast<size_t>(predictor->predictor->num_classes());
    const auto k = static_cast<size_t>(predictor->predictor->options().top_k);
    for (size_t i = 0; i < count; ++i) {
      const fl::Prediction& p = (*predictions)[i];
      labels[i] = p.label;
      if (logits != nullptr)
        std::memcpy(logits + i * classes, p.logits.data(), classes * sizeof(float));
      if (entries != nullptr) {
        for (size_t j = 0; j < k; ++j) entries[i * k + j] = p.entries.empty() ? -1 : p.entries[j];
      }
    }
    return FL_OK;
  });
}

}  // extern "C"
