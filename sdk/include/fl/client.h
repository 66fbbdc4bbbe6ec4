#ifndef FL_SDK_INCLUDE_FL_CLIENT_H_
#define FL_SDK_INCLUDE_FL_CLIENT_H_

// Embedding a federation client. An app implements fl::Trainer (fl/trainer.h) over its own
// model and data, connects to an fl-server and runs:
//
//   fl::ClientOptions options;
//   options.server = "fl.example.org:50051";
//   options.tls_ca_file = "ca.pem";
//   options.enrollment_token = "s3cret";
//   options.name = "sensor-17";
//   auto client = fl::Client::Connect(options);
//   if (!client.ok()) ...;
//   fl::Status done = (*client)->Run(my_trainer);   // until the federation finishes
//
// The client joins, then repeatedly pulls a task, downloads the global model (or replays
// the server's records onto the one it holds), trains with the algorithm the server names
// and uploads the update. Transient network failures are retried with backoff inside.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "fl/export.h"
#include "fl/model_snapshot.h"
#include "fl/param_set.h"
#include "fl/server_link.h"
#include "fl/status.h"
#include "fl/trainer.h"

namespace fl {

struct ClientOptions {
  // fl-server address, "host:port". Required.
  std::string server;
  // PEM CA bundle the server certificate must chain to. Empty: the system's roots.
  std::string tls_ca_file;
  // PEM client certificate and key, for servers that require mutual TLS. Both or neither.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Plaintext connection; explicit opt-in, an error together with any TLS file.
  bool insecure = false;
  // Presented once when joining; the server refuses a wrong one (Unauthenticated).
  std::string enrollment_token;
  // Stable device name: re-joining with the same name keeps the same client id. Required:
  // [A-Za-z0-9._-], at most 128 characters.
  std::string name;
  // Longest wait of one task poll.
  std::chrono::milliseconds poll_wait{std::chrono::seconds(10)};
  // Run() gives up after this many consecutive failed steps (0 = never).
  int max_consecutive_failures = 20;
  // Deadline of one unary call; of one model download or update upload.
  std::chrono::milliseconds call_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds transfer_timeout{std::chrono::minutes(10)};
  // Overlap communication with computation (CO2): each trained update is uploaded while
  // the next task trains, instead of before the next task is pulled. Meant for servers in
  // asynchronous mode (coordinator.mode=async), whose staleness accounting covers the
  // older base the next task then has; against synchronous rounds the update goes out at
  // once (there is no next task until the round closes).
  bool overlap = false;
};

// Reported after each training task the client completed.
struct ClientProgress {
  uint64_t tasks_done = 0;   // in this Run() call, this one included
  uint64_t round = 0;        // of the task
  uint64_t bytes_up = 0;     // of the task's upload
  uint64_t bytes_down = 0;   // of the task's model download (0 if the cached one served)
  bool duplicate = false;    // the server had already acknowledged this update
  TrainStats train;
};

struct ClientRunOptions {
  // Stop (OK) after this many completed training tasks; 0 = until the federation is done.
  uint64_t max_tasks = 0;
  // Called on the Run() thread after each task; may be empty.
  std::function<void(const ClientProgress&)> on_task;
};

// One federation client identity. Run() is driven by one thread; Cancel() may be called
// from any thread.
class FL_EXPORT Client {
 public:
  // Checks the options and sets up the connection (made lazily on the first call).
  // InvalidArgument for inconsistent options; NotFound if a PEM file cannot be read.
  static Result<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  ~Client();

  // Joins (once), then runs tasks with `trainer` until the server says the federation is
  // done (OK), max_tasks tasks were completed (OK), Cancel() was called (Cancelled),
  // the enrollment was refused (Unauthenticated), or max_consecutive_failures steps failed
  // in a row (Unavailable, naming the last error).
  Status Run(Trainer& trainer, const ClientRunOptions& run_options = {});
  // Makes a running Run() return Cancelled as soon as the current step allows.
  void Cancel();

  // The federation's state as the server reports it.
  Result<ServerStatusInfo> GetStatus();
  // Downloads the server's current global model.
  Result<ParamSet> FetchGlobalModel();
  // Split learning (fl/split_session.h): a session with the server's body on this
  // client's connection, for the app's Trainer to open inside Train (options.round =
  // TrainConfig::round). Errors as ServerLink::OpenSplitSession. The session must not
  // outlive the Client.
  Result<std::unique_ptr<SplitSession>> OpenSplitSession(const SplitSessionOptions& options);
  // The id the server assigned at join (0 before the first join).
  uint64_t client_id() const;

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fl

#endif  // FL_SDK_INCLUDE_FL_CLIENT_H_
