// Benchmark metrics: answer parsing, FGQA MBacc, RTLoc recall, RDCap SODA_c, judge JSONL and the results report.
// Expected values are worked out by hand in the comments (docs/reference.md 9; lmms-eval tasks/plm_videobench).
#include <catch2/catch.hpp>

#include <sstream>
#include <stdexcept>

#include "plm/eval/answer_matching.h"
#include "plm/eval/judge_records.h"
#include "plm/eval/multiple_choice.h"
#include "plm/eval/results.h"
#include "plm/eval/rtloc.h"
#include "plm/eval/segments.h"
#include "plm/eval/soda.h"

using namespace plm::eval;

namespace {

// 1 for identical captions, 0 otherwise: keeps the SODA cases exact.
double same_caption(const std::string& ground_truth, const std::string& prediction) {
  return ground_truth == prediction ? 1.0 : 0.0;
}

double metric(const TaskResult& result, const std::string& name) {
  for (const auto& [key, value] : result.metrics) {
    if (key == name) return value;
  }
  throw std::out_of_range("no metric " + name);
}

RtlocSample rtloc(const std::string& prediction, double start = 10, double end = 20, double total = 32) {
  return RtlocSample{"u", prediction, start, end, total};
}

}  // namespace

TEST_CASE("option letters: the leading-marker forms read", "[eval]") {
  for (const char* answer :
       {"(B)", "B", "b", "B. red", "B) red", "B: red", "B red", "(b) red", "  (B)  ", "Answer: B", "answer: b",
        "The answer is (B).", "The answer is B", "I would pick (B) because it fits"}) {
    INFO(answer);
    CHECK(parse_option_letter(answer, 4) == std::optional<char>('B'));
  }
}

TEST_CASE("option letters: parse failures are reported as such", "[eval]") {
  for (const char* answer : {"", "   ", "Blue", "a man opens the door", "either (A) or (B)", "The answer is unclear",
                             "(E)", "E", "I don't know"}) {
    INFO(answer);
    CHECK_FALSE(parse_option_letter(answer, 4).has_value());
  }
  // A leading marker wins over later parenthesised letters; the number of options bounds the letters.
  CHECK(parse_option_letter("(A) or maybe (B)", 4) == std::optional<char>('A'));
  CHECK(parse_option_letter("E", 5) == std::optional<char>('E'));
}

TEST_CASE("short answers normalise VQA-style", "[eval]") {
  CHECK(normalize_answer("The Two dogs!") == "2 dogs");
  CHECK(normalize_answer("1,000 people") == "1000 people");
  CHECK(normalize_answer("3.5 kg.") == "3.5 kg");
  CHECK(normalize_answer("man's hat") == "mans hat");
  CHECK(normalize_answer("  An   apple-pie ") == "apple pie");
  CHECK(exact_match("Two.", "2"));
  CHECK(exact_match("a red car", "Red car"));
  CHECK_FALSE(exact_match("red", "blue"));
}

TEST_CASE("token F1 counts overlapping words as a multiset", "[eval]") {
  // [man, opens, door] vs [man, closes, door]: overlap 2, F1 = 2*2/6.
  CHECK(token_f1("a man opens the door", "the man closes the door") == Approx(2.0 / 3));
  CHECK(token_f1("dog dog cat", "dog") == Approx(0.5));  // overlap 1, 2*1/(3+1)
  CHECK(token_f1("", "") == 1.0);
  CHECK(token_f1("dog", "") == 0.0);
}

TEST_CASE("FGQA MBacc: one wrong variant makes the group wrong", "[eval]") {
  const std::vector<MultipleChoiceSample> samples = {
      {"q1", "(A) cut the onion", 'A', 4},
      {"q2", "(B)", 'C', 4},  // q2's wrong variant comes first
      {"q1", "B", 'B', 4},
      {"q2", "(A)", 'A', 4},
      {"q1", "The answer is (C)", 'C', 4},
      {"q3", "I am not sure", 'D', 4},  // parse failure: wrong
  };
  const TaskResult fgqa = fgqa_multibinary_accuracy(samples);
  CHECK(fgqa.task == "fgqa");
  CHECK(fgqa.metrics.front().first == "multibinary_accuracy");
  CHECK(metric(fgqa, "multibinary_accuracy") == Approx(1.0 / 3));  // only q1 has all variants right
  CHECK(metric(fgqa, "accuracy") == Approx(4.0 / 6));
  CHECK(fgqa.num_instances == 6);
  CHECK(fgqa.parse_failures == 1);
  CHECK(metric(multiple_choice_accuracy(samples, "mcq"), "accuracy") == Approx(4.0 / 6));
  CHECK(metric(fgqa_multibinary_accuracy({}), "multibinary_accuracy") == 0.0);
}

