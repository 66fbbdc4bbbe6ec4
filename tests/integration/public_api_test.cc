// The public C++ faces (fl/server.h, fl/client.h) on real parts: fl::Server on loopback
// with TLS (and mutual TLS) and SQLite state in a temporary directory, fl::Clients with a
// plain C++ Trainer. Only the development certificates come from an internal header.

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "examples/linear_trainer.h"
#include "fl/client.h"
#include "fl/param_set.h"
#include "fl/server.h"
#include "server/dev_certs.h"

namespace fl {
namespace {

constexpr size_t kDim = 4;
constexpr char kToken[] = "public-api-token";

class PublicApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("fl_public_api_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    Result<internal::DevCertPaths> certs = internal::MakeDevCerts((dir_ / "certs").string());
    ASSERT_TRUE(certs.ok()) << certs.status().ToString();
    certs_ = *certs;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  examples::LinearTrainer MakeTrainer(uint64_t seed) {
    std::vector<float> x, y;
    examples::MakeLinearData(kDim, 64, seed, &x, &y);
    return examples::LinearTrainer(kDim, std::move(x), std::move(y));
  }

  ServerOptions BaseServerOptions(uint64_t rounds, uint64_t clients) {
    ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.tls_cert_file = certs_.server_cert;
    o.tls_key_file = certs_.server_key;
    o.enrollment_token = kToken;
    o.state_dir = (dir_ / "state").string();
    ParamSet initial;
    EXPECT_TRUE(MakeTrainer(0).GetParameters(&initial).ok());
    o.initial_model = std::move(initial);
    o.rounds = rounds;
    o.min_clients = clients;
    o.config_overrides = {"train.local_steps=4", "train.lr=0.1"};
    return o;
  }

  ClientOptions BaseClientOptions(int port, const std::string& name) {
    ClientOptions o;
    o.server = "127.0.0.1:" + std::to_string(port);
    o.tls_ca_file = certs_.ca_cert;
    o.enrollment_token = kToken;
    o.name = name;
    o.poll_wait = std::chrono::milliseconds(500);
    return o;
  }

  std::filesystem::path dir_;
  internal::DevCertPaths certs_;
};

TEST_F(PublicApiTest, ServerRunsRoundsWithClientsAndReportsEachRound) {
  std::mutex mu;
  std::vector<RoundInfo> rounds;
  ServerOptions options = BaseServerOptions(/*rounds=*/3, /*clients=*/2);
  options.on_round = [&](const RoundInfo& r) {
    std::lock_guard<std::mutex> lock(mu);
    rounds.push_back(r);
  };
  Result<std::unique_ptr<Server>> server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const ParamSet initial = (*server)->GlobalModel();

  std::vector<std::thread> threads;
  std::vector<Status> results(2);
  std::vector<std::vector<ClientProgress>> progress(2);
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      examples::LinearTrainer trainer = MakeTrainer(i + 1);
      Result<std::unique_ptr<Client>> client =
          Client::Connect(BaseClientOptions((*server)->port(), "device-" + std::to_string(i)));
      ASSERT_TRUE(client.ok()) << client.status().ToString();
      ClientRunOptions run;
      run.on_task = [&, i](const ClientProgress& p) { progress[i].push_back(p); };
      results[i] = (*client)->Run(trainer, run);
    });
  }
  (*server)->Wait();
  for (std::thread& t : threads) t.join();

  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(results[i].ok()) << results[i].ToString();
    ASSERT_EQ(progress[i].size(), 3u);
    for (size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(progress[i][k].tasks_done, k + 1);
      EXPECT_EQ(progress[i][k].round, k + 1);
      EXPECT_EQ(progress[i][k].train.dataset_size, 64u);
      EXPECT_GT(progress[i][k].bytes_up, 0u);
    }
  }
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(rounds.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_EQ(rounds[k].round, k + 1);
    EXPECT_EQ(rounds[k].model_version, k + 1);
    EXPECT_EQ(rounds[k].updates, 2u);
    EXPECT_EQ(rounds[k].rejected, 0u);
  }
  EXPECT_EQ((*server)->GetStatus().model_version, 3u);
  EXPECT_TRUE((*server)->GetStatus().finished);
  const ParamSet final_model = (*server)->GlobalModel();
  ASSERT_EQ(final_model.size(), initial.size());
  EXPECT_NE(std::vector<float>(final_model.values().begin(), final_model.values().end()),
            std::vector<float>(initial.values().begin(), initial.values().end()));
}

