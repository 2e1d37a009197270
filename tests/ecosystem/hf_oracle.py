"""Hugging Face transformers and PEFT as oracles for Lathe's C++ tests: tiny random causal LMs made with
transformers' own classes, their logits, adapters made by PEFT, and Lathe's files loaded by both. Runs in
the venv that scripts/oracle_env.sh makes; it never reaches a model hub.

  hf_oracle.py create --arch llama|mistral|qwen2|qwen3 --out DIR [--tied] [--gqa] [--seed N]
                      [--rope_scaling JSON] [--tokenizer DIR] [--vocab N] [--no_perturb] [--num_labels N] ...
  hf_oracle.py logits --model DIR --ids 1,2,3 [--adapter DIR [--merge]] [--dtype float32|bfloat16]
                      [--attn eager|sdpa] --out FILE.json
  hf_oracle.py rewards --model DIR --sequences FILE.json [--adapter DIR] [--num_labels N] [--attn eager|sdpa]
                       --out FILE.json
  hf_oracle.py peft_create --model DIR --kind lora|rslora|dora|ia3|pissa --out DIR [--r 4] [--alpha 8]
                           [--task_type CAUSAL_LM|SEQ_CLS] [--seed N]
  hf_oracle.py tokenize --tokenizer FILE.json --texts TEXTS.json --out FILE.json
  hf_oracle.py chat_template --tokenizer DIR --cases CASES.json --out FILE.json
  hf_oracle.py hf_train --model DIR --adapter DIR --examples FILE.json --out FILE.json [hyperparameters]
  hf_oracle.py tb_scalars --dir RUNS_DIR --out FILE.json
  hf_oracle.py gguf_read --gguf FILE.gguf [--model DIR] --out FILE.json
  hf_oracle.py preference_losses --cases CASES.json --out FILE.json
  hf_oracle.py grpo --cases CASES.json --out FILE.json
  hf_oracle.py batch JOBS.json     (a JSON list of argument lists, each one of the commands above, run
                                    in this one process: importing transformers takes about 10 s)

preference_losses: lathe rlhf's formulas as ms-swift and TRL compute them, on given log-probabilities: for each
case of a JSON list, {"kind": "dpo", "loss_type", "beta", "label_smoothing", "discopop_tau", "batches": [{"policy_chosen",
"policy_rejected", "reference_chosen", "reference_rejected", "nll"}, ...]} goes through ms-swift's DPOTrainer.dpo_loss
(one trainer object for the case's batches in order, so bco_pair's running mean carries over); "cpo" (loss_type, beta,
label_smoothing, simpo_gamma, policy_chosen, policy_rejected) through TRL's CPOTrainer.cpo_loss; "orpo" (beta, the
mean log-probabilities) through ORPOTrainer.odds_ratio_loss; "kto" (loss_type, beta, desirable_weight,
undesirable_weight, policy_/reference_ chosen, rejected and kl) through KTOTrainer.kto_loss. The trainers' methods run
on a plain object holding the attributes they read. Writes, per case, each batch's "losses", "chosen_rewards",
"rejected_rewards" (and "log_odds_ratio", "log_odds_chosen" for orpo, "kl" for kto).

grpo: lathe rlhf --rlhf_type grpo's formulas as ms-swift computes them, for each case of a JSON list by its "kind":
"advantages" ({"rewards_per_func": [N][F] with null for a function's missing reward, "reward_weights", "num_generations",
"advantage_estimator", "scale_rewards", "names"}) through swift.rl_core.advantage.compute_advantages and
compute_reward_metrics: "advantages", "rewards" (the weighted nansums), "reward", "reward_std", "frac_reward_zero_std",
"per_func_mean", "per_func_std". "loss" ({"logps", "old_logps", "ref_logps": one list per completion, the last two
empty when absent; "advantages" and "truncated" per completion; "overlong_filter", "window_tokens" (the rollout
batch's completion tokens), "gradient_accumulation_steps", "beta", "importance_sampling_level", "loss_type",
"epsilon", "epsilon_high", "delta", "max_completion_length"}) through GRPOTrainer._compute_loss_and_metrics on a plain
object holding the attributes it reads, with the policy's forward pass replaced by the case's log-probabilities, the
loss then divided by the accumulation steps as transformers' Trainer.training_step does: "loss", "grad" (d loss / d
logps, flat in row order), "clipping" and "kl" (ms-swift's metrics). "k3" ({"logps", "ref_logps"}): each token's k3
KL, as the kl metric of a one-token batch. "orm" ({"name" of swift.rewards.orm.orms, "args" (the GRPOConfig fields it
reads), "completions", "solution", "token_lengths"}): "rewards"; cosine's accuracy is a literal comparison of the
<answer> contents (MathAccuracy needs math_verify), and accuracy reports "skipped" without math_verify.

create: hidden 64, 2 layers, 4 attention heads (2 key/value heads with --gqa), intermediate 128, head_dim
16, saved with save_pretrained as float32 safetensors. The vocabulary is the size of the tokenizer copied in
with --tokenizer (its files are copied into DIR), else --vocab (512). transformers initialises every bias to
zero and every RMSNorm weight to one, which would leave Qwen2's q/k/v biases and Qwen3's q/k norms untested,
so those are then set to random values too (--no_perturb keeps transformers' own initialisation).
With --num_labels the model is a sequence classifier (AutoModelForSequenceClassification: <Arch>ForSequenceClassification,
a `score` head of that many rows), with the tokenizer's pad token as pad_token_id, which it needs to find each row's
last token in a batch.
--rope_scaling takes transformers 4.x's rope_scaling object (e.g. '{"rope_type":"linear","factor":2.0}');
transformers 5.x stores it, with rope_theta, as config.json's "rope_parameters".

logits: the logits of the whole sequence in one forward pass ("logits", [seq][vocab]), and those of the
same tokens fed one at a time through the KV cache ("step_logits", [seq][vocab], row i = the last logits
after token i), both as float32 values (bfloat16 results converted exactly). "loading" lists the missing,
unexpected and mismatched keys that from_pretrained reported. With --adapter the model is
PeftModel.from_pretrained(model, DIR); with --merge too, that model's merge_and_unload().

rewards: a sequence classifier's scores of token sequences (a JSON list of id lists), all in one right-padded batch
with config.pad_token_id and its attention mask, so that transformers itself picks each row's last non-pad token:
"rewards" (the first label's score per sequence), "num_labels", "pad_token_id", "loading" (as for logits, for the
AutoModelForSequenceClassification.from_pretrained of --model, with --num_labels if given). With --adapter the
model is PeftModel.from_pretrained(model, DIR) (a SEQ_CLS adapter brings its modules_to_save, the score head, with
it); "adapter_loading" then lists the adapter's own keys that PEFT left unloaded ("missing_keys") and the file's
keys it could not place ("unexpected_keys").

tokenize: Hugging Face's tokenizers (the Python package) on each text of a JSON list: "with" and "without"
(ids with and without the post-processor's special tokens), "decoded" and "decoded_skip" (decode of "with",
keeping and skipping special tokens).

chat_template: transformers' AutoTokenizer(DIR).apply_chat_template(tokenize=False) for each case of a JSON
list of {"messages", "tools"?, "add_generation_prompt", "enable_thinking"?}; the texts, in order.

hf_train: Hugging Face's Trainer training a PEFT adapter (PeftModel.from_pretrained(is_trainable=True)) on
pre-tokenized examples ({"input_ids"}; every token is a label), in their order (no shuffle), on the CPU in
float32; writes the log rows Trainer reports (loss, grad_norm, learning_rate per step).

tb_scalars: every record of every events.out.tfevents.* file in DIR read with TensorBoard's own record reader
(which checks both CRC-32C of each record) and parsed as tensorflow.Event: {"file_version", "scalars": {tag:
[[step, value], ...]}}.

gguf_read: a GGUF file read by llama.cpp's own Python reader (the gguf package): "fields" (every metadata key
with its value; arrays as lists), "tensors" ([{name, type, shape (innermost first), n_bytes}]). With --model, each
tensor's bytes are compared with the gguf package's own encoding (gguf.quants.quantize) of the model folder's
safetensors tensor of that name (llama.cpp's names restated here, Llama's q/k rows reordered as its converter
does): "mismatched" lists the tensors whose bytes differ, "unmatched" those with no model tensor.

peft_create: an adapter made by PEFT's get_peft_model on DIR's model with every adapter tensor non-zero and
not at its identity value (LoRA's B is random, DoRA's magnitude and IA3's vectors are perturbed), saved with
save_pretrained. all-linear targets; IA3 takes PEFT's default targets for the architecture. pissa: PEFT's
PiSSA initialisation, then A and B perturbed as training would, saved converted to a plain LoRA of rank 2r
on the original weights (path_initial_model_for_weight_conversion) into --out, and as it is (init_lora_weights
"pissa": a loader redoes the SVD of the original weights) into --out with "_as_is" appended. --task_type SEQ_CLS
makes it for the model loaded as a one-label AutoModelForSequenceClassification (a reward model): PEFT then
keeps the score head, as transformers initialised it, whole in modules_to_save.
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import peft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

transformers.utils.logging.disable_progress_bar()

ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
)


def copy_tokenizer(src, out):
    copied = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(src, name))]
    if not copied:
        sys.exit(f"hf_oracle: no tokenizer files in {src}")
    for name in copied:
        shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
    return AutoTokenizer.from_pretrained(out, local_files_only=True)


def create(args):
    os.makedirs(args.out, exist_ok=True)
    tokenizer = copy_tokenizer(args.tokenizer, args.out) if args.tokenizer else None
    vocab = args.vocab or (len(tokenizer) if tokenizer is not None else 512)
    if tokenizer is not None and vocab < len(tokenizer):
        sys.exit(f"hf_oracle: --vocab {vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")

    def token_id(name, fallback):
        value = getattr(tokenizer, name, None) if tokenizer is not None else fallback
        return value if value is None or value < vocab else None

    config_class, model_class = ARCHS[args.arch]
    fields = dict(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads or (args.heads // 2 if args.gqa else args.heads),
        head_dim=args.head_dim or args.hidden // args.heads,
        max_position_embeddings=args.max_positions,
        tie_word_embeddings=args.tied,
        bos_token_id=token_id("bos_token_id", 1),
        eos_token_id=token_id("eos_token_id", 2),
        pad_token_id=token_id("pad_token_id", None),
        initializer_range=args.initializer_range,
        dtype="float32",
    )
    if args.rms_norm_eps is not None:
        fields["rms_norm_eps"] = args.rms_norm_eps
    if args.arch == "mistral" or args.sliding_window is not None:
        fields["sliding_window"] = args.sliding_window  # None: Mistral without a window
    if args.arch in ("qwen2", "qwen3") and args.sliding_window is not None:
        fields["use_sliding_window"] = True
        fields["max_window_layers"] = args.max_window_layers
    rope = json.loads(args.rope_scaling) if args.rope_scaling else {}
    if args.rope_theta is not None or rope:
        fields["rope_parameters"] = {"rope_type": rope.pop("type", "default"), **rope}
        fields["rope_parameters"].setdefault("rope_theta", args.rope_theta or config_class.default_theta)
    if args.num_labels is not None:
        if fields["pad_token_id"] is None:
            sys.exit("hf_oracle: a classifier needs a pad token: give --tokenizer")
        fields["num_labels"] = args.num_labels
    config = config_class(**fields)

    torch.manual_seed(args.seed)
    if args.num_labels is not None:
        model_class = AutoModelForSequenceClassification.from_config
    model = model_class(config).to(torch.float32).eval()
    if not args.no_perturb:
        generator = torch.Generator().manual_seed(args.seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".bias"):
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
                elif name.endswith("norm.weight"):
                    param.copy_(1 + torch.randn(param.shape, generator=generator) * 0.1)
    model.save_pretrained(args.out)
    # transformers 5.x writes the safetensors file through a temporary file, mode 0600.
    for name in os.listdir(args.out):
        os.chmod(os.path.join(args.out, name), 0o644)
    print(json.dumps({"out": args.out, "arch": args.arch, "vocab_size": vocab,
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "tied": bool(config.tie_word_embeddings),
                      "num_key_value_heads": config.num_key_value_heads}))


def logits(args):
    ids = [int(token) for token in args.ids.split(",") if token.strip()]
    if not ids:
        sys.exit("hf_oracle: --ids is empty")
    model, loading = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=DTYPES[args.dtype], attn_implementation=args.attn, local_files_only=True,
        output_loading_info=True,
    )
    if args.adapter:
        model = PeftModel.from_pretrained(model, args.adapter, local_files_only=True)
        if args.merge:
            model = model.merge_and_unload()
    model.eval()
    input_ids = torch.tensor([ids])
    with torch.inference_mode():
        full = model(input_ids=input_ids, use_cache=False).logits[0].float()
        past = None
        steps = []
        for i in range(len(ids)):
            out = model(input_ids=input_ids[:, i:i + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits[0, -1].float())
        steps = torch.stack(steps)
    result = {
        "model": args.model,
        "model_type": model.config.model_type,
        "dtype": args.dtype,
        "attn_implementation": args.attn,
        "ids": ids,
        "loading": loading_info(loading),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_abs_diff_full_vs_steps": (full - steps).abs().max().item(),
        "logits": full.tolist(),
        "step_logits": steps.tolist(),
    }
    if args.out == "-":
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        with open(args.out, "w") as f:
            json.dump(result, f)
    print(f"hf_oracle: {len(ids)} tokens, vocab {full.shape[-1]}, full vs cached steps max |diff| "
          f"{result['max_abs_diff_full_vs_steps']:.3g}", file=sys.stderr)


def loading_info(loading):
    return {key: sorted(str(k) for k in loading.get(key, [])) for key in
            ("missing_keys", "unexpected_keys", "mismatched_keys")}


def rewards(args):
    with open(args.sequences) as f:
        sequences = json.load(f)
    if not sequences or not all(sequences):
        sys.exit("hf_oracle: --sequences needs non-empty id lists")
    extra = {"num_labels": args.num_labels} if args.num_labels is not None else {}
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        args.model, dtype=torch.float32, attn_implementation=args.attn, local_files_only=True,
        output_loading_info=True, **extra,
    )
    result = {"loading": loading_info(loading)}
    if args.adapter:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights
        model = PeftModel.from_pretrained(model, args.adapter, local_files_only=True)
        # from_pretrained keeps its load result to itself; loading the same file again reports it.
        placed = set_peft_model_state_dict(model, load_peft_weights(args.adapter, device="cpu"))
        result["adapter_loading"] = {
            "missing_keys": sorted(k for k in placed.missing_keys if ".default." in k),
            "unexpected_keys": sorted(placed.unexpected_keys)}
    model.eval()
    pad = model.config.pad_token_id
    if pad is None:
        sys.exit(f"hf_oracle: {args.model} has no pad_token_id, so transformers cannot batch it")
    if any(pad in ids for ids in sequences):
        sys.exit("hf_oracle: a sequence holds the pad token itself")
    width = max(len(ids) for ids in sequences)
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in sequences])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in sequences])
    with torch.inference_mode():
        scores = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    result.update({"rewards": scores[:, 0].tolist(), "num_labels": model.config.num_labels, "pad_token_id": pad,
                   "transformers": transformers.__version__, "peft": peft.__version__})
    with open(args.out, "w") as f:
        json.dump(result, f)


def tokenize(args):
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(args.tokenizer)
    with open(args.texts) as f:
        texts = json.load(f)
    rows = []
    for text in texts:
        with_special = tokenizer.encode(text, add_special_tokens=True).ids
        rows.append({"with": with_special, "without": tokenizer.encode(text, add_special_tokens=False).ids,
                     "decoded": tokenizer.decode(with_special, skip_special_tokens=False),
                     "decoded_skip": tokenizer.decode(with_special, skip_special_tokens=True)})
    with open(args.out, "w") as f:
        json.dump(rows, f)


def chat_template(args):
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    with open(args.cases) as f:
        cases = json.load(f)
    texts = []
    for case in cases:
        extra = {"enable_thinking": case["enable_thinking"]} if "enable_thinking" in case else {}
        texts.append(tokenizer.apply_chat_template(case["messages"], tools=case.get("tools"), tokenize=False,
                                                   add_generation_prompt=case["add_generation_prompt"], **extra))
    with open(args.out, "w") as f:
        json.dump(texts, f)


def hf_train(args):
    from torch.utils.data import SequentialSampler
    from transformers import Trainer, TrainerCallback, TrainingArguments

    with open(args.examples) as f:
        examples = [{"input_ids": row["input_ids"], "labels": row["input_ids"]} for row in json.load(f)]

    def collate(rows):
        width = max(len(row["input_ids"]) for row in rows)
        pad = lambda values, fill: values + [fill] * (width - len(values))  # noqa: E731
        return {"input_ids": torch.tensor([pad(r["input_ids"], 0) for r in rows]),
                "labels": torch.tensor([pad(r["labels"], -100) for r in rows]),
                "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows])}

    class InOrder(Trainer):
        def _get_train_sampler(self, *unused, **unused_kw):
            return SequentialSampler(self.train_dataset)

    logs = []

    class Collect(TrainerCallback):
        def on_log(self, unused_args, state, unused_control, logs_=None, **kwargs):
            row = kwargs.get("logs", logs_)
            if row and "loss" in row:
                logs.append({"step": state.global_step, **row})

    torch.manual_seed(args.seed)
    base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, local_files_only=True)
    model = PeftModel.from_pretrained(base, args.adapter, is_trainable=True)
    training = TrainingArguments(
        output_dir=args.out + ".trainer", max_steps=args.max_steps, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, warmup_steps=args.warmup_steps,
        lr_scheduler_type=args.lr_scheduler_type, max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay,
        adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2, adam_epsilon=1e-8, optim="adamw_torch",
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=args.seed, data_seed=args.seed,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True)
    trainer = InOrder(model=model, args=training, train_dataset=examples, data_collator=collate,
                      callbacks=[Collect()])
    trainer.train()
    shutil.rmtree(args.out + ".trainer", ignore_errors=True)
    with open(args.out, "w") as f:
        json.dump(logs, f)


def tb_scalars(args):
    import glob
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
    result = {"file_version": None, "scalars": {}, "files": 0}
    for path in sorted(glob.glob(os.path.join(args.dir, "events.out.tfevents.*"))):
        result["files"] += 1
        reader = pywrap_tensorflow.PyRecordReader_New(path.encode(), 0, b"", None)
        while True:
            try:
                reader.GetNext()
            except errors.OutOfRangeError:
                break
            event = event_pb2.Event.FromString(reader.record())
            if event.file_version:
                result["file_version"] = event.file_version
            for value in event.summary.value:
                result["scalars"].setdefault(value.tag, []).append([event.step, value.simple_value])
    with open(args.out, "w") as f:
        json.dump(result, f)


GGUF_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_reference_tensors(model_dir, architecture, heads, kv_heads):
    """The model folder's tensors under llama.cpp's names, as its converter lays them out."""
    import re
    from safetensors.torch import load_file
    tensors = {}
    for name in sorted(os.listdir(model_dir)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(model_dir, name)))
    out = {}
    for name, value in tensors.items():
        value = value.to(torch.float32)
        fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
        if name in fixed:
            out[fixed[name]] = value
            continue
        match = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
        gguf_name = f"blk.{match[1]}.{GGUF_LAYER_NAMES[match[2]]}.{match[3]}"
        if architecture == "llama" and match[2] in ("self_attn.q_proj", "self_attn.k_proj"):
            n = heads if match[2] == "self_attn.q_proj" else kv_heads
            value = value.reshape(n, 2, value.shape[0] // n // 2, *value.shape[1:]).swapaxes(1, 2).reshape(value.shape)
        out[gguf_name] = value
    return out


def gguf_read(args):
    import gguf
    import numpy as np
    reader = gguf.GGUFReader(args.gguf)
    fields = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        fields[name] = value.tolist() if isinstance(value, np.ndarray) else value
    tensors = [{"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in t.shape],
                "n_bytes": int(t.n_bytes)} for t in reader.tensors]
    result = {"fields": fields, "tensors": tensors}
    if args.model:
        arch = fields["general.architecture"]
        reference = gguf_reference_tensors(args.model, arch, fields[f"{arch}.attention.head_count"],
                                           fields[f"{arch}.attention.head_count_kv"])
        result["mismatched"], result["unmatched"] = [], []
        for t in reader.tensors:
            if t.name not in reference:
                result["unmatched"].append(t.name)
                continue
            expected = gguf.quants.quantize(reference[t.name].numpy(), t.tensor_type)
            if expected.tobytes() != np.asarray(t.data).tobytes():
                result["mismatched"].append(t.name)
    with open(args.out, "w") as f:
        json.dump(result, f)


def perturb_adapter(model, generator):
    """Moves every adapter tensor off its initial value, as training would."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or "ia3_" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)


