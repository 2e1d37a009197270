#!/usr/bin/env node
// Renders conversations with a tokenizer_config.json's own Jinja chat_template, using Hugging
// Face's Jinja implementation (@huggingface/jinja): the reference for Lathe's chat templates.
//
// Usage: node render_chat_template.js TOKENIZER_CONFIG.json < cases.json > rendered.json
// cases.json: [{"name", "messages": [{"role", "content"}], "add_generation_prompt",
//               "enable_thinking" (optional), "tools" (optional)}]
// rendered.json: [{"name", "text"}] in the same order.
'use strict';
const fs = require('fs');
const { Template } = require('@huggingface/jinja');

function tokenText(token) {
  // tokenizer_config.json writes special tokens as a string or as {"content": ...}.
  if (token === null || token === undefined) return '';
  return typeof token === 'string' ? token : token.content;
}

function main() {
  const [configPath] = process.argv.slice(2);
  if (!configPath) {
    process.stderr.write('usage: render_chat_template.js TOKENIZER_CONFIG.json < cases.json\n');
    process.exit(2);
  }
  const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  if (typeof config.chat_template !== 'string') {
    process.stderr.write(`${configPath}: no chat_template string\n`);
    process.exit(2);
  }
  const template = new Template(config.chat_template);
  const cases = JSON.parse(fs.readFileSync(0, 'utf8'));
  const rendered = cases.map((c) => {
    const variables = {
      messages: c.messages,
      add_generation_prompt: c.add_generation_prompt,
      bos_token: tokenText(config.bos_token),
      eos_token: tokenText(config.eos_token),
    };
    // Left undefined unless the case sets it: Qwen3's template tests `enable_thinking is defined`.
    if (c.enable_thinking !== undefined) variables.enable_thinking = c.enable_thinking;
    if (c.tools !== undefined) variables.tools = c.tools;
    return { name: c.name, text: template.render(variables) };
  });
  process.stdout.write(JSON.stringify(rendered));
}

main();
