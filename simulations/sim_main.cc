// fl-sim: runs a federation of virtual clients in one process.
//
//   fl-sim [run] [--preset fmnist-cnn] [flags] [--config FILE] [--set key=value ...]
//   fl-sim pretrain --preset fortunes-gpt [--steps N] [--out model.flps]
//   fl-sim pretrain --preset fmnist-vit-shift [--epochs N | --steps N] [--out backbone.flps]
//   fl-sim export-model --model cnn --seed 1 --out model.flps
//   fl-sim export-partition [run flags] --out partition.json
//   fl-sim compare --out compare.svg RUN_DIR[=LABEL] ...

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/logging.h"
#include "data/domain_shift.h"
#include "data/idx_reader.h"
#include "data/shifted_split_config.h"
#include "fl/env.h"
#include "simulations/fortunes_workload.h"
#include "simulations/mpi_launch.h"
#include "simulations/run_comparison.h"
#include "simulations/simulator.h"
#include "simulations/vit_pretrain.h"
#include "simulations/vit_shift_workload.h"
#include "simulations/workload.h"
#include "torch/lm_trainer.h"
#include "torch/model_zoo.h"
#include "torch/torch_trainer.h"

namespace fl::internal {
namespace {

constexpr char kProgram[] = "fl-sim";

int Fail(const Status& status, int code) {
  std::cerr << kProgram << ": " << status.message() << "\n";
  return code;
}

// The exit status for a failure of a flag's value: 2 (usage) when the value itself is
// wrong (InvalidArgument), 1 when the environment is (no CUDA, an unwritable file).
int UsageOr1(const Status& status) {
  return status.code() == StatusCode::kInvalidArgument ? 2 : 1;
}

// The preset must be known before the command line is parsed, because its values sit
// between the built-in defaults and the user's config file and flags.
std::string FindPreset(int argc, char** argv) {
  std::string preset = SimulatorConfigDefaults()["sim"]["preset"].get<std::string>();
  constexpr std::string_view kSetPreset = "sim.preset=";
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if ((a == "--preset") && i + 1 < argc) {
      preset = argv[++i];
    } else if (a.starts_with("--preset=")) {
      preset = std::string(a.substr(9));
    } else if (a == "--set" && i + 1 < argc && std::string_view(argv[i + 1]).starts_with(kSetPreset)) {
      preset = std::string(std::string_view(argv[++i]).substr(kSetPreset.size()));
    } else if (a.starts_with("--set=") && a.substr(6).starts_with(kSetPreset)) {
      preset = std::string(a.substr(6 + kSetPreset.size()));
    }
  }
  return preset;
}

Result<nlohmann::json> RunDefaults(int argc, char** argv) {
  nlohmann::json defaults = SimulatorConfigDefaults();
  FL_ASSIGN_OR_RETURN(nlohmann::json preset, PresetValues(FindPreset(argc, argv)));
  defaults.merge_patch(preset);
  return defaults;
}

std::vector<FlagAlias> RunAliases() {
  return {
      {"--preset", "sim.preset", "workload preset (fmnist-cnn, fortunes-gpt, fmnist-vit-shift)"},
      {"--rounds", "run.rounds", "rounds to run"},
      {"--seed", "run.seed", "run seed: partition, model init, selection, shuffling"},
      {"--algorithm", "algorithm.name", "fedavg, fedprox, fedadam, ..."},
      {"--model", "model.name", "model from the zoo (cnn, mlp, logreg, gpt-tiny)"},
      {"--init-model", "model.init_file", "initial model file (fortunes-gpt: the pretrained one)"},
      {"--clients", "data.num_clients", "number of virtual clients (fortunes: 0 = one per file)"},
      {"--clients-per-round", "coordinator.clients_per_round", "clients selected per round"},
      {"--mode", "coordinator.mode", "sync (rounds) | async (buffered, staleness-weighted)"},
      {"--overlap", "client.overlap",
       "async: virtual clients upload each update while the next task trains (CO2)"},
      {"--partition", "data.partition",
       "iid | dirichlet:<alpha> | shards:<k> | sample:<m> (m examples drawn per client; any "
       "number of clients)"},
      {"--data-dir", "data.dir", "dataset folder (Fashion-MNIST IDX files, fortune files)"},
      {"--train-examples", "data.train_examples", "use only the first N training images (0 = all)"},
      {"--test-examples", "data.test_examples", "use only the first N test images (0 = all)"},
      {"--lr", "train.lr", "client learning rate"},
      {"--momentum", "train.momentum", "client SGD momentum"},
      {"--local-epochs", "train.local_epochs", "local epochs per round"},
      {"--local-steps", "train.local_steps", "local steps per round (> 0 replaces epochs)"},
      {"--batch-size", "train.batch_size", "local minibatch size"},
      {"--workers", "sim.workers", "worker threads, each with one model replica"},
      {"--threads-per-worker", "sim.threads_per_worker", "LibTorch intra-op threads per worker"},
      {"--eval-every", "sim.eval_every", "evaluate the global model every N rounds"},
      {"--device", "sim.device", "auto | cpu | cuda"},
      {"--out", "sim.out_dir", "output directory (default runs/<preset>-<seed>)"},
      {"--progress", "sim.progress", "auto | tty | plain | none"},
  };
}

std::string FormatDuration(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%ldh%02ldm", s / 3600, (s / 60) % 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%ldm%02lds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof(buf), "%lds", s);
  }
  return buf;
}

