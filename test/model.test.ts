// Built-in models made by the maker load in llama.cpp through the addon, run, and
// round-trip text through the tokenizer exactly.
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {chatMlTemplate, type ModelType} from "../src/models/makeModel.js";
import {type Preset, presets} from "../src/models/presets.js";
import {getBackend} from "../src/engine/binding.js";
import {loadModel, type Model} from "../src/engine/Model.js";
import {AbortError, ModelError, OptionError, StillError} from "../src/errors.js";
import {MARKERS} from "../src/format/markers.js";
import {testModel} from "./helpers/models.js";

// Texts that stress a tokenizer: ASCII, accents, CJK, emoji (4-byte UTF-8), combining
// marks, whitespace runs, control characters, LaTeX, and the STILL response format.
const corpus = [
    "",
    "a",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "tabs\tand\nnew\r\nlines\n\n\n",
    "Émile a mangé 20 crêpes à Noël.",
    "数学题：求 x 的值。",
    "🙂🙃 👩‍👩‍👧 🇫🇷",
    "e\u0301 (combining acute), \u200b zero width, \u0000 nul, \u007f del",
    "Let $f(x) = \\frac{x^2}{2}$; then $\\int_0^1 f = \\boxed{\\tfrac{1}{6}}$.",
    `${MARKERS.beginThought}Step 1: 2+2.\n\nStep 2: check.${MARKERS.endThought}${MARKERS.beginSolution}The answer is \\boxed{4}.${MARKERS.endSolution}`,
    "<|begin_of_thought", // a marker prefix is plain text
    "x".repeat(5000)
];

const cases: [keyof typeof presets, ModelType][] = [
    ["tiny", "f32"], ["tiny", "f16"], ["tiny", "q8_0"],
    ["tiny-qwen2", "f32"], ["tiny-qwen2", "q8_0"],
    ["tiny-qwen3", "f32"], ["tiny-qwen3", "q8_0"]
];

describe.each(cases)("%s %s", (preset, type) => {
    let model: Model;
    beforeAll(async () => {
        model = await loadModel(await testModel(preset, type));
    });
    afterAll(() => model?.dispose());

    it("reports its facts", () => {
        const p: Preset = presets[preset];
        const f = model.facts;
        expect(f.architecture).toBe(p.architecture);
        expect(f.layerCount).toBe(p.layers);
        expect(f.embeddingLength).toBe(p.embedding);
        expect(f.headCount).toBe(p.heads);
        expect(f.headCountKv).toBe(p.kvHeads);
        expect(f.contextLength).toBe(p.contextLength);
        expect(f.vocabSize).toBe(263);
        expect(f.vocabType).toBe("bpe");
        expect(f.fileType).toBe({f32: "all F32", f16: "F16", q8_0: "Q8_0"}[type]);
        expect(f.parameterCount).toBeGreaterThan(100_000);
        expect(f.chatTemplate).toBe(chatMlTemplate);
        expect(f.tokens.eos).toBe(258);
        expect(f.eog).toContain(258);
        expect(f.specialTokens.map((t) => t.text)).toEqual(expect.arrayContaining(["<|im_start|>", "<|im_end|>", MARKERS.beginThought]));
        expect(f.backend.llamaRelease).toMatch(/^v?\d/);
        expect(f.backend.devices.length).toBeGreaterThan(0);
    });

    it("holds the four STILL markers as single tokens, in plain text too", () => {
        const ids = Object.values(model.facts.markers);
        expect(ids.every((id) => typeof id === "number")).toBe(true);
        expect(new Set(ids).size).toBe(4);
        for (const [name, text] of Object.entries(MARKERS)) {
            const id = model.facts.markers[name as keyof typeof MARKERS];
            expect(model.tokenize(text)).toEqual([id]);
            expect(model.tokenize(text, {special: true})).toEqual([id]);
            expect(model.detokenize([id!])).toBe(text);
        }
    });

    it("round-trips text through the tokenizer exactly", () => {
        for (const text of corpus) {
            expect(model.detokenize(model.tokenize(text))).toBe(text);
            expect(model.detokenize(model.tokenize(text, {special: true}), {special: true})).toBe(text);
        }
    });

    it("generates tokens, deterministically", async () => {
        const prompt = model.applyChatTemplate([{role: "user", content: "What is 2+2?"}]);
        const a = await model.generateGreedy(prompt, {maxTokens: 4});
        const b = await model.generateGreedy(prompt, {maxTokens: 4});
        expect(a.tokens.length).toBeGreaterThan(0);
        expect(a.tokens.length).toBeLessThanOrEqual(4);
        for (const t of a.tokens) expect(t).toBeLessThan(model.facts.vocabSize);
        expect(b.tokens).toEqual(a.tokens);
        expect(a.text).toBe(model.detokenize(a.tokens));
    });
});

