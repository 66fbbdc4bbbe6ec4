// Load generator: drives a real fl-server process over loopback TLS with many concurrent
// client sessions, bounded in count (--sessions) and time (--timeout-s).
//
// It writes development certificates, starts fl-server (--server) with the limits that
// many clients need (max_clients, no join rate limit, min_clients = sessions, ...), and
// runs --sessions sessions multiplexed over --channels TLS connections on gRPC's
// callback client API (no thread per session). Each session joins under its own name,
// then loops: PullTask (long poll), FetchModel, PushUpdate of a dense f32 delta, until
// the server answers "done". In sync mode every session trains in each of --rounds
// rounds; in async mode the server flushes --flushes buffers of --buffer updates.
//
// Reports updates per second, PushUpdate latency (p50/p99), the server's thread count
// (/proc/<pid>/status Threads, sampled) and peak resident memory (VmHWM), and checks that
// every update the server acknowledged is in its ledger (state.db, read after it exits).
// With --hold-polls the sessions only join and hold one long poll each (no round can
// open) while the server's threads are sampled.
//
//   load_gen --sessions 10000 --channels 64 --mode sync --rounds 1 --model-params 1000

#include <grpcpp/grpcpp.h>
#include <sqlite3.h>
#include <sys/types.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "codec/dense_codec.h"
#include "crypto/sha256.h"
#include "fl/v1/fl.grpc.pb.h"
#include "proto/wire.h"
#include "server/dev_certs.h"
#include "subprocess.h"

namespace fl::internal {
namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  int sessions = 200;
  int channels = 16;
  double timeout_s = 300;
  uint64_t model_params = 1000;
  std::string mode = "sync";
  int rounds = 1;
  int flushes = 3;
  int buffer = 0;        // async: updates per flush; 0: sessions / 4
  int concurrency = 0;   // async: tasks held at once; 0: sessions
  int inflight_mb = 0;   // server.max_inflight_upload_mb; 0: the server's default
  int upload_threads = 4;
  bool durable = true;
  bool hold_polls = false;
  double hold_s = 10;
  std::string server = FL_BINARY_DIR "/server/fl-server";
  std::string dir;
};

// "Threads:" and "VmHWM:"/"VmRSS:" (kB) of a process.
struct Usage {
  int64_t threads = 0;
  int64_t hwm_kb = 0;
  int64_t rss_kb = 0;
};

Usage ReadUsage(pid_t pid) {
  Usage usage;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (status >> key) {
    if (key == "Threads:") status >> usage.threads;
    if (key == "VmHWM:") status >> usage.hwm_kb;
    if (key == "VmRSS:") status >> usage.rss_kb;
    status.ignore(1 << 20, '\n');
  }
  return usage;
}

// Everything the sessions share: channels, the update bytes, counters.
struct Shared {
  std::vector<std::unique_ptr<v1::FederatedLearning::Stub>> stubs;
  Clock::time_point deadline;
  bool hold_polls = false;
  uint32_t hold_ms = 0;
  std::string delta;  // the encoded dense update every session sends
  std::string delta_sha256;
  std::atomic<uint64_t> acknowledged{0};
  std::atomic<uint64_t> duplicates{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> failed{0};
  // Calls cut off because the server stopped after the federation finished (some
  // session was already told "done"): uploads still queued then, polls in flight.
  std::atomic<bool> done_seen{false};
  std::atomic<uint64_t> cut_at_end{0};
  std::atomic<uint64_t> polls{0};
  std::mutex mu;
  std::condition_variable done_cv;
  int running = 0;                       // guarded by mu
  std::vector<double> push_latency_ms;   // guarded by mu
  std::string first_error;               // guarded by mu
};

class Session;

// PushUpdate: the header, then the shared delta in chunks of kMaxChunkBytes.
class Upload final : public grpc::ClientWriteReactor<v1::UpdateChunk> {
 public:
  Upload(Session* session, const v1::UpdateHeader& header, const std::string& bytes)
      : session_(session), bytes_(bytes) {
    *chunk_.mutable_header() = header;
  }
  grpc::ClientContext* context() { return &context_; }
  v1::PushUpdateResponse* response() { return &response_; }
  void Begin() {
    started_ = Clock::now();
    StartWrite(&chunk_);
    StartCall();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) return;  // the call failed; OnDone reports it
    if (offset_ >= bytes_.size()) return StartWritesDone();
    const size_t n = std::min(kMaxChunkBytes, bytes_.size() - offset_);
    chunk_.Clear();
    chunk_.set_data(bytes_.data() + offset_, n);
    offset_ += n;
    StartWrite(&chunk_);
  }
  void OnDone(const grpc::Status& status) override;

