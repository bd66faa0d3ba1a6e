#include <algorithm>
#include <atomic>
#include <iostream>
#include <mutex>
#include <new>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "plm/ckpt/safetensors.h"
#include "plm/common/log.h"
#include "plm/common/runtime.h"
#include "plm/config/load.h"
#include "plm/data/loader_factory.h"
#include "plm/data/packing.h"
#include "plm/demo/demo_error.h"
#include "plm/demo/make_demo.h"

namespace plm::cli {
namespace {

struct DataOptions {
  std::string recipe;
  std::vector<std::string> overrides;
  bool json = false;
  int64_t max_samples = 0;  // per dataset; 0 = all
  int64_t n = 2;
  std::string dump;
};

// Loads the recipe and sets up the process as every computing command does (threads, start-up facts on stderr).
config::TrainArgs load_args(const DataOptions& o) {
  const auto loaded = config::load_config(o.recipe, o.overrides);
  runtime::configure_threads();
  runtime::log_summary();
  return loaded.args;
}

struct DatasetReport {
  std::vector<int64_t> lengths;  // per checked row, the tokens it takes in a batch row; -1: not usable
  int64_t rows = 0, usable = 0, truncated = 0, tokens = 0, loss_tokens = 0;
  int64_t bbox_map_ignored = 0;  // a note, not a skip: null boxes and keys that are not frame indices
  std::map<std::string, int64_t> skipped;
};

// The rows a recipe's micro-batches would take, unpacked (one sample per row of model.max_seqlen) and packed
// (data.packing: samples), over micro-batches of data.batch_size drawn as training draws them (data/stream.h, the
// datamix weights, data.seed) from the checked rows, until each dataset's rows have been used once or 100,000
// micro-batches. Unusable rows are replaced by the stream's spares, as the loader does.
nlohmann::json packing_report(const config::TrainArgs& args, const std::vector<data::MixEntry>& mix,
                              const std::vector<std::vector<int64_t>>& lengths, bool quiet) {
  std::vector<double> weights;
  std::vector<int64_t> sizes;
  int64_t total = 0, usable = 0;
  for (size_t d = 0; d < mix.size(); ++d) {
    weights.push_back(mix[d].weight);
    sizes.push_back(std::max<int64_t>(1, static_cast<int64_t>(lengths[d].size())));
    total += static_cast<int64_t>(lengths[d].size());
    for (const int64_t n : lengths[d]) usable += n >= 0;
  }
  if (usable == 0) return nullptr;
  const int64_t batch = std::max<int64_t>(1, args.data.batch_size), row_len = args.model.max_seqlen;
  const int64_t micro_batches = std::clamp<int64_t>(total / batch, 1, 100000);
  auto length_of = [&](const data::Candidate& c) {
    const auto& rows = lengths[static_cast<size_t>(c.dataset)];
    return c.row < static_cast<int64_t>(rows.size()) ? rows[static_cast<size_t>(c.row)] : int64_t{-1};
  };
  data::SampleStream stream(weights, sizes, static_cast<uint64_t>(args.data.seed));
  data::PackingStats unpacked, packed, by_tokens;
  std::vector<int64_t> drawn;  // every sample in order, for packing: tokens
  for (int64_t m = 0; m < micro_batches; ++m) {
    std::vector<int64_t> batch_lengths;
    for (int64_t k = 0; k < batch; ++k) {
      const int64_t slot = stream.state().slot;
      int64_t n = length_of(stream.next());
      for (int attempt = 1; n < 0 && attempt <= 64; ++attempt) n = length_of(stream.spare(slot, attempt));
      if (n >= 0) batch_lengths.push_back(std::min(n, row_len));
    }
    unpacked.add(data::packing_stats(batch_lengths, row_len, false));
    packed.add(data::packing_stats(batch_lengths, row_len, true));
    drawn.insert(drawn.end(), batch_lengths.begin(), batch_lengths.end());
  }
  // packing: tokens over the same samples: each micro-batch takes the next ones while they fit data.batch_size rows.
  int64_t token_batches = 0;
  for (size_t i = 0; i < drawn.size();) {
    std::vector<int64_t> rows_of{drawn[i++]};
    while (i < drawn.size()) {
      rows_of.push_back(drawn[i]);
      if (static_cast<int64_t>(data::first_fit_decreasing(rows_of, row_len).size()) > batch) {
        rows_of.pop_back();
        break;
      }
      ++i;
    }
    data::PackingStats s = data::packing_stats(rows_of, row_len, true);
    s.row_tokens = batch * row_len;  // a micro-batch's budget: its rows as data.batch_size sets them
    s.rows = batch;
    by_tokens.add(s);
    ++token_batches;
  }
  const auto per = [](const data::PackingStats& s) {
    return nlohmann::json{
        {"efficiency", s.efficiency()},
        {"rows", s.rows},
        {"samples_per_row", s.rows ? static_cast<double>(s.samples) / static_cast<double>(s.rows) : 0.0}};
  };
  const double per_batch = static_cast<double>(by_tokens.samples) / static_cast<double>(token_batches);
  if (!quiet)
    std::cout << fmt::format(
        "packing ({} micro-batches of {} samples, rows of {} tokens): unpacked {:.1f}% of row tokens are the "
        "samples'; data.packing=samples {:.1f}% ({:.2f} samples per row, {:.2f}x fewer rows); data.packing=tokens "
        "{:.1f}% of {} rows a micro-batch ({:.2f} samples per micro-batch instead of {})\n",
        micro_batches, batch, row_len, 100.0 * unpacked.efficiency(), 100.0 * packed.efficiency(),
        static_cast<double>(packed.samples) / static_cast<double>(std::max<int64_t>(1, packed.rows)),
        static_cast<double>(unpacked.rows) / static_cast<double>(std::max<int64_t>(1, packed.rows)),
        100.0 * by_tokens.efficiency(), batch, per_batch, batch);
  nlohmann::json tokens = per(by_tokens);
  tokens["samples_per_micro_batch"] = per_batch;
  return {{"micro_batches", micro_batches}, {"batch_size", batch},    {"row_tokens", row_len},
          {"none", per(unpacked)},          {"samples", per(packed)}, {"tokens", tokens}};
}

// Every row of every dataset through parsing and preprocessing, on all cores.

int check(const DataOptions& o) {
  const config::TrainArgs args = load_args(o);
  const data::LoaderFactory p = data::make_loader_factory(args);
  nlohmann::json out = nlohmann::json::object();
  std::vector<std::pair<data::VideoRead, std::string>> videos;  // and its dataset
  std::vector<std::vector<int64_t>> lengths;                    // per dataset of the mix, per checked row
  for (const auto& entry : p.mix) {
    const data::JsonlSource source(entry.dataset.annotation);
    const int64_t rows = o.max_samples > 0 ? std::min(o.max_samples, source.size()) : source.size();
    DatasetReport r;
    r.rows = rows;
    r.lengths.assign(static_cast<size_t>(rows), -1);
    std::mutex mutex;
    std::atomic<int64_t> next{0};
    std::string fatal;  // the first error that is not a sample's
    auto work = [&] {
      for (int64_t i; (i = next++) < rows;) {
        try {
          const data::Sample sample = data::parse_sample(source.row(i));
          const auto s = (*p.preprocess)(sample, entry.dataset.root_dir);
          std::lock_guard<std::mutex> lock(mutex);
          ++r.usable;
          r.bbox_map_ignored += sample.bbox_map_ignored;
          r.truncated += s.truncated;
          r.tokens += static_cast<int64_t>(s.ids.size());
          r.loss_tokens += static_cast<int64_t>(s.response_pos.size());
          r.lengths[static_cast<size_t>(i)] = std::max<int64_t>(static_cast<int64_t>(s.ids.size()) - 1, 0);
          if (!s.video.file.empty()) videos.emplace_back(s.video, entry.dataset.name);
        } catch (const data::SampleError& e) {
          std::lock_guard<std::mutex> lock(mutex);
          ++r.skipped[e.reason()];
          if (r.skipped[e.reason()] == 1 && !o.json)  // the file:line only for the first of each reason
            log::warn("{} ({}): {}: {}", entry.dataset.name, e.reason(), source.origin(i), e.what());
        } catch (const std::exception& e) {  // not the sample's fault (memory, the file system): stop, say where
          const bool oom = dynamic_cast<const std::bad_alloc*>(&e) != nullptr;
          std::lock_guard<std::mutex> lock(mutex);
          if (fatal.empty())
            fatal = entry.dataset.name + ", " + source.origin(i) + ": " + (oom ? "ran out of memory" : e.what());
          next = rows;
        }
      }
    };
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < std::max(1u, std::thread::hardware_concurrency()); ++t) {
      try {
        threads.emplace_back(work);
      } catch (const std::system_error&) {  // the system gives fewer threads: check with those that started
        if (threads.empty()) throw;
        break;
      }
    }
    for (auto& t : threads) t.join();
    if (!fatal.empty()) throw std::runtime_error("plm data check stopped at " + fatal + ".");
    lengths.push_back(std::move(r.lengths));
    const double share = r.tokens ? static_cast<double>(r.loss_tokens) / static_cast<double>(r.tokens) : 0.0;
    out[entry.dataset.name] = {{"rows", r.rows},
                               {"usable", r.usable},
                               {"skipped", r.skipped},
                               {"truncated", r.truncated},
                               {"loss_token_share", share},
                               {"weight", entry.weight},
                               {"notes", {{"bbox_map_entries_ignored", r.bbox_map_ignored}}}};
    if (!o.json) {
      std::cout << entry.dataset.name << ": " << r.usable << " of " << r.rows << " samples usable, " << r.truncated
                << " truncated, loss tokens " << static_cast<int>(share * 1000) / 10.0 << "% of tokens";
      for (const auto& [reason, n] : r.skipped) std::cout << ", " << n << " " << reason;
      if (r.bbox_map_ignored > 0)
        std::cout << "; note: " << r.bbox_map_ignored
                  << " bbox_map entries left out (null, or a key that is not a frame index; the reference never "
                     "draws them)";
      std::cout << "\n";
    }
  }
  // The slowest videos first: decode time is about the frames decoded times their pixels.
  std::sort(videos.begin(), videos.end(), [](const auto& a, const auto& b) {
    return a.first.pixels_decoded != b.first.pixels_decoded ? a.first.pixels_decoded > b.first.pixels_decoded
                                                            : a.first.file < b.first.file;
  });
  nlohmann::json slowest = nlohmann::json::array();
  for (size_t k = 0; k < std::min<size_t>(10, videos.size()); ++k) {
    const auto& [v, dataset] = videos[k];
    const double megapixels = static_cast<double>(v.pixels_decoded) / 1e6;
    slowest.push_back({{"file", v.file},
                       {"dataset", dataset},
                       {"frames", v.frames},
                       {"frames_decoded", v.frames_decoded},
                       {"megapixels_decoded", megapixels}});
    if (o.json) continue;
    if (k == 0) std::cout << "slowest videos by predicted decode cost (frames decoded to sample x their pixels):\n";
    std::cout << "  " << k + 1 << ". " << v.file << " (" << dataset << "): " << v.frames_decoded << " of " << v.frames
              << " frames decoded, " << megapixels << " megapixels\n";
  }
  const nlohmann::json packing = packing_report(args, p.mix, lengths, o.json);
  if (o.json)
    std::cout << nlohmann::json{{"datasets", out}, {"packing", packing}, {"slowest_videos", slowest}}.dump() << "\n";
  return 0;
}

// A row of ids as text, with runs of <|image|> and padding shortened and loss targets in [[...]].
std::string render(const text::Tokenizer& tok, const at::Tensor& ids, const at::Tensor& targets) {
  const text::TokenId image = tok.special_id("<|image|>"), pad = tok.special_id("<|end_of_text|>");
  std::string out;
  const int64_t n = ids.size(0);
  for (int64_t i = 0; i < n;) {
    const auto id = static_cast<text::TokenId>(ids[i].item<int64_t>());
    const bool target = i > 0 && targets[i - 1].item<bool>();
    int64_t j = i + 1;
    if (id == image || (id == pad && !target)) {
      while (j < n && ids[j].item<int64_t>() == id && !(j > 0 && targets[j - 1].item<bool>())) ++j;
      out += tok.decode({id}) + (j - i > 1 ? "x" + std::to_string(j - i) : "");
    } else {
      std::vector<text::TokenId> run{id};
      while (j < n && (j > 0 && targets[j - 1].item<bool>()) == target && ids[j].item<int64_t>() != image &&
             ids[j].item<int64_t>() != pad) {
        run.push_back(static_cast<text::TokenId>(ids[j].item<int64_t>()));
        ++j;
      }
      const std::string text = tok.decode(run);
      out += target ? "[[" + text + "]]" : text;
    }
    i = j;
  }
  return out;
}

int preview(const DataOptions& o) {
  const config::TrainArgs args = load_args(o);
  const data::LoaderFactory p = data::make_loader_factory(args);
  auto loader = p.loader();
  const data::Batch b = loader->next();
  size_t first = 0;  // the row's first sample (packed rows hold several, data/collate.h)
  for (int64_t i = 0; i < std::min<int64_t>(o.n, b.input_ids.size(0)); ++i) {
    // input_ids holds text[:-1]; the last token is the label after the last input position.
    const at::Tensor ids = at::cat({b.input_ids[i], b.labels[i].slice(0, -1)});
    const at::Tensor targets = at::cat({b.loss_mask[i], at::zeros({1}, at::kBool)});
    const size_t n = b.packed() ? b.segments[static_cast<size_t>(i)].size() : 1;
    std::string what;
    for (size_t k = first; k < first + n; ++k)
      what += (what.empty() ? "" : "; ") + b.media_type[k] + ", " + std::to_string(b.num_chunks[k]) + " chunk(s)";
    first += n;
    if (b.packed())
      std::cout << "--- row " << i << ": " << n << " packed sample(s) (" << what << ")\n";
    else
      std::cout << "--- sample " << i << " (" << what << ")\n";
    std::cout << render(*p.tokenizer, ids, targets) << "\n";
  }
  if (!o.dump.empty()) {
    ckpt::TensorMap t;
    t.insert("input_ids", b.input_ids);
    t.insert("labels", b.labels);
    t.insert("loss_mask", b.loss_mask);
    t.insert("image_pos_index", b.image_pos_index);
    t.insert("pixel_values", b.images);
    t.insert("num_chunks", at::tensor(b.num_chunks, at::kLong));
    if (b.packed()) {  // data.packing: each token's position in its sample, and each row's sample count
      t.insert("positions", b.positions);
      std::vector<int64_t> per_row;
      for (const auto& row : b.segments) per_row.push_back(static_cast<int64_t>(row.size()));
      t.insert("samples_per_row", at::tensor(per_row, at::kLong));
    }
    std::string types;
    for (const auto& m : b.media_type) types += (types.empty() ? "" : ",") + m;
    ckpt::write_safetensors(t, o.dump, {{"media_type", types}});
    std::cout << "first batch written to " << o.dump << "\n";
  }
  return 0;
}

// Writes the demo dataset and prints samples per task and split, chance levels and the time taken.
int run_make_demo(const demo::MakeDemoOptions& o) {
  demo::MakeDemoSummary s;
  try {
    s = demo::make_demo(o);
  } catch (const UserError& e) {  // demo::DemoError: the output folder cannot be written
    std::cerr << e.what() << '\n';
    return 2;
  }
  std::array<int64_t, 3> total{};
  std::cout << fmt::format("{:<18} {:<12} {:<8} {:>6} {:>5} {:>5} {:>7}\n", "task", "media", "answer", "train", "val",
                           "test", "chance");
  for (const auto& t : s.tasks) {
    std::cout << fmt::format("{:<18} {:<12} {:<8} {:>6} {:>5} {:>5} {:>7.3f}\n", t.name, t.media, t.answer_type,
                             t.samples[0], t.samples[1], t.samples[2], t.chance);
    for (size_t i = 0; i < 3; ++i) total[i] += t.samples[i];
  }
  std::cout << fmt::format("{:<40} {:>6} {:>5} {:>5}\n", "total", total[0], total[1], total[2])
            << "tokenizer: " << s.vocab_size << " pieces; registry: " << s.out << "/datasets.yaml; "
            << fmt::format("{:.1f}", s.seconds) << " s\n";
  return 0;
}

}  // namespace

