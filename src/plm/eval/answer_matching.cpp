#include "plm/eval/answer_matching.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <sstream>

namespace plm::eval {
namespace {

bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_letter(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
char to_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
char to_upper(char c) {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), to_lower);
  return out;
}

// What follows the last "answer is" / "answer:", else the whole answer.
std::string_view answer_candidate(std::string_view answer) {
  const std::string lower = lowercase(answer);
  size_t best_end = 0;
  for (std::string_view cue : {"answer is", "answer:"}) {
    const size_t at = lower.rfind(cue);
    if (at != std::string::npos) best_end = std::max(best_end, at + cue.size());
  }
  return answer.substr(best_end);
}

// Rule 1 of parse_option_letter: "(X)", "X" + end or ". ) : ,", uppercase "X" + whitespace.
std::optional<char> leading_marker(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && is_space(text[i])) ++i;
  text.remove_prefix(i);
  if (text.size() >= 3 && text[0] == '(' && is_letter(text[1]) && text[2] == ')') return to_upper(text[1]);
  if (text.empty() || !is_letter(text[0])) return std::nullopt;
  if (text.size() == 1) return to_upper(text[0]);
  const char next = text[1];
  if (next == '.' || next == ')' || next == ':' || next == ',') return to_upper(text[0]);
  if (is_space(next) && text[0] >= 'A' && text[0] <= 'Z') return text[0];
  return std::nullopt;
}

// Rule 2: the one distinct "(X)" in the text.
std::optional<char> single_parenthesised_letter(std::string_view text) {
  std::set<char> letters;
  for (size_t i = 0; i + 2 < text.size(); ++i) {
    if (text[i] == '(' && is_letter(text[i + 1]) && text[i + 2] == ')') letters.insert(to_upper(text[i + 1]));
  }
  if (letters.size() != 1) return std::nullopt;
  return *letters.begin();
}

const std::map<std::string, std::string>& number_words() {
  static const std::map<std::string, std::string> words = {{"zero", "0"},  {"one", "1"},  {"two", "2"}, {"three", "3"},
                                                           {"four", "4"},  {"five", "5"}, {"six", "6"}, {"seven", "7"},
                                                           {"eight", "8"}, {"nine", "9"}, {"ten", "10"}};
  return words;
}

}  // namespace

std::optional<char> parse_option_letter(std::string_view answer, int num_options) {
  const std::string_view candidate = answer_candidate(answer);
  auto in_range = [num_options](std::optional<char> letter) { return letter && *letter - 'A' < num_options; };
  if (const std::optional<char> letter = leading_marker(candidate); in_range(letter)) return letter;
  if (const std::optional<char> letter = single_parenthesised_letter(candidate); in_range(letter)) return letter;
  return std::nullopt;
}

std::string normalize_answer(std::string_view answer) {
  std::string spaced;
  spaced.reserve(answer.size());
  for (size_t i = 0; i < answer.size(); ++i) {
    const char c = answer[i];
    const bool between_digits = i > 0 && i + 1 < answer.size() && is_digit(answer[i - 1]) && is_digit(answer[i + 1]);
    if (c == ',' && between_digits) continue;
    if (c == '.' && between_digits) {
      spaced += c;
    } else if (c == '\'') {
      continue;
    } else if (std::ispunct(static_cast<unsigned char>(c)) || is_space(c)) {
      spaced += ' ';
    } else {
      spaced += to_lower(c);
    }
  }
  std::istringstream words(spaced);
  std::string word;
  std::string out;
  while (words >> word) {
    if (word == "a" || word == "an" || word == "the") continue;
    const auto number = number_words().find(word);
    if (number != number_words().end()) word = number->second;
    if (!out.empty()) out += ' ';
    out += word;
  }
  return out;
}

std::vector<std::string> answer_tokens(std::string_view text) {
  std::istringstream words(normalize_answer(text));
  std::vector<std::string> tokens;
  for (std::string word; words >> word;) tokens.push_back(word);
  return tokens;
}

bool exact_match(std::string_view prediction, std::string_view ground_truth) {
  return normalize_answer(prediction) == normalize_answer(ground_truth);
}

double token_f1(std::string_view reference, std::string_view candidate) {
  const std::vector<std::string> ref = answer_tokens(reference);
  const std::vector<std::string> cand = answer_tokens(candidate);
  if (ref.empty() || cand.empty()) return ref.empty() && cand.empty() ? 1.0 : 0.0;
  std::map<std::string, int> remaining;
  for (const std::string& t : ref) ++remaining[t];
  int overlap = 0;
  for (const std::string& t : cand) {
    auto it = remaining.find(t);
    if (it != remaining.end() && it->second > 0) {
      --it->second;
      ++overlap;
    }
  }
  return 2.0 * overlap / static_cast<double>(ref.size() + cand.size());
}

}  // namespace plm::eval
