// Text-only tasks: no media, so PLM runs its placeholder image through the vision tower and drops it (spec 2).
#include "plm/demo/questions.h"

namespace plm::demo {
namespace {

// Single-digit sums: 100 facts, so val/test repeat training questions; this task checks that text-only samples
// train, not generalisation.
Json addition(SampleContext& ctx) {
  const int a = ctx.rng.between(0, 9), b = ctx.rng.between(0, 9);
  return short_sample(ctx, "What is " + std::to_string(a) + " plus " + std::to_string(b) + "? Answer with a number.",
                      std::to_string(a + b));
}

}  // namespace

std::vector<TaskSpec> text_tasks() {
  // The likeliest sum, 9, comes from 10 of the 100 pairs.
  return {{"addition", "text", "short", 0.1, {400, 40, 100}, false, "what is a plus b, for digits a and b", addition}};
}

std::vector<TaskSpec> all_tasks() {
  std::vector<TaskSpec> out = image_tasks();
  for (auto* part : {&video_tasks, &text_tasks})
    for (auto& t : part()) out.push_back(std::move(t));
  return out;
}

}  // namespace plm::demo