def peft_create(args):
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed + 1)
    if args.task_type == "SEQ_CLS":
        model = AutoModelForSequenceClassification.from_pretrained(args.model, dtype=torch.float32, num_labels=1,
                                                                   local_files_only=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, local_files_only=True)
    if args.kind == "ia3":
        config = IA3Config(task_type=args.task_type, init_ia3_weights=False)
    else:
        config = LoraConfig(task_type=args.task_type, r=args.r, lora_alpha=args.alpha, lora_dropout=0.0,
                            target_modules="all-linear",
                            use_rslora=args.kind == "rslora", use_dora=args.kind == "dora",
                            init_lora_weights="pissa" if args.kind == "pissa" else False)
    model = get_peft_model(model, config)
    if args.kind == "pissa":
        # PEFT's own recipe: save the initial adapter, train (here: perturb), then save the difference
        # from it as a LoRA on the original weights.
        initial = args.out + "_initial"  # an adapter name: no dots
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(initial)
        model.peft_config["default"].init_lora_weights = "pissa"
        perturb_adapter(model, generator)
        model.save_pretrained(args.out + "_as_is")
        model.save_pretrained(args.out, path_initial_model_for_weight_conversion=initial)
        shutil.rmtree(initial)
    else:
        perturb_adapter(model, generator)
        model.save_pretrained(args.out)
    print(json.dumps({"out": args.out, "kind": args.kind, "peft": peft.__version__}))


