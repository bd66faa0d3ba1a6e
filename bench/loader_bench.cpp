// Data-loader throughput: samples/s of DataLoader::next() for a recipe, with a given number of worker threads.
// Usage: loader_bench RECIPE WORKERS BATCHES [key=value ...]
#include <chrono>
#include <iostream>

#include "plm/config/load.h"
#include "plm/data/loader_factory.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: loader_bench RECIPE WORKERS BATCHES [key=value ...]\n";
    return 2;
  }
  std::vector<std::string> overrides(argv + 4, argv + argc);
  overrides.push_back("data.num_workers=" + std::string(argv[2]));
  const auto args = plm::config::load_config(argv[1], overrides).args;
  const auto pipeline = plm::data::make_loader_factory(args);
  auto loader = pipeline.loader();
  loader->next();  // warm-up: first batch includes opening the datasets
  const int batches = std::atoi(argv[3]);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < batches; ++i) loader->next();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double samples = static_cast<double>(batches) * static_cast<double>(args.data.batch_size);
  std::cout << "workers " << argv[2] << ": " << samples / s << " samples/s (" << batches << " batches of "
            << args.data.batch_size << " in " << s << " s)\n";
}
