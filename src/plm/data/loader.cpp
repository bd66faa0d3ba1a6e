#include "plm/data/loader.h"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "plm/common/log.h"
#include "plm/config/source.h"
#include "plm/data/packing.h"

namespace plm::data {

// Jobs are this rank's slots in stream order; results land in a per-batch slot array; next() waits for the
// oldest batch to be complete. Workers never run more than prefetch_batches ahead of the consumer.
struct DataLoader::Impl {
  std::vector<MixEntry> mix;
  std::vector<std::unique_ptr<JsonlSource>> sources;
  std::shared_ptr<const Preprocessor> preprocess;
  LoaderOptions o;

  std::mutex mutex;
  std::condition_variable work_ready, batch_ready;
  std::unique_ptr<SampleStream> stream;  // advanced only under `mutex`, batch by batch
  struct Job {
    int64_t batch, index, slot;
    Candidate candidate;
  };
  std::deque<Job> jobs;
  struct Pending {
    std::vector<ProcessedSample> samples;
    int64_t done = 0;
    std::exception_ptr error;
    StreamState after;   // the stream state once this batch's global slots are consumed
    StreamState before;  // packing: tokens (one sample per Pending): the state at this rank's slot
  };
  std::map<int64_t, Pending> pending;
  int64_t next_batch_to_queue = 0, next_batch_to_return = 0;
  StreamState returned_state;
  SkipCounts skips;
  WorkTotals totals;
  std::set<std::string> logged;
  bool stopping = false;
  std::vector<std::thread> workers;

  // Queues the next global batch: every rank walks all its slots, keeping its own.
  void queue_batch() {
    const int64_t b = next_batch_to_queue++;
    Pending& p = pending[b];
    p.samples.resize(static_cast<size_t>(o.batch_size));
    for (int64_t g = 0; g < o.batch_size * o.world_size; ++g) {
      const int64_t slot = stream->state().slot;
      const Candidate c = stream->next();
      const int64_t local = g - o.rank * o.batch_size;
      if (local >= 0 && local < o.batch_size) jobs.push_back({b, local, slot, c});
    }
    p.after = stream->state();
  }

  bool by_tokens() const { return o.packing == config::Packing::tokens; }

  // packing: tokens: queues this rank's next sample alone (the global slots j with j % world_size == rank).
  void queue_sample() {
    while (stream->state().slot % o.world_size != o.rank) stream->next();
    const int64_t b = next_batch_to_queue++;
    Pending& p = pending[b];
    p.samples.resize(1);
    p.before = stream->state();
    const int64_t slot = p.before.slot;
    jobs.push_back({b, 0, slot, stream->next()});
  }

  // Samples (tokens) or batches queued ahead of the consumer.
  int64_t ahead() const {
    return by_tokens() ? std::max<int64_t>(8, 2 * o.prefetch_batches * o.batch_size) : o.prefetch_batches;
  }

  void fill_queue() {
    while (!stopping && next_batch_to_queue < next_batch_to_return + ahead()) {
      if (by_tokens())
        queue_sample();
      else
        queue_batch();
    }
  }

  void count_skip(const Candidate& c, const SampleError& e) {
    std::lock_guard<std::mutex> lock(mutex);
    const std::string& name = mix[c.dataset].dataset.name;
    ++skips[name][e.reason()];
    // Media errors name their file: log each file once; row-level errors once per dataset and reason.
    const bool media = dynamic_cast<const MediaSampleError*>(&e) != nullptr;
    if (logged.insert(media ? std::string(e.what()) : name + "/" + e.reason()).second)
      log::warn("skipping a sample of {} ({}): {}", name, e.reason(), e.what());
  }

  ProcessedSample process(const Candidate& c) {
    const DatasetEntry& d = mix[c.dataset].dataset;
    const JsonlSource& src = *sources[c.dataset];
    const std::string line = src.row(c.row);
    try {
      return (*preprocess)(parse_sample(line), d.root_dir);
    } catch (const MediaSampleError& e) {  // name the row's file and line too (computed only on failure)
      throw MediaSampleError(e.reason(), src.origin(c.row) + ": " + e.what());
    } catch (const SampleError& e) {
      throw SampleError(e.reason(), src.origin(c.row) + ": " + e.what());
    }
  }

  void work() {
    while (true) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex);
        work_ready.wait(lock, [&] { return stopping || !jobs.empty(); });
        if (stopping) return;
        job = jobs.front();
        jobs.pop_front();
      }
      ProcessedSample result;
      std::exception_ptr error;
      Candidate c = job.candidate;
      const auto started = std::chrono::steady_clock::now();  // the work totals count every attempt, skipped too
      int attempts = 0;
      for (int attempt = 1;; ++attempt) {
        attempts = attempt;
        try {
          result = process(c);
          result.id = mix[c.dataset].dataset.name + "#" + std::to_string(c.row);
          result.slot = job.slot;
          break;
        } catch (const SampleError& e) {
          count_skip(c, e);
          if (o.strict || attempt >= o.max_attempts) {
            error = std::make_exception_ptr(
                o.strict ? e
                         : SampleError(e.reason(), std::to_string(o.max_attempts) +
                                                       " samples in a row could not be used; the last: " + e.what()));
            break;
          }
          c = stream->spare(job.slot, attempt);  // const: safe without the lock
        } catch (...) {
          error = std::current_exception();
          break;
        }
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::lock_guard<std::mutex> lock(mutex);
      totals.preprocess_seconds += seconds;
      totals.samples += attempts;
      if (!result.video.file.empty()) {
        ++totals.videos;
        totals.video_frames_decoded += result.video.frames_decoded;
      }
      Pending& p = pending[job.batch];
      if (error && !p.error) p.error = error;
      p.samples[static_cast<size_t>(job.index)] = std::move(result);
      ++p.done;
      if (p.done == static_cast<int64_t>(p.samples.size())) batch_ready.notify_all();
    }
  }
};