 private:
  Session* const session_;
  const std::string& bytes_;
  grpc::ClientContext context_;
  v1::UpdateChunk chunk_;
  v1::PushUpdateResponse response_;
  size_t offset_ = 0;
  Clock::time_point started_;
};

// FetchModel: reads the header (layout hash, size) and drops the model bytes.
class Download final : public grpc::ClientReadReactor<v1::ModelChunk> {
 public:
  explicit Download(Session* session) : session_(session) {}
  grpc::ClientContext* context() { return &context_; }
  void Begin() {
    StartRead(&chunk_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (chunk_.has_header()) header_ = chunk_.header();
    StartRead(&chunk_);
  }
  void OnDone(const grpc::Status& status) override;

 private:
  Session* const session_;
  grpc::ClientContext context_;
  v1::ModelChunk chunk_;
  v1::ModelHeader header_;
};

// One client: Join, then PullTask / FetchModel / PushUpdate until done. One call at a
// time, each started from the previous one's callback.
class Session {
 public:
  Session(Shared* shared, int index)
      : shared_(shared), stub_(shared->stubs[index % shared->stubs.size()].get()),
        name_("load-" + std::to_string(index)) {}

  void Start() {
    NewContext(/*authenticated=*/false);
    join_request_.set_enrollment_token("load-token");
    join_request_.set_client_name(name_);
    stub_->async()->Join(context_.get(), &join_request_, &join_response_,
                         [this](grpc::Status status) {
                           if (!status.ok()) return Fail("Join", status);
                           token_ = join_response_.session_token();
                           Poll();
                         });
  }

  void Poll() {
    if (Clock::now() >= shared_->deadline) return Fail("PullTask", grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "load timeout"));
    NewContext(true);
    poll_request_.set_wait_ms(shared_->hold_polls ? shared_->hold_ms : 20000);
    shared_->polls.fetch_add(1);
    stub_->async()->PullTask(context_.get(), &poll_request_, &poll_response_,
                             [this](grpc::Status status) { OnTask(status); });
  }

  void OnTask(const grpc::Status& status) {
    if (!status.ok()) return Fail("PullTask", status);
    if (shared_->hold_polls) return End();
    Result<Task> task = FromProto(poll_response_.task());
    if (!task.ok()) return Fail("PullTask", ToGrpcStatus(task.status()));
    if (task->kind == TaskKind::kDone) {
      shared_->done_seen.store(true);
      return End();
    }
    if (task->kind != TaskKind::kTrain) return Poll();
    task_ = *task;
    auto* download = new Download(this);
    Authenticate(download->context());
    fetch_request_.set_version(task_.model_version);
    fetch_request_.set_format(v1::MODEL_FORMAT_PARAM_SET);
    stub_->async()->FetchModel(download->context(), &fetch_request_, download);
    download->Begin();
  }

  void OnModel(const grpc::Status& status, const v1::ModelHeader& header) {
    if (!status.ok()) return Fail("FetchModel", status);
    UpdateMeta meta;
    meta.round = task_.round;
    meta.base_version = task_.model_version;
    meta.weight = 1;
    meta.num_examples = 1;
    meta.layout_hash = header.layout_hash();
    meta.encoding = Encoding::kDenseF32;
    meta.sha256 = shared_->delta_sha256;
    v1::UpdateHeader update_header;
    ToProto(meta, shared_->delta.size(), &update_header);
    auto* upload = new Upload(this, update_header, shared_->delta);
    Authenticate(upload->context());
    stub_->async()->PushUpdate(upload->context(), upload->response(), upload);
    upload->Begin();
  }

  void OnPushed(const grpc::Status& status, const v1::PushUpdateResponse& response,
                double latency_ms) {
    if (status.ok()) {
      (response.duplicate() ? shared_->duplicates : shared_->acknowledged).fetch_add(1);
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->push_latency_ms.push_back(latency_ms);
    } else if (status.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
               status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      // Too stale (async), the round moved on, or (a server that refuses uploads over
      // its budget) no room: counted, and the session asks for its next task.
      shared_->refused.fetch_add(1);
    } else {
      return Fail("PushUpdate", status);
    }
    Poll();
  }