TEST_CASE("RTLoc: the first [a, b] is the prediction", "[eval]") {
  auto is = [](std::optional<Segment> s, double a, double b) { return s && s->start == a && s->end == b; };
  CHECK(is(parse_first_segment("[3, 7]"), 3, 7));
  CHECK(is(parse_first_segment("frames [3.5,7.25] then [1, 2]"), 3.5, 7.25));
  CHECK(is(parse_first_segment("[ 3, 7] or [4,\n9]"), 4, 9));
  for (const char* text : {"[3 ,7]", "[-1, 5]", "[3., 7]", "[3, 7", "from 3 to 7"}) {
    INFO(text);
    CHECK_FALSE(parse_first_segment(text).has_value());
  }
}

TEST_CASE("temporal IoU is continuous and order-free", "[eval]") {
  CHECK(temporal_iou({0, 10}, {5, 15}) == Approx(5.0 / 15));
  CHECK(temporal_iou({0, 10}, {10, 20}) == 0.0);  // touching
  CHECK(temporal_iou({5, 5}, {5, 5}) == 0.0);     // a single frame has no length
  CHECK(temporal_iou({20, 10}, {10, 20}) == Approx(1.0));
  const Segment rescaled = rescale_segment({50, 99}, 100, 32);  // factor 3.125: 16.0 and 31.68 -> 31
  CHECK(rescaled.start == 16);
  CHECK(rescaled.end == 31);
}

TEST_CASE("RTLoc recall at IoU thresholds: strictly above, at the boundaries", "[eval]") {
  // Ground truth [10, 20] (32 source frames, so no rescaling). IoU -> thresholds passed of {0.3, 0.5, 0.7, 0.9}.
  const std::vector<std::pair<std::string, double>> cases = {
      {"[10, 20]", 1.0},   // 1.0
      {"[10, 19]", 0.75},  // 0.9: not above 0.9
      {"[10, 17]", 0.5},   // 0.7
      {"[10, 15]", 0.25},  // 0.5
      {"[10, 14]", 0.25},  // 0.4
      {"[10, 13]", 0.0},   // 0.3: not above 0.3
      {"[20, 25]", 0.0},   // touching
      {"[20, 10]", 1.0},   // reversed endpoints
  };
  for (const auto& [prediction, recall] : cases) {
    INFO(prediction);
    const RtlocScore score = score_rtloc_sample(rtloc(prediction));
    CHECK(score.mean_recall == recall);
    CHECK(score.mean_precision == recall);
    CHECK_FALSE(score.parse_failed);
  }
  CHECK(score_rtloc_sample(rtloc("[10, 17]")).iou == Approx(0.7));
}

TEST_CASE("RTLoc: ground truth is rescaled and a parse failure scores a wrong segment", "[eval]") {
  // 64 source frames: [20, 41] -> int(20/2), int(41/2) = [10, 20].
  CHECK(score_rtloc_sample(rtloc("[10, 20]", 20, 41, 64)).mean_recall == 1.0);
  const RtlocScore failed = score_rtloc_sample(rtloc("around frame 12", 20, 41, 64));
  CHECK(failed.parse_failed);
  CHECK(failed.iou == 0.0);  // [51, 61] against [10, 20]
  CHECK(failed.mean_recall == 0.0);
  // The fallback is in source frames, as lmms-eval's: with 8 source frames, [2, 6] -> [8, 24], and the fallback
  // [16, 26] overlaps it (IoU 8/18), so recall at 0.3 counts. Kept for parity; SA-V videos have far more frames.
  const RtlocScore quirk = score_rtloc_sample(rtloc("none", 2, 6, 8));
  CHECK(quirk.iou == Approx(8.0 / 18));
  CHECK(quirk.mean_recall == 0.25);
  CHECK_THROWS_AS(score_rtloc_sample(rtloc("[1, 2]", 1, 2, 0)), std::invalid_argument);
}

TEST_CASE("RTLoc aggregates mean recall, precision and IoU", "[eval]") {
  const TaskResult result = score_rtloc({rtloc("[10, 20]"), rtloc("[10, 19]"), rtloc("[10, 15]"), rtloc("frame 12")});
  CHECK(result.task == "rtloc");
  CHECK(metric(result, "mean_recall") == Approx((1 + 0.75 + 0.25 + 0) / 4));
  CHECK(metric(result, "mean_precision") == Approx(0.5));
  CHECK(metric(result, "mIOU") == Approx((1 + 0.9 + 0.5 + 0) / 4));
  CHECK(result.num_instances == 4);
  CHECK(result.parse_failures == 1);
}

