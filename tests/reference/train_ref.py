#!/usr/bin/python3
"""Reference loss curve for Lathe's trainer: fine-tuning of the model in MODEL_DIR with PyTorch's
AdamW, gradient clipping and a constant learning rate, one optimizer step per epoch over every
example, in float32. Full fine-tuning trains every weight; with "lora_file" in the settings only
LoRA's A and B train (y = x W^T + b + scaling * (x A^T) B^T on every linear layer named in the
file, the base frozen, no dropout), as PEFT computes it. The model is model_ref.py's (written from the published
equations, sharing no code with Lathe); each sequence runs alone with plain causal attention, its
loss is the summed cross entropy of its trained next tokens, and a step's loss is the sum over all
examples divided by the number of trained tokens (Hugging Face's num_items_in_batch rule). No
weight decay on biases, norm weights or other one-dimensional parameters.

usage: train_ref.py MODEL_DIR EXAMPLES_JSON SETTINGS_JSON OUT_JSON
  EXAMPLES_JSON: [{"input_ids": [int], "labels": [int]}]    (-100: not trained)
  SETTINGS_JSON: {"steps", "lr", "weight_decay", "beta1", "beta2", "eps", "max_grad_norm",
                  "lora_file" (optional: safetensors of "<linear>.lora_A" [r, in] and "<linear>.lora_B"
                  [out, r]), "lora_scaling"}
  OUT_JSON: {"losses": [...], "grad_norms": [...]}           each step's, before its update
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_ref import Reference, read_safetensors  # noqa: E402


class LoraReference(Reference):
    def __init__(self, model_dir, dtype, adapters, scaling):
        super().__init__(model_dir, dtype)
        self.adapters, self.scaling = adapters, scaling

    def linear(self, x, name, bias):
        y = super().linear(x, name, bias)
        if name + ".lora_A" in self.adapters:
            y = y + self.scaling * (x @ self.adapters[name + ".lora_A"].T) @ self.adapters[name + ".lora_B"].T
        return y


def decays(name, tensor):
    return tensor.dim() >= 2 and "norm" not in name and not name.endswith(".bias")


def main():
    model_dir, examples_path, settings_path, out_path = sys.argv[1:5]
    with open(examples_path) as f:
        examples = json.load(f)
    with open(settings_path) as f:
        settings = json.load(f)
    torch.set_num_threads(1)
    if "lora_file" in settings:
        adapters = read_safetensors(settings["lora_file"])
        model = LoraReference(model_dir, torch.float32, adapters, settings["lora_scaling"])
        trainable = adapters
    else:
        model = Reference(model_dir, torch.float32)
        trainable = model.w  # a tied head is the embedding tensor itself
    for tensor in trainable.values():
        tensor.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [{"params": [t for name, t in trainable.items() if decays(name, t)], "weight_decay": settings["weight_decay"]},
         {"params": [t for name, t in trainable.items() if not decays(name, t)], "weight_decay": 0.0}],
        lr=settings["lr"], betas=(settings["beta1"], settings["beta2"]), eps=settings["eps"])
    trained = sum(sum(1 for label in e["labels"][1:] if label != -100) for e in examples)
    losses, grad_norms = [], []
    for _ in range(settings["steps"]):
        total = 0
        for example in examples:
            logits = model.logits(example["input_ids"])
            labels = torch.tensor(example["labels"][1:], dtype=torch.long)
            total = total + torch.nn.functional.cross_entropy(logits[:-1], labels, ignore_index=-100, reduction="sum")
        loss = total / trained
        loss.backward()
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(list(trainable.values()), settings["max_grad_norm"])))
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    with open(out_path, "w") as f:
        json.dump({"losses": losses, "grad_norms": grad_norms}, f)


if __name__ == "__main__":
    main()