 private:
  void NewContext(bool authenticated) {
    context_ = std::make_unique<grpc::ClientContext>();
    if (authenticated) {
      Authenticate(context_.get());
    } else {
      Bound(context_.get());
    }
  }
  void Authenticate(grpc::ClientContext* context) {
    context->AddMetadata("authorization", "Bearer " + token_);
    Bound(context);
  }
  // Every call ends by the run's deadline; one made while its connection is still
  // being set up (thousands of sessions start at once) waits for it instead of failing.
  void Bound(grpc::ClientContext* context) {
    context->set_wait_for_ready(true);
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              shared_->deadline - Clock::now()));
  }
  void Fail(const char* what, const grpc::Status& status) {
    if (shared_->done_seen.load()) {
      shared_->cut_at_end.fetch_add(1);
      return End();
    }
    shared_->failed.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      if (shared_->first_error.empty()) {
        shared_->first_error = name_ + " " + what + ": " + std::to_string(status.error_code()) +
                               " " + status.error_message();
      }
    }
    End();
  }
  void End() {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (--shared_->running == 0) shared_->done_cv.notify_all();
  }

  Shared* const shared_;
  v1::FederatedLearning::Stub* const stub_;
  const std::string name_;
  std::string token_;
  std::unique_ptr<grpc::ClientContext> context_;
  v1::JoinRequest join_request_;
  v1::JoinResponse join_response_;
  v1::PullTaskRequest poll_request_;
  v1::PullTaskResponse poll_response_;
  v1::FetchModelRequest fetch_request_;
  Task task_;
};

void Upload::OnDone(const grpc::Status& status) {
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
  Session* session = session_;
  v1::PushUpdateResponse response = response_;
  delete this;
  session->OnPushed(status, response, ms);
}

void Download::OnDone(const grpc::Status& status) {
  Session* session = session_;
  v1::ModelHeader header = header_;
  delete this;
  session->OnModel(status, header);
}

// Accepted rows (status 0) in the server's ledger.
Result<int64_t> AcceptedLedgerRows(const std::string& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return Status::Unavailable("cannot open " + db_path);
  }
  sqlite3_stmt* stmt = nullptr;
  int64_t n = -1;
  if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM ledger WHERE status_code = 0", -1, &stmt,
                         nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    n = sqlite3_column_int64(stmt, 0);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  if (n < 0) return Status::Internal("cannot count the ledger of " + db_path);
  return n;
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  return v[i];
}

std::vector<std::string> ServerArgs(const Flags& f, const DevCertPaths& certs,
                                    const std::string& state) {
  const int n = f.sessions;
  std::vector<std::string> args = {
      f.server, "--listen", "127.0.0.1:0", "--tls-cert", certs.server_cert, "--tls-key",
      certs.server_key, "--model", "random:" + std::to_string(f.model_params), "--state-dir",
      state, "--enrollment-token", "load-token",
      "--rounds", std::to_string(f.mode == "async" ? f.flushes : f.rounds)};
  std::vector<std::string> sets = {
      "coordinator.mode=" + f.mode,
      "coordinator.max_clients=" + std::to_string(n),
      "coordinator.joins_per_second=0",  // no join rate limit: every session joins at once
      // No round opens before every session joined (never, when holding polls).
      "coordinator.min_clients=" + std::to_string(f.hold_polls ? n + 1 : n),
      "coordinator.clients_per_round=" + std::to_string(n),
      "coordinator.min_updates=" + std::to_string(n),
      "coordinator.round_deadline_s=3600",
      "coordinator.client_timeout_s=3600",
      "coordinator.durable=" + std::string(f.durable ? "true" : "false"),
      "coordinator.max_update_mb=" + std::to_string(std::max<uint64_t>(1, (f.model_params * 4 >> 20) + 1)),
      "coordinator.max_rejected_rows_per_client=1000",
      "server.max_poll_wait_s=30",
      "server.drain_s=1",
  };
  if (f.inflight_mb > 0) sets.push_back("server.max_inflight_upload_mb=" + std::to_string(f.inflight_mb));
  if (f.upload_threads > 0) sets.push_back("server.upload_threads=" + std::to_string(f.upload_threads));
  if (f.mode == "async") {
    sets.push_back("async.concurrency=" + std::to_string(f.concurrency > 0 ? f.concurrency : n));
    sets.push_back("async.buffer_size=" + std::to_string(f.buffer > 0 ? f.buffer : std::max(1, n / 4)));
    sets.push_back("async.max_staleness=1000");
  }
  for (const std::string& s : sets) {
    args.push_back("--set");
    args.push_back(s);
  }
  return args;
}