describe("tokenizer and chat template", () => {
    let model: Model;
    beforeAll(async () => {
        model = await loadModel(await testModel("tiny"));
    });
    afterAll(() => model?.dispose());

    it("parses control tokens only when asked", () => {
        const text = "<|im_start|>user";
        const plain = model.tokenize(text);
        const special = model.tokenize(text, {special: true});
        expect(special[0]).toBe(257);
        expect(special.length).toBe(1 + "user".length);
        expect(plain.length).toBe(text.length); // one token per character
        expect(model.detokenize(special)).toBe("user"); // control tokens hidden unless asked
        expect(model.detokenize(special, {special: true})).toBe(text);
        expect(model.tokenId("<|im_end|>")).toBe(258);
        expect(model.tokenId("ab")).toBeNull();
    });

    it("applies the ChatML template the same way through Jinja and through llama.cpp", () => {
        const messages = [
            {role: "system", content: "Think step by step."},
            {role: "user", content: "What is 6×7?"},
            {role: "assistant", content: `${MARKERS.beginThought}6×7=42${MARKERS.endThought}`},
            {role: "user", content: "And 6×8?"}
        ];
        const expected = "<|im_start|>system\nThink step by step.<|im_end|>\n<|im_start|>user\nWhat is 6×7?<|im_end|>\n" +
            `<|im_start|>assistant\n${MARKERS.beginThought}6×7=42${MARKERS.endThought}<|im_end|>\n<|im_start|>user\nAnd 6×8?<|im_end|>\n<|im_start|>assistant\n`;
        expect(model.applyChatTemplate(messages)).toBe(expected);
        expect(model.applyChatTemplate(messages, {renderer: "jinja"})).toBe(expected);
        expect(model.applyChatTemplate(messages, {renderer: "llama"})).toBe(expected);
        expect(model.applyChatTemplate(messages, {addGenerationPrompt: false})).toBe(expected.slice(0, -"<|im_start|>assistant\n".length));
    });

    it("uses a caller's template, and says when a template refuses or cannot be applied", () => {
        const t = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}";
        expect(model.applyChatTemplate([{role: "user", content: "hi"}], {template: t})).toBe("[user] hi\n");
        const refusing = "{{ raise_exception('roles must alternate') }}";
        expect(() => model.applyChatTemplate([{role: "user", content: "hi"}], {template: refusing})).toThrow(OptionError);
        expect(() => model.applyChatTemplate([{role: "user", content: "hi"}], {template: "{% unknown_tag %}"}))
            .toThrow(/could not be applied: llama.cpp does not recognise it and the Jinja renderer failed/);
    });

    it("rejects token ids outside the vocabulary instead of reading out of bounds", () => {
        expect(() => model.detokenize([1, 263])).toThrow(OptionError);
        expect(() => model.detokenize([-1])).toThrow(/outside the vocabulary/);
    });
});

