// Encode throughput of plm's Llama 3 tokenizer on one thread: reads a UTF-8 file, encodes it `repeats` times,
// prints the best time. Paired with bench/tokenizer_bench.py (tiktoken) by bench/tokenizer_bench.sh.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "plm/text/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: tokenizer_bench TOKENIZER TEXT_FILE [repeats]\n";
    return 2;
  }
  const auto tok = plm::text::load_tokenizer(argv[1]);
  std::ifstream in(argv[2], std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  double best = 1e30;
  size_t n = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    n = tok->encode(text).size();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::cout << "plm " << text.size() << " bytes " << n << " tokens " << best << " s " << text.size() / best / 1e6
            << " MB/s\n";
}
