// The scorer against an unbatched single-sequence reference and against llama.cpp's own
// llama-perplexity.
import fs from "node:fs";
import path from "node:path";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {loadModel, type Model} from "../src/engine/Model.js";
import {AbortError, OptionError} from "../src/errors.js";
import {MARKERS} from "../src/format/markers.js";
import {llamaPerplexity} from "./helpers/llamaPerplexity.js";
import {testModel, tmpDir} from "./helpers/models.js";

/** log p of each completion token from one fresh single-sequence decode of everything. */
async function reference(model: Model, prompt: number[], completion: number[]): Promise<number[]> {
    const rows = await model.logits([...prompt, ...completion], {from: prompt.length - 1});
    return completion.map((token, j) => {
        const row = rows[j]!;
        const max = row.reduce((m, v) => Math.max(m, v), -Infinity);
        return row[token]! - (max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)));
    });
}

// Text from MATH500 (test/fixtures, MIT): real sentences and LaTeX for the tokenizer.
const corpus = fs.readFileSync(path.join(import.meta.dirname, "fixtures", "data", "math500.jsonl"), "utf8")
    .trim().split("\n").slice(0, 60).map((l) => JSON.parse(l) as {problem: string, solution: string});

describe.each(["tiny", "tiny-qwen3"] as const)("scoring on %s", (preset) => {
    let model: Model;
    beforeAll(async () => {
        model = await loadModel(await testModel(preset));
    });
    afterAll(() => model?.dispose());

    it("gives each completion the log-probability of an unbatched reference, whatever the packing", async () => {
        // Prompts shared by several completions, long and short records, one longer than a batch.
        const records = corpus.slice(0, 12).flatMap((p, i) => {
            const prompt = model.tokenize(p.problem.slice(0, 200), {special: true, addSpecial: true});
            const n = 1 + (i % 3);
            return Array.from({length: n}, (_, k) => ({
                id: `${i}.${k}`,
                prompt,
                completion: model.tokenize(p.solution.slice(k * 40, k * 40 + (i === 5 ? 700 : 150)), {special: true})
            }));
        });
        const expected = await Promise.all(records.map((r) => reference(model, r.prompt, r.completion)));
        for (const [parallel, batchSize] of [[1, 2048], [3, 64], [8, 16], [4, 512]] as const) {
            const results = await model.scorer({parallel, batchSize}).score(records);
            expect(results.map((r) => r.id)).toEqual(records.map((r) => r.id));
            results.forEach((r, i) => {
                const want = expected[i]!;
                expect(r.tokens).toBe(want.length);
                expect(Math.abs(r.sum - want.reduce((a, b) => a + b, 0)), `${parallel}/${batchSize} record ${r.id}`).toBeLessThan(1e-3);
                r.logprobs.forEach((lp, j) => expect(Math.abs(lp - want[j]!)).toBeLessThan(1e-3));
                expect(r.mean).toBeCloseTo(r.sum / r.tokens, 9);
                expect(r.perplexity).toBeCloseTo(Math.exp(-r.mean), 6);
            });
        }
    });
});

