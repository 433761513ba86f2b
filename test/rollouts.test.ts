// The rollout engine against llama.cpp's own greedy program, across parallelism, with
// seeds, stops, log-probabilities, cancellation, prefix sharing and LoRA adapters.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {GgufWriter} from "../src/models/GgufWriter.js";
import {presets} from "../src/models/presets.js";
import {buildDir, getBackend, packageRoot} from "../src/engine/binding.js";
import {loadModel, type Model} from "../src/engine/Model.js";
import type {RolloutEngine, RolloutRequest, RolloutSample, SamplingOptions} from "../src/engine/Rollouts.js";
import {ModelError, OptionError} from "../src/errors.js";
import {MARKERS} from "../src/format/markers.js";
import {qwen2Adapter, testModel, tmpDir} from "./helpers/models.js";

async function collect(engine: RolloutEngine, requests: RolloutRequest[], sampling: SamplingOptions, signal?: AbortSignal) {
    const run = engine.generate(requests, sampling, signal == null ? {} : {signal});
    const out: RolloutSample[] = [];
    for await (const s of run) out.push(s);
    return {samples: out.sort((a, b) => a.request - b.request || a.sample - b.sample), stats: await run.stats};
}

/**
 * llama.cpp's examples/simple, linked to the same libraries as this process: greedy;
 * prints the prompt's and the generated tokens' pieces (special tokens rendered).
 */
async function llamaSimple(model: string, prompt: string, n: number): Promise<Buffer> {
    const {variant} = getBackend();
    const shim = path.join(buildDir, "libstill-threads-shim.so");
    const res = await execa(path.join(buildDir, `llama-simple-${variant.name}`), ["-m", model, "-n", String(n), prompt], {
        cwd: path.resolve(packageRoot, variant.libDir),
        encoding: "buffer",
        stripFinalNewline: false,
        env: fs.existsSync(shim) ? {LD_PRELOAD: shim, STILL_REFERENCE_THREADS: process.env.STILL_THREADS ?? "1"} : {}
    });
    return Buffer.from(res.stdout);
}

const prompts = [
    "Hello my name is",
    `<|im_start|>user\nWhat is 6×7?<|im_end|>\n<|im_start|>assistant\n${MARKERS.beginThought}`,
    "数学: 1 + 1 = ",
    "Q"
];

describe.each([["tiny", "f32"], ["tiny", "q8_0"], ["tiny-qwen2", "f32"], ["tiny-qwen3", "f32"]] as const)("greedy %s %s", (preset, type) => {
    let file: string;
    let model: Model;
    beforeAll(async () => {
        file = await testModel(preset, type);
        model = await loadModel(file);
    });
    afterAll(() => model?.dispose());

    it("equals llama.cpp's own greedy completion token for token at parallel 1", async () => {
        const engine = model.rollouts({parallel: 1});
        const {samples} = await collect(engine, prompts.map((prompt) => ({prompt})), {temperature: 0, maxTokens: 24, stopAfter: []});
        for (const [i, prompt] of prompts.entries()) {
            const s = samples[i]!;
            const promptTokens = model.tokenize(prompt, {special: true, addSpecial: true});
            // simple.cpp prints each token's piece with printf("%s"), which ends at a NUL byte.
            const printed = (tokens: number[]) => tokens.map((t) => {
                const piece = Buffer.from(model.detokenizeBytes([t], {special: true}));
                const nul = piece.indexOf(0);
                return nul < 0 ? piece : piece.subarray(0, nul);
            });
            const expected = Buffer.concat([...printed(promptTokens), ...printed(s.tokens), Buffer.from("\n")]);
            expect(s.tokens.length).toBeGreaterThan(0);
            expect((await llamaSimple(file, prompt, 24)).equals(expected), `prompt ${i}`).toBe(true);
        }
    });

    it("gives the same greedy outputs at parallel 1, 8 and 32", async () => {
        const requests = Array.from({length: 40}, (_, i) => ({id: `q${i}`, prompt: `${prompts[i % prompts.length]} ${i}`}));
        const outputs = [];
        for (const parallel of [1, 8, 32]) {
            const {samples} = await collect(model.rollouts({parallel}), requests, {temperature: 0, maxTokens: 12, stopAfter: []});
            expect(samples).toHaveLength(40);
            outputs.push(samples.map((s) => s.tokens.join(",")));
        }
        expect(outputs[1]).toEqual(outputs[0]);
        expect(outputs[2]).toEqual(outputs[0]);
    });
});