// "accuracy 87.10%" or "bits per byte 2.3456".
std::string FormatMetric(const WorkloadMetric& metric, double value) {
  std::string name = metric.name;
  std::replace(name.begin(), name.end(), '_', ' ');
  char buf[64];
  if (value < 0) {
    std::snprintf(buf, sizeof(buf), " -");
  } else if (metric.is_fraction) {
    std::snprintf(buf, sizeof(buf), " %.2f%%", 100.0 * value);
  } else {
    std::snprintf(buf, sizeof(buf), " %.4f", value);
  }
  return name + buf;
}

std::string ProgressText(const SimProgress& p) {
  char buf[256];
  const std::string metric =
      p.metric != nullptr ? FormatMetric(*p.metric, p.last_metric) : std::string("loading");
  std::snprintf(buf, sizeof(buf), "round %llu/%llu | clients %llu/%llu | %s | %s elapsed | ETA %s",
                static_cast<unsigned long long>(p.round),
                static_cast<unsigned long long>(p.total_rounds),
                static_cast<unsigned long long>(p.clients_done),
                static_cast<unsigned long long>(p.clients_selected), metric.c_str(),
                FormatDuration(p.elapsed_seconds).c_str(), FormatDuration(p.eta_seconds).c_str());
  return buf;
}

