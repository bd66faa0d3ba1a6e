// Evaluation with a model (src/plm/eval/ validation, eval_sample, task_scoring, evaluate): the validation loss against
// model.loss by hand, sample parsing, scoring with fixed predictions, and generate/loglik multiple choice on a tiny
// model made to prefer one letter.
#include "torch_catch.h"

#include <set>

#include <nlohmann/json.hpp>

#include "plm/config/load.h"
#include "plm/demo/shapes.h"
#include "plm/eval/evaluate.h"
#include "plm/eval/validation.h"
#include "plm/model/init.h"
#include "scratch.h"

using namespace plm;
using nlohmann::json;

namespace {

const char* const kTokenizer = PLM_SOURCE_DIR "/tests/fixtures/llama3/tokenizer.model";

std::shared_ptr<const text::Tokenizer> llama3() {
  static const std::shared_ptr<const text::Tokenizer> tok = text::load_tokenizer(kTokenizer);
  return tok;
}

model::PerceptionLM tiny_model(bool tied = true) {
  auto args = config::load_config(PLM_SOURCE_DIR "/configs/models/tiny.yaml").args.model;
  args.weight_tying = tied;
  args.max_seqlen = 96;
  at::manual_seed(5);
  model::PerceptionLM m(args);
  model::init_all(*m);
  return m;
}

data::PreprocessOptions tiny_preprocess(const model::PerceptionLMImpl& m) {
  config::TrainArgs args;
  args.model = m.args;
  return data::PreprocessOptions::from(args);
}

std::string conversation(const std::string& question, const std::string& answer) {
  return json{{"conversations", {{{"from", "human"}, {"value", question}}, {{"from", "assistant"}, {"value", answer}}}}}
      .dump();
}

// Two datasets: `text` (answers of different lengths) and `image` (a 56x56 picture each).
struct TwoDatasets {
  Scratch scratch{"eval_run"};
  std::vector<data::MixEntry> mix;
  TwoDatasets() {
    std::string text, image;
    for (int i = 0; i < 7; ++i) {
      text += conversation("What is " + std::to_string(i) + " plus 2?",
                           std::string(1 + i % 3, 'x') + " " + std::to_string(i + 2)) +
              "\n";
      demo::Canvas c(56, 56);
      c.draw({demo::ShapeKind::circle, demo::Colour::red, 10 + 4 * i, 20, 8});
      demo::write_png(c, scratch.path("img" + std::to_string(i) + ".png"));
      json j = json::parse(conversation("<image>\nWhat is shown?", i % 2 ? "A red circle." : "A circle"));
      j["image"] = "img" + std::to_string(i) + ".png";
      image += j.dump() + "\n";
    }
    mix = {{{"text", scratch.write("text.jsonl", text), ""}, 0.5},
           {{"image", scratch.write("image.jsonl", image), scratch.dir.string()}, 0.5}};
  }
  data::LoaderFactory pipeline(const model::PerceptionLMImpl& m, int64_t batch_size) const {
    data::LoaderFactory p;
    p.tokenizer = llama3();
    p.preprocess = std::make_shared<data::Preprocessor>(p.tokenizer, tiny_preprocess(m));
    p.mix = mix;
    p.options.batch_size = batch_size;
    p.options.num_workers = 1;
    p.options.pad_id = 128001;
    p.options.strict = true;
    return p;
  }
};

}  // namespace

