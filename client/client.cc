// fl::Client: the public face of the client runtime over gRPC.

#include "fl/client.h"

#include <utility>

#include "client/client_runtime.h"
#include "client/grpc_link.h"
#include "core/client_name.h"

namespace fl {
namespace {

internal::GrpcLinkOptions LinkOptions(const ClientOptions& o) {
  internal::GrpcLinkOptions l;
  l.target = o.server;
  l.root_ca_path = o.tls_ca_file;
  l.client_cert_path = o.tls_cert_file;
  l.client_key_path = o.tls_key_file;
  l.insecure = o.insecure;
  l.call_timeout = o.call_timeout;
  l.transfer_timeout = o.transfer_timeout;
  return l;
}

}  // namespace

struct Client::Impl {
  std::unique_ptr<internal::GrpcLink> link;
  std::unique_ptr<internal::ClientRuntime> runtime;
  CancelToken cancel;

  // Status and model downloads need a session: join first if Run() has not.
  Status EnsureJoined() { return runtime->client_id() != 0 ? Status::Ok() : runtime->Join(); }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  if (options.server.empty()) return Status::InvalidArgument("ClientOptions.server is empty");
  FL_RETURN_IF_ERROR(internal::ValidateClientName(options.name));
  if (options.poll_wait.count() < 0 || options.call_timeout.count() <= 0 ||
      options.transfer_timeout.count() <= 0) {
    return Status::InvalidArgument("ClientOptions: poll_wait must be >= 0 and timeouts > 0");
  }
  auto impl = std::make_unique<Impl>();
  FL_ASSIGN_OR_RETURN(impl->link, internal::GrpcLink::Create(LinkOptions(options)));
  internal::ClientRuntimeOptions runtime;
  runtime.enrollment_token = options.enrollment_token;
  runtime.client_name = options.name;
  runtime.poll_wait = options.poll_wait;
  runtime.max_consecutive_failures = options.max_consecutive_failures;
  runtime.overlap = options.overlap;
  impl->runtime = std::make_unique<internal::ClientRuntime>(impl->link.get(), std::move(runtime));
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

Status Client::Run(Trainer& trainer, const ClientRunOptions& run_options) {
  internal::RunLimits limits;
  limits.max_tasks = run_options.max_tasks;
  if (run_options.on_task) {
    limits.on_task = [&run_options](const internal::ExecuteReport& r, uint64_t done) {
      ClientProgress p;
      p.tasks_done = done;
      p.round = r.round;
      p.bytes_up = r.bytes_up;
      p.bytes_down = r.bytes_down;
      p.duplicate = r.duplicate;
      p.train = r.train;
      run_options.on_task(p);
    };
  }
  return impl_->runtime->Run(trainer, impl_->cancel, limits);
}

void Client::Cancel() { impl_->cancel.Cancel(); }

Result<ServerStatusInfo> Client::GetStatus() {
  FL_RETURN_IF_ERROR(impl_->EnsureJoined());
  return impl_->link->GetStatus();
}

Result<std::unique_ptr<SplitSession>> Client::OpenSplitSession(
    const SplitSessionOptions& options) {
  FL_RETURN_IF_ERROR(impl_->EnsureJoined());
  return impl_->link->OpenSplitSession(options);
}

Result<ParamSet> Client::FetchGlobalModel() {
  FL_RETURN_IF_ERROR(impl_->EnsureJoined());
  FL_ASSIGN_OR_RETURN(ServerStatusInfo status, impl_->link->GetStatus());
  FL_ASSIGN_OR_RETURN(ModelSnapshot snapshot, impl_->link->FetchModel(status.model_version));
  if (snapshot.params == nullptr) return Status::DataLoss("the server sent no model");
  return *snapshot.params;
}

uint64_t Client::client_id() const { return impl_->runtime->client_id(); }

}  // namespace fl