int Run(int argc, char** argv) {
  Result<nlohmann::json> defaults = RunDefaults(argc, argv);
  if (!defaults.ok()) return Fail(defaults.status(), 2);
  Result<CommandLine> cl = ParseCommandLine(
      kProgram,
      "Simulates a federation of virtual clients in one process (subcommands: run [default], "
      "pretrain, export-model, export-partition, compare).",
      *defaults, RunAliases(), argc, argv);
  if (!cl.ok()) return Fail(cl.status(), 2);
  if (cl->exit_now) return cl->exit_code;
  const Config& config = cl->config;
  if (config.GetString("sim.preset") != FindPreset(argc, argv)) {
    return Fail(Status::InvalidArgument(
                    "sim.preset can only be chosen on the command line (--preset NAME), because "
                    "a preset supplies the defaults that a config file overrides"),
                2);
  }

  const std::string mode = config.GetString("sim.progress");
  if (mode != "auto" && mode != "tty" && mode != "plain" && mode != "none") {
    return Fail(Status::InvalidArgument("sim.progress must be auto, tty, plain or none (got " +
                                        mode + ")"),
                2);
  }
  const bool tty = mode == "tty" || (mode == "auto" && ::isatty(STDERR_FILENO));
  const bool quiet = mode == "none";

  // Resolved here so the summary names the device actually used (auto -> cpu/cuda).
  Result<std::string> device = ResolveTorchDevice(config.GetString("sim.device"));
  if (!device.ok()) return Fail(device.status(), UsageOr1(device.status()));
  const int64_t threads = config.GetInt("sim.threads_per_worker");
  // Under mpirun, rank 0 speaks for the run.
  if (LaunchedRank() == 0) {
    std::cerr << kProgram << ": preset " << config.GetString("sim.preset") << ", "
              << config.GetString("algorithm.name") << ", " << DescribeClients(config) << ", "
              << config.GetInt("coordinator.clients_per_round") << " per round, "
              << config.GetInt("run.rounds") << " rounds, model " << config.GetString("model.name")
              << ", device " << *device << ", " << config.GetInt("sim.workers") << " workers x "
              << threads << (threads == 1 ? " thread" : " threads") << " -> "
              << OutputDirectory(config) << "\n";
  }

  bool line_open = false;
  auto progress = [&](const SimProgress& p) {
    if (quiet) return;
    if (tty) {
      std::cerr << "\r\033[K" << ProgressText(p) << std::flush;
      line_open = true;
    } else if (p.round_finished) {
      std::cerr << ProgressText(p) << "\n";
    }
  };
  Result<SimulationResult> result = RunSimulation(config, progress);
  if (line_open) std::cerr << "\n";
  if (!result.ok()) return Fail(result.status(), 1);
  if (result->mpi_worker) return 0;
  std::cerr << kProgram << ": wrote metrics.csv, metrics.jsonl, accuracy_bytes.svg, run.db in "
            << result->out_dir << "\n";
  char line[256];
  std::snprintf(line, sizeof(line), " after %zu rounds (%.1f s, %.0f samples/s",
                result->rounds.size(), result->wall_seconds, result->train_samples_per_sec);
  std::string summary = line;
  if (config.GetBool("clock.enabled")) {
    std::snprintf(line, sizeof(line), ", %.0f s simulated", result->sim_time_s);
    summary += line;
  }
  std::cout << "final " << FormatMetric(result->metric, result->final_metric) << summary << ")"
            << std::endl;
  return 0;
}

// W2: the fortunes GPT (fortunes_workload.h).
int PretrainFortunes(const Config& config) {
  const bool tty = ::isatty(STDERR_FILENO);
  std::cerr << kProgram << ": pretraining " << config.GetString("model.name") << " on "
            << config.GetString("pretrain.languages") << " fortunes, "
            << config.GetInt("pretrain.steps") << " steps x "
            << config.GetInt("pretrain.batch_size") << " windows, "
            << config.GetString("pretrain.optimizer") << " lr "
            << config.GetDouble("pretrain.lr") << " (" << config.GetString("pretrain.schedule")
            << "), " << config.GetInt("pretrain.threads") << " threads\n";
  int64_t last_line_step = 0;
  auto progress = [&](const PretrainProgress& p) {
    char buf[256];
    if (p.phase != "train") {
      std::snprintf(buf, sizeof(buf), "%s (%s elapsed)", p.phase.c_str(),
                    FormatDuration(p.elapsed_seconds).c_str());
    } else {
      std::snprintf(buf, sizeof(buf), "step %lld/%lld | loss %.3f (%.3f bits/byte) | %s elapsed",
                    static_cast<long long>(p.step), static_cast<long long>(p.steps), p.loss,
                    p.loss / kLn2, FormatDuration(p.elapsed_seconds).c_str());
    }
    if (tty) {
      std::cerr << "\r\033[K" << buf << std::flush;
    } else if (p.phase != "train" || p.step - last_line_step >= 50 || p.step == p.steps) {
      std::cerr << buf << "\n";
      last_line_step = p.step;
    }
  };
  Result<PretrainReport> r = PretrainLanguageModel(config, progress);
  if (tty) std::cerr << "\n";
  if (!r.ok()) return Fail(r.status(), 1);
  char line[512];
  std::snprintf(line, sizeof(line),
                "pretrained %s (%llu parameters): %lld steps, %.1f MB of %s text seen in %.1f s "
                "(%.0f bytes/s; %.1f s in all)\n"
                "held-out bits per byte, %s: %.4f -> %.4f; %s: %.4f -> %.4f\n"
                "wrote %s",
                r->model.c_str(), static_cast<unsigned long long>(r->num_parameters),
                static_cast<long long>(r->steps), static_cast<double>(r->trained_bytes) / 1e6,
                config.GetString("pretrain.languages").c_str(), r->train_seconds,
                static_cast<double>(r->trained_bytes) / r->train_seconds, r->total_seconds,
                config.GetString("pretrain.languages").c_str(), r->source_before.loss / kLn2,
                r->source_after.loss / kLn2, config.GetString("data.languages").c_str(),
                r->target_before.loss / kLn2, r->target_after.loss / kLn2, r->out.c_str());
  std::cout << line << std::endl;
  return 0;
}

