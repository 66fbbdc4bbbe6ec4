#ifndef FL_SERVER_COORDINATOR_CONFIG_H_
#define FL_SERVER_COORDINATOR_CONFIG_H_

// The config sections that describe a federation independently of its transport, and
// their conversion into CoordinatorOptions. fl-server and fl-sim both build their
// coordinator from these, so one config means the same federation in both.
//
//   coordinator: client_fraction, clients_per_round, min_clients, min_updates,
//                round_deadline_s, client_timeout_s, max_update_mb, enrollment_token,
//                durable, keep_models, max_replay_rounds, norm_bound,
//                norm_bound_quantile, norm_bound_warmup (1:1 onto CoordinatorOptions);
//                weight_policy, max_weight, weight_over_cap (its update_policy);
//                mode (sync | async)
//   async:       concurrency, task_timeout_s, max_staleness, buffer_size, staleness_weight,
//                staleness_exponent, hinge_a, hinge_b, gap_penalty (its AsyncOptions)
//   run:         seed, rounds, state_dir
//   model:       name ("random:<n>" or a built-in model name), init_file
//
// No gRPC and no LibTorch here.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/config.h"
#include "fl/param_set.h"
#include "fl/status.h"
#include "server/coordinator.h"

namespace fl::internal {

// {"coordinator": {...}, "run": {...}} with the defaults of CoordinatorOptions.
nlohmann::json CoordinatorConfigDefaults();

// Reads the "coordinator" and "run" sections. InvalidArgument naming the offending key
// for any value out of range (rounds < 1, client_fraction outside (0, 1], negative
// counts or durations, ...). options.env stays null (Env::Default()).
Result<CoordinatorOptions> CoordinatorOptionsFromConfig(const Config& config);

// {"model": {"name": ..., "init_file": ""}}. `default_name` is the binary's default.
nlohmann::json ModelConfigDefaults(const std::string& default_name);

// The initial global model described by the "model" section (and seeded by run.seed):
// model.init_file if set (a SerializeParamSet file, e.g. from `fl-sim export-model`),
// otherwise a synthetic model for "random:<n>". Any other name without init_file is
// InvalidArgument: built-in architectures are initialized by LibTorch, which the
// server does not link. NotFound/DataLoss/InvalidArgument from reading or parsing the
// file; InvalidArgument if init_file holds non-finite values.
Result<ParamSet> InitialModelFromConfig(const Config& config);

// A synthetic model of `num_params` float parameters in one tensor "weight", with
// values uniform in [-0.1, 0.1) derived only from (seed, index): the same on every
// machine and in every run. InvalidArgument if num_params is 0.
Result<ParamSet> SyntheticModel(uint64_t num_params, uint64_t seed);

// Parses "random:<n>" into n (> 0); InvalidArgument if `name` is not of that form.
Result<uint64_t> ParseSyntheticModelName(const std::string& name);

}  // namespace fl::internal

#endif  // FL_SERVER_COORDINATOR_CONFIG_H_
