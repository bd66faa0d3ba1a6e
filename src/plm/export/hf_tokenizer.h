// A tiktoken BPE tokenizer (Llama 3's tokenizer.model) as Hugging Face tokenizers' tokenizer.json, the file
// transformers' fast tokenizers and serving tools load (docs/export.md): a byte-level BPE whose vocabulary is the
// ranks (bytes spelt with GPT-2's byte-to-character table), whose merges are derived from the ranks, with
// ignore_merges (a pre-token that is itself a token is taken whole, as tiktoken does), tiktoken's split pattern
// as the pre-tokenizer and the special tokens as added tokens.
#pragma once

#include <string>

#include "plm/text/tiktoken_bpe.h"

namespace plm::exporting {

/// tokenizer.json's text. Merges: for each token of two or more bytes, in rank order, every split into two tokens
/// whose ranks are both lower, ordered by the pieces' ranks; the list is ordered by the merged token's rank. With
/// ignore_merges this reproduces tiktoken's encoding (tests/parity/export_parity.py checks it against tiktoken).
/// `bos`: the literal the post-processor puts in front when add_special_tokens (Llama 3's "<|begin_of_text|>").
std::string tokenizer_json(const text::TiktokenBpe& tokenizer, const std::string& bos);

}  // namespace plm::exporting
