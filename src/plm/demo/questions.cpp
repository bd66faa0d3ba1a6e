#include "plm/demo/questions.h"

#include <algorithm>
#include <filesystem>

#include "plm/eval/rtloc.h"
#include "plm/eval/segments.h"

namespace plm::demo {

std::string SampleContext::media_path(const std::string& ext, int k) const {
  char name[32];
  std::snprintf(name, sizeof(name), "%05lld", static_cast<long long>(index));
  return "media/" + task + "/" + split + "/" + name + (k >= 0 ? "_" + std::to_string(k) : "") + "." + ext;
}

std::string SampleContext::absolute(const std::string& relative) const {
  return (std::filesystem::path(root) / relative).string();
}

std::string option_letter(int i) {
  return std::string(1, static_cast<char>('A' + i));
}

std::string mcq_prompt(const std::string& question, const std::vector<std::string>& options) {
  std::string out = "Question: " + question + "\nOptions:\n";
  for (size_t i = 0; i < options.size(); ++i)
    out += "(" + option_letter(static_cast<int>(i)) + ") " + options[i] + "\n";
  return out + "Only give the best option.";
}

namespace {

Json base(const SampleContext& ctx, const std::string& human, const std::string& answer, const std::string& type) {
  Json j;
  j["conversations"] = Json::array({{{"from", "human"}, {"value", human}}, {{"from", "assistant"}, {"value", answer}}});
  j["task"] = ctx.task;
  j["answer_type"] = type;
  return j;
}

}  // namespace

Json mcq_sample(const SampleContext& ctx, const std::string& human, const std::vector<std::string>& options,
                int correct) {
  Json j = base(ctx, human, option_letter(correct), "mcq");
  j["options"] = options;
  j["answer"] = option_letter(correct);
  return j;
}

Json short_sample(const SampleContext& ctx, const std::string& human, const std::string& answer) {
  Json j = base(ctx, human, answer, "short");
  j["answer"] = answer;
  return j;
}

Json rtloc_sample(const SampleContext& ctx, const std::string& human, int start, int end, int num_frames) {
  Json j = base(ctx, human, "[" + std::to_string(start) + ", " + std::to_string(end) + "]", "rtloc");
  j["answer"] = {start, end};
  j["num_frames"] = num_frames;
  return j;
}

Json caption_sample(const SampleContext& ctx, const std::string& human, const std::string& caption) {
  Json j = base(ctx, human, caption, "caption");
  j["answer"] = caption;
  return j;
}

double rtloc_random_segment_score(int gt_start, int gt_end, int num_frames) {
  double sum = 0;
  int n = 0;
  for (int a = 0; a < num_frames; ++a)
    for (int b = a; b < num_frames; ++b, ++n) {
      const double iou = eval::temporal_iou({static_cast<double>(a), static_cast<double>(b)},
                                            {static_cast<double>(gt_start), static_cast<double>(gt_end)});
      for (const double t : eval::kRtlocIouThresholds) sum += (iou > t) / 4.0;
    }
  return sum / n;
}

}  // namespace plm::demo
