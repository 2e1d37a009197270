#!/usr/bin/env node
// Runs a GGUF file in llama.cpp (node-llama-cpp's prebuilt CPU build) and writes what it computes:
//   node llama_oracle.mjs JOBS.json OUT.json
// JOBS.json: {"model": "x.gguf", "threads": 2, "jobs": [
//   {"kind": "tokenize", "texts": ["..."]},              -> {"ids": [[...], ...]}  (added tokens matched, as in Hugging Face)
//   {"kind": "greedy", "prompt": [ids], "tokens": n},    -> {"ids": [...]}  (temperature 0, no penalties)
//   {"kind": "logprobs", "ids": [ids], "from": k},       -> {"logprobs": [...], "argmax": [...]}
//   {"kind": "time", "prompt": [ids], "tokens": n}]}     -> {"prefill_s", "decode_s", "generated"}
// "time" (for the benchmarks) measures the prompt's evaluation and then n greedy tokens.
// "logprobs" feeds ids and gives, for every position p >= k, log P(ids[p] | ids[<p]) and the most
// likely token there. The KV cache is float32 so that it adds no rounding of its own.
import fs from 'node:fs';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const [jobsFile, outFile] = process.argv.slice(2);
if (!jobsFile || !outFile) {
  console.error('usage: llama_oracle.mjs JOBS.json OUT.json');
  process.exit(2);
}
const spec = JSON.parse(fs.readFileSync(jobsFile, 'utf8'));

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: spec.model, gpuLayers: 0 });
const context = await model.createContext({
  contextSize: spec.context ?? 512,
  threads: spec.threads ?? 2,
  experimentalKvCacheKeyType: 'F32',
  experimentalKvCacheValueType: 'F32',
});
const sequence = context.getSequence();

async function greedy(prompt, count) {
  await sequence.clearHistory();
  const ids = [];
  for await (const token of sequence.evaluate(prompt, { temperature: 0, repeatPenalty: false })) {
    ids.push(token);
    if (ids.length >= count) break;
  }
  return { ids };
}

async function logprobs(ids, from) {
  await sequence.clearHistory();
  const items = ids.slice(0, -1).map((token, index) =>
    index + 1 >= from ? [token, { generateNext: { probabilities: true } }] : token);
  const results = await sequence.controlledEvaluate(items);
  const out = { logprobs: [], argmax: [] };
  for (let position = Math.max(from, 1); position < ids.length; ++position) {
    const probabilities = results[position - 1].next.probabilities;
    out.logprobs.push(Math.log(probabilities.get(ids[position]) ?? 0));
    out.argmax.push(probabilities.entries().next().value[0]);
  }
  return out;
}

async function time(prompt, count) {
  await sequence.clearHistory();
  const start = performance.now();
  await sequence.controlledEvaluate(prompt.slice(0, -1));
  const prefilled = performance.now();
  let generated = 0;
  for await (const token of sequence.evaluate(prompt.slice(-1), { temperature: 0, repeatPenalty: false })) {
    void token;
    if (++generated >= count) break;
  }
  const done = performance.now();
  return { prefill_s: (prefilled - start) / 1000, decode_s: (done - prefilled) / 1000, generated };
}

const results = [];
for (const job of spec.jobs) {
  if (job.kind === 'tokenize') results.push({ ids: job.texts.map((text) => Array.from(model.tokenize(text, true))) });
  else if (job.kind === 'greedy') results.push(await greedy(job.prompt, job.tokens));
  else if (job.kind === 'logprobs') results.push(await logprobs(job.ids, job.from));
  else if (job.kind === 'time') results.push(await time(job.prompt, job.tokens));
  else throw new Error(`unknown job kind ${job.kind}`);
}
fs.writeFileSync(outFile, JSON.stringify({
  results,
  tokens: model.tokens.bos === null ? {} : { bos: model.tokens.bos, eos: model.tokens.eos },
}));
await context.dispose();
await model.dispose();