describe("sampling", () => {
    let model: Model;
    beforeAll(async () => {
        model = await loadModel(await testModel("tiny"));
    });
    afterAll(() => model?.dispose());

    const requests = [{id: "a", prompt: "Once upon"}, {id: "b", prompt: [{role: "user", content: "Tell me a story."}]}];
    const sampling = {samples: 5, temperature: 1, topK: 40, topP: 0.95, minP: 0.01, seed: 11, maxTokens: 16, stopAfter: []};

    it("is reproducible with the same settings, and differs with another seed", async () => {
        const a = await collect(model.rollouts({parallel: 4}), requests, sampling);
        const b = await collect(model.rollouts({parallel: 4}), requests, sampling);
        const c = await collect(model.rollouts({parallel: 4}), requests, {...sampling, seed: 12});
        expect(a.samples.map((s) => s.tokens)).toEqual(b.samples.map((s) => s.tokens));
        expect(a.samples.map((s) => s.tokens)).not.toEqual(c.samples.map((s) => s.tokens));
        // Samples of one request differ from each other.
        expect(new Set(a.samples.filter((s) => s.id === "a").map((s) => s.text)).size).toBeGreaterThan(1);
    });

    // A sample's seed depends on its request and index, not on its slot or its neighbours.
    // (Logits themselves move by ~1e-4 with the batch's shape, as in llama.cpp, so this is
    // shown where the choice is almost purely the sampler's: a flat top 3.)
    const flat = {...sampling, temperature: 50, topK: 3, topP: 1, minP: 0};

    it("draws the same samples whatever the parallelism", async () => {
        const a = await collect(model.rollouts({parallel: 3}), requests, flat);
        const b = await collect(model.rollouts({parallel: 8}), requests, flat);
        expect(a.samples.map((s) => s.tokens)).toEqual(b.samples.map((s) => s.tokens));
    });

    it("reruns exactly the samples asked for (resuming a partial run)", async () => {
        const full = await collect(model.rollouts({parallel: 3}), requests, flat);
        const part = await collect(model.rollouts({parallel: 3}), [{...requests[0]!, sampleIndices: [1, 4]}], flat);
        expect(part.samples.map((s) => s.sample)).toEqual([1, 4]);
        expect(part.samples.map((s) => s.tokens)).toEqual(full.samples.filter((s) => s.id === "a" && [1, 4].includes(s.sample)).map((s) => s.tokens));
    });

    // The scorer's numerics (no flash attention) within 1e-3; with CPU flash attention,
    // which accumulates in F16 and is the rollout default for speed, within a few 1e-3.
    it.each([["off", 1e-3], ["auto", 5e-3]] as const)(
        "reports each sampled token's log-probability as the scorer gives it (flash attention %s)", async (flashAttention, tolerance) => {
            const {samples} = await collect(model.rollouts({parallel: 4, flashAttention}), requests,
                {...sampling, samples: 3, temperature: 1.5, maxTokens: 64});
            const prompts = [model.tokenize("Once upon", {special: true, addSpecial: true}),
                model.tokenize(model.applyChatTemplate(requests[1]!.prompt as never), {special: true})];
            const scored = await model.scorer().score(samples.map((s) => ({prompt: prompts[s.request]!, completion: s.tokens})));
            samples.forEach((s, i) => {
                expect(prompts[s.request]!.length).toBe(s.promptTokens);
                s.logprobs.forEach((lp, j) => expect(Math.abs(lp - scored[i]!.logprobs[j]!)).toBeLessThan(tolerance));
            });
        });

    it("reports log-probabilities at the sampling temperature when asked (temperedLogprobs), the same samples drawn", async () => {
        const prompt = model.tokenize("Once upon", {special: true, addSpecial: true});
        const opts = {samples: 4, maxTokens: 8, seed: 5, temperature: 0.6, topK: 20, stopAfter: [] as string[]};
        const engine = model.rollouts({parallel: 4, flashAttention: "off"});
        const plain = (await collect(engine, [{prompt}], opts)).samples;
        const tempered = (await collect(engine, [{prompt}], {...opts, temperedLogprobs: true})).samples;
        expect(tempered.map((x) => x.tokens)).toEqual(plain.map((x) => x.tokens));
        let moved = 0;
        for (const [i, x] of tempered.entries()) {
            const rows = await model.logits([...prompt, ...x.tokens], {from: prompt.length - 1});
            x.tokens.forEach((tok, j) => {
                const row = rows[j]!;
                const max = row.reduce((m, v) => Math.max(m, v), -Infinity);
                const at = (T: number) => (row[tok]! - max) / T - Math.log(row.reduce((sum, v) => sum + Math.exp((v - max) / T), 0));
                expect(Math.abs(x.logprobs[j]! - at(0.6))).toBeLessThan(1e-3);
                expect(Math.abs(plain[i]!.logprobs[j]! - at(1))).toBeLessThan(1e-3);
                moved = Math.max(moved, Math.abs(at(0.6) - at(1)));
            });
        }
        expect(moved).toBeGreaterThan(0.01);
    });

    it.each(["split", "unified"] as const)("decodes a prompt once for all its samples (%s KV cache)", async (kvCache) => {
        const prompt = model.tokenize("A shared prompt that many samples continue.", {special: true, addSpecial: true});
        const other = model.tokenize("Another prompt.", {special: true, addSpecial: true});
        // More samples than slots: later ones start from copies of the prompt's cells.
        const {samples, stats} = await collect(model.rollouts({parallel: 4, kvCache}), [{prompt}, {prompt: other}],
            {samples: 10, maxTokens: 6, seed: 3, stopAfter: []});
        expect(samples).toHaveLength(20);
        expect(stats.promptTokens).toBe(prompt.length + other.length);
        expect(stats.generatedTokens).toBe(samples.reduce((n, s) => n + s.tokens.length, 0));
        // Each sample continues its own prompt: its first token's log-probability is what
        // the model gives after that prompt.
        for (const s of samples) {
            const p = s.request === 0 ? prompt : other;
            const [row] = await model.logits(p, {from: p.length - 1});
            const max = row!.reduce((m, v) => Math.max(m, v), -Infinity);
            const lse = max + Math.log(row!.reduce((sum, v) => sum + Math.exp(v - max), 0));
            expect(Math.abs(s.logprobs[0]! - (row![s.tokens[0]!]! - lse))).toBeLessThan(1e-3);
        }
    });

    it("gives the same greedy outputs with a unified KV cache", async () => {
        const requests = Array.from({length: 12}, (_, i) => ({prompt: `${prompts[i % prompts.length]} ${i}`}));
        const greedy = {temperature: 0, samples: 3, maxTokens: 12, stopAfter: [] as string[]};
        const split = await collect(model.rollouts({parallel: 5}), requests, greedy);
        const unified = await collect(model.rollouts({parallel: 5, kvCache: "unified"}), requests, greedy);
        expect(unified.samples.map((s) => s.tokens)).toEqual(split.samples.map((s) => s.tokens));
        // Greedy samples of one prompt are all the same.
        for (const s of split.samples) expect(s.tokens).toEqual(split.samples[s.request * 3]!.tokens);
    });

    it("stops on strings across token boundaries, on tokens, and at the length limit", async () => {
        const engine = model.rollouts({parallel: 2});
        const greedy = {temperature: 0, maxTokens: 40, stopAfter: [] as string[]};
        const base = (await collect(engine, [{prompt: "Hello my name is"}], greedy)).samples[0]!;
        expect(base.finish).toBe("length");
        expect(base.completionTokens).toBe(40);
        // The character-level vocabulary makes each character a token: a 3-character
        // stop string spans three tokens.
        const stop = base.text.slice(6, 9);
        const at = base.text.indexOf(stop);
        const cut = (await collect(engine, [{prompt: "Hello my name is"}], {...greedy, stop: [stop]})).samples[0]!;
        expect(cut).toMatchObject({finish: "stop", stop, text: base.text.slice(0, at)});
        const kept = (await collect(engine, [{prompt: "Hello my name is"}], {...greedy, stopAfter: [stop]})).samples[0]!;
        expect(kept).toMatchObject({finish: "stop", stop, text: base.text.slice(0, at + stop.length)});
        const char = base.text[4]!;
        const byToken = (await collect(engine, [{prompt: "Hello my name is"}], {...greedy, stopAfter: [char]})).samples[0]!;
        expect(byToken).toMatchObject({finish: "stop", stop: char, text: base.text.slice(0, base.text.indexOf(char) + 1)});
        expect(byToken.tokens.at(-1)).toBe(model.tokenId(char));
    });

    it("stops promptly on abort and returns what finished", async () => {
        const controller = new AbortController();
        const run = model.rollouts({parallel: 2}).generate([{prompt: "x"}], {samples: 6, maxTokens: 3000, stopAfter: [], stopAtEog: false}, {signal: controller.signal});
        const started = Date.now();
        setTimeout(() => controller.abort(), 100);
        const got: RolloutSample[] = [];
        for await (const s of run) got.push(s);
        expect(Date.now() - started).toBeLessThan(3000);
        expect(got.length).toBeGreaterThan(0);
        expect(got.every((s) => s.finish === "aborted")).toBe(true);
        expect(got.every((s) => s.tokens.length < 3000)).toBe(true);
    });

    it("refuses what cannot fit, in one sentence", async () => {
        const engine = model.rollouts({parallel: 2});
        expect(() => engine.generate([{prompt: "x"}], {maxTokens: 140_000})).toThrow(OptionError);
        expect(() => engine.generate([{prompt: "x"}], {maxTokens: 140_000})).toThrow(/exceeds the model.s training context of 131072 tokens/);
        expect(() => engine.generate([{prompt: []}], {})).toThrow(/no tokens|prompt/);
        expect(() => engine.generate([{prompt: "x"}], {temperature: -1})).toThrow(/invalid sampling options/);
        const huge = model.rollouts({parallel: 128, contextSize: 100_000_000});
        expect(() => huge.generate([{prompt: "x"}], {maxTokens: 100})).toThrow(/KV cache .* needs .* GiB but only .* GiB are free/);
    });
});

