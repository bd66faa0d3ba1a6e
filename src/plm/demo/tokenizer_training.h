// The demo's tokenizer: a small sentencepiece BPE model trained on the dataset's own text, holding PLM's special
// tokens so that plm's tokenizer loader and the plm_sft and warmup formats work with it unchanged.
#pragma once

#include <string>
#include <vector>

namespace plm::demo {

/// The literals PLM's chat templates write (docs/reference.md 3.1/3.2): <|begin_of_text|>, <|end_of_text|>, <|image|>,
/// <|start_header_id|>, <|end_header_id|>, <|eot_id|>. Each becomes one piece of the model.
const std::vector<std::string>& plm_special_tokens();

/// The text the template adds around conversations (plm_sft's system prompt and role headers), one line each.
std::vector<std::string> template_text();

/// Trains a BPE model of `vocab_size` pieces on `lines` (split further at newlines) and writes it to `path`.
/// Identity normalisation, no dummy prefix, digits split, and byte fallback (256 byte pieces), so every string
/// encodes and decode(encode(s)) == s, newlines included. Single-threaded: the bytes depend only on the lines.
/// Throws DemoError naming `path` when training fails or the file cannot be written.
void train_tokenizer(const std::vector<std::string>& lines, int vocab_size, const std::string& path);

}  // namespace plm::demo