// W3: the ViT backbone (vit_pretrain.h).
int PretrainVit(const Config& config) {
  const bool tty = ::isatty(STDERR_FILENO);
  const int64_t epochs = config.GetInt("pretrain.epochs");
  std::cerr << kProgram << ": pretraining " << config.GetString("model.name")
            << " on clean Fashion-MNIST train images 0-29999, "
            << (epochs > 0 ? std::to_string(epochs) + " epochs"
                           : std::to_string(config.GetInt("pretrain.steps")) + " steps")
            << " x " << config.GetInt("pretrain.batch_size") << " images, SGD lr "
            << config.GetDouble("pretrain.lr") << " momentum "
            << config.GetDouble("pretrain.momentum") << ", " << config.GetInt("pretrain.threads")
            << " threads\n";
  auto progress = [&](const VitPretrainProgress& p) {
    char buf[256];
    if (p.phase != "train") {
      std::snprintf(buf, sizeof(buf), "%s (%s elapsed)", p.phase.c_str(),
                    FormatDuration(p.elapsed_seconds).c_str());
    } else {
      std::snprintf(buf, sizeof(buf), "step %lld/%lld | loss %.3f | %s elapsed",
                    static_cast<long long>(p.step), static_cast<long long>(p.steps), p.loss,
                    FormatDuration(p.elapsed_seconds).c_str());
    }
    if (tty) {
      std::cerr << "\r\033[K" << buf << std::flush;
    } else {
      std::cerr << buf << "\n";
    }
  };
  Result<VitPretrainReport> r = PretrainVitBackbone(config, progress);
  if (tty) std::cerr << "\n";
  if (!r.ok()) return Fail(r.status(), UsageOr1(r.status()));
  char line[512];
  std::snprintf(line, sizeof(line),
                "pretrained %s (%llu parameters): %lld steps, %llu images seen in %.1f s "
                "(%.0f images/s; %.1f s in all)\n"
                "test accuracy, clean: %.2f%% -> %.2f%%; shifted (%s): %.2f%%\n"
                "wrote %s",
                r->model.c_str(), static_cast<unsigned long long>(r->num_parameters),
                static_cast<long long>(r->steps),
                static_cast<unsigned long long>(r->trained_examples), r->train_seconds,
                static_cast<double>(r->trained_examples) / std::max(r->train_seconds, 1e-9),
                r->total_seconds, 100.0 * r->clean_before.accuracy, 100.0 * r->clean_after.accuracy,
                config.GetString("data.domains").c_str(), 100.0 * r->shifted_after.accuracy,
                r->out.c_str());
  std::cout << line << std::endl;
  return 0;
}

