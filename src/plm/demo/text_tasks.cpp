// Text-only tasks: no media, so PLM runs its placeholder image through the vision tower and drops it (docs/reference.md
// 2).
#include "plm/demo/questions.h"

namespace plm::demo {
namespace {

// Sums of digits 0-4: 25 facts, so val/test repeat training questions; this task checks that text-only samples
// train, not generalisation.
Json addition(SampleContext& ctx) {
  const int a = ctx.rng.between(0, 4), b = ctx.rng.between(0, 4);
  return short_sample(ctx, "What is " + std::to_string(a) + " plus " + std::to_string(b) + "? Answer with a number.",
                      std::to_string(a + b));
}

}  // namespace

std::vector<TaskSpec> text_tasks() {
  // The likeliest sum, 4, comes from 5 of the 25 pairs.
  return {{"addition",
           "text",
           "short",
           0.2,
           {400, 40, 100},
           false,
           "what is a plus b, for digits a and b up to 4",
           addition}};
}

std::vector<TaskSpec> all_tasks() {
  std::vector<TaskSpec> out = image_tasks();
  for (auto* part : {&video_tasks, &text_tasks})
    for (auto& t : part()) out.push_back(std::move(t));
  return out;
}

}  // namespace plm::demo