TEST_CASE("validation loss is the token-weighted mean of model.loss over the batches", "[validation]") {
  TwoDatasets data;
  model::PerceptionLM m = tiny_model();
  m->train();
  const data::LoaderFactory pipeline = data.pipeline(*m, 3);
  const eval::ValidationLoss v = eval::validation_loss(*m, pipeline, 4);
  CHECK(m->is_training());  // restored

  m->eval();
  at::NoGradGuard no_grad;
  const auto loader = pipeline.loader();
  double sum = 0;
  int64_t tokens = 0, rows = 0;
  std::set<std::string> datasets;
  for (int k = 0; k < 4; ++k) {
    const data::Batch b = loader->next();
    const int64_t n = b.loss_mask.sum().item<int64_t>();
    sum += m->loss(model::model_inputs(*m, b, at::kCPU), b.labels, b.loss_mask).item<double>() * static_cast<double>(n);
    tokens += n;
    rows += b.input_ids.size(0);
    for (const auto& id : b.sample_ids) datasets.insert(id.substr(0, id.find('#')));
  }
  REQUIRE(datasets.size() == 2);  // the batches mix both datasets, so the per-dataset groups are exercised
  CHECK(v.tokens == tokens);
  CHECK(v.batches == 4);
  CHECK(v.samples == rows);
  CHECK(v.loss == Approx(sum / static_cast<double>(tokens)).epsilon(1e-5));
  REQUIRE(v.dataset_loss.size() == 2);
  double weighted = 0;
  int64_t dataset_tokens = 0;
  for (const auto& [name, l] : v.dataset_loss) {
    weighted += l * static_cast<double>(v.dataset_tokens.at(name));
    dataset_tokens += v.dataset_tokens.at(name);
  }
  CHECK(dataset_tokens == tokens);
  CHECK(weighted / static_cast<double>(tokens) == Approx(v.loss).epsilon(1e-6));
  // A loader of one dataset gives that dataset's value from its own batches.
  data::LoaderFactory text_only = pipeline;
  text_only.mix = {data.mix[0]};
  text_only.mix[0].weight = 1;
  const eval::ValidationLoss t = eval::validation_loss(*m, text_only, 2);
  CHECK(t.dataset_loss.size() == 1);
  CHECK(t.dataset_loss.at("text") == Approx(t.loss));
  const json j = json::parse(v.to_json());
  CHECK(j["datasets"]["image"]["tokens"].get<int64_t>() == v.dataset_tokens.at("image"));
}

TEST_CASE("eval samples read the question, reference and typed answers", "[eval_sample]") {
  const eval::EvalDataset ds{"colour", "x.jsonl", "/media"};
  json j = json::parse(conversation("<image>\nWhat colour is <|bbox0|>?", "red"));
  j["bbox"] = {{0, 0, 56, 56}};
  j["width"] = 112;
  j["height"] = 112;
  j["image"] = "a.png";
  eval::EvalSample s = eval::parse_eval_sample(j.dump(), ds, 4, "x.jsonl:5");
  CHECK(s.id == "colour#4");
  CHECK(s.task == "colour");
  CHECK(s.type == eval::AnswerType::short_answer);
  CHECK(s.question == "<image>\nWhat colour is [000,000,500,500]?");
  CHECK(s.reference == "red");
  CHECK(s.root_dir == "/media");

  j = json::parse(conversation("Q?", "B"));
  j["task"] = "fgqa";
  j["options"] = {{"option_0", "x"}, {"option_1", "y"}, {"option_2", "z"}};
  j["answer_index"] = 2;
  j["qa_uid"] = 17;
  s = eval::parse_eval_sample(j.dump(), ds, 0, "x.jsonl:1");
  CHECK(s.type == eval::AnswerType::mcq);
  CHECK(s.answer_letter == 'C');
  CHECK(s.options.size() == 3);
  CHECK(s.qa_uid == "17");

  j = json::parse(conversation("When?", "[2, 5]"));
  j["answer_type"] = "rtloc";
  j["num_frames"] = 16;
  s = eval::parse_eval_sample(j.dump(), ds, 0, "x.jsonl:1");
  CHECK(s.segment.start == 2);
  CHECK(s.segment.end == 5);
  CHECK(s.total_frames == 16);
  CHECK(s.num_frames == 16);

  j = json::parse(conversation("Q?", "B"));
  j["answer_type"] = "mcq";
  j["options"] = {"x", "y"};
  j["answer"] = "E";
  CHECK_THROWS_WITH(eval::parse_eval_sample(j.dump(), ds, 0, "x.jsonl:9"),
                    Catch::StartsWith("x.jsonl:9: ") && Catch::Contains("option letters"));
  CHECK_THROWS_WITH(eval::parse_eval_sample(R"({"conversations":[{"from":"human","value":"hi"}]})", ds, 0, "x.jsonl:2"),
                    Catch::StartsWith("x.jsonl:2: ") && Catch::Contains("assistant"));
}

