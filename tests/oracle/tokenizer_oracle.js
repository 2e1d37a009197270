#!/usr/bin/env node
// Reference ids and texts from Hugging Face's own tokenizers (Rust, via its Node bindings) for the
// tokenizer test: one JSON object per corpus line, in order.
//   node tokenizer_oracle.js TOKENIZER.json CORPUS.jsonl OUT.jsonl
// Each object: with/without = ids with and without the post-processor's special tokens,
// decoded = decode(without, skip_special_tokens=false), decoded_skip = decode(with, true).
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, 'node_modules', 'tokenizers'));

async function main() {
  const [tokenizerPath, corpusPath, outPath] = process.argv.slice(2);
  if (!outPath) throw new Error('usage: tokenizer_oracle.js TOKENIZER.json CORPUS.jsonl OUT.jsonl');
  const tokenizer = Tokenizer.fromFile(tokenizerPath);
  const texts = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((line) => line.length > 0).map((line) => JSON.parse(line));
  const rows = [];
  for (const text of texts) {
    const withSpecial = (await tokenizer.encode(text, null, { addSpecialTokens: true })).getIds();
    const without = (await tokenizer.encode(text, null, { addSpecialTokens: false })).getIds();
    rows.push(JSON.stringify({
      with: withSpecial,
      without,
      decoded: await tokenizer.decode(without, false),
      decoded_skip: await tokenizer.decode(withSpecial, true),
    }));
  }
  fs.writeFileSync(outPath, rows.join('\n') + '\n');
}

main().catch((error) => {
  console.error(`tokenizer_oracle.js: ${error.stack || error}`);
  process.exit(1);
});
