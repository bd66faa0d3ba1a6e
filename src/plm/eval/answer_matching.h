// Reading model answers: the option letter of a multiple-choice answer, short-answer normalisation for exact match,
// and token F1 between two short texts.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace plm::eval {

/// The option letter ('A'..) that a multiple-choice answer picks among `num_options` (1..26) options, or
/// std::nullopt when no single in-range letter can be read (a parse failure, scored as wrong).
///
/// Rule. The candidate text is what follows the last "answer is" or "answer:" (case-insensitive), else the whole
/// answer. Then, in order:
///  1. Leading marker: the candidate, after leading whitespace, starts with "(X)" (any case), or with a letter X
///     followed by the end of text or one of ". ) : ," (any case), or with an uppercase X followed by whitespace.
///     So "(B)", "B", "b", "B. red", "B) red", "B red", "Answer: B" and "The answer is (C)." all read.
///     A lowercase letter before a space does not ("a man opens the door" is a sentence, not option A).
///  2. Otherwise the candidate's parenthesised letters "(X)": exactly one distinct letter reads as X
///     ("I would pick (C) because ..."); two different ones ("either (A) or (B)") are a failure.
///  3. Otherwise a failure.
/// A letter beyond the options does not count at its step ("E" with 4 options fails; in "I would pick (C)" the
/// leading "I" is skipped and step 2 reads C).
/// lmms-eval's FGQA check_ans compares only the first whitespace token, so it agrees on the leading-marker forms and
/// misses "The answer is (C)"; this rule keeps the former and recovers the latter.
std::optional<char> parse_option_letter(std::string_view answer, int num_options);

/// VQA-style short-answer normalisation (after the VQA evaluator's processPunctuation/processDigitArticle and
/// SQuAD's normalize_answer), on ASCII:
///  - lowercase;
///  - a ',' between two digits is dropped ("1,000" -> "1000"), a '.' between two digits is kept ("3.5");
///  - an apostrophe is dropped ("man's" -> "mans", "don't" -> "dont");
///  - every other ASCII punctuation character becomes a space;
///  - the number words zero..ten become digits ("two" -> "2");
///  - the articles "a", "an", "the" are removed;
///  - whitespace runs become one space; the result is trimmed.
/// Non-ASCII bytes pass through unchanged. Unlike VQA, there is no contraction table ("dont" stays "dont").
std::string normalize_answer(std::string_view answer);

/// The words of normalize_answer(text).
std::vector<std::string> answer_tokens(std::string_view text);

/// True when both answers normalise to the same string.
bool exact_match(std::string_view prediction, std::string_view ground_truth);

/// SQuAD-style token F1 in [0, 1] over answer_tokens: 2 * overlap / (|reference| + |candidate|), overlap counted as
/// a multiset; 1 when both are empty, 0 when only one is. Symmetric and deterministic.
double token_f1(std::string_view reference, std::string_view candidate);

}  // namespace plm::eval