describe("LoRA adapters", () => {
    let model: Model;
    let adapterFile: string;
    beforeAll(async () => {
        model = await loadModel(await testModel("tiny"));
        // A rank-4 adapter on every attention and MLP projection, large enough to change greedy output.
        const p = presets.tiny;
        adapterFile = path.join(tmpDir, "tiny-lora.gguf");
        const w = new GgufWriter()
            .string("general.architecture", "llama").string("general.type", "adapter")
            .string("adapter.type", "lora").f32("adapter.lora.alpha", 4);
        const fill = (seed: number, scale: number) => (start: number, out: Float32Array) => {
            for (let i = 0; i < out.length; i++) out[i] = Math.sin((start + i + 1) * 12.9898 + seed) * scale;
        };
        for (let l = 0; l < p.layers; l++) {
            for (const [name, nIn, nOut] of [["attn_q", 256, 256], ["attn_v", 256, 128], ["ffn_up", 256, 768], ["ffn_down", 768, 256]] as const) {
                w.tensor(`blk.${l}.${name}.weight.lora_a`, [nIn, 4], fill(l * 7 + nIn, 0.5));
                w.tensor(`blk.${l}.${name}.weight.lora_b`, [4, nOut], fill(l * 13 + nOut, 0.5));
            }
        }
        await w.write(adapterFile);
    });
    afterAll(() => model?.dispose());

    it("loads in llama.cpp, changes the output, and swaps without reloading the model", async () => {
        const adapter = await model.loadAdapter(adapterFile);
        const engine = model.rollouts({parallel: 2});
        const greedy = {temperature: 0, maxTokens: 16, stopAfter: [] as string[]};
        const requests = [{prompt: "Hello my name is"}, {prompt: "The answer is"}];
        const plain = (await collect(engine, requests, greedy)).samples.map((s) => s.tokens);
        engine.setAdapters([{adapter, scale: 1}]);
        const adapted = (await collect(engine, requests, greedy)).samples.map((s) => s.tokens);
        engine.setAdapters([{adapter, scale: 0}]);
        const zero = (await collect(engine, requests, greedy)).samples.map((s) => s.tokens);
        engine.setAdapters([]);
        const again = (await collect(engine, requests, greedy)).samples.map((s) => s.tokens);
        expect(adapted).not.toEqual(plain);
        expect(zero).toEqual(plain);
        expect(again).toEqual(plain);
    });

    it("refuses a file that is not an adapter, or one for another architecture", async () => {
        await expect(model.loadAdapter(await testModel("tiny"))).rejects.toThrow(/is not a LoRA adapter/);
        const other = await qwen2Adapter();
        await expect(model.loadAdapter(other)).rejects.toThrow(ModelError);
        await expect(model.loadAdapter(other)).rejects.toThrow(/adapter for qwen2 models, but .* is llama/);
    });
});
