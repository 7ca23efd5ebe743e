// Reference token ids for seqpar's byte-level BPE (src/data/bpe_tokenizer.cpp), from the
// JavaScript tokenizers of @lenml/tokenizers (a dependency-free fork of transformers.js's
// tokenizers, Apache-2.0). Writes a JSON fixture: for each case its bytes (hex) and ids.
//
//   node tools/make_bpe_fixture.mjs LIB/dist/main.mjs TOKENIZER.json OUT.json
//
// LIB is the unpacked package (npm pack @lenml/tokenizers@3.7.2 && tar xzf ...). Every case
// is encoded without BOS/EOS added (add_special_tokens false); special tokens written in the
// text are matched, as the tokenizers library does. Bytes that are not UTF-8 cannot be in a
// JavaScript string, so the rule seqpar implements is applied here: the input is cut into
// maximal runs of well-formed UTF-8, each encoded by the reference as a whole text, and
// maximal runs of other bytes, each one piece given to the reference's BPE model. For a
// tokenizer whose normalizer is NFC, a case whose text is not in NFC is marked "refused":
// seqpar refuses it (normalising would lose the bytes) instead of encoding it.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [lib, tokPath, outPath] = process.argv.slice(2);
if (!outPath) {
  console.error("usage: node make_bpe_fixture.mjs LIB/dist/main.mjs TOKENIZER.json OUT.json");
  process.exit(2);
}
const { TokenizerLoader } = await import(pathToFileURL(lib).href);
const tokenizerJSON = JSON.parse(readFileSync(tokPath, "utf8"));
const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig: {} });

const utf8 = (s) => Buffer.from(s, "utf8");
const bytes = (...xs) => Buffer.from(xs);
const cat = (...bs) => Buffer.concat(bs.map((b) => (typeof b === "string" ? utf8(b) : b)));
const cases = [
  ["ascii", "Hello, world! The quick brown fox jumps over the lazy dog."],
  ["empty", ""],
  ["digits", "1 12 123 1234 12345 123456789 3.14159 2026-12-07 0x1F 1,000,000"],
  ["whitespace_runs", "a  b   c    d\t\te \t \tf        g   "],
  ["leading_spaces", "   indented\n\tand tabbed"],
  ["newlines", "line one\nline two\r\nline three\n\n\nafter blank lines\n \n  \n"],
  ["contractions", "I'm sure you'll see it's what they've done, we'd say; DON'T, I'LL, He'S"],
  ["punctuation", "!!! ... ??? -- (a) [b] {c} <d> \"e\" 'f' `g` @#$%^&*_+=|\\/~"],
  ["code", "def f(x):\n    return x**2  # square\n\nif __name__ == \"__main__\":\n\tf(3)\n"],
  ["accented", "Café naïve résumé Ångström façade Zürich São Paulo Dvořák Łódź"],
  ["cjk", "中文分词测试。日本語のテキスト、カタカナ。한국어 텍스트입니다."],
  ["emoji", "Emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ ✨ and text"],
  ["mixed_scripts", "Привет мир! Γειά σου κόσμε! مرحبا بالعالم שלום עולם नमस्ते दुनिया"],
  ["unicode_spaces", "a\u00a0b\u2003c\u3000d\u2028e\u0085f"],
  ["special_tokens", "first doc<|endoftext|>second doc <|im_start|>user\nhi<|im_end|>\n<|end_of_text|>"],
  ["special_adjacent", "<|endoftext|><|endoftext|>x<|endoftext|>"],
  ["almost_special", "<|endoftext| <|endoftext <endoftext|> <|ENDOFTEXT|>"],
  ["long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"],
  ["repeats", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbb ============"],
  ["kjv", "In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void."],
  ["invalid_lone", cat("abc", bytes(0xff), "def")],
  ["invalid_truncated", cat("end of ", bytes(0xe4, 0xb8), " char ", bytes(0xe4))],
  ["invalid_mixed", cat(bytes(0xc3, 0x28), " x ", bytes(0x80, 0x80, 0xfe, 0xff), "中", bytes(0xed, 0xa0, 0x80), " y")],
  ["invalid_overlong", cat(bytes(0xc0, 0xaf, 0xe0, 0x80, 0xaf), "/", bytes(0xf5, 0x80, 0x80, 0x80), "z")],
  ["all_bytes", Buffer.from([...Array(256).keys()])],
  ["not_nfc", "cafe\u0301 \u212b ko\u0308nnen \u1100\u1161"],
  ["control_chars", cat(bytes(0, 1, 2, 7, 8, 11, 12, 27, 127), "x", bytes(0))],
];

// Well-formed UTF-8 character length at b[i], 0 if none (Unicode table 3-7).
function charLen(b, i) {
  const c = b[i], left = b.length - i;
  const cont = (k) => k < left && (b[i + k] & 0xc0) === 0x80;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (left < 2) return 0;
    const lo = c === 0xe0 ? 0xa0 : 0x80, hi = c === 0xed ? 0x9f : 0xbf;
    return b[i + 1] >= lo && b[i + 1] <= hi && cont(2) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (left < 2) return 0;
    const lo = c === 0xf0 ? 0x90 : 0x80, hi = c === 0xf4 ? 0x8f : 0xbf;
    return b[i + 1] >= lo && b[i + 1] <= hi && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

// GPT-2's bytes_to_unicode.
const byteChar = [];
for (let b = 0, next = 256; b < 256; ++b) {
  const self = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
  byteChar.push(String.fromCodePoint(self ? b : next++));
}

const nfc = tokenizerJSON.normalizer?.type === "NFC";
function refused(buf) {
  for (let i = 0; i < buf.length; ) {
    const begin = i, good = charLen(buf, i) > 0;
    while (i < buf.length && charLen(buf, i) > 0 === good) i += good ? charLen(buf, i) : 1;
    const t = buf.subarray(begin, i).toString("utf8");
    if (good && nfc && t.normalize("NFC") !== t) return true;
  }
  return false;
}

function encode(buf) {
  const ids = [];
  for (let i = 0; i < buf.length; ) {
    const begin = i, good = charLen(buf, i) > 0;
    while (i < buf.length && charLen(buf, i) > 0 === good) i += good ? charLen(buf, i) : 1;
    const run = buf.subarray(begin, i);
    if (good) {
      ids.push(...tok.model.convert_tokens_to_ids(tok._encode_text(run.toString("utf8"))));
    } else {
      const piece = Array.from(run, (x) => byteChar[x]).join("");
      ids.push(...tok.model.convert_tokens_to_ids(tok.model([piece])));
    }
  }
  return ids;
}

const out = { tokenizer: tokPath, reference: "@lenml/tokenizers", cases: [] };
for (const [name, text] of cases) {
  const buf = typeof text === "string" ? utf8(text) : text;
  if (refused(buf)) out.cases.push({ name, hex: buf.toString("hex"), refused: true });
  else out.cases.push({ name, hex: buf.toString("hex"), ids: encode(buf) });
}
writeFileSync(outPath, JSON.stringify(out, null, 1) + "\n");
console.log(`${outPath}: ${out.cases.length} cases`);