describe("scorer", () => {
    let model: Model;
    beforeAll(async () => {
        model = await loadModel(await testModel("tiny"));
    });
    afterAll(() => model?.dispose());

    it("reports the thought, the solution and the caller's spans", async () => {
        const thought = "Let me add: 2 + 2 = 4. Wait, let me re-check: yes, 4.";
        const solution = "The answer is \\boxed{4}.";
        const completion = `${MARKERS.beginThought}${thought}${MARKERS.endThought}${MARKERS.beginSolution}${solution}${MARKERS.endSolution}`;
        const tokens = model.tokenize(completion, {special: true});
        const [r] = await model.scorer().score([{prompt: "What is 2 + 2?", completion: tokens, spans: [{name: "first", start: 0, end: 5}]}]);
        // The tiny model's vocabulary is character-level: one token per character.
        expect(r!.segments.thought!.tokens).toBe(thought.length);
        expect(r!.segments.solution!.tokens).toBe(solution.length);
        const sum = (a: number, b: number) => r!.logprobs.slice(a, b).reduce((x, y) => x + y, 0);
        expect(r!.segments.thought!.sum).toBeCloseTo(sum(1, 1 + thought.length), 9);
        expect(r!.segments.solution!.sum).toBeCloseTo(sum(3 + thought.length, 3 + thought.length + solution.length), 9);
        expect(r!.segments.first!.sum).toBeCloseTo(sum(0, 5), 9);
        const [plain] = await model.scorer().score([{prompt: "Q", completion: "no markers here"}]);
        expect(plain!.segments).toEqual({});
    });

    it("refuses a record longer than a sequence, or truncates it with a flag when asked", async () => {
        const prompt = model.tokenize("p".repeat(50), {special: true});
        const completion = model.tokenize("c".repeat(40), {special: true});
        await expect(model.scorer({contextSize: 64}).score([{id: "long", prompt, completion}]))
            .rejects.toThrow(/record long: prompt \(50\) \+ completion \(40\) tokens exceed the 64 a sequence holds/);
        const [cut] = await model.scorer({contextSize: 64, overflow: "truncate"}).score([{prompt, completion}]);
        expect(cut!.truncated).toEqual({promptTokensDropped: 26, completionTokensDropped: 0});
        expect(cut!.tokens).toBe(40);
        const want = await reference(model, prompt.slice(26), completion);
        expect(Math.abs(cut!.sum - want.reduce((a, b) => a + b, 0))).toBeLessThan(1e-3);
        const [both] = await model.scorer({contextSize: 30, overflow: "truncate"}).score([{prompt, completion}]);
        expect(both!.truncated).toEqual({promptTokensDropped: 49, completionTokensDropped: 11});
        expect(both!.tokens).toBe(29);
    });

    it("validates records and stops on abort", async () => {
        const scorer = model.scorer();
        await expect(scorer.score([{prompt: "x", completion: [1, 99999]}])).rejects.toThrow(OptionError);
        await expect(scorer.score([{prompt: [], completion: "x"} as never])).rejects.toThrow(/record 0/);
        await expect(scorer.score([{prompt: "x", completion: "ab", spans: [{name: "s", start: 0, end: 9}]}])).rejects.toThrow(/span s ends at token 9/);
        const controller = new AbortController();
        const big = Array.from({length: 200}, (_, i) => ({prompt: `p${i}`, completion: "y".repeat(300)}));
        const run = scorer.score(big, {signal: controller.signal, onProgress: () => controller.abort()});
        await expect(run).rejects.toThrow(AbortError);
    });

    it("applies a LoRA adapter", async () => {
        const {GgufWriter} = await import("../src/models/GgufWriter.js");
        const file = path.join(tmpDir, "score-lora.gguf");
        const w = new GgufWriter().string("general.architecture", "llama").string("general.type", "adapter")
            .string("adapter.type", "lora").f32("adapter.lora.alpha", 4);
        for (let l = 0; l < 4; l++) {
            w.tensor(`blk.${l}.ffn_up.weight.lora_a`, [256, 4], (s, o) => { for (let i = 0; i < o.length; i++) o[i] = Math.sin(s + i + l); });
            w.tensor(`blk.${l}.ffn_up.weight.lora_b`, [4, 768], (s, o) => { for (let i = 0; i < o.length; i++) o[i] = Math.cos(s + i + l); });
        }
        await w.write(file);
        const adapter = await model.loadAdapter(file);
        const records = [{prompt: "Hello", completion: " world, again"}];
        const scorer = model.scorer();
        const [plain] = await scorer.score(records);
        scorer.setAdapters([{adapter, scale: 1}]);
        const [adapted] = await scorer.score(records);
        scorer.setAdapters([{adapter, scale: 0}]);
        const [zero] = await scorer.score(records);
        expect(Math.abs(adapted!.sum - plain!.sum)).toBeGreaterThan(0.1);
        expect(zero!.sum).toBeCloseTo(plain!.sum, 5);
    });
});

describe("perplexity mode", () => {
    it("gives llama-perplexity's PPL on the same text", async () => {
        const file = await testModel("tiny");
        const text = corpus.map((p) => `${p.problem}\n${p.solution}`).join("\n\n");
        const textFile = path.join(tmpDir, "ppl.txt");
        fs.writeFileSync(textFile, text);
        const theirs = await llamaPerplexity(file, textFile, ["-c", "128", "-b", "512", "-t", "1"]);
        expect(theirs).toBeGreaterThan(1);
        const model = await loadModel(file);
        const ours = await model.perplexity(text, {ctx: 128, batchSize: 512});
        expect(ours.chunks).toBe(Math.floor(model.tokenize(text, {addSpecial: true}).length / 128));
        await model.dispose();
        expect(Math.abs(ours.perplexity / theirs - 1)).toBeLessThan(0.005);
    }, 180_000);

    it("needs two contexts of text", async () => {
        const model = await loadModel(await testModel("tiny"));
        await expect(model.perplexity("short", {ctx: 64})).rejects.toThrow(/needs at least 128 tokens; the text has \d+/);
        await model.dispose();
    });
});