int Pretrain(int argc, char** argv) {
  Result<nlohmann::json> defaults = RunDefaults(argc, argv);
  if (!defaults.ok()) return Fail(defaults.status(), 2);
  Result<CommandLine> cl = ParseCommandLine(
      "fl-sim pretrain",
      "Trains the preset's model centrally and writes the checkpoint that `fl-sim run` "
      "starts from (fortunes-gpt: a GPT on the English fortunes, model.init_file; "
      "fmnist-vit-shift: a ViT on clean Fashion-MNIST, model.backbone).",
      *defaults,
      {{"--preset", "sim.preset", "workload preset (fortunes-gpt, fmnist-vit-shift)"},
       {"--model", "model.name",
        "gpt-tiny, gpt:layers=L,width=W,heads=H,context=C, vit-tiny or vit:width=W,depth=D,..."},
       {"--seed", "run.seed", "initialization and sampling seed"},
       {"--steps", "pretrain.steps", "optimizer steps"},
       {"--epochs", "pretrain.epochs",
        "fmnist-vit-shift: passes over the images (> 0 replaces steps)"},
       {"--batch-size", "pretrain.batch_size", "windows or images per step"},
       {"--lr", "pretrain.lr", "(peak) learning rate"},
       {"--threads", "pretrain.threads", "LibTorch intra-op threads"},
       {"--data-dir", "data.dir", "folder of the fortune files or Fashion-MNIST"},
       {"--device", "sim.device", "auto | cpu | cuda"},
       {"--out", "pretrain.out",
        "checkpoint to write (default: model.init_file or model.backbone)"}},
      argc, argv);
  if (!cl.ok()) return Fail(cl.status(), 2);
  if (cl->exit_now) return cl->exit_code;
  const Config& config = cl->config;
  const std::string dataset = config.GetString("data.dataset");
  if (dataset == "fortunes") return PretrainFortunes(config);
  if (dataset == "fashion-mnist-shift") return PretrainVit(config);
  return Fail(Status::InvalidArgument("preset " + config.GetString("sim.preset") +
                                      " has nothing to pretrain (try --preset fortunes-gpt or "
                                      "--preset fmnist-vit-shift)"),
              2);
}

// The trainable part of a W3 model (vit_shift_workload.h): what fl-server starts a
// head, ssf or fedins federation from. Loads the workload for its trainer options and
// backbone checks, on the CPU.
Result<ParamSet> W3InitialModel(const Config& config) {
  FL_ASSIGN_OR_RETURN(std::unique_ptr<Workload> workload, LoadWorkload(config, "cpu", nullptr));
  return workload->InitialModel(config);
}

// The command line of an export command: every `fl-sim run` key and flag (so the export
// matches the run with the same flags), with --out naming the file written (export.out).
Result<CommandLine> ParseExportCommandLine(const std::string& command, const std::string& about,
                                           const std::string& out_help, int argc, char** argv) {
  FL_ASSIGN_OR_RETURN(nlohmann::json defaults, RunDefaults(argc, argv));
  defaults["export"] = {{"out", ""}};
  std::vector<FlagAlias> aliases;
  for (FlagAlias& a : RunAliases()) {
    if (a.flag != "--out") aliases.push_back(std::move(a));
  }
  aliases.push_back({"--out", "export.out", out_help});
  return ParseCommandLine(command, about, defaults, aliases, argc, argv);
}

int ExportModel(int argc, char** argv) {
  Result<CommandLine> cl = ParseExportCommandLine(
      "fl-sim export-model",
      "Writes the initial global model in the format fl-server loads (model.init_file): a "
      "zoo model's seeded parameters, or with --preset fmnist-vit-shift the trainable part "
      "of model.tuning (head, ssf, the fedins pool or the full ViT) on model.backbone.",
      "output file", argc, argv);
  if (!cl.ok()) return Fail(cl.status(), 2);
  if (cl->exit_now) return cl->exit_code;
  const Config& config = cl->config;
  const std::string out = config.GetString("export.out");
  if (out.empty()) return Fail(Status::InvalidArgument("--out FILE is required"), 2);
  const std::string name = config.GetString("model.name");
  const uint64_t seed = static_cast<uint64_t>(config.GetInt("run.seed"));
  Result<ParamSet> params = config.GetString("data.dataset") == kFashionMnistShift
                                ? W3InitialModel(config)
                                : InitialModelParameters(name, seed);
  if (!params.ok()) return Fail(params.status(), UsageOr1(params.status()));
  Status s = WriteModelFile(out, *params);
  if (!s.ok()) return Fail(s, 1);
  std::cout << "wrote " << name << " (" << params->size() << " parameters, layout hash "
            << params->layout().hash() << ", seed " << seed << ") to " << out << std::endl;
  return 0;
}

