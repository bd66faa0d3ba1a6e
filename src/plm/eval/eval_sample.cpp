#include "plm/eval/eval_sample.h"

#include <cctype>

#include <nlohmann/json.hpp>

#include "plm/data/jsonl_source.h"
#include "plm/eval/answer_matching.h"
#include "plm/text/region.h"

namespace plm::eval {
namespace {

using nlohmann::json;

/// A field error: one sentence starting with the sample's file:line.
[[noreturn]] void fail(const std::string& origin, const std::string& what) {
  throw data::SampleError("bad_schema", origin + ": " + what);
}

std::string scalar_text(const json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

double frame(const json& j, const char* key, const char* alt, const std::string& origin) {
  const json* v = j.contains(key) ? &j[key] : (alt && j.contains(alt) ? &j[alt] : nullptr);
  if (!v || !v->is_number()) fail(origin, std::string("'") + key + "' must be a number.");
  return v->get<double>();
}

AnswerType answer_type(const json& j, const std::string& task, const std::string& origin) {
  if (j.contains("answer_type")) {
    const std::string t = j["answer_type"].is_string() ? j["answer_type"].get<std::string>() : "";
    if (t == "mcq") return AnswerType::mcq;
    if (t == "short") return AnswerType::short_answer;
    if (t == "rtloc") return AnswerType::rtloc;
    if (t == "caption") return AnswerType::caption;
    if (t == "rdcap") return AnswerType::rdcap;
    if (t == "judge" || t == "sgqa" || t == "rcap") return AnswerType::judge;
    fail(origin, "'answer_type' is '" + t + "'; use mcq, short, rtloc, caption, rdcap or judge.");
  }
  if (j.contains("dense_captions")) return AnswerType::rdcap;
  if (task == "sgqa" || task == "rcap") return AnswerType::judge;
  if (j.contains("options")) return AnswerType::mcq;
  if ((j.contains("start_frame") && j.contains("end_frame")) || j.contains("num_frames")) return AnswerType::rtloc;
  return AnswerType::short_answer;
}

void read_mcq(const json& j, EvalSample& s) {
  const json& o = j.value("options", json());
  if (o.is_array() || o.is_object())  // PLM-VideoBench FGQA: {"option_0": ..., ...}
    for (const auto& v : o) s.options.push_back(scalar_text(v));
  const int n = static_cast<int>(s.options.size());
  if (n < 1 || n > 26) fail(s.origin, "a multiple-choice sample needs 'options', a list of 1 to 26 texts.");
  std::optional<char> letter;
  if (j.contains("answer") && j["answer"].is_string())
    letter = parse_option_letter(j["answer"].get<std::string>(), n);
  else if (j.contains("answer_index") && j["answer_index"].is_number_integer() && j["answer_index"].get<int>() >= 0 &&
           j["answer_index"].get<int>() < n)
    letter = static_cast<char>('A' + j["answer_index"].get<int>());
  else if (!j.contains("answer") && !j.contains("answer_index"))
    letter = parse_option_letter(s.reference, n);
  if (!letter) fail(s.origin, "the multiple-choice answer is not one of the " + std::to_string(n) + " option letters.");
  s.answer_letter = *letter;
  if (j.contains("qa_uid")) s.qa_uid = scalar_text(j["qa_uid"]);
}

void read_frames(const json& j, EvalSample& s) {
  if (j.contains("num_frames")) {
    if (!j["num_frames"].is_number_integer() || j["num_frames"].get<int>() < 1)
      fail(s.origin, "'num_frames' must be a positive integer.");
    s.num_frames = j["num_frames"].get<int>();
  }
  s.total_frames =
      j.contains("total_frames") ? frame(j, "total_frames", nullptr, s.origin) : static_cast<double>(s.num_frames);
  if (s.total_frames <= 0) fail(s.origin, "'total_frames' must be positive.");
}

void read_rtloc(const json& j, EvalSample& s) {
  read_frames(j, s);
  if (j.contains("answer")) {
    const json& a = j["answer"];
    if (!a.is_array() || a.size() != 2 || !a[0].is_number() || !a[1].is_number())
      fail(s.origin, "an rtloc 'answer' must be [start, end] frame numbers.");
    s.segment = {a[0].get<double>(), a[1].get<double>()};
  } else if (j.contains("start_frame")) {
    s.segment = {frame(j, "start_frame", nullptr, s.origin), frame(j, "end_frame", nullptr, s.origin)};
  } else if (const auto seg = parse_first_segment(s.reference)) {
    s.segment = *seg;
  } else {
    fail(s.origin, "the rtloc sample has no 'answer' [start, end] and its answer turn has none either.");
  }
}

void read_rdcap(const json& j, EvalSample& s) {
  read_frames(j, s);
  if (j.contains("dense_captions")) {
    if (!j["dense_captions"].is_array()) fail(s.origin, "'dense_captions' must be a list.");
    for (const auto& c : j["dense_captions"]) {
      if (!c.is_object() || !c.contains("caption") || !c["caption"].is_string())
        fail(s.origin, "each dense caption needs start_frame, end_frame and a string caption.");
      s.dense_captions.push_back({{frame(c, "start_frame", "start", s.origin), frame(c, "end_frame", "end", s.origin)},
                                  c["caption"].get<std::string>()});
    }
  } else {
    s.dense_captions = parse_dense_captions(s.reference);
  }
  if (s.dense_captions.empty()) fail(s.origin, "the rdcap sample has no ground-truth dense captions.");
}

void read_judge(const json& j, EvalSample& s) {
  json meta = json::object();
  for (const char* key : {"video", "image", "masklet_id", "start_frame", "end_frame", "total_frames", "metadata"})
    if (j.contains(key)) meta[key] = j[key];
  s.metadata_json = meta.dump();
}

}  // namespace

const char* to_string(AnswerType type) {
  switch (type) {
    case AnswerType::mcq:
      return "mcq";
    case AnswerType::short_answer:
      return "short";
    case AnswerType::rtloc:
      return "rtloc";
    case AnswerType::caption:
      return "caption";
    case AnswerType::rdcap:
      return "rdcap";
    case AnswerType::judge:
      return "judge";
  }
  return "?";
}

EvalSample parse_eval_sample(const std::string& line, const EvalDataset& dataset, int64_t row,
                             const std::string& origin) {
  EvalSample s;
  s.origin = origin;
  s.root_dir = dataset.root_dir;
  try {
    s.sample = data::parse_sample(line);
  } catch (const data::SampleError& e) {
    throw data::SampleError(e.reason(), origin + ": " + e.what());
  }
  const json j = json::parse(line);  // parse_sample accepted it
  s.id = j.contains("uid")  ? scalar_text(j["uid"])
         : j.contains("id") ? scalar_text(j["id"])
                            : dataset.name + "#" + std::to_string(row);
  s.task = j.contains("task") && j["task"].is_string() ? j["task"].get<std::string>() : dataset.name;

  const auto& turns = s.sample.conversations;
  size_t last = turns.size();
  for (size_t i = turns.size(); i-- > 0;)
    if (turns[i].from == "assistant") {
      last = i;
      break;
    }
  if (last == turns.size()) fail(origin, "the sample has no assistant turn to score against.");
  s.reference = turns[last].value;
  std::vector<std::string> boxes;
  for (const auto& b : s.sample.bbox) boxes.push_back(text::format_bbox(b, *s.sample.width, *s.sample.height));
  for (size_t i = 0; i < last; ++i) {
    if (turns[i].from != "human") continue;
    std::string value = turns[i].value;
    if (!boxes.empty()) {
      try {
        value = text::substitute_regions(value, boxes);  // as training's preprocessing does (docs/reference.md 4.1)
      } catch (const std::out_of_range& e) {
        throw data::SampleError("bbox_error", origin + ": " + e.what());
      }
    }
    s.question += (s.question.empty() ? "" : "\n") + value;
  }

  s.type = answer_type(j, s.task, origin);
  s.answer_text = j.contains("answer") && j["answer"].is_string() ? j["answer"].get<std::string>() : s.reference;
  switch (s.type) {
    case AnswerType::mcq:
      read_mcq(j, s);
      break;
    case AnswerType::rtloc:
      read_rtloc(j, s);
      break;
    case AnswerType::rdcap:
      read_rdcap(j, s);
      break;
    case AnswerType::judge:
      read_judge(j, s);
      break;
    case AnswerType::short_answer:
    case AnswerType::caption:
      break;
  }
  return s;
}

std::vector<EvalSample> read_eval_samples(const EvalDataset& dataset, int64_t max_samples) {
  const data::JsonlSource source(dataset.annotation);
  const int64_t n = max_samples > 0 ? std::min(max_samples, source.size()) : source.size();
  std::vector<EvalSample> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const std::string line = source.row(i);
    try {
      out.push_back(parse_eval_sample(line, dataset, i, dataset.annotation + ":" + std::to_string(i + 1)));
    } catch (const data::SampleError& e) {
      // Name the true line (empty lines are not rows) only on failure: origin() reads the file.
      const std::string prefix = dataset.annotation + ":" + std::to_string(i + 1) + ": ";
      std::string what = e.what();
      if (what.rfind(prefix, 0) == 0) what = source.origin(i) + ": " + what.substr(prefix.size());
      throw data::SampleError(e.reason(), what);
    }
  }
  return out;
}

}  // namespace plm::eval