def preference_losses(args):
    import types
    from accelerate import Accelerator
    from swift.rlhf_trainers.dpo_trainer import DPOTrainer
    from trl.experimental.bco.bco_trainer import RunningMoments
    from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.experimental.kto.kto_trainer import KTOTrainer
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    accelerator = Accelerator(cpu=True)

    def tensor(values):
        return torch.tensor(values, dtype=torch.float32)

    def listed(value):
        return value.reshape(-1).tolist() if torch.is_tensor(value) else [float(value)]

    def dpo(case):
        trainer = types.SimpleNamespace(
            accelerator=accelerator, reference_free=False, f_divergence_type="reverse_kl", f_divergence_params=None,
            beta=case["beta"], label_smoothing=case.get("label_smoothing", 0.0), running=RunningMoments(accelerator),
            args=types.SimpleNamespace(discopop_tau=case.get("discopop_tau", 0.05)))
        results = []
        for b in case["batches"]:
            losses, chosen, rejected = DPOTrainer.dpo_loss(
                trainer, tensor(b["policy_chosen"]), tensor(b["policy_rejected"]), tensor(b["reference_chosen"]),
                tensor(b["reference_rejected"]), loss_type=case["loss_type"],
                model_output={"nll_loss": torch.tensor(b.get("nll", 0.0))})
            results.append({"losses": listed(losses), "chosen_rewards": listed(chosen), "rejected_rewards": listed(rejected)})
        return results

    def cpo(case):
        trainer = types.SimpleNamespace(accelerator=accelerator, alpha=0.0, loss_type=case["loss_type"], beta=case["beta"],
                                        label_smoothing=case.get("label_smoothing", 0.0),
                                        simpo_gamma=case.get("simpo_gamma", 1.0))
        losses, chosen, rejected = CPOTrainer.cpo_loss(trainer, tensor(case["policy_chosen"]), tensor(case["policy_rejected"]))
        return [{"losses": listed(losses), "chosen_rewards": listed(chosen), "rejected_rewards": listed(rejected)}]

    def orpo(case):
        trainer = types.SimpleNamespace(accelerator=accelerator, beta=case["beta"])
        losses, chosen, rejected, ratio, log_odds = ORPOTrainer.odds_ratio_loss(
            trainer, tensor(case["policy_chosen"]), tensor(case["policy_rejected"]))
        return [{"losses": listed(losses), "chosen_rewards": listed(chosen), "rejected_rewards": listed(rejected),
                 "log_odds_ratio": float(ratio), "log_odds_chosen": float(log_odds)}]

    def kto(case):
        trainer = types.SimpleNamespace(accelerator=accelerator, calculate_KL=case["loss_type"] == "kto",
                                        loss_type=case["loss_type"], beta=case["beta"],
                                        desirable_weight=case.get("desirable_weight", 1.0),
                                        undesirable_weight=case.get("undesirable_weight", 1.0))
        losses, chosen, rejected, kl = KTOTrainer.kto_loss(
            trainer, tensor(case["policy_chosen"]), tensor(case["policy_rejected"]), tensor(case["policy_kl"]),
            tensor(case["reference_chosen"]), tensor(case["reference_rejected"]), tensor(case["reference_kl"]))
        return [{"losses": listed(losses), "chosen_rewards": listed(chosen), "rejected_rewards": listed(rejected),
                 "kl": listed(kl)[0]}]

    kinds = {"dpo": dpo, "cpo": cpo, "orpo": orpo, "kto": kto}
    with open(args.cases) as f:
        cases = json.load(f)
    with torch.no_grad():
        results = [kinds[case["kind"]](case) for case in cases]
    with open(args.out, "w") as f:
        json.dump(results, f)