TEST_CASE("task scoring by answer type counts correct answers and parse failures", "[task_scoring]") {
  const eval::EvalDataset ds{"d", "d.jsonl", ""};
  auto sample = [&](json j) { return eval::parse_eval_sample(j.dump(), ds, 0, "d.jsonl:1"); };
  json mcq = json::parse(conversation("Q?", "C"));
  mcq["options"] = {"a", "b", "c", "d"};
  const eval::EvalSample m = sample(mcq);
  const std::vector<const eval::EvalSample*> four{&m, &m, &m, &m};
  const eval::TaskScores mc = eval::score_task("t", four, {"C", "The answer is (C).", "I don't know", "E"});
  CHECK(mc.result.task == "t");
  CHECK(mc.result.metrics.at(0).first == "accuracy");
  CHECK(mc.result.metrics.at(0).second == Approx(0.5));
  CHECK(mc.result.parse_failures == 2);
  CHECK(mc.samples[1].correct == true);
  CHECK(mc.samples[2].parse_failed);

  json rt = json::parse(conversation("When?", "[9, 13]"));
  rt["answer"] = {9, 13};
  rt["num_frames"] = 16;
  const eval::EvalSample r = sample(rt);
  const eval::TaskScores rs = eval::score_task("rtloc", {&r, &r}, {"[9, 13]", "no idea"});
  CHECK(rs.result.metrics.at(0).first == "mean_recall");
  CHECK(rs.result.metrics.at(0).second == Approx(0.5));
  CHECK(rs.result.parse_failures == 1);
  CHECK(rs.samples[0].score == Approx(1.0));

  const eval::EvalSample sh = sample(json::parse(conversation("How many?", "2")));
  const eval::TaskScores ss = eval::score_task("count", {&sh, &sh}, {"Two.", "3"});
  CHECK(ss.result.metrics.at(0) == std::make_pair(std::string("exact_match"), 0.5));

  json fg = mcq;
  fg["qa_uid"] = "q1";
  const eval::EvalSample f = sample(fg);
  const eval::TaskScores fs = eval::score_task("fgqa", {&f, &f}, {"C", "B"});
  CHECK(fs.result.metrics.at(0) == std::make_pair(std::string("multibinary_accuracy"), 0.0));
  CHECK(fs.result.metrics.at(1).second == Approx(0.5));

  json jd = json::parse(conversation("What happens?", "a man runs"));
  jd["task"] = "sgqa";
  jd["video"] = "v.mp4";
  const eval::EvalSample g = sample(jd);
  CHECK(g.type == eval::AnswerType::judge);
  const eval::TaskScores gs = eval::score_task("sgqa", {&g}, {"a man runs"});
  REQUIRE(gs.judge.size() == 1);
  CHECK(gs.judge[0].ground_truth == "a man runs");
  CHECK(json::parse(gs.judge[0].metadata_json)["video"] == "v.mp4");

  CHECK_THROWS_WITH(eval::score_task("mixed", {&m, &sh}, {"A", "2"}), Catch::Contains("mixes answer types"));
}