namespace {

// The position a loader starts from: a single stream state, or (packing: tokens) this rank's of every rank's.
StreamState start_state(const std::string& text, const LoaderOptions& o) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(std::string("malformed data stream state: ") + e.what());
  }
  if (!j.contains("ranks")) return StreamState::from_json(text);
  const auto& ranks = j.at("ranks");
  const auto ranks_of = [](size_t n) { return std::to_string(n) + (n == 1 ? " rank" : " ranks"); };
  if (o.packing != config::Packing::tokens)
    throw config::ConfigError("its data position comes from a data.packing=tokens run on " + ranks_of(ranks.size()) +
                              ", in which every rank has its own place in the stream; resume it with "
                              "data.packing=tokens on " +
                              ranks_of(ranks.size()) + ".");
  if (static_cast<int64_t>(ranks.size()) != o.world_size)
    throw config::ConfigError("its data position comes from a data.packing=tokens run on " + ranks_of(ranks.size()) +
                              " and this run has " + ranks_of(static_cast<size_t>(o.world_size)) +
                              "; with packing: tokens every rank has its own place in the stream, so resume on " +
                              ranks_of(ranks.size()) + ".");
  return StreamState::from_json(ranks.at(static_cast<size_t>(o.rank)).dump());
}

}  // namespace

std::string ranks_state_json(const std::vector<StreamState>& ranks) {
  nlohmann::json list = nlohmann::json::array();
  for (const StreamState& s : ranks) list.push_back(nlohmann::json::parse(s.to_json()));
  return nlohmann::json{{"ranks", list}}.dump();
}

DataLoader::DataLoader(std::vector<MixEntry> mix, std::shared_ptr<const Preprocessor> preprocess, LoaderOptions options,
                       const std::string& start)
    : impl_(std::make_unique<Impl>()), options_(options) {
  Impl& m = *impl_;
  m.mix = std::move(mix);
  m.preprocess = std::move(preprocess);
  m.o = options_;
  std::vector<double> weights;
  std::vector<int64_t> sizes;
  for (const auto& e : m.mix) {
    m.sources.push_back(std::make_unique<JsonlSource>(e.dataset.annotation));
    if (m.sources.back()->size() == 0)
      throw config::ConfigError("dataset '" + e.dataset.name + "' (" + e.dataset.annotation + ") has no rows.");
    weights.push_back(e.weight);
    sizes.push_back(m.sources.back()->size());
  }
  StreamState state = start.empty() ? StreamState{} : start_state(start, options_);
  m.returned_state = state;
  m.stream = std::make_unique<SampleStream>(weights, sizes, options_.seed, state);
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    m.fill_queue();
  }
  for (int64_t i = 0; i < std::max<int64_t>(1, options_.num_workers); ++i) m.workers.emplace_back([&m] { m.work(); });
  m.work_ready.notify_all();
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->work_ready.notify_all();
  for (auto& t : impl_->workers) t.join();
}

Batch DataLoader::next() {
  Impl& m = *impl_;
  if (m.by_tokens()) return next_by_tokens();
  std::unique_lock<std::mutex> lock(m.mutex);
  const int64_t b = m.next_batch_to_return;
  m.batch_ready.wait(lock, [&] { return m.pending[b].done == options_.batch_size; });
  Impl::Pending p = std::move(m.pending[b]);
  m.pending.erase(b);
  ++m.next_batch_to_return;
  m.returned_state = p.after;
  m.fill_queue();
  lock.unlock();
  m.work_ready.notify_all();
  if (p.error) std::rethrow_exception(p.error);
  return collate(p.samples, m.preprocess->options().seq_len, options_.pad_id, options_.pad_to_longest,
                 options_.packing == config::Packing::samples);
}

// packing: tokens. This rank's samples in order while first-fit decreasing lays them into at most batch_size rows;
// the first that would need another row starts the next batch (a batch holds at least one sample).
Batch DataLoader::next_by_tokens() {
  Impl& m = *impl_;
  std::vector<ProcessedSample> taken;
  std::vector<int64_t> lengths;
  const int64_t seq_len = m.preprocess->options().seq_len;
  std::unique_lock<std::mutex> lock(m.mutex);
  while (true) {
    const int64_t b = m.next_batch_to_return;
    m.batch_ready.wait(lock, [&] { return m.pending[b].done == 1; });
    Impl::Pending& p = m.pending[b];
    if (p.error) {
      const std::exception_ptr error = p.error;
      lock.unlock();
      std::rethrow_exception(error);
    }
    lengths.push_back(std::max<int64_t>(static_cast<int64_t>(p.samples[0].ids.size()) - 1, 0));
    if (!taken.empty() && static_cast<int64_t>(first_fit_decreasing(lengths, seq_len).size()) > options_.batch_size)
      break;  // stays queued: the next batch starts with it
    taken.push_back(std::move(p.samples[0]));
    m.pending.erase(b);
    ++m.next_batch_to_return;
    m.fill_queue();
    m.work_ready.notify_all();
  }
  m.returned_state = m.pending[m.next_batch_to_return].before;  // fill_queue keeps the next sample queued
  lock.unlock();
  return collate(taken, seq_len, options_.pad_id, options_.pad_to_longest, /*pack=*/true);
}

std::string DataLoader::state_json() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->returned_state.to_json();
}

SkipCounts DataLoader::skipped() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->skips;
}

WorkTotals DataLoader::work_totals() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->totals;
}

}  // namespace plm::data