int Run(const Flags& f) {
  namespace fs = std::filesystem;
  const std::string dir =
      f.dir.empty() ? (fs::temp_directory_path() / ("fl-load-" + std::to_string(::getpid()))).string()
                    : f.dir;
  fs::remove_all(dir);
  fs::create_directories(dir);
  Result<DevCertPaths> certs = MakeDevCerts(dir + "/certs");
  if (!certs.ok()) {
    std::fprintf(stderr, "certs: %s\n", certs.status().ToString().c_str());
    return 1;
  }
  const std::string state = dir + "/state";
  const std::string log = dir + "/server.log";
  std::unique_ptr<Subprocess> server = Subprocess::Start(ServerArgs(f, *certs, state), log);
  if (server == nullptr) return 1;
  std::string port;
  for (int i = 0; i < 600 && port.empty(); ++i) {
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::smatch m;
    if (std::regex_search(text, m, std::regex("ready on port ([0-9]+)"))) port = m[1].str();
    if (port.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (port.empty()) {
    std::fprintf(stderr, "fl-server did not start; see %s\n", log.c_str());
    return 1;
  }
  const Usage idle = ReadUsage(server->pid());

  Shared shared;
  shared.deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000));
  shared.hold_polls = f.hold_polls;
  shared.hold_ms = static_cast<uint32_t>(f.hold_s * 1000);
  std::vector<float> delta(f.model_params, 0.001f);
  if (Status s = EncodeDense(delta, Encoding::kDenseF32, &shared.delta); !s.ok()) return 1;
  delta = {};
  shared.delta_sha256 = Sha256(shared.delta);
  grpc::SslCredentialsOptions ssl;
  {
    std::ifstream in(certs->ca_cert);
    ssl.pem_root_certs.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  for (int c = 0; c < f.channels; ++c) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one TCP connection per channel
    args.SetInt("fl.load.channel", c);
    args.SetMaxReceiveMessageSize(kMaxMessageBytes);
    shared.stubs.push_back(v1::FederatedLearning::NewStub(
        grpc::CreateCustomChannel("localhost:" + port, grpc::SslCredentials(ssl), args)));
  }

  std::vector<std::unique_ptr<Session>> sessions;
  for (int i = 0; i < f.sessions; ++i) sessions.push_back(std::make_unique<Session>(&shared, i));
  shared.running = f.sessions;
  Usage peak = idle;
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling.load()) {
      const Usage u = ReadUsage(server->pid());
      if (u.threads == 0) break;  // exited
      peak.threads = std::max(peak.threads, u.threads);
      peak.hwm_kb = std::max(peak.hwm_kb, u.hwm_kb);
      peak.rss_kb = std::max(peak.rss_kb, u.rss_kb);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  const auto start = Clock::now();
  for (auto& s : sessions) s->Start();
  bool finished = false;
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    finished = shared.done_cv.wait_until(lock, shared.deadline + std::chrono::seconds(30),
                                         [&] { return shared.running == 0; });
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!finished) {
    std::fprintf(stderr, "timed out with sessions still running; see %s\n", log.c_str());
    std::_Exit(1);  // callbacks still reference the sessions
  }
  // The server exits after its drain once the federation is done; the ledger is read
  // after that.
  const std::optional<int> code =
      f.hold_polls ? std::optional<int>() : server->Wait(std::chrono::seconds(120));
  sampling.store(false);
  sampler.join();
  if (f.hold_polls) ::kill(server->pid(), SIGTERM), server->Wait(std::chrono::seconds(60));
  Result<int64_t> ledger = AcceptedLedgerRows(state + "/state.db");

  std::vector<double> latencies;
  {
    std::lock_guard<std::mutex> lock(shared.mu);
    latencies = shared.push_latency_ms;
  }
  const uint64_t acked = shared.acknowledged.load();
  std::printf("load: %d sessions over %d TLS channels, mode %s, %llu params (%zu bytes/update)\n",
              f.sessions, f.channels, f.hold_polls ? "hold-polls" : f.mode.c_str(),
              static_cast<unsigned long long>(f.model_params), shared.delta.size());
  std::printf("  %.2f s; %llu updates acknowledged (%.1f/s), %llu duplicates, %llu refused, "
              "%llu sessions failed, %llu cut off by the server's stop, %llu polls\n",
              seconds, static_cast<unsigned long long>(acked), acked / seconds,
              static_cast<unsigned long long>(shared.duplicates.load()),
              static_cast<unsigned long long>(shared.refused.load()),
              static_cast<unsigned long long>(shared.failed.load()),
              static_cast<unsigned long long>(shared.cut_at_end.load()),
              static_cast<unsigned long long>(shared.polls.load()));
  std::printf("  PushUpdate latency: p50 %.1f ms, p99 %.1f ms\n", Percentile(latencies, 0.5),
              Percentile(latencies, 0.99));
  std::printf("  server: threads %lld idle -> %lld peak; VmRSS %lld kB idle, peak VmHWM %lld kB\n",
              static_cast<long long>(idle.threads), static_cast<long long>(peak.threads),
              static_cast<long long>(idle.rss_kb), static_cast<long long>(peak.hwm_kb));
  if (!shared.first_error.empty()) std::printf("  first error: %s\n", shared.first_error.c_str());
  bool ok = shared.failed.load() == 0;
  if (!f.hold_polls) {
    if (!ledger.ok()) {
      std::printf("  ledger: %s\n", ledger.status().ToString().c_str());
      ok = false;
    } else {
      // Lost: acknowledged but not in the ledger. More rows than acknowledgements are
      // updates accepted whose answer did not reach the client (cut off by its deadline).
      const bool none_lost = static_cast<uint64_t>(*ledger) >= acked;
      std::printf("  ledger: %lld accepted rows, %llu acknowledged: %s\n",
                  static_cast<long long>(*ledger), static_cast<unsigned long long>(acked),
                  none_lost ? "none lost" : "ACKNOWLEDGED UPDATES MISSING");
      ok = ok && none_lost && code.has_value() && *code == 0;
    }
  }
  if (ok && f.dir.empty()) fs::remove_all(dir);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace fl::internal

