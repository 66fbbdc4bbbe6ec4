// The C ABI (fl/fl_client.h) as a C program sees it: argument checks and their messages,
// the thread-local last error, and whole runs against a real Coordinator behind loopback
// TLS (GrpcFixture), with the trainer written as C callbacks.

#include "fl/fl_client.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "grpc_fixture.h"
#include "subprocess.h"

namespace fl::internal {
namespace {

using ::testing::HasSubstr;

// A C trainer over a plain float vector: each task adds `step` to every value, so after
// r single-client FedAvg rounds the global model is the initial one plus r * step.
struct CModel {
  std::vector<float> values;
  float step = 1.0f;
  int fail_train_with = FL_OK;  // nonzero: train returns this code
  std::vector<fl_train_config> configs;
};

int GetParams(void* user, float* values, size_t count, char* message) {
  auto* m = static_cast<CModel*>(user);
  if (count != m->values.size()) {
    std::snprintf(message, 256, "count %zu", count);
    return FL_EINVALID_ARGUMENT;
  }
  std::memcpy(values, m->values.data(), count * sizeof(float));
  return FL_OK;
}

int SetParams(void* user, const float* values, size_t count, char* message) {
  auto* m = static_cast<CModel*>(user);
  m->values.assign(values, values + count);
  return FL_OK;
}

int TrainStep(void* user, const fl_train_config* config, fl_train_result* result, char* message) {
  auto* m = static_cast<CModel*>(user);
  m->configs.push_back(*config);
  if (m->fail_train_with != FL_OK) {
    std::snprintf(message, 256, "disk on fire");
    return m->fail_train_with;
  }
  for (float& v : m->values) v += m->step;
  result->num_examples = 10;
  result->dataset_size = 10;
  result->mean_loss = 0.5;
  return FL_OK;
}

fl_trainer TrainerFor(CModel* m) { return {m, GetParams, SetParams, TrainStep, nullptr}; }

class CApiTest : public GrpcFixture {
 protected:
  // A client for the fixture's server with `name`, declaring the synthetic model's layout
  // (one tensor "weight" of kParams values) unless `declare` is false.
  fl_client* NewClient(const std::string& name, bool declare = true, int64_t poll_ms = 500,
                       int32_t max_failures = 20) {
    fl_client_options* o = fl_client_options_new();
    EXPECT_NE(o, nullptr);
    EXPECT_EQ(fl_client_options_set_server(o, Target().c_str()), FL_OK);
    EXPECT_EQ(fl_client_options_set_tls_ca_file(o, certs_.ca_cert.c_str()), FL_OK);
    EXPECT_EQ(fl_client_options_set_enrollment_token(o, kEnrollment), FL_OK);
    EXPECT_EQ(fl_client_options_set_name(o, name.c_str()), FL_OK);
    EXPECT_EQ(fl_client_options_set_poll_wait_ms(o, poll_ms), FL_OK);
    EXPECT_EQ(fl_client_options_set_max_failures(o, max_failures), FL_OK);
    fl_client* c = nullptr;
    EXPECT_EQ(fl_client_create(o, &c), FL_OK) << fl_last_error();
    fl_client_options_free(o);
    if (c != nullptr && declare) {
      const int64_t shape[1] = {static_cast<int64_t>(kParams)};
      EXPECT_EQ(fl_client_add_tensor(c, "weight", shape, 1), FL_OK) << fl_last_error();
    }
    return c;
  }
};

TEST(CApiArgumentsTest, NullAndOutOfRangeArgumentsAreInvalidWithAMessage) {
  EXPECT_EQ(fl_client_options_set_server(nullptr, "x:1"), FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("options is NULL"));
  fl_client_options* o = fl_client_options_new();
  ASSERT_NE(o, nullptr);
  EXPECT_EQ(fl_client_options_set_server(o, nullptr), FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("address is NULL"));
  EXPECT_EQ(fl_client_options_set_server(o, ""), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_options_set_poll_wait_ms(o, -1), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_options_set_poll_wait_ms(o, int64_t{1} << 40), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_options_set_max_failures(o, -1), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_options_set_max_failures(nullptr, 1), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_options_set_overlap(nullptr, 1), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_options_set_overlap(o, 1), FL_OK);
  EXPECT_EQ(fl_client_options_set_tls_client_cert(o, "cert.pem", ""), FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("both"));
  const std::string huge(5000, 'a');
  EXPECT_EQ(fl_client_options_set_enrollment_token(o, huge.c_str()), FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("longer than"));

  // fl::Client's own checks come through with their code: a name with a space.
  ASSERT_EQ(fl_client_options_set_server(o, "localhost:1"), FL_OK);
  ASSERT_EQ(fl_client_options_set_insecure(o, 1), FL_OK);
  ASSERT_EQ(fl_client_options_set_name(o, "bad name"), FL_OK);
  fl_client* c = reinterpret_cast<fl_client*>(0x1);
  EXPECT_EQ(fl_client_create(o, &c), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(c, nullptr) << "a failed create leaves *out NULL";
  EXPECT_THAT(fl_last_error(), HasSubstr("bad name"));
  EXPECT_EQ(fl_client_create(o, nullptr), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_create(nullptr, &c), FL_EINVALID_ARGUMENT);

  ASSERT_EQ(fl_client_options_set_name(o, "device-1"), FL_OK);
  ASSERT_EQ(fl_client_create(o, &c), FL_OK) << fl_last_error();
  fl_client_options_free(o);

  const int64_t good[2] = {10, 784};
  const int64_t negative[2] = {10, -1};
  const int64_t huge_dims[3] = {1 << 20, 1 << 20, 1 << 20};
  EXPECT_EQ(fl_client_add_tensor(c, nullptr, good, 2), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_add_tensor(c, "", good, 2), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_add_tensor(c, "w", nullptr, 2), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_add_tensor(c, "w", good, 17), FL_EINVALID_ARGUMENT);
  EXPECT_EQ(fl_client_add_tensor(c, "w", negative, 2), FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("[10,-1]"));
  EXPECT_EQ(fl_client_add_tensor(c, "w", huge_dims, 3), FL_ERESOURCE_EXHAUSTED);
  EXPECT_EQ(fl_client_num_parameters(c), 0u) << "rejected tensors leave the layout alone";

  CModel model;
  fl_trainer trainer = TrainerFor(&model);
  EXPECT_EQ(fl_client_run(c, &trainer, 1), FL_EFAILED_PRECONDITION);
  EXPECT_THAT(fl_last_error(), HasSubstr("no tensors declared"));

  EXPECT_EQ(fl_client_add_tensor(c, "fc.weight", good, 2), FL_OK);
  EXPECT_EQ(fl_client_add_tensor(c, "fc.weight", good, 2), FL_EALREADY_EXISTS);
  EXPECT_EQ(fl_client_add_tensor(c, "scale", nullptr, 0), FL_OK) << "a scalar";
  EXPECT_EQ(fl_client_num_parameters(c), 7841u);

  EXPECT_EQ(fl_client_run(c, nullptr, 1), FL_EINVALID_ARGUMENT);
  fl_trainer incomplete = trainer;
  incomplete.train = nullptr;
  EXPECT_EQ(fl_client_run(c, &incomplete, 1), FL_EINVALID_ARGUMENT);
  std::vector<float> values(7841);
  EXPECT_EQ(fl_client_fetch_global_model(c, values.data(), 7840, nullptr), FL_EINVALID_ARGUMENT);
  EXPECT_THAT(fl_last_error(), HasSubstr("count 7840"));
  EXPECT_EQ(fl_client_fetch_global_model(c, nullptr, 7841, nullptr), FL_EINVALID_ARGUMENT);
  fl_client_free(c);
  fl_client_free(nullptr);
  fl_client_options_free(nullptr);
  fl_client_cancel(nullptr);
  EXPECT_EQ(fl_client_num_parameters(nullptr), 0u);
}

TEST(CApiArgumentsTest, LastErrorIsPerThread) {
  ASSERT_EQ(fl_client_options_set_server(nullptr, "x:1"), FL_EINVALID_ARGUMENT);
  const std::string mine = fl_last_error();
  std::thread other([] {
    EXPECT_STREQ(fl_last_error(), "") << "a fresh thread has no error";
    EXPECT_EQ(fl_client_options_set_poll_wait_ms(nullptr, 1), FL_EINVALID_ARGUMENT);
    EXPECT_THAT(fl_last_error(), HasSubstr("fl_client_options_set_poll_wait_ms"));
  });
  other.join();
  EXPECT_EQ(fl_last_error(), mine);
  EXPECT_STRNE(fl_version(), "");
}

TEST_F(CApiTest, RunsRoundsWithCCallbacksAndFetchesTheFinalModel) {
  CoordinatorOptions o = Options();  // 3 rounds, one client suffices
  Start(o);
  fl_client* c = NewClient("c-device");
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(fl_client_num_parameters(c), kParams);

  std::vector<float> initial(kParams);
  uint64_t version = 99;
  ASSERT_EQ(fl_client_fetch_global_model(c, initial.data(), kParams, &version), FL_OK)
      << fl_last_error();
  EXPECT_EQ(version, 0u);

  struct Progress {
    std::vector<uint64_t> rounds;
    std::vector<uint64_t> tasks_done;
  } progress;
  ASSERT_EQ(fl_client_set_task_callback(
                c,
                [](void* user, uint64_t round, uint64_t done, const fl_train_result* r) {
                  auto* p = static_cast<Progress*>(user);
                  p->rounds.push_back(round);
                  p->tasks_done.push_back(done);
                  EXPECT_EQ(r->dataset_size, 10u);
                },
                &progress),
            FL_OK);
  CModel model;
  fl_trainer trainer = TrainerFor(&model);
  ASSERT_EQ(fl_client_run(c, &trainer, 0), FL_OK) << fl_last_error();

  EXPECT_EQ(progress.rounds, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(progress.tasks_done, (std::vector<uint64_t>{1, 2, 3}));
  ASSERT_EQ(model.configs.size(), 3u);
  for (size_t i = 0; i < model.configs.size(); ++i) {
    EXPECT_EQ(model.configs[i].round, i + 1) << "the task's round reaches the C trainer";
    EXPECT_GE(model.configs[i].batch_size, 1);
    EXPECT_GT(model.configs[i].lr, 0);
  }
  std::vector<float> final_model(kParams);
  ASSERT_EQ(fl_client_fetch_global_model(c, final_model.data(), kParams, &version), FL_OK)
      << fl_last_error();
  EXPECT_EQ(version, 3u);
  for (size_t i = 0; i < kParams; ++i) {
    ASSERT_NEAR(final_model[i], initial[i] + 3 * model.step, 1e-4) << "value " << i;
  }
  fl_client_free(c);
}

TEST_F(CApiTest, MaxTasksStopsEarly) {
  Start(Options());
  fl_client* c = NewClient("c-device");
  ASSERT_NE(c, nullptr);
  CModel model;
  fl_trainer trainer = TrainerFor(&model);
  ASSERT_EQ(fl_client_run(c, &trainer, 1), FL_OK) << fl_last_error();
  EXPECT_EQ(model.configs.size(), 1u);
  fl_client_free(c);
}

TEST_F(CApiTest, ALayoutTheServerDoesNotHaveIsNamedInTheError) {
  Start(Options());
  fl_client* c = NewClient("c-device", /*declare=*/false);
  ASSERT_NE(c, nullptr);
  const int64_t shape[1] = {static_cast<int64_t>(kParams)};
  ASSERT_EQ(fl_client_add_tensor(c, "fc.weight", shape, 1), FL_OK);
  std::vector<float> values(kParams);
  EXPECT_EQ(fl_client_fetch_global_model(c, values.data(), kParams, nullptr),
            FL_EFAILED_PRECONDITION);
  EXPECT_THAT(fl_last_error(), HasSubstr("\"weight\" [1000] on the server but was declared as "
                                         "\"fc.weight\" [1000]"));
  fl_client_free(c);
}

TEST_F(CApiTest, CancelFromAnotherThreadEndsAWaitingRun) {
  CoordinatorOptions o = Options();
  o.min_clients = 2;  // a lone client waits for a round that never opens
  Start(o);
  fl_client* c = NewClient("c-device", /*declare=*/true, /*poll_ms=*/200);
  ASSERT_NE(c, nullptr);
  CModel model;
  fl_trainer trainer = TrainerFor(&model);
  int rc = -1;
  std::thread run([&] { rc = fl_client_run(c, &trainer, 0); });
  // Cancel once the client has joined (it then only polls), so cancellation, not a
  // failed join, is what ends the run.
  ASSERT_TRUE(WaitUntil([&] { return coordinator_->GetStatus().clients_known == 1; },
                        std::chrono::seconds(30)));
  fl_client_cancel(c);
  run.join();
  EXPECT_EQ(rc, FL_ECANCELLED);
  EXPECT_TRUE(model.configs.empty());
  fl_client_free(c);
}

TEST_F(CApiTest, ATrainCallbackErrorReachesTheRunsMessage) {
  Start(Options());
  fl_client* c = NewClient("c-device", true, 500, /*max_failures=*/3);
  ASSERT_NE(c, nullptr);
  CModel model;
  model.fail_train_with = FL_EDATA_LOSS;
  fl_trainer trainer = TrainerFor(&model);
  // The runtime retries a failed task; after its consecutive-failure limit (3 here) the
  // run returns the last error, which carries the callback's code name and message.
  EXPECT_EQ(fl_client_run(c, &trainer, 0), FL_EUNAVAILABLE);
  EXPECT_THAT(fl_last_error(), HasSubstr("DATA_LOSS: train callback failed: disk on fire"));
  EXPECT_THAT(fl_last_error(), HasSubstr("after 3 consecutive failures"));
  EXPECT_EQ(model.configs.size(), 3u);
  fl_client_free(c);
}

}  // namespace
}  // namespace fl::internal