// W3's split (data/shifted_split_config.h): per client, its train images (indices into
// the whole train set) and the domain each is shown under.
Result<nlohmann::json> ShiftedPartitionJson(const Config& config, const ImageDataset& train) {
  FL_ASSIGN_OR_RETURN(ShiftedSplitOptions options, ShiftedSplitOptionsFromConfig(config, train.size()));
  FL_ASSIGN_OR_RETURN(ShiftedSplit split, BuildShiftedSplit(train, options));
  nlohmann::json clients = nlohmann::json::array(), domains = nlohmann::json::array();
  for (const std::vector<int64_t>& examples : split.clients) {
    std::vector<int64_t> images;
    std::vector<std::string> shown_as;
    for (int64_t j : examples) {
      images.push_back(options.begin + j);
      shown_as.emplace_back(DomainName(split.domain[static_cast<size_t>(j)]));
    }
    clients.push_back(std::move(images));
    domains.push_back(std::move(shown_as));
  }
  return nlohmann::json{
      {"partition", config.GetString("data.partition")},
      {"domains_per_client", options.domains_per_client},
      {"seed", config.GetInt("run.seed")},
      {"num_clients", split.clients.size()},
      {"num_examples", split.domain.size()},
      {"clients", std::move(clients)},
      {"domains", std::move(domains)},
  };
}

int ExportPartition(int argc, char** argv) {
  Result<CommandLine> cl = ParseExportCommandLine(
      "fl-sim export-partition",
      "Writes the client -> training-example indices that `fl-sim run` would use with the "
      "same flags, as JSON (for baselines outside fl-sim); for fmnist-vit-shift also the "
      "domain each image is shown under.",
      "output JSON file", argc, argv);
  if (!cl.ok()) return Fail(cl.status(), 2);
  if (cl->exit_now) return cl->exit_code;
  const Config& config = cl->config;
  const std::string out = config.GetString("export.out");
  if (out.empty()) return Fail(Status::InvalidArgument("--out FILE is required"), 2);
  Result<ImageDataset> train = LoadMnistFormat(config.GetString("data.dir"), DatasetSplit::kTrain);
  if (!train.ok()) return Fail(train.status(), 1);
  if (config.GetString("data.dataset") == kFashionMnistShift) {
    Result<nlohmann::json> doc = ShiftedPartitionJson(config, *train);
    if (!doc.ok()) return Fail(doc.status(), UsageOr1(doc.status()));
    Status s = Env::Default()->WriteFileAtomic(out, doc->dump() + "\n", false);
    if (!s.ok()) return Fail(s, 1);
    std::cout << "wrote " << (*doc)["num_clients"] << " clients of " << kFashionMnistShift
              << " (" << config.GetString("data.partition") << ", seed " << config.GetInt("run.seed")
              << ") to " << out << std::endl;
    return 0;
  }
  const int64_t limit = config.GetInt("data.train_examples");
  if (limit > 0 && limit < train->size()) train->labels.resize(static_cast<size_t>(limit));
  Result<ClientShards> partition = PartitionFromConfig(config, train->labels);
  if (!partition.ok()) return Fail(partition.status(), 2);
  // sample:<m> writes each client's drawn examples.
  nlohmann::json clients = nlohmann::json::array();
  for (size_t c = 0; c < partition->num_clients(); ++c) clients.push_back(partition->Indices(c));
  nlohmann::json doc = {
      {"partition", config.GetString("data.partition")},
      {"seed", config.GetInt("run.seed")},
      {"num_clients", partition->num_clients()},
      {"num_examples", train->labels.size()},
      {"clients", std::move(clients)},
  };
  Status s = Env::Default()->WriteFileAtomic(out, doc.dump() + "\n", false);
  if (!s.ok()) return Fail(s, 1);
  std::cout << "wrote " << partition->num_clients() << " clients (" << config.GetString("data.partition")
            << ", seed " << config.GetInt("run.seed") << ") to " << out << std::endl;
  return 0;
}

