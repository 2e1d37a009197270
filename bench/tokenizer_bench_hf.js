#!/usr/bin/env node
// Hugging Face tokenizers (npm, Rust core) encode throughput on the same corpus as
// tokenizer_bench.cpp, in MB/s of UTF-8 input. Texts go in batches of 512 through encodeBatch,
// because each call from node costs a hop to a worker thread (about 0.3 ms) that would otherwise
// dominate; RAYON_NUM_THREADS=1 keeps the batch on one thread.
//   RAYON_NUM_THREADS=1 node bench/tokenizer_bench_hf.js TOKENIZER.json CORPUS.jsonl [REPEATS]
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, '..', 'tests', 'oracle', 'node_modules', 'tokenizers'));

async function main() {
  const [tokenizerPath, corpusPath, repeatsText] = process.argv.slice(2);
  if (!corpusPath) throw new Error('usage: tokenizer_bench_hf.js TOKENIZER.json CORPUS.jsonl [REPEATS]');
  const tokenizer = Tokenizer.fromFile(tokenizerPath);
  const texts = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l));
  const bytes = texts.reduce((sum, text) => sum + Buffer.byteLength(text, 'utf8'), 0);
  const repeats = Number(repeatsText || 3);
  const options = { addSpecialTokens: false };
  const batches = [];
  for (let i = 0; i < texts.length; i += 512) batches.push(texts.slice(i, i + 512));
  for (const batch of batches) await tokenizer.encodeBatch(batch, options);  // warm-up: fills the word cache
  let best = Infinity;
  for (let r = 0; r < repeats; ++r) {
    const start = process.hrtime.bigint();
    for (const batch of batches) await tokenizer.encodeBatch(batch, options);
    best = Math.min(best, Number(process.hrtime.bigint() - start) / 1e9);
  }
  console.log(`HF tokenizers encode, 1 thread: ${(bytes / best / 1e6).toFixed(2)} MB/s ` +
    `(${texts.length} texts, ${(bytes / 1e6).toFixed(2)} MB, best of ${repeats} passes: ${best.toFixed(3)} s)`);
}

main().catch((error) => {
  console.error(`tokenizer_bench_hf.js: ${error.stack || error}`);
  process.exit(1);
});
