#include "proto/wire.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <limits>

namespace fl::internal {

grpc::Status ToGrpcStatus(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return Status::Ok();
  int code = static_cast<int>(status.error_code());
  // A code outside the shared range would otherwise be cast into an invalid enum.
  if (code < 0 || code > static_cast<int>(StatusCode::kUnauthenticated)) {
    code = static_cast<int>(StatusCode::kUnknown);
  }
  return Status(static_cast<StatusCode>(code), status.error_message());
}

v1::Encoding ToProto(Encoding encoding) {
  return static_cast<v1::Encoding>(static_cast<int>(encoding));
}

Result<Encoding> FromProto(v1::Encoding encoding) {
  switch (encoding) {
    case v1::ENCODING_DENSE_F32:
    case v1::ENCODING_DENSE_F16:
    case v1::ENCODING_DENSE_BF16:
    case v1::ENCODING_FERRET:
    case v1::ENCODING_NAMED_SUBSET:
      return static_cast<Encoding>(static_cast<int>(encoding));
    default:
      return Status::InvalidArgument("unknown encoding " + std::to_string(encoding));
  }
}

void ToProto(const EncodedTokens& tensor, v1::SplitTensor* out) {
  out->set_batch(static_cast<uint64_t>(tensor.batch));
  out->set_tokens(static_cast<uint64_t>(tensor.tokens));
  out->set_width(static_cast<uint64_t>(tensor.width));
  out->set_encoding(ToProto(tensor.encoding));
  out->set_values(tensor.values);
}

namespace {

// InvalidArgument naming `what` if any of `values` is beyond int64.
Status CheckInt64(std::initializer_list<uint64_t> values, const char* what) {
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (uint64_t v : values) {
    if (v > kMax) return Status::InvalidArgument(std::string(what) + " beyond int64");
  }
  return Status::Ok();
}

}  // namespace

Result<EncodedTokens> FromProto(const v1::SplitTensor& tensor) {
  FL_RETURN_IF_ERROR(
      CheckInt64({tensor.batch(), tensor.tokens(), tensor.width()}, "split tensor dimension"));
  EncodedTokens out;
  out.batch = static_cast<int64_t>(tensor.batch());
  out.tokens = static_cast<int64_t>(tensor.tokens());
  out.width = static_cast<int64_t>(tensor.width());
  FL_ASSIGN_OR_RETURN(out.encoding, FromProto(tensor.encoding()));
  out.values = tensor.values();
  return out;
}

void ToProto(const SplitSessionOptions& options, v1::SplitOpen* out) {
  out->set_round(options.round);
  out->set_encoding(ToProto(options.encoding));
  out->set_output_tokens(static_cast<uint64_t>(options.output_tokens));
  out->set_grad_begin(static_cast<uint64_t>(options.grad_begin));
  out->set_grad_end(static_cast<uint64_t>(options.grad_end));
  out->set_body(options.body);
}

Result<SplitSessionOptions> FromProto(const v1::SplitOpen& open) {
  FL_RETURN_IF_ERROR(
      CheckInt64({open.output_tokens(), open.grad_begin(), open.grad_end()}, "split token range"));
  SplitSessionOptions out;
  out.round = open.round();
  FL_ASSIGN_OR_RETURN(out.encoding, FromProto(open.encoding()));
  out.output_tokens = static_cast<int64_t>(open.output_tokens());
  out.grad_begin = static_cast<int64_t>(open.grad_begin());
  out.grad_end = static_cast<int64_t>(open.grad_end());
  out.body = open.body();
  return out;
}

void ToProto(const SplitTokenRanges& ranges, v1::SplitOpened* out) {
  out->set_output_tokens(static_cast<uint64_t>(ranges.output));
  out->set_grad_begin(static_cast<uint64_t>(ranges.grad_begin));
  out->set_grad_end(static_cast<uint64_t>(ranges.grad_end));
}

Result<SplitTokenRanges> FromProto(const v1::SplitOpened& opened, int64_t tokens) {
  FL_RETURN_IF_ERROR(CheckInt64({opened.output_tokens(), opened.grad_begin(), opened.grad_end()},
                                "split token range"));
  SplitSessionOptions served;
  served.output_tokens = static_cast<int64_t>(opened.output_tokens());
  served.grad_begin = static_cast<int64_t>(opened.grad_begin());
  served.grad_end = static_cast<int64_t>(opened.grad_end());
  return ResolveTokenRanges(served, tokens);
}

v1::TaskKind ToProto(TaskKind kind) { return static_cast<v1::TaskKind>(static_cast<int>(kind)); }

Result<TaskKind> FromProto(v1::TaskKind kind) {
  switch (kind) {
    case v1::TASK_KIND_TRAIN:
    case v1::TASK_KIND_WAIT:
    case v1::TASK_KIND_DONE:
      return static_cast<TaskKind>(static_cast<int>(kind));
    default:
      return Status::InvalidArgument("unknown task kind " + std::to_string(kind));
  }
}

void ToProto(const TrainConfig& config, v1::TrainConfig* out) {
  out->set_local_epochs(config.local_epochs);
  out->set_local_steps(config.local_steps);
  out->set_batch_size(config.batch_size);
  out->set_lr(config.lr);
  out->set_momentum(config.momentum);
  out->set_weight_decay(config.weight_decay);
  out->set_prox_mu(config.prox_mu);
  out->set_seed(config.seed);
  out->set_upload_encoding(ToProto(config.upload_encoding));
  auto* values = out->mutable_extra_values();
  auto* legacy = out->mutable_extra();
  for (const auto& [key, value] : config.extra) {
    v1::TrainValue& v = (*values)[key];
    switch (value.type()) {
      case TrainValue::Type::kBool: v.set_bool_value(*value.AsBool()); break;
      case TrainValue::Type::kInt: v.set_int_value(*value.AsInt64()); break;
      case TrainValue::Type::kDouble: v.set_double_value(*value.AsDouble()); break;
      case TrainValue::Type::kString: v.set_string_value(*value.AsString()); break;
    }
    // The double-valued field, for receivers that predate extra_values: only what a
    // double holds exactly.
    if (value.is_bool()) {
      (*legacy)[key] = *value.AsBool() ? 1.0 : 0.0;
    } else if (!value.is_string()) {
      if (Result<double> d = value.AsDouble(); d.ok()) (*legacy)[key] = *d;
    }
  }
}

Result<TrainConfig> FromProto(const v1::TrainConfig& config) {
  TrainConfig out;
  out.local_epochs = config.local_epochs();
  out.local_steps = config.local_steps();
  out.batch_size = config.batch_size();
  out.lr = config.lr();
  out.momentum = config.momentum();
  out.weight_decay = config.weight_decay();
  out.prox_mu = config.prox_mu();
  out.seed = config.seed();
  FL_ASSIGN_OR_RETURN(out.upload_encoding, FromProto(config.upload_encoding()));
  // The older double-valued field first; extra_values, where present, overrides it.
  for (const auto& [key, value] : config.extra()) out.extra[key] = value;
  for (const auto& [key, value] : config.extra_values()) {
    switch (value.value_case()) {
      case v1::TrainValue::kBoolValue: out.extra[key] = value.bool_value(); break;
      case v1::TrainValue::kIntValue: out.extra[key] = value.int_value(); break;
      case v1::TrainValue::kDoubleValue: out.extra[key] = value.double_value(); break;
      case v1::TrainValue::kStringValue: out.extra[key] = value.string_value(); break;
      case v1::TrainValue::VALUE_NOT_SET:
        return Status::InvalidArgument("train extra value \"" + key + "\" has no value");
    }
  }
  return out;
}

void ToProto(const Task& task, v1::Task* out) {
  out->set_kind(ToProto(task.kind));
  out->set_round(task.round);
  out->set_model_version(task.model_version);
  out->set_algorithm(task.algorithm);
  out->set_retry_after_ms(task.retry_after_ms);
  if (task.kind == TaskKind::kTrain) ToProto(task.config, out->mutable_config());
}

Result<Task> FromProto(const v1::Task& task) {
  Task out;
  FL_ASSIGN_OR_RETURN(out.kind, FromProto(task.kind()));
  out.round = task.round();
  out.model_version = task.model_version();
  out.algorithm = task.algorithm();
  out.retry_after_ms = task.retry_after_ms();
  if (out.kind == TaskKind::kTrain) {
    FL_ASSIGN_OR_RETURN(out.config, FromProto(task.config()));
    out.config.round = out.round;  // travels once, in Task.round
  }
  return out;
}

void ToProto(const ServerStatusInfo& info, v1::GetStatusResponse* out) {
  out->set_round(info.round);
  out->set_model_version(info.model_version);
  out->set_updates_in_round(info.updates_in_round);
  out->set_clients_selected(info.clients_selected);
  out->set_clients_known(info.clients_known);
  out->set_finished(info.finished);
}

ServerStatusInfo FromProto(const v1::GetStatusResponse& info) {
  ServerStatusInfo out;
  out.round = info.round();
  out.model_version = info.model_version();
  out.updates_in_round = info.updates_in_round();
  out.clients_selected = info.clients_selected();
  out.clients_known = info.clients_known();
  out.finished = info.finished();
  return out;
}

void ToProto(const UpdateMeta& meta, uint64_t total_bytes, v1::UpdateHeader* out) {
  out->set_round(meta.round);
  out->set_base_version(meta.base_version);
  out->set_weight(meta.weight);
  out->set_layout_hash(meta.layout_hash);
  out->set_encoding(ToProto(meta.encoding));
  out->set_sha256(meta.sha256);
  out->set_total_bytes(total_bytes);
  out->set_num_examples(meta.num_examples);
  out->set_train_loss(meta.train_loss);
  out->set_client_id(meta.client_id);
}

Result<UpdateMeta> FromProto(const v1::UpdateHeader& header) {
  UpdateMeta meta;
  meta.client_id = header.client_id();
  meta.round = header.round();
  meta.base_version = header.base_version();
  meta.weight = header.weight();
  meta.layout_hash = header.layout_hash();
  FL_ASSIGN_OR_RETURN(meta.encoding, FromProto(header.encoding()));
  meta.sha256 = header.sha256();
  meta.num_examples = header.num_examples();
  meta.train_loss = header.train_loss();
  return meta;
}

std::optional<std::string> SessionTokenFromMetadata(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  auto it = metadata.find(kAuthorizationKey);
  if (it != metadata.end()) {
    std::string_view value(it->second.data(), it->second.size());
    constexpr std::string_view kPrefix = kBearerPrefix;
    // The scheme name is case-insensitive (RFC 7235).
    if (value.size() > kPrefix.size() &&
        std::equal(kPrefix.begin(), kPrefix.end(), value.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) ==
                 std::tolower(static_cast<unsigned char>(b));
        })) {
      return std::string(value.substr(kPrefix.size()));
    }
  }
  it = metadata.find(kSessionKey);
  if (it != metadata.end() && it->second.size() > 0) {
    return std::string(it->second.data(), it->second.size());
  }
  return std::nullopt;
}

}  // namespace fl::internal