TEST_CASE("multiple choice takes the letter the model prefers, generated or by log-likelihood", "[evaluate]") {
  model::PerceptionLM m = tiny_model(/*tied=*/false);
  m->eval();
  infer::GenerateOptions o;
  o.max_gen_len = 1;
  infer::Generator generator(m, infer::PromptEncoder(llama3(), tiny_preprocess(*m)), o);
  const data::Preprocessor media(llama3(), tiny_preprocess(*m));

  const eval::EvalDataset ds{"letters", "letters.jsonl", ""};
  const std::string question = "Question: Which?\nOptions:\n(A) w\n(B) x\n(C) y\n(D) z\nOnly give the best option.";
  std::vector<eval::EvalSample> samples;
  for (const char* answer : {"A", "C", "C", "D"}) {
    json j = json::parse(conversation(question, answer));
    j["options"] = {"w", "x", "y", "z"};
    j["task"] = "pick";
    samples.push_back(eval::parse_eval_sample(j.dump(), ds, static_cast<int64_t>(samples.size()), "letters.jsonl"));
  }
  json t = json::parse(conversation("What is 1 plus 1?", "2"));
  samples.push_back(eval::parse_eval_sample(t.dump(), ds, 4, "letters.jsonl:5"));

  // Every sample has the same prompt: point the output row of "C" along its last hidden state.
  const infer::PreparedPrompt prompt = generator.prompts().encode(question, {});
  const text::TokenId c = llama3()->encode("C").at(0);
  {
    at::NoGradGuard no_grad;
    model::ModelInputs in;
    in.tokens = at::tensor(std::vector<int64_t>(prompt.ids.begin(), prompt.ids.end()), at::kLong).unsqueeze(0);
    const at::Tensor h = m->hidden(in)[0][-1];
    m->output[c].copy_(h / h.norm() * 50);
  }
  for (const std::string mode : {"generate", "loglik"}) {
    const eval::EvalReport report = eval::evaluate(generator, media, samples, {2, mode});
    REQUIRE(report.results.size() == 2);
    CHECK(report.results[0].task == "pick");
    CHECK(report.results[0].metrics.at(0).second == Approx(0.5));
    CHECK(report.results[0].parse_failures == 0);
    CHECK(report.results[1].task == "letters");  // no "task": the dataset's name
    REQUIRE(report.predictions.size() == 5);
    CHECK(report.predictions[1].prediction == "C");
    CHECK(report.predictions[1].correct == true);
    CHECK(report.predictions[0].correct == false);
    const json line = json::parse(eval::prediction_line(report.predictions[1]));
    CHECK(line["reference"] == "C");
    CHECK(line["id"] == "letters#1");
    const json results = json::parse(eval::results_json(report.results));
    CHECK(results.contains("pick"));
    CHECK(results.contains("letters"));
    CHECK(results["pick"]["num_instances"] == 4);
  }
  CHECK_THROWS_WITH(eval::evaluate(generator, media, samples, {0, "generate"}), Catch::Contains("--batch-size"));
}

TEST_CASE("evaluation reads images relative to the dataset root", "[evaluate]") {
  TwoDatasets data;
  model::PerceptionLM m = tiny_model();
  m->eval();
  infer::GenerateOptions o;
  o.max_gen_len = 3;
  infer::Generator generator(m, infer::PromptEncoder(llama3(), tiny_preprocess(*m)), o);
  const data::Preprocessor media(llama3(), tiny_preprocess(*m));
  const std::vector<eval::EvalSample> samples =
      eval::read_eval_samples({"image", data.mix[1].dataset.annotation, data.scratch.dir.string()}, 3);
  REQUIRE(samples.size() == 3);
  const eval::EvalReport report = eval::evaluate(generator, media, samples, {2, "generate"});
  REQUIRE(report.results.size() == 1);
  CHECK(report.results[0].num_instances == 3);
  CHECK(report.generated_tokens > 0);
  // A wrong root names the missing file.
  const std::vector<eval::EvalSample> lost =
      eval::read_eval_samples({"image", data.mix[1].dataset.annotation, "/nonexistent"}, 1);
  CHECK_THROWS_AS(eval::evaluate(generator, media, lost, {2, "generate"}), data::MediaSampleError);
}
