// The peak heap of one parser on one input file, for the memory bounds its header states
// (tests/tooling/parser_memory.py drives it with hostile inputs of growing size).
//   parser_memory PARSER FILE   prints "<file bytes> <peak heap bytes during the parse>", exit 0, or exit 3 with the
//                               parser's refusal on stderr (a refusal is also bounded: the peak is still printed)
// PARSER: recipe (load_config), sample (parse_sample of the whole file as one row), jsonl_index (index_jsonl_file,
// no cache), tiktoken (loading a tiktoken BPE file), sentencepiece (loading a sentencepiece model), encode (Llama 3's tokenizer encoding the file's text),
// safetensors (read_safetensors), pickle (load_torch_state_dict), image (decode_image_rgb of the file's bytes).
// The heap is measured by interposing the C allocator (malloc, calloc, realloc, free and the aligned forms, which
// operator new, yaml-cpp, PCRE2 and LibTorch all reach); each block's size is glibc's malloc_usable_size.
#include <malloc.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>

#include "plm/ckpt/safetensors.h"
#include "plm/ckpt/torch_pickle.h"
#include "plm/config/load.h"
#include "plm/data/jsonl_source.h"
#include "plm/data/sample.h"
#include "plm/media/image.h"
#include "plm/text/tiktoken_bpe.h"
#include "plm/text/tokenizer.h"

extern "C" {
void* __libc_malloc(size_t);
void* __libc_calloc(size_t, size_t);
void* __libc_realloc(void*, size_t);
void* __libc_memalign(size_t, size_t);
void __libc_free(void*);
}

namespace {
std::atomic<int64_t> g_live{0}, g_peak{0};

void* counted(void* p) {
  if (p) {
    const int64_t now =
        g_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p))) + static_cast<int64_t>(malloc_usable_size(p));
    int64_t peak = g_peak.load();
    while (now > peak && !g_peak.compare_exchange_weak(peak, now)) {
    }
  }
  return p;
}
void uncounted(void* p) {
  if (p) g_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)));
}
}  // namespace

extern "C" {
void* malloc(size_t n) {
  return counted(__libc_malloc(n));
}
void* calloc(size_t n, size_t k) {
  return counted(__libc_calloc(n, k));
}
void free(void* p) {
  uncounted(p);
  __libc_free(p);
}
void* realloc(void* p, size_t n) {
  uncounted(p);
  void* q = __libc_realloc(p, n);
  if (!q && n) counted(p);  // the old block is still there
  return counted(q);
}
void* memalign(size_t a, size_t n) {
  return counted(__libc_memalign(a, n));
}
void* aligned_alloc(size_t a, size_t n) {
  return counted(__libc_memalign(a, n));
}
int posix_memalign(void** out, size_t a, size_t n) {
  void* p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = counted(p);
  return 0;
}
void* valloc(size_t n) {
  return counted(__libc_memalign(4096, n));
}
}

namespace {
std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: parser_memory PARSER FILE\n");
    return 2;
  }
  const std::string parser = argv[1], path = argv[2];
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    std::fprintf(stderr, "parser_memory: cannot stat %s\n", path.c_str());
    return 2;
  }
  // Inputs the parser is handed in memory (a row, a text) are read before the measurement starts; the
  // tokenizer is loaded before it too.
  std::string text;
  std::unique_ptr<plm::text::Tokenizer> tokenizer;
  if (parser == "sample" || parser == "encode" || parser == "image") text = read_all(path);
  if (parser == "encode")
    tokenizer = plm::text::load_tokenizer(std::string(PLM_SOURCE_DIR) + "/tests/fixtures/llama3/tokenizer.model");
  int rc = 0;
  const int64_t base = g_live.load();
  g_peak.store(base);
  try {
    if (parser == "recipe") {
      (void)plm::config::load_config(path);
    } else if (parser == "sample") {
      (void)plm::data::parse_sample(text);
    } else if (parser == "jsonl_index") {
      (void)plm::data::index_jsonl_file(path, false);
    } else if (parser == "tiktoken") {
      (void)plm::text::TiktokenBpe(path);
    } else if (parser == "sentencepiece") {
      (void)plm::text::load_tokenizer(path);
    } else if (parser == "encode") {
      (void)tokenizer->encode(text);
    } else if (parser == "safetensors") {
      (void)plm::ckpt::read_safetensors(path);
    } else if (parser == "image") {
      (void)plm::media::decode_image_rgb(text, path);
    } else if (parser == "pickle") {
      (void)plm::ckpt::load_torch_state_dict(path);
    } else {
      std::fprintf(stderr, "parser_memory: unknown parser %s\n", parser.c_str());
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    rc = 3;
  }
  std::printf("%lld %lld\n", static_cast<long long>(st.st_size), static_cast<long long>(g_peak.load() - base));
  return rc;
}