TEST_CASE("RDCap: dense caption lines parse as lmms-eval reads them", "[eval]") {
  const auto captions = parse_dense_captions("Here: [0, 5]: a man walks.\n[6,10]: he sits down,\n");
  REQUIRE(captions.size() == 2);
  CHECK(captions[0].segment.start == 0);
  CHECK(captions[0].segment.end == 5);
  CHECK(captions[0].caption == "a man walks.");
  CHECK(captions[1].segment.start == 6);
  CHECK(captions[1].caption == "he sits down");  // trailing comma removed
  // A '[' ends a caption; unmatched brackets are skipped; "\nFrame " is dropped.
  const auto cut = parse_dense_captions("[0, 5]: holds a [red] cup [6, 8]: drinks");
  REQUIRE(cut.size() == 2);
  CHECK(cut[0].caption == "holds a");
  CHECK(cut[1].caption == "drinks");
  const auto framed = parse_dense_captions("[0, 5]: a\nFrame [6, 8]: b\nc");
  REQUIRE(framed.size() == 2);
  CHECK(framed[0].caption == "a");
  CHECK(framed[1].caption == "b c");
  CHECK(parse_dense_captions("[0.5, 3]: floats are not segments here").empty());
  CHECK(parse_dense_captions("A man walks.").empty());
}

TEST_CASE("SODA: the DP finds the best ordered matching", "[eval]") {
  CHECK(ordered_matching_score({{1, 0}, {0, 1}}) == 2.0);
  CHECK(ordered_matching_score({{1, 0, 0}, {0, 0, 1}, {0, 1, 0}}) == 2.0);  // unordered would be 3
  CHECK(ordered_matching_score({{0.2, 0.9}, {0.8, 0.1}}) == Approx(0.9));   // 0.9 alone beats 0.2 + 0.1
  CHECK(ordered_matching_score({{0.5, 0.5, 0.5}}) == 0.5);
  CHECK(ordered_matching_score({{0.3}, {0.4}}) == Approx(0.4));
  CHECK(ordered_matching_score({}) == 0.0);
}

TEST_CASE("SODA_c on small cases worked by hand", "[eval]") {
  const std::vector<DenseCaption> gt = {{{0, 10}, "a"}, {{10, 20}, "b"}};
  // Matches (a, a) IoU 1 and (b, b) IoU 8/10: 1.8 over 2 and 2 -> P = R = F = 0.9.
  SodaScore s = soda_c(gt, {{{0, 10}, "a"}, {{12, 20}, "b"}}, same_caption);
  CHECK(s.precision == Approx(0.9));
  CHECK(s.recall == Approx(0.9));
  CHECK(s.f_measure == Approx(0.9));
  // One prediction [0, 20] "b": IoU 0.5 with each, similarity only with "b" -> 0.5. P = 0.5, R = 0.25, F = 1/3.
  s = soda_c(gt, {{{0, 20}, "b"}}, same_caption);
  CHECK(s.precision == Approx(0.5));
  CHECK(s.recall == Approx(0.25));
  CHECK(s.f_measure == Approx(1.0 / 3));
  // Empty prediction: all zeros.
  s = soda_c(gt, {}, same_caption);
  CHECK(s.f_measure == 0.0);
  CHECK_THROWS_AS(soda_c({}, gt, same_caption), std::invalid_argument);
}

TEST_CASE("SODA_c: crossing matches are not allowed", "[eval]") {
  // GT x [0, 10], y [5, 15]; predictions y [0, 10], x [5, 15]. The captions only agree across:
  // (x, pred 1) and (y, pred 0), each IoU 5/15. Matrix {{0, 1/3}, {1/3, 0}}: both pairs cross, so the ordered
  // matching keeps one, 1/3 (an unordered assignment would take 2/3). P = R = F = (1/3)/2 = 1/6.
  const SodaScore s = soda_c({{{0, 10}, "x"}, {{5, 15}, "y"}}, {{{0, 10}, "y"}, {{5, 15}, "x"}}, same_caption);
  CHECK(s.precision == Approx(1.0 / 6));
  CHECK(s.recall == Approx(1.0 / 6));
  CHECK(s.f_measure == Approx(1.0 / 6));
}