TEST_F(PublicApiTest, MaxTasksStopsTheRunAndCancelStopsTheNext) {
  Result<std::unique_ptr<Server>> server = Server::Start(BaseServerOptions(3, 1));
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  examples::LinearTrainer trainer = MakeTrainer(1);
  Result<std::unique_ptr<Client>> client =
      Client::Connect(BaseClientOptions((*server)->port(), "solo"));
  ASSERT_TRUE(client.ok()) << client.status().ToString();

  ClientRunOptions one;
  one.max_tasks = 1;
  uint64_t tasks = 0;
  one.on_task = [&](const ClientProgress&) { ++tasks; };
  ASSERT_TRUE((*client)->Run(trainer, one).ok());
  EXPECT_EQ(tasks, 1u);
  Result<ServerStatusInfo> status = (*client)->GetStatus();
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->model_version, 1u);

  // Cancel from the progress callback: the run ends after that task, Cancelled.
  ClientRunOptions cancelling;
  cancelling.on_task = [&](const ClientProgress&) { (*client)->Cancel(); };
  Status cancelled = (*client)->Run(trainer, cancelling);
  EXPECT_EQ(cancelled.code(), StatusCode::kCancelled) << cancelled.ToString();
  Result<ParamSet> model = (*client)->FetchGlobalModel();
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(model->layout().hash(), trainer.layout().hash());
  EXPECT_FALSE((*server)->GetStatus().finished);
}

TEST_F(PublicApiTest, MutualTlsRefusesAClientWithoutCertificate) {
  ServerOptions options = BaseServerOptions(1, 1);
  options.tls_client_ca_file = certs_.ca_cert;
  options.require_client_cert = true;
  Result<std::unique_ptr<Server>> server = Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();

  ClientOptions anonymous = BaseClientOptions((*server)->port(), "anonymous");
  anonymous.call_timeout = std::chrono::seconds(5);
  Result<std::unique_ptr<Client>> refused = Client::Connect(anonymous);
  ASSERT_TRUE(refused.ok());
  EXPECT_FALSE((*refused)->GetStatus().ok());

  ClientOptions with_cert = BaseClientOptions((*server)->port(), "certified");
  with_cert.tls_cert_file = certs_.client_cert;
  with_cert.tls_key_file = certs_.client_key;
  Result<std::unique_ptr<Client>> client = Client::Connect(with_cert);
  ASSERT_TRUE(client.ok());
  examples::LinearTrainer trainer = MakeTrainer(3);
  EXPECT_TRUE((*client)->Run(trainer).ok());
  EXPECT_TRUE((*server)->GetStatus().finished);
}

TEST_F(PublicApiTest, ServerRestartedOnItsStateDirectoryResumes) {
  {
    Result<std::unique_ptr<Server>> first = Server::Start(BaseServerOptions(2, 1));
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    examples::LinearTrainer trainer = MakeTrainer(1);
    Result<std::unique_ptr<Client>> client =
        Client::Connect(BaseClientOptions((*first)->port(), "resumer"));
    ASSERT_TRUE(client.ok());
    ClientRunOptions one;
    one.max_tasks = 1;
    ASSERT_TRUE((*client)->Run(trainer, one).ok());
    (*first)->Shutdown();
  }
  Result<std::unique_ptr<Server>> second = Server::Start(BaseServerOptions(2, 1));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_EQ((*second)->GetStatus().model_version, 1u);
  examples::LinearTrainer trainer = MakeTrainer(1);
  Result<std::unique_ptr<Client>> client =
      Client::Connect(BaseClientOptions((*second)->port(), "resumer"));
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE((*client)->Run(trainer).ok());
  EXPECT_EQ((*second)->GetStatus().model_version, 2u);
}

TEST_F(PublicApiTest, BadOptionsAreRefusedNamingTheField) {
  ClientOptions no_server;
  no_server.name = "x";
  EXPECT_EQ(Client::Connect(no_server).status().code(), StatusCode::kInvalidArgument);
  ClientOptions bad_name = BaseClientOptions(1, "bad name/../x");
  Status s = Client::Connect(bad_name).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("client name"), std::string::npos) << s.ToString();
  ClientOptions both = BaseClientOptions(1, "both");
  both.insecure = true;
  EXPECT_EQ(Client::Connect(both).status().code(), StatusCode::kInvalidArgument);

  ServerOptions no_listen = BaseServerOptions(1, 1);
  no_listen.listen.clear();
  s = Server::Start(no_listen).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("server.listen"), std::string::npos) << s.ToString();
  ServerOptions bad_key = BaseServerOptions(1, 1);
  bad_key.config_overrides.push_back("coordinator.no_such_key=1");
  s = Server::Start(bad_key).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no_such_key"), std::string::npos) << s.ToString();
  ServerOptions unknown_algorithm = BaseServerOptions(1, 1);
  unknown_algorithm.algorithm = "no-such-algorithm";
  s = Server::Start(unknown_algorithm).status();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("no-such-algorithm"), std::string::npos) << s.ToString();
  // Nothing was started, so nothing was written.
  EXPECT_FALSE(std::filesystem::exists(dir_ / "state"));
}

}  // namespace
}  // namespace fl
