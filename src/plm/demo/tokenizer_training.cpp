#include "plm/demo/tokenizer_training.h"

#include <sentencepiece_trainer.h>

#include <fstream>

#include "plm/demo/demo_error.h"
#include "plm/text/conversation.h"

namespace plm::demo {
namespace {

class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  size_t i_ = 0;
};

}  // namespace

const std::vector<std::string>& plm_special_tokens() {
  static const std::vector<std::string> t{"<|begin_of_text|>",   "<|end_of_text|>",   "<|image|>",
                                          "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
  return t;
}

std::vector<std::string> template_text() {
  const auto& f = text::ConversationFormat::named("plm_sft");
  return {f.pre_system + f.system + f.sep_system, f.pre_question, f.pre_answer, f.sep_answer + f.eos_token,
          f.bos_token};
}

void train_tokenizer(const std::vector<std::string>& lines, int vocab_size, const std::string& path) {
  std::vector<std::string> sentences;
  for (const auto& l : lines) {
    size_t start = 0;
    for (size_t nl; (nl = l.find('\n', start)) != std::string::npos; start = nl + 1)
      if (nl > start) sentences.push_back(l.substr(start, nl - start));
    if (start < l.size()) sentences.push_back(l.substr(start));
  }
  std::string specials;
  for (const auto& s : plm_special_tokens()) specials += (specials.empty() ? "" : ",") + s;
  const std::string args = "--model_type=bpe --vocab_size=" + std::to_string(vocab_size) +
                           " --character_coverage=1.0 --byte_fallback=true --normalization_rule_name=identity"
                           " --add_dummy_prefix=false --remove_extra_whitespaces=false --split_digits=true"
                           " --unk_id=0 --bos_id=-1 --eos_id=-1 --pad_id=-1 --num_threads=1 --minloglevel=2"
                           " --user_defined_symbols=" +
                           specials;
  LineIterator it(sentences);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!status.ok())
    throw DemoError("training the tokenizer '" + path + "' failed: " + std::string(status.message()) + ".");
  std::ofstream out(path, std::ios::binary);
  out << model;
  if (!out.flush()) throw DemoError("cannot write the tokenizer '" + path + "'; check that its folder is writable.");
}

}  // namespace plm::demo
