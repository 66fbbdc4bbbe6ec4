// A bounded load check against a real TLS server on 127.0.0.1: 300 idle long polls and
// 50 stalled uploads (a header, then nothing; from 50 clients) are held open while three
// honest clients complete a round. Reports the process's thread count and resident
// memory (the server runs in this process; the hostile calls use gRPC's async client
// API, which adds no thread per call, so the growth is the server's). The server runs
// those calls on gRPC's callback API: the threads it adds are a fixed set (its upload
// workers, the parked-poll thread, gRPC's own), not one per call. Bounded in count (350
// hostile calls) and time (each wait ends on an event, with a safety cap).

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "grpc_fixture.h"

namespace fl::internal {
namespace {

constexpr int kIdlePolls = 300;
constexpr int kStalledUploads = 50;
constexpr std::chrono::seconds kSafetyCap(120);
// Threads gRPC itself may start under load (pollers, its executor, timer threads); a
// fixed number, unrelated to the number of calls.
constexpr int kGrpcOwnThreads = 32;

// "Threads:" and "VmRSS:" (kB) of /proc/self/status.
struct ProcessUsage {
  int64_t threads = 0;
  int64_t rss_kb = 0;
};

ProcessUsage ReadUsage() {
  ProcessUsage usage;
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key) {
    if (key == "Threads:") status >> usage.threads;
    if (key == "VmRSS:") status >> usage.rss_kb;
    status.ignore(1 << 20, '\n');
  }
  return usage;
}

class GrpcLoadTest : public GrpcFixture {};

TEST_F(GrpcLoadTest, IdlePollsAndStalledUploadsDoNotStopHonestClients) {
  CoordinatorOptions o = Options();
  o.num_rounds = 2;
  o.min_clients = 3;
  GrpcServerOptions s = TlsServerOptions(o);
  s.max_poll_wait = std::chrono::seconds(90);  // the polls stay idle for the whole check
  s.stream_idle_timeout = std::chrono::seconds(90);
  Start(o, s);
  const ProcessUsage before = ReadUsage();

  // Three honest clients: the third join opens round 1 with all three selected.
  std::vector<std::unique_ptr<GrpcLink>> honest;
  for (const char* name : {"honest-0", "honest-1", "honest-2"}) honest.push_back(Joined(name));
  ASSERT_EQ(coordinator_->GetStatus().clients_selected, 3u);

  // The hostile clients join after the round opened, so none is selected: their polls
  // stay idle and their uploads stall. Each holds 6 polls and 1 upload, within
  // server.max_calls_per_client.
  auto stub = RawStub();
  std::vector<std::string> sessions;
  for (int i = 0; i < kStalledUploads; ++i) {
    sessions.push_back(JoinRaw(stub.get(), "hostile-" + std::to_string(i)));
  }
  grpc::CompletionQueue cq;
  struct Call {
    grpc::ClientContext context;
    grpc::Status status;
    v1::PullTaskResponse poll_response;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::PullTaskResponse>> poll;
    v1::PushUpdateResponse push_response;
    std::unique_ptr<grpc::ClientAsyncWriter<v1::UpdateChunk>> upload;
  };
  std::vector<std::unique_ptr<Call>> calls;
  auto tag = [](int kind, size_t index) { return reinterpret_cast<void*>(kind * 100000 + index + 1); };
  auto untag = [](void* t) {
    const auto v = reinterpret_cast<intptr_t>(t) - 1;
    return std::make_pair(static_cast<int>(v / 100000), static_cast<size_t>(v % 100000));
  };
  enum Kind { kPollDone = 1, kUploadStarted = 2, kHeaderWritten = 3, kUploadDone = 4 };
  const auto deadline = std::chrono::system_clock::now() + std::chrono::seconds(150);
  for (int i = 0; i < kIdlePolls + kStalledUploads; ++i) {
    auto call = std::make_unique<Call>();
    const int owner = i < kIdlePolls ? i % kStalledUploads : i - kIdlePolls;
    call->context.AddMetadata("authorization", "Bearer " + sessions[owner]);
    call->context.set_deadline(deadline);
    if (i < kIdlePolls) {
      v1::PullTaskRequest request;
      request.set_wait_ms(90000);
      call->poll = stub->AsyncPullTask(&call->context, request, &cq);
      call->poll->Finish(&call->poll_response, &call->status, tag(kPollDone, calls.size()));
    } else {
      call->upload = stub->AsyncPushUpdate(&call->context, &call->push_response, &cq,
                                           tag(kUploadStarted, calls.size()));
    }
    calls.push_back(std::move(call));
  }
  // Each upload writes its header once started; nothing follows.
  Task hostile_task;
  hostile_task.round = 1;
  Payload header_only = GoodUpdate(hostile_task, *coordinator_->CurrentModel().params);
  int finished_early = 0;
  for (int pending = kStalledUploads * 2; pending > 0;) {
    void* t = nullptr;
    bool ok = false;
    ASSERT_EQ(cq.AsyncNext(&t, &ok, std::chrono::system_clock::now() + kSafetyCap),
              grpc::CompletionQueue::GOT_EVENT);
    auto [kind, index] = untag(t);
    if (kind == kUploadStarted) {
      ASSERT_TRUE(ok);
      v1::UpdateChunk chunk;
      ToProto(header_only.meta, header_only.bytes.size(), chunk.mutable_header());
      calls[index]->upload->Write(chunk, tag(kHeaderWritten, index));
    } else if (kind == kPollDone) {
      ++finished_early;
      continue;
    }
    --pending;
  }
  EXPECT_EQ(finished_early, 0) << "an idle poll was answered before the round finished";
  // Event: the server runs a handler for every hostile call.
  const auto give_up = std::chrono::steady_clock::now() + kSafetyCap;
  while (server_->Stats().calls_in_flight < kIdlePolls + kStalledUploads ||
         server_->Stats().open_streams < kStalledUploads) {
    ASSERT_LT(std::chrono::steady_clock::now(), give_up);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const ProcessUsage held = ReadUsage();
  EXPECT_EQ(server_->Stats().parked_polls, static_cast<uint64_t>(kIdlePolls))
      << "every idle poll is parked, none holds a thread";

  // The honest clients complete round 1 while all of that is held.
  std::vector<std::future<Status>> done;
  for (auto& link : honest) {
    done.push_back(std::async(std::launch::async, [&, l = link.get()]() -> Status {
      Task task = TrainTask(*l);
      FL_ASSIGN_OR_RETURN(ModelSnapshot model, l->FetchModel(task.model_version));
      FL_ASSIGN_OR_RETURN(PushAck ack, l->PushUpdate(GoodUpdate(task, *model.params)));
      return ack.round == 1 ? Status::Ok() : Status::Internal("acknowledged for another round");
    }));
  }
  ProcessUsage peak = ReadUsage();
  for (auto& d : done) {
    Status st = d.get();
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  const ProcessUsage after_round = ReadUsage();
  peak.threads = std::max(peak.threads, after_round.threads);
  peak.rss_kb = std::max(peak.rss_kb, after_round.rss_kb);
  EXPECT_GE(coordinator_->CurrentModel().version, 1u) << "round 1 did not complete";
  const GrpcServerStats stats = server_->Stats();
  EXPECT_EQ(stats.inflight_upload_bytes, kStalledUploads * header_only.bytes.size())
      << "each admitted upload counts its declared size, nothing more";
  EXPECT_EQ(stats.calls_refused_per_client, 0u);

  std::printf("load check: %d idle long polls + %d stalled uploads held; threads %lld -> %lld "
              "(held) -> %lld (peak, honest round running); VmRSS %lld kB -> %lld kB -> %lld kB\n",
              kIdlePolls, kStalledUploads, static_cast<long long>(before.threads),
              static_cast<long long>(held.threads), static_cast<long long>(peak.threads),
              static_cast<long long>(before.rss_kb), static_cast<long long>(held.rss_kb),
              static_cast<long long>(peak.rss_kb));
  RecordProperty("threads_before", static_cast<int>(before.threads));
  RecordProperty("threads_held", static_cast<int>(held.threads));
  RecordProperty("rss_kb_before", static_cast<int>(before.rss_kb));
  RecordProperty("rss_kb_held", static_cast<int>(held.rss_kb));
  // No thread per call: what the server adds is its upload workers, the parked-poll
  // thread and gRPC's own pollers and executor, whatever the number of calls held (a
  // synchronous server would add one per call, here 350).
  EXPECT_LE(peak.threads - before.threads, s.upload_threads + 1 + kGrpcOwnThreads);
  // Idle calls hold a thread stack and a little gRPC state each, not update buffers.
  // (ThreadSanitizer's shadow memory grows several times with every thread, so there the
  // memory bound says nothing about the server.)
#if !defined(__SANITIZE_THREAD__)
  EXPECT_LE(peak.rss_kb - before.rss_kb, 256 * 1024);
#endif

  // Cleanup: cancel what is still open and drain the queue.
  int outstanding = 0;
  for (size_t i = 0; i < calls.size(); ++i) {
    calls[i]->context.TryCancel();
    if (calls[i]->upload != nullptr) {
      calls[i]->upload->Finish(&calls[i]->status, tag(kUploadDone, i));
      ++outstanding;
    } else {
      ++outstanding;
    }
  }
  outstanding -= finished_early;
  while (outstanding > 0) {
    void* t = nullptr;
    bool ok = false;
    ASSERT_EQ(cq.AsyncNext(&t, &ok, std::chrono::system_clock::now() + kSafetyCap),
              grpc::CompletionQueue::GOT_EVENT);
    auto [kind, index] = untag(t);
    if (kind == kPollDone || kind == kUploadDone) --outstanding;
  }
  cq.Shutdown();
  void* t = nullptr;
  bool ok = false;
  while (cq.Next(&t, &ok)) {
  }
}

}  // namespace
}  // namespace fl::internal