def grpo(args):
    import collections
    import dataclasses
    import importlib.util
    import math
    import re
    import types
    from accelerate import Accelerator
    # swift.rlhf_trainers.utils imports msgspec.field, which ms-swift does not declare as a dependency and
    # calls only when vLLM is installed; a stand-in lets the trainer module load without it.
    if importlib.util.find_spec("msgspec") is None:
        sys.modules["msgspec"] = types.SimpleNamespace(field=dataclasses.field)
    from swift.rewards.orm import orms
    from swift.rl_core.advantage import compute_advantages, compute_reward_metrics, expand_advantage_to_per_token
    from swift.rl_core.data import GRPOBatch
    from swift.rlhf_trainers.grpo_trainer import GRPOTrainer

    accelerator = Accelerator(cpu=True)

    def nan_tensor(rows):
        return torch.tensor([[math.nan if v is None else v for v in row] for row in rows], dtype=torch.float32)

    def advantages(case):
        rewards_per_func = nan_tensor(case["rewards_per_func"])
        result, rewards = compute_advantages(
            rewards_per_func, torch.tensor(case["reward_weights"], dtype=torch.float32), case["num_generations"],
            advantage_estimator=case["advantage_estimator"], scale_rewards=case["scale_rewards"])
        metrics = compute_reward_metrics(rewards, rewards_per_func, case["names"], case["num_generations"],
                                         case["scale_rewards"])
        return {"advantages": result.tolist(), "rewards": rewards.tolist(), "reward": metrics.reward_mean,
                "reward_std": metrics.reward_std, "frac_reward_zero_std": metrics.frac_reward_zero_std,
                "per_func_mean": metrics.per_func_mean, "per_func_std": metrics.per_func_std}

    def padded(rows, width):
        return torch.tensor([row + [0.0] * (width - len(row)) for row in rows], dtype=torch.float32)

    def loss(case):
        lengths = [len(row) for row in case["logps"]]
        width = max(lengths)
        logps = padded(case["logps"], width).requires_grad_(True)
        completion_mask = torch.tensor([[t < n for t in range(width)] for n in lengths])
        accumulation = case["gradient_accumulation_steps"]
        grpo_batch = GRPOBatch(
            completion_mask=completion_mask, truncated_mask=torch.tensor(case["truncated"]),
            seq_lengths=torch.tensor(lengths),
            old_per_token_logps=padded(case["old_logps"], width) if case.get("old_logps") else None,
            ref_per_token_logps=padded(case["ref_logps"], width) if case.get("ref_logps") else None,
            advantages=expand_advantage_to_per_token(torch.tensor(case["advantages"]), completion_mask),
            num_items_in_batch=torch.tensor(float(case["window_tokens"])))
        trainer = types.SimpleNamespace(
            model=types.SimpleNamespace(training=True), accelerator=accelerator, compute_entropy=False,
            overlong_filter=case["overlong_filter"], beta=case["beta"], kl_in_reward=False,
            rollout_importance_sampling_mode=None, log_rollout_offpolicy_metrics=False,
            disable_rollout_importance_sampling=False, importance_sampling_level=case["importance_sampling_level"],
            _has_teacher=False, loss_type=case["loss_type"], epsilon_low=case["epsilon"],
            epsilon_high=case["epsilon_high"], off_policy_sequence_mask_delta=None,
            max_completion_length=case["max_completion_length"], model_accepts_loss_kwargs=False,
            compute_loss_func=None, current_gradient_accumulation_steps=accumulation, sdar_loss_coef=0.0,
            chord_sft_iterator=None, _metrics=collections.defaultdict(lambda: collections.defaultdict(list)),
            args=types.SimpleNamespace(delta=case.get("delta"), gradient_accumulation_steps=accumulation))
        # The policy's forward pass is the one thing replaced: it returns the case's log-probabilities.
        trainer._get_per_token_logps_and_entropies = lambda *_, **__: (logps, None)
        trainer._undo_gradient_accumulation_scaling = types.MethodType(
            GRPOTrainer._undo_gradient_accumulation_scaling, trainer)
        value, metrics = GRPOTrainer._compute_loss_and_metrics(trainer, None, {}, grpo_batch)
        # transformers' Trainer.training_step: the loss is divided by the accumulation steps before backward.
        value = value / accumulation
        if value.requires_grad:
            value.backward()
        grad = logps.grad if logps.grad is not None else torch.zeros_like(logps)
        result = {"loss": value.item(), "grad": [g for row, n in zip(grad.tolist(), lengths) for g in row[:n]],
                  "clipping": metrics["clipping"]}
        if "kl" in metrics:
            result["kl"] = metrics["kl"]
        return result

    def k3(case):
        # One token per call, so that the kl metric (a masked mean) is that token's k3 value.
        values = []
        for reference, policy in zip(case["ref_logps"], case["logps"]):
            values.append(loss({"logps": [[policy]], "ref_logps": [[reference]], "truncated": [False],
                                "advantages": [0.0], "window_tokens": 1, "gradient_accumulation_steps": 1,
                                "overlong_filter": False, "beta": 1.0, "importance_sampling_level": "token",
                                "loss_type": "bnpo", "epsilon": 0.2, "epsilon_high": 0.2,
                                "max_completion_length": 1})["kl"])
        return {"kl": values}

    class LiteralAccuracy:
        """CosineReward's accuracy stand-in while math_verify is not installed: the <answer> content (else
        the text) equal to the solution's, both stripped."""

        def __call__(self, completions, solution, **kwargs):
            def answer(text):
                found = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
                return (found.group(1) if found else text).strip()
            return [1.0 if answer(c) == answer(s) else 0.0 for c, s in zip(completions, solution)]

    def orm(case):
        settings = types.SimpleNamespace(**case.get("args", {}))
        name = case["name"]
        if name == "accuracy" and importlib.util.find_spec("math_verify") is None:
            return {"skipped": "MathAccuracy needs math_verify, which the oracle venv does not have"}
        function = orms[name](settings, accuracy_orm=LiteralAccuracy()) if name == "cosine" else orms[name](settings)
        completions = case["completions"]
        kwargs = {"solution": case.get("solution", [""] * len(completions)),
                  "response_token_ids": [[0] * n for n in case.get("token_lengths", [0] * len(completions))]}
        rewards = function(completions, **kwargs)
        # As ms-swift keeps them: float32 (rl_core/grpo_algorithm.py).
        return {"rewards": torch.tensor(rewards, dtype=torch.float32).tolist()}

    kinds = {"advantages": advantages, "loss": loss, "k3": k3, "orm": orm}
    with open(args.cases) as f:
        cases = json.load(f)
    results = [kinds[case["kind"]](case) for case in cases]
    with open(args.out, "w") as f:
        json.dump(results, f)


