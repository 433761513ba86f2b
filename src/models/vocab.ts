// Byte-level BPE vocabularies (llama.cpp tokenizer model "gpt2", Qwen2 pre-tokenizer)
// for the built-in models. Byte-level BPE covers every UTF-8 string, so any text
// round-trips exactly through tokenize and detokenize.
import {MARKERS} from "../format/markers.js";

// llama.cpp token types (tokenizer.ggml.token_type).
export const TokenType = {normal: 1, control: 3, userDefined: 4, unused: 5} as const;

export type Vocab = {
    tokens: string[],
    types: number[],
    merges: string[],
    bos: number,
    eos: number,
    pad: number
};

/** GPT-2's reversible map from bytes to printable characters, indexed by byte value. */
export function byteSymbols(): string[] {
    const direct: number[] = [];
    for (let b = 0x21; b <= 0x7e; b++) direct.push(b);
    for (let b = 0xa1; b <= 0xac; b++) direct.push(b);
    for (let b = 0xae; b <= 0xff; b++) direct.push(b);
    const symbols: string[] = new Array(256);
    let next = 256;
    for (let b = 0; b < 256; b++) symbols[b] = String.fromCodePoint(direct.includes(b) ? b : next++);
    return symbols;
}

// ChatML role tokens are control tokens (parsed only when asked, hidden unless asked);
// the STILL markers are user-defined, so they are single tokens in any text and always
// rendered, as the thought format needs.
const specials: [string, number][] = [
    ["<|endoftext|>", TokenType.control],
    ["<|im_start|>", TokenType.control],
    ["<|im_end|>", TokenType.control],
    ...Object.values(MARKERS).map((m): [string, number] => [m, TokenType.userDefined])
];

function finish(tokens: string[], types: number[], merges: string[], size: number): Vocab {
    const base = tokens.length;
    for (const [text, type] of specials) {
        tokens.push(text);
        types.push(type);
    }
    for (let id = tokens.length; id < size; id++) {
        tokens.push(`[PAD${id}]`);
        types.push(TokenType.unused);
    }
    // <|im_end|> ends a chat turn: it is the end-of-sequence token, as in Qwen2.5-Instruct.
    return {tokens, types, merges, bos: base, eos: base + 2, pad: base};
}

/** 256 single-byte tokens plus the special tokens: a character-level vocabulary. */
export function charVocab(): Vocab {
    const tokens = byteSymbols();
    return finish(tokens, tokens.map(() => TokenType.normal), [], 0);
}

/**
 * A vocabulary of `size` tokens shaped like Qwen2.5's (151,643 regular tokens, then
 * specials, then padding up to the embedding size). Real merges cannot be shipped, so
 * the regular tokens are all byte pairs, then byte triples over printable ASCII, each
 * ranked with common characters first.
 */
export function qwenLikeVocab(size = 151_936, regular = 151_643): Vocab {
    const symbols = byteSymbols();
    // Rough English character frequency first, then the remaining bytes.
    const order = [..."etaoinsrhldcumfpgwybvkxjqz"].map((c) => c.charCodeAt(0));
    order.splice(1, 0, 0x20);
    for (const c of "ETAOINSRHLDCUMFPGWYBVKXJQZ0123456789.,;:'\"!?()-_/\\\n=+*<>[]{}$%&#@^`|~\t") {
        const b = c.charCodeAt(0);
        if (!order.includes(b)) order.push(b);
    }
    for (let b = 0; b < 256; b++) if (!order.includes(b)) order.push(b);
    const rank = new Map(order.map((b, i) => [b, i]));

    const tokens = [...symbols];
    const merges: string[] = [];
    const byRank = (a: number, b: number) => (rank.get(a) ?? 0) + (rank.get(b) ?? 0);

    const pairs: [number, number][] = [];
    for (let a = 0; a < 256; a++) for (let b = 0; b < 256; b++) pairs.push([a, b]);
    pairs.sort((x, y) => byRank(x[0], x[1]) - byRank(y[0], y[1]) || x[0] - y[0] || x[1] - y[1]);
    for (const [a, b] of pairs) {
        if (tokens.length >= regular) break;
        tokens.push(symbols[a]! + symbols[b]!);
        merges.push(`${symbols[a]} ${symbols[b]}`);
    }

    const printable = order.filter((b) => b >= 0x20 && b < 0x7f);
    const triples: [number, number, number, number][] = [];
    for (const a of printable) for (const b of printable) for (const c of printable)
        triples.push([byRank(a, b) + (rank.get(c) ?? 0), a, b, c]);
    triples.sort((x, y) => x[0] - y[0] || x[1] - y[1] || x[2] - y[2] || x[3] - y[3]);
    for (const [, a, b, c] of triples) {
        if (tokens.length >= regular) break;
        tokens.push(symbols[a]! + symbols[b]! + symbols[c]!);
        merges.push(`${symbols[a]}${symbols[b]} ${symbols[c]}`);
    }
    if (tokens.length < regular) throw new Error(`cannot build ${regular} regular tokens`);
    return finish(tokens, tokens.map(() => TokenType.normal), merges, size);
}