void add_data_command(CLI::App& app, int& exit_code) {
  auto* data = app.add_subcommand("data", "Check and preview a recipe's training data");
  data->require_subcommand(1);
  auto o = std::make_shared<DataOptions>();
  auto* check_cmd = data->add_subcommand(
      "check", "Read every sample of the datamix: usable, skipped per reason, truncated, share of loss tokens");
  add_recipe_arguments(check_cmd, o->recipe, o->overrides);
  check_cmd->add_flag("--json", o->json, "one JSON object on stdout");
  check_cmd->add_option("--max-samples", o->max_samples, "check at most this many rows per dataset");
  check_cmd->callback([o, &exit_code] { exit_code = report_errors([&] { return check(*o); }); });
  auto* preview_cmd = data->add_subcommand("preview", "Decode the first batch; show samples with loss spans in [[ ]]");
  add_recipe_arguments(preview_cmd, o->recipe, o->overrides);
  preview_cmd->add_option("--n", o->n, "samples to print");
  preview_cmd->add_option("--dump", o->dump, "write the first batch to this .safetensors file");
  preview_cmd->callback([o, &exit_code] { exit_code = report_errors([&] { return preview(*o); }); });
  auto demo_options = std::make_shared<demo::MakeDemoOptions>();
  auto* demo_cmd = data->add_subcommand(
      "make-demo", "Write the synthetic demo dataset (docs/demo.md): splits, media, registry, tasks.json, tokenizer");
  demo_cmd->add_option("--out", demo_options->out, "output folder")->required();
  demo_cmd->add_option("--seed", demo_options->seed, "random seed (same seed: byte-identical files)");
  demo_cmd->add_option("--scale", demo_options->scale, "multiplies every split's sample count")
      ->check(CLI::PositiveNumber);
  demo_cmd->callback([demo_options, &exit_code] { exit_code = run_make_demo(*demo_options); });
}

}  // namespace plm::cli