int main(int argc, char** argv) {
  fl::internal::Flags f;
  CLI::App app("Drives fl-server over loopback TLS with many concurrent client sessions.");
  app.add_option("--sessions", f.sessions, "concurrent client sessions")->capture_default_str();
  app.add_option("--channels", f.channels, "TLS connections the sessions share")->capture_default_str();
  app.add_option("--timeout-s", f.timeout_s, "bound on the whole run")->capture_default_str();
  app.add_option("--model-params", f.model_params, "f32 parameters of the model")->capture_default_str();
  app.add_option("--mode", f.mode, "sync or async")->check(CLI::IsMember({"sync", "async"}));
  app.add_option("--rounds", f.rounds, "sync: rounds")->capture_default_str();
  app.add_option("--flushes", f.flushes, "async: flushes")->capture_default_str();
  app.add_option("--buffer", f.buffer, "async: updates per flush (0: sessions/4)");
  app.add_option("--concurrency", f.concurrency, "async: tasks held at once (0: sessions)");
  app.add_option("--inflight-mb", f.inflight_mb, "server.max_inflight_upload_mb (0: default)");
  app.add_option("--upload-threads", f.upload_threads, "server.upload_threads (0: not set)")
      ->capture_default_str();
  app.add_option("--durable", f.durable, "coordinator.durable")->capture_default_str();
  app.add_flag("--hold-polls", f.hold_polls, "join, hold one long poll each, sample threads");
  app.add_option("--hold-s", f.hold_s, "with --hold-polls: how long")->capture_default_str();
  app.add_option("--server", f.server, "fl-server binary")->capture_default_str();
  app.add_option("--dir", f.dir, "work directory (kept); default a temporary one");
  CLI11_PARSE(app, argc, argv);
  return fl::internal::Run(f);
}
