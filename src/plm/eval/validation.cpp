#include "plm/eval/validation.h"

#include <chrono>
#include <cmath>

#include <nlohmann/json.hpp>

#include "plm/config/source.h"

namespace plm::eval {
namespace {

/// Rows `rows` of `b` with their media chunks (media are concatenated in row order, num_chunks per row).
data::Batch select_rows(const data::Batch& b, const std::vector<int64_t>& rows) {
  std::vector<int64_t> first(b.num_chunks.size() + 1, 0);
  for (size_t i = 0; i < b.num_chunks.size(); ++i) first[i + 1] = first[i] + b.num_chunks[i];
  const at::Tensor index = at::tensor(rows, at::kLong);
  data::Batch out;
  out.input_ids = b.input_ids.index_select(0, index);
  out.labels = b.labels.index_select(0, index);
  out.loss_mask = b.loss_mask.index_select(0, index);
  out.image_pos_index = b.image_pos_index.index_select(0, index);
  std::vector<at::Tensor> images, flags;
  for (const int64_t r : rows) {
    images.push_back(b.images.narrow(0, first[r], b.num_chunks[r]));
    flags.push_back(b.chunk_has_text.narrow(0, first[r], b.num_chunks[r]));
    out.media_type.push_back(b.media_type[r]);
    out.num_chunks.push_back(b.num_chunks[r]);
    out.sample_ids.push_back(b.sample_ids[r]);
  }
  out.images = at::cat(images, 0);
  out.chunk_has_text = at::cat(flags, 0);
  return out;
}

std::string dataset_of(const std::string& sample_id) {
  return sample_id.substr(0, sample_id.rfind('#'));
}

}  // namespace

std::string ValidationLoss::to_json() const {
  using nlohmann::json;
  auto value = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  json j{{"loss", value(loss)}, {"tokens", tokens}, {"batches", batches}, {"samples", samples}};
  j["datasets"] = json::object();
  for (const auto& [name, l] : dataset_loss)
    j["datasets"][name] = {{"loss", value(l)}, {"tokens", dataset_tokens.at(name)}};
  return j.dump();
}

std::optional<data::LoaderFactory> validation_loaders(const config::TrainArgs& args) {
  if (args.data.val_datamix.empty()) return std::nullopt;
  if (args.data.val_max_batches < 1)
    throw config::ConfigError("data.val_max_batches is " + std::to_string(args.data.val_max_batches) +
                              "; it must be at least 1 when data.val_datamix is set.");
  config::TrainArgs val = args;
  val.data.datamix = args.data.val_datamix;
  val.data.packing = config::Packing::none;  // the loss per dataset reads one sample per row
  try {
    return data::make_loader_factory(val);
  } catch (const config::ConfigError& e) {  // resolve_datamix names data.datamix
    const std::string what = e.what(), key = "data.datamix";
    throw config::ConfigError(what.rfind(key, 0) == 0 ? "data.val_datamix" + what.substr(key.size()) : what);
  }
}

ValidationLoss validation_loss(model::PerceptionLMImpl& model, data::DataLoader& loader, int64_t max_batches) {
  TORCH_CHECK(max_batches >= 1, "validation_loss needs max_batches >= 1, got ", max_batches);
  const auto start = std::chrono::steady_clock::now();
  struct RestoreMode {  // also when the loader or the model throws
    model::PerceptionLMImpl& m;
    bool training;
    ~RestoreMode() { m.train(training); }
  } restore{model, model.is_training()};
  model.eval();
  at::NoGradGuard no_grad;
  const at::Device device = model.tok_embeddings.device();
  std::map<std::string, double> sums;
  ValidationLoss out;
  for (int64_t k = 0; k < max_batches; ++k) {
    const data::Batch batch = loader.next();
    ++out.batches;
    out.samples += batch.input_ids.size(0);
    std::map<std::string, std::vector<int64_t>> groups;  // dataset -> rows
    for (size_t r = 0; r < batch.sample_ids.size(); ++r)
      groups[dataset_of(batch.sample_ids[r])].push_back(static_cast<int64_t>(r));
    for (const auto& [dataset, rows] : groups) {
      const data::Batch part = rows.size() == batch.sample_ids.size() ? batch : select_rows(batch, rows);
      const int64_t n = part.loss_mask.sum().item<int64_t>();
      if (n == 0) continue;  // the mean over no tokens is NaN; such rows carry no weight
      const double loss =
          model.loss(model::model_inputs(model, part, device), part.labels, part.loss_mask).item<double>();
      sums[dataset] += loss * static_cast<double>(n);
      out.dataset_tokens[dataset] += n;
      out.tokens += n;
    }
  }
  double total = 0;
  for (const auto& [dataset, sum] : sums) {
    out.dataset_loss[dataset] = sum / static_cast<double>(out.dataset_tokens[dataset]);
    total += sum;
  }
  out.loss = out.tokens > 0 ? total / static_cast<double>(out.tokens) : std::nan("");
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

ValidationLoss validation_loss(model::PerceptionLMImpl& model, const data::LoaderFactory& loaders,
                               int64_t max_batches) {
  const std::unique_ptr<data::DataLoader> loader = loaders.loader();
  return validation_loss(model, *loader, max_batches);
}

}  // namespace plm::eval