describe("loading", () => {
    it("loads the vocabulary alone", async () => {
        const full = await loadModel(await testModel("tiny-qwen3"));
        const model = await loadModel(await testModel("tiny-qwen3"), {vocabOnly: true});
        expect(model.facts.vocabSize).toBe(263);
        // The shape comes from the file's metadata and tensor list, as llama.cpp reports it with weights.
        for (const k of ["parameterCount", "sizeBytes", "layerCount", "embeddingLength", "headCount", "headCountKv", "contextLength"] as const)
            expect(model.facts[k], k).toBe(full.facts[k]);
        await full.dispose();
        expect(model.detokenize(model.tokenize(corpus[10]!))).toBe(corpus[10]);
        await expect(model.generateGreedy("hi")).rejects.toThrow(/without weights/);
        await model.dispose();
    });

    it("loads a vocabulary-only file (no tensors) with vocabOnly, and says what it is otherwise", async () => {
        const {GgufWriter} = await import("../src/models/GgufWriter.js");
        const {charVocab} = await import("../src/models/vocab.js");
        const {tmpDir} = await import("./helpers/models.js");
        const v = charVocab();
        const file = `${tmpDir}/vocab-only.gguf`;
        await new GgufWriter()
            .string("general.architecture", "llama").u32("llama.block_count", 2).u32("llama.context_length", 128)
            .string("tokenizer.ggml.model", "gpt2").string("tokenizer.ggml.pre", "qwen2")
            .strings("tokenizer.ggml.tokens", v.tokens).i32s("tokenizer.ggml.token_type", v.types).strings("tokenizer.ggml.merges", v.merges)
            .u32("tokenizer.ggml.eos_token_id", v.eos)
            .write(file);
        const model = await loadModel(file, {vocabOnly: true});
        expect(model.facts.vocabSize).toBe(263);
        expect(model.facts.layerCount).toBe(2); // from the metadata
        expect(model.facts.markers.endSolution).toBe(262);
        await model.dispose();
        await expect(loadModel(file)).rejects.toThrow(/holds no tensors .*vocabOnly/);
    });

    it("reports progress and can be cancelled", async () => {
        const file = await testModel("tiny");
        const seen: number[] = [];
        const model = await loadModel(file, {onProgress: (f) => seen.push(f)});
        expect(seen.length).toBeGreaterThan(0);
        expect(seen.at(-1)).toBe(1);
        await model.dispose();

        const pre = new AbortController();
        pre.abort();
        await expect(loadModel(file, {signal: pre.signal})).rejects.toThrow(AbortError);

        // The native side stops at llama.cpp's first progress callback once its flag is set
        // (set here before the call, as a signal firing mid-load would, without the race).
        const {binding} = getBackend();
        const flag = new binding.AbortFlag();
        flag.abort();
        await expect(binding.loadModel(file, {gpuLayers: 0, useMmap: true, vocabOnly: false, checkTensors: false}, undefined, flag))
            .rejects.toMatchObject({code: "cancelled"});
    });

    it("cancels a running generation", async () => {
        const model = await loadModel(await testModel("tiny"));
        const ctl = new AbortController();
        const run = model.generateGreedy("x", {maxTokens: 100_000, signal: ctl.signal});
        setTimeout(() => ctl.abort(), 50);
        await expect(run).rejects.toThrow(AbortError);
        await model.dispose();
    });

    it("validates options before touching the file", async () => {
        await expect(loadModel(await testModel("tiny"), {gpuLayers: -3 as any})).rejects.toThrow(OptionError);
        await expect(loadModel(await testModel("tiny"), {variant: "no-such-variant"})).rejects.toThrow(/not built|variant/);
    });

    it("disposes once running work finishes, and refuses use afterwards", async () => {
        const model = await loadModel(await testModel("tiny"));
        const run = model.generateGreedy("abc", {maxTokens: 8});
        const disposed = model.dispose();
        await expect(run).resolves.toMatchObject({tokens: expect.any(Array)});
        await disposed;
        expect(model.disposed).toBe(true);
        expect(() => model.tokenize("a")).toThrow(StillError);
        await model.dispose(); // idempotent
    });

    it("refuses a LoRA adapter given as a model", async () => {
        const {GgufWriter} = await import("../src/models/GgufWriter.js");
        const {tmpDir} = await import("./helpers/models.js");
        const file = `${tmpDir}/adapter.gguf`;
        await new GgufWriter()
            .string("general.architecture", "llama").string("general.type", "adapter")
            .string("adapter.type", "lora").f32("adapter.lora.alpha", 16)
            .tensor("blk.0.attn_q.weight.lora_a", [256, 8], (_s, o) => o.fill(0))
            .write(file);
        await expect(loadModel(file)).rejects.toThrow(new ModelError(file, `${file} is a LoRA adapter, not a model; load its base model and apply the adapter to it.`));
    });

    it("knows ggml's tensor types through the addon", () => {
        const {binding} = getBackend();
        expect(binding.ggmlTypeInfo(0)).toEqual({name: "f32", blockSize: 1, typeSize: 4});
        expect(binding.ggmlTypeInfo(8)).toEqual({name: "q8_0", blockSize: 32, typeSize: 34});
        expect(binding.ggmlTypeInfo(4)).toBeNull(); // retired Q4_2
        expect(binding.ggmlTypeInfo(1000)).toBeNull();
    });
});