TEST_CASE("SODA_c with the default token-F1 similarity", "[eval]") {
  // IoU 1, token F1 2/3 (see the token F1 case): P = R = F = 2/3.
  const SodaScore s = soda_c({{{0, 10}, "a man opens the door"}}, {{{0, 10}, "the man closes the door"}});
  CHECK(s.f_measure == Approx(2.0 / 3));
}

TEST_CASE("RDCap scoring: rescaling, parse failures and the mean", "[eval]") {
  // 64 source frames: GT [0, 20], [20, 40] -> [0, 10], [10, 20]. Captions normalise equal (F1 1): 0.9 as above.
  const std::vector<DenseCaption> gt = {{{0, 20}, "a man opens the door"}, {{20, 40}, "he walks outside"}};
  const RdcapSample good{"v1", "[0, 10]: A man opens the door.\n[12, 20]: He walks outside.", gt, 64};
  const RdcapSample empty{"v2", "I see a man.", gt, 64};
  const RdcapSample floats{"v3", "[0.5, 10]: a man opens the door", gt, 64};
  CHECK(score_rdcap_sample(good).soda_c == Approx(0.9));
  CHECK_FALSE(score_rdcap_sample(good).parse_failed);
  CHECK(score_rdcap_sample(empty).soda_c == 0.0);
  CHECK(score_rdcap_sample(empty).parse_failed);
  CHECK(score_rdcap_sample(floats).parse_failed);
  const TaskResult result = score_rdcap({good, empty, floats});
  CHECK(result.task == "rdcap");
  CHECK(metric(result, "SODA_c") == Approx(0.3));
  CHECK(result.num_instances == 3);
  CHECK(result.parse_failures == 2);
  CHECK_THROWS_AS(score_rdcap_sample(RdcapSample{"v4", "[0, 1]: x", {}, 64}), std::invalid_argument);
}

TEST_CASE("judge JSONL lines carry the fields and the metadata", "[eval]") {
  const JudgeRecord record{"sgqa_1", "What is he holding?", "A \"red\" cup", "a cup",
                           R"({"video": "v1.mp4", "frames": [0, 31]})"};
  CHECK(judge_record_line("sgqa", record) ==
        R"({"task":"sgqa","uid":"sgqa_1","question":"What is he holding?","prediction":"A \"red\" cup",)"
        R"("ground_truth":"a cup","metadata":{"video":"v1.mp4","frames":[0,31]}})");
  // A cut UTF-8 sequence becomes U+FFFD.
  const JudgeRecord cut{"rcap_2", "", "caf\xC3", "cafe"};
  CHECK(judge_record_line("rcap", cut) ==
        "{\"task\":\"rcap\",\"uid\":\"rcap_2\",\"question\":\"\",\"prediction\":\"caf\xEF\xBF\xBD\","
        "\"ground_truth\":\"cafe\",\"metadata\":{}}");
  std::ostringstream out;
  write_judge_records(out, "rcap", {cut, cut});
  CHECK(out.str() == judge_record_line("rcap", cut) + "\n" + judge_record_line("rcap", cut) + "\n");
  for (const char* bad : {"[1, 2]", "not json"}) {
    JudgeRecord wrong = record;
    wrong.metadata_json = bad;
    CHECK_THROWS_AS(judge_record_line("sgqa", wrong), std::invalid_argument);
  }
}

TEST_CASE("results report as JSON and as a table", "[eval]") {
  const std::vector<TaskResult> results = {
      {"fgqa", {{"multibinary_accuracy", 0.5}, {"accuracy", 0.75}}, 4, 1},
      {"rtloc", {{"mean_recall", 0.59125}}, 10, 0},
  };
  CHECK(results_json(results) ==
        "{\n"
        "  \"fgqa\": {\n"
        "    \"multibinary_accuracy\": 0.5,\n"
        "    \"accuracy\": 0.75,\n"
        "    \"num_instances\": 4,\n"
        "    \"parse_failures\": 1\n"
        "  },\n"
        "  \"rtloc\": {\n"
        "    \"mean_recall\": 0.59125,\n"
        "    \"num_instances\": 10,\n"
        "    \"parse_failures\": 0\n"
        "  }\n"
        "}");
  CHECK(results_table(results) ==
        "task   metric                score (%)  instances  parse failures\n"
        "fgqa   multibinary_accuracy      50.00          4               1\n"
        "       accuracy                  75.00\n"
        "rtloc  mean_recall               59.13         10               0\n");
  CHECK_THROWS_AS(results_json({results[0], results[0]}), std::invalid_argument);
}
