// Inference benchmark: prefill and decode tokens/s at batch 1 and batch 8, on a model folder or
// (by default) a randomly initialised Qwen2-style model of the suite's size (a): hidden 512,
// 8 layers, 8 heads, 2 KV heads, intermediate 1408, vocabulary 151,936.
//   inference_bench [--model DIR] [--prompt 256] [--new 64] [--repeats 3] [--weight_dtype bfloat16|float16]
//                   [--trace FILE]
// --weight_dtype holds the projections, embedding and head in 16 bits (computing in float32), as
// `lathe infer --weight_dtype` does. --trace records every operator of one more batch-1 run
// (prefill and decode) for chrome://tracing or bench/trace_summary.py.
#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "benchmark_model.h"
#include "lathe/infer/generate.h"
#include "lathe/model/model.h"
#include "lathe/model/runtime.h"

using namespace lathe;

static double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

static int run(int argc, char** argv) {
  configure_runtime(argc, argv);
  std::string model_dir, weight_dtype = "float32", trace;
  int64_t prompt = 256, fresh = 64, repeats = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--prompt")) prompt = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--new")) fresh = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--repeats")) repeats = std::stoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--weight_dtype")) weight_dtype = argv[i + 1];
    if (!std::strcmp(argv[i], "--trace")) trace = argv[i + 1];
  }
  const auto held = projection_dtype(weight_dtype, "float32", model_dir, /*lossless_auto=*/false);
  CausalLM model = model_dir.empty() ? CausalLM(benchmark_config()) : load_pretrained(model_dir, torch::kFloat32, {held, true});
  if (model_dir.empty() && held) model->hold_projections_in(*held, /*embedding=*/true);
  model->eval();
  const auto vocab = model->config().vocab_size;
  fmt::print("inference_bench: {} threads, prompt {} tokens, {} new tokens, median of {}, weights {}\n",
             compute_threads(), prompt, fresh, repeats, weight_dtype);
  for (int64_t batch : {1, 8}) {
    std::vector<std::vector<int32_t>> prompts(static_cast<std::size_t>(batch));
    for (int64_t r = 0; r < batch; ++r) {
      for (int64_t t = 0; t < prompt; ++t) prompts[r].push_back(static_cast<int32_t>((r * 7919 + t * 104729) % vocab));
    }
    std::vector<double> prefill, decode;
    for (int64_t run = 0; run < repeats; ++run) {
      SamplingParams one;
      one.max_new_tokens = 1;
      const auto start = std::chrono::steady_clock::now();
      generate(model, prompts, one);
      const double prefill_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      SamplingParams many;
      many.max_new_tokens = fresh;
      const auto again = std::chrono::steady_clock::now();
      generate(model, prompts, many);
      const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - again).count();
      prefill.push_back(static_cast<double>(batch * prompt) / prefill_seconds);
      decode.push_back(static_cast<double>(batch * (fresh - 1)) / std::max(1e-9, total - prefill_seconds));
    }
    fmt::print("{{\"batch\": {}, \"prefill_tokens_per_s\": {:.1f}, \"decode_tokens_per_s\": {:.1f}}}\n", batch,
               median(prefill), median(decode));
  }
  if (!trace.empty()) {
    // The profiler records the thread that enables it, so this run decodes greedily in this thread
    // (the engine's own loop runs in a thread of its own).
    torch::NoGradGuard no_grad;
    KVCache cache;
    auto ids = torch::full({1, prompt}, 42, torch::kLong);
    torch::autograd::profiler::RecordProfile record(trace);
    for (int64_t step = 0; step < fresh; ++step) {
      const auto hidden = model->forward(ForwardInputs{ids, {}, {}, &cache});
      ids = model->logits(hidden.select(1, hidden.size(1) - 1)).argmax(-1).view({1, 1});
    }
  }
  return 0;
}

int main(int argc, char** argv) { return run_benchmark("inference_bench", run, argc, argv); }
