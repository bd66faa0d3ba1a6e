#include "plm/data/loader.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <thread>

#include "plm/common/log.h"
#include "plm/config/source.h"

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
    StreamState after;  // the stream state once this batch's global slots are consumed
  };
  std::map<int64_t, Pending> pending;
  int64_t next_batch_to_queue = 0, next_batch_to_return = 0;
  StreamState returned_state;
  SkipCounts skips;
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

  void fill_queue() {
    while (!stopping && next_batch_to_queue < next_batch_to_return + o.prefetch_batches) queue_batch();
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
      for (int attempt = 1;; ++attempt) {
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
      std::lock_guard<std::mutex> lock(mutex);
      Pending& p = pending[job.batch];
      if (error && !p.error) p.error = error;
      p.samples[static_cast<size_t>(job.index)] = std::move(result);
      ++p.done;
      if (p.done == o.batch_size) batch_ready.notify_all();
    }
  }
};

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
  StreamState state = start.empty() ? StreamState{} : StreamState::from_json(start);
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
  return collate(p.samples, m.preprocess->options().seq_len, options_.pad_id, options_.pad_to_longest, options_.pack);
}

std::string DataLoader::state_json() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->returned_state.to_json();
}

SkipCounts DataLoader::skipped() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->skips;
}

}  // namespace plm::data