def batch(args):
    with open(args.jobs) as f:
        jobs = json.load(f)
    parser = make_parser()
    for job in jobs:
        if job and job[0] == "batch":
            sys.exit("hf_oracle: a batch cannot contain another batch")
        job_args = parser.parse_args(job)
        job_args.func(job_args)


def make_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("create", help="make a tiny random model")
    c.add_argument("--arch", choices=sorted(ARCHS), required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--tied", action="store_true", help="tie the output head to the embeddings")
    c.add_argument("--gqa", action="store_true", help="2 key/value heads for the 4 query heads")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--rope_scaling", help="JSON object, e.g. '{\"rope_type\":\"linear\",\"factor\":2.0}'")
    c.add_argument("--rope_theta", type=float, help="default: the config class's (10000)")
    c.add_argument("--tokenizer", help="copy this directory's tokenizer files in; vocab = its size")
    c.add_argument("--vocab", type=int, help="vocabulary size (default: the tokenizer's, else 512)")
    c.add_argument("--hidden", type=int, default=64)
    c.add_argument("--intermediate", type=int, default=128)
    c.add_argument("--layers", type=int, default=2)
    c.add_argument("--heads", type=int, default=4)
    c.add_argument("--kv_heads", type=int, help="overrides --gqa")
    c.add_argument("--head_dim", type=int, help="default: hidden / heads (Qwen3's own default is 128)")
    c.add_argument("--max_positions", type=int, default=2048)
    c.add_argument("--rms_norm_eps", type=float)
    c.add_argument("--sliding_window", type=int, help="Mistral: every layer; Qwen: layers from --max_window_layers on")
    c.add_argument("--max_window_layers", type=int, default=0)
    c.add_argument("--initializer_range", type=float, default=0.02,
                   help="standard deviation of the random weights (transformers' default 0.02)")
    c.add_argument("--no_perturb", action="store_true",
                   help="keep transformers' zero biases and unit norm weights")
    c.add_argument("--num_labels", type=int, help="a sequence classifier with this many labels (needs --tokenizer)")
    c.set_defaults(func=create)

    g = sub.add_parser("logits", help="full-sequence and KV-cached per-step logits as JSON")
    g.add_argument("--model", required=True)
    g.add_argument("--ids", required=True, help="comma-separated token ids")
    g.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    g.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    g.add_argument("--out", required=True, help="JSON file, or - for stdout")
    g.add_argument("--adapter", help="a PEFT adapter folder, loaded with PeftModel.from_pretrained")
    g.add_argument("--merge", action="store_true", help="with --adapter: logits of merge_and_unload()")
    g.set_defaults(func=logits)

    r = sub.add_parser("rewards", help="a sequence classifier's scores of sequences, in one right-padded batch")
    r.add_argument("--model", required=True)
    r.add_argument("--sequences", required=True, help="a JSON list of token id lists")
    r.add_argument("--adapter", help="a PEFT adapter folder, loaded with PeftModel.from_pretrained")
    r.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    r.add_argument("--num_labels", type=int, help="for a causal LM's folder (transformers' default is 2)")
    r.add_argument("--out", required=True)
    r.set_defaults(func=rewards)

    p = sub.add_parser("peft_create", help="an adapter made and saved by PEFT, with non-zero tensors")
    p.add_argument("--model", required=True)
    p.add_argument("--kind", choices=["lora", "rslora", "dora", "ia3", "pissa"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--r", type=int, default=4)
    p.add_argument("--alpha", type=float, default=8.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task_type", choices=["CAUSAL_LM", "SEQ_CLS"], help="PEFT's task_type (default: none)")
    p.set_defaults(func=peft_create)

    t = sub.add_parser("tokenize", help="Python tokenizers' ids and decodes for a list of texts")
    t.add_argument("--tokenizer", required=True, help="a tokenizer.json")
    t.add_argument("--texts", required=True, help="a JSON list of strings")
    t.add_argument("--out", required=True)
    t.set_defaults(func=tokenize)

    ct = sub.add_parser("chat_template", help="transformers' apply_chat_template for a list of conversations")
    ct.add_argument("--tokenizer", required=True, help="a folder with tokenizer_config.json")
    ct.add_argument("--cases", required=True)
    ct.add_argument("--out", required=True)
    ct.set_defaults(func=chat_template)

    h = sub.add_parser("hf_train", help="Trainer + PEFT on pre-tokenized examples; the per-step logs")
    h.add_argument("--model", required=True)
    h.add_argument("--adapter", required=True)
    h.add_argument("--examples", required=True)
    h.add_argument("--out", required=True)
    h.add_argument("--max_steps", type=int, default=10)
    h.add_argument("--learning_rate", type=float, default=1e-3)
    h.add_argument("--per_device_train_batch_size", type=int, default=4)
    h.add_argument("--gradient_accumulation_steps", type=int, default=1)
    h.add_argument("--warmup_steps", type=int, default=0)
    h.add_argument("--lr_scheduler_type", default="cosine")
    h.add_argument("--max_grad_norm", type=float, default=1.0)
    h.add_argument("--weight_decay", type=float, default=0.0)
    h.add_argument("--adam_beta1", type=float, default=0.9)
    h.add_argument("--adam_beta2", type=float, default=0.999)
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(func=hf_train)

    tb = sub.add_parser("tb_scalars", help="the scalars of TensorBoard event files, read by tensorboard")
    tb.add_argument("--dir", required=True)
    tb.add_argument("--out", required=True)
    tb.set_defaults(func=tb_scalars)

    gr = sub.add_parser("gguf_read", help="a GGUF file as the gguf package reads it; its tensors checked")
    gr.add_argument("--gguf", required=True)
    gr.add_argument("--model", help="the Hugging Face folder it was written from")
    gr.add_argument("--out", required=True)
    gr.set_defaults(func=gguf_read)

    pl = sub.add_parser("preference_losses", help="ms-swift's and TRL's alignment losses on given log-probabilities")
    pl.add_argument("--cases", required=True)
    pl.add_argument("--out", required=True)
    pl.set_defaults(func=preference_losses)

    gp = sub.add_parser("grpo", help="ms-swift's GRPO advantages, reward metrics, loss and reward functions")
    gp.add_argument("--cases", required=True)
    gp.add_argument("--out", required=True)
    gp.set_defaults(func=grpo)

    b = sub.add_parser("batch", help="run a JSON list of commands in this process")
    b.add_argument("jobs")
    b.set_defaults(func=batch)
    return parser


def main():
    args = make_parser().parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