// fl-sim compare: reads metrics.csv of finished runs, prints a summary table and writes a
// plot of the metric against rounds, against uploaded bytes per client and, when every
// run was timed by the virtual clock, against simulated time.
int Compare(int argc, char** argv) {
  constexpr char kUsage[] =
      "usage: fl-sim compare [--out FILE.svg] [--title TEXT] RUN_DIR[=LABEL] ...\n"
      "Each RUN_DIR is an fl-sim output directory (its metrics.csv is read); LABEL names\n"
      "its line (default: the directory). --out defaults to compare.svg. When every run\n"
      "has the sim_time_s column, a third panel plots the metric against simulated time.\n";
  std::string out = "compare.svg", title = "fl-sim runs";
  std::vector<std::pair<std::string, std::string>> runs;  // dir, label
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (arg == "--out" || arg == "--title") {
      if (i + 1 >= argc) return Fail(Status::InvalidArgument(arg + " needs a value"), 2);
      (arg == "--out" ? out : title) = argv[++i];
      continue;
    }
    if (!arg.empty() && arg[0] == '-') {
      std::cerr << kUsage;
      return Fail(Status::InvalidArgument("unknown flag " + arg), 2);
    }
    const size_t eq = arg.find('=');
    runs.emplace_back(arg.substr(0, eq), eq == std::string::npos ? arg : arg.substr(eq + 1));
  }
  if (runs.empty()) {
    std::cerr << kUsage;
    return Fail(Status::InvalidArgument("no run directories given"), 2);
  }
  Env* env = Env::Default();
  std::vector<RunCurve> curves;
  for (const auto& [dir, label] : runs) {
    Result<std::string> csv = env->ReadFile(dir + "/metrics.csv");
    if (!csv.ok()) return Fail(csv.status().WithContext(dir), 1);
    Result<RunCurve> curve = ParseRunCurve(*csv, label);
    if (!curve.ok()) return Fail(curve.status().WithContext(dir), 1);
    curves.push_back(std::move(curve).value());
  }
  Result<std::string> svg = CompareRunsSvg(curves, title);
  if (!svg.ok()) return Fail(svg.status(), 1);
  Status s = env->WriteFileAtomic(out, *svg, false);
  if (!s.ok()) return Fail(s, 1);
  std::cout << CompareRunsTable(curves) << "wrote " << out << std::endl;
  return 0;
}

}  // namespace
}  // namespace fl::internal

int main(int argc, char** argv) {
  using namespace fl::internal;
  // LibTorch allocates and frees megabyte-sized activations at every step. With glibc's
  // adaptive defaults those blocks are mmap'd or trimmed back to the OS and then faulted
  // in again: measured here, 741k page faults and 6 s of system time in a 2-round run
  // against 176k and 1.4 s with the heap kept. Fixed thresholds keep freed memory in the
  // process for reuse (peak RSS grows by ~40 MB).
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
  // The coordinator logs every round at INFO; fl-sim's own progress line says the same.
  if (std::getenv("FL_LOG_LEVEL") == nullptr) SetMinLogLevel(LogLevel::kWarning);
  std::string command = "run";
  if (argc > 1 && argv[1][0] != '-') {
    command = argv[1];
    // Drop the subcommand so the flag parser sees only flags.
    for (int i = 1; i + 1 < argc; ++i) argv[i] = argv[i + 1];
    --argc;
  }
  if (command == "run") return Run(argc, argv);
  if (command == "pretrain") return Pretrain(argc, argv);
  if (command == "export-model") return ExportModel(argc, argv);
  if (command == "export-partition") return ExportPartition(argc, argv);
  if (command == "compare") return Compare(argc, argv);
  std::cerr << "fl-sim: unknown command \"" << command
            << "\" (expected run, pretrain, export-model, export-partition or compare; see "
               "fl-sim --help)\n";
  return 2;
}
