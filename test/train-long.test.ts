// Long rows: the chunked step with recomputation (--recompute on) against the one-graph
// step on the made tiny models. Its gradients equal the one-graph step's (1e-4 relative,
// F32) on llama, qwen2 and qwen3, for SFT and DPO, packed rows and thought masks, with
// chunks small enough that every attention, token and loss chunk boundary is crossed; they
// agree with finite differences; 20 steps give the same loss curve and adapter; the memory
// plan refuses rows that do not fit in one sentence, with the longest that would; and
// 8k-token thoughts train end to end, the scorer's NLL on them falling.
import fs from "node:fs";
import path from "node:path";
import {describe, expect, it} from "vitest";
import {readGgufHeader} from "../src/engine/readGguf.js";
import {loadModel} from "../src/engine/Model.js";
import {TrainerError} from "../src/errors.js";
import {formatThought} from "../src/format/formatThought.js";
import {sft} from "../src/train/sft.js";
import type {StepEvent, TrainerEvent} from "../src/train/runTrainer.js";
import {testModel, tmpDir} from "./helpers/models.js";
import {gradientDump, normDiff, randomDpoData, randomSftData, relDiff, trainer} from "./helpers/trainer.js";

/** The gradients of one grad-check pass over the whole data file, with the step taken one way. */
async function gradients(model: string, data: string, recompute: "on" | "off", extra: string[] = []): Promise<Float32Array> {
    return (await gradientDump(["--model", model, "--data", data, "--init-random-b", "--no-finite-differences", "--recompute", recompute, ...extra])).grads;
}

/** The F32 tensors of a GGUF file by name. */
async function tensors(file: string): Promise<Map<string, Float32Array>> {
    const header = await readGgufHeader(file);
    const bytes = fs.readFileSync(file);
    const out = new Map<string, Float32Array>();
    for (const t of header.tensors) {
        expect(t.type).toBe(0); // F32
        const n = t.dims.reduce((a, b) => a * b, 1);
        const at = header.dataOffset + Number(t.offset);
        out.set(t.name, new Float32Array(bytes.buffer.slice(bytes.byteOffset + at, bytes.byteOffset + at + 4 * n)));
    }
    return out;
}

describe("chunked steps with recomputation", () => {
    for (const preset of ["tiny", "tiny-qwen2", "tiny-qwen3"] as const) {
        it(`gives the one-graph step's gradients on ${preset}: SFT (packed rows, weights 0 / 0.5 / 1) and DPO`, async () => {
            const model = await testModel(preset);
            const vocab = 263;
            // rows of 64 tokens hold several examples; chunks of 16 queries and 5 loss rows cross every boundary
            const chunks = ["--ctx", "64", "--block-tokens", "16", "--loss-rows", "5"];
            const sftData = await randomSftData(vocab, 7, 11);
            expect(relDiff(await gradients(model, sftData, "off", chunks), await gradients(model, sftData, "on", chunks))).toBeLessThan(1e-4);
            const dpoData = await randomDpoData(vocab, 5, 12);
            expect(relDiff(await gradients(model, dpoData, "off", chunks), await gradients(model, dpoData, "on", chunks))).toBeLessThan(1e-4);
            // chunks sized by the memory budget (one chunk here) give the same
            expect(relDiff(await gradients(model, sftData, "off", ["--ctx", "64"]), await gradients(model, sftData, "on", ["--ctx", "64"])))
                .toBeLessThan(1e-4);
        }, 120_000);
    }

    it("gives the one-graph step's gradients with BF16 copies of the frozen weights too (a Q8_0 base)", async () => {
        const model = await testModel("tiny-qwen2", "q8_0");
        const data = await randomSftData(263, 7, 14);
        const chunks = ["--ctx", "64", "--block-tokens", "16", "--loss-rows", "5"];
        const exact = await gradients(model, data, "off", [...chunks, "--backward-weights", "f32"]);
        const extra = [...chunks, "--backward-weights", "bf16"];
        const oneGraph = await gradients(model, data, "off", extra);
        const chunked = await gradients(model, data, "on", extra);
        // BF16 products round their other operand too, so the paths' last-bit differences
        // upstream show as whole roundings here: not 1e-4 as in F32, but well inside the
        // copies' own distance from the exact gradient
        expect(relDiff(oneGraph, chunked)).toBeLessThan(relDiff(exact, chunked) / 3);
    }, 120_000);

    it("gives every weight's gradient in full fine-tuning too, and agrees with finite differences", async () => {
        const model = await testModel("tiny-qwen3");
        const data = await randomSftData(263, 6, 13);
        const chunks = ["--ctx", "64", "--block-tokens", "16", "--loss-rows", "7"];
        expect(relDiff(await gradients(model, data, "off", [...chunks, "--full"]), await gradients(model, data, "on", [...chunks, "--full"])))
            .toBeLessThan(1e-4);
        const events = await trainer(["grad-check", "--model", model, "--data", data, "--init-random-b", "--recompute", "on", ...chunks]);
        const check = events.find((e) => e.type === "grad_check");
        expect(check?.type === "grad_check" && check.worst_rel_error).toBeLessThan(1e-2);
    }, 120_000);

    it("trains 20 steps to the same loss curve and the same adapter as the one-graph step", async () => {
        const model = await testModel("tiny");
        const data = await randomSftData(263, 40, 14);
        const run = async (recompute: "on" | "off") => {
            const out = path.join(tmpDir, `twenty-${recompute}.gguf`);
            const events = await trainer(["sft", "--model", model, "--data", data, "--out", out, "--ctx", "64", "--max-steps", "20",
                "--lr", "3e-3", "--seed", "4", "--epochs", "2", "--recompute", recompute, "--block-tokens", "16", "--loss-rows", "9"]);
            return {losses: events.filter((e): e is StepEvent => e.type === "step").map((e) => e.loss), adapter: await tensors(out)};
        };
        const whole = await run("off");
        const chunked = await run("on");
        expect(whole.losses).toHaveLength(20);
        expect(whole.losses.at(-1)!).toBeLessThan(whole.losses[0]!);
        whole.losses.forEach((l, i) => expect(Math.abs(chunked.losses[i]! - l) / Math.abs(l)).toBeLessThan(1e-4));
        expect([...chunked.adapter.keys()]).toEqual([...whole.adapter.keys()]);
        for (const [name, w] of whole.adapter) expect(normDiff(w, chunked.adapter.get(name)!), name).toBeLessThan(1e-4);
    }, 180_000);
});

describe("the memory plan", () => {
    it("says how a step is taken before training, and refuses rows that do not fit with the longest that would", async () => {
        const model = await testModel("tiny");
        const {TrainingFile} = await import("../src/train/TrainingFile.js");
        const rows = async (n: number) => {
            const file = path.join(tmpDir, `long-${n}.bin`);
            const out = await TrainingFile.create(file, "sft", 263);
            const tokens = Array.from({length: n}, (_, i) => (i * 7) % 263);
            await out.addSft({tokens, weights: tokens.map((_, i) => (i === 0 ? 0 : 1))});
            await out.close();
            return file;
        };
        type Plan = Extract<TrainerEvent, {type: "plan"}>;
        const plan = async (data: string, ctx: number, extra: string[] = []) =>
            (await trainer(["sft", "--model", model, "--data", data, "--out", path.join(tmpDir, "p.gguf"), "--ctx", String(ctx), "--plan-only", ...extra]))
                .find((e): e is Plan => e.type === "plan")!;

        // short rows: one graph when it fits, chunked when the budget says it does not
        const short = await rows(1024);
        const roomy = await plan(short, 1024);
        expect(roomy).toMatchObject({tokens: 1024, recompute: false});
        expect(roomy.one_graph_mb).toBeGreaterThan(2 * roomy.chunked_mb);
        const tight = await plan(short, 1024, ["--memory-budget", String(Math.ceil(roomy.one_graph_mb * 0.7))]);
        expect(tight).toMatchObject({recompute: true});

        // long rows: chunked; the one-graph step holds every layer's scores, and is refused in one sentence
        const long = await rows(4096);
        const planned = await plan(long, 4096);
        expect(planned).toMatchObject({tokens: 4096, recompute: true});
        expect(planned.one_graph_mb).toBeGreaterThan(4 * planned.chunked_mb);
        const refused = await plan(long, 4096, ["--memory-budget", "1024", "--recompute", "off"]).catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(TrainerError);
        const message = (refused as TrainerError).message;
        expect(message.split("\n")).toHaveLength(1);
        expect(message).toMatch(/^training rows of 4096 tokens needs about [\d.]+ GB more memory .* but 1\.1 GB are free; the longest rows that fit are (\d+) tokens \(--ctx \1\), or train with --recompute on$/);
        const fits = Number(/fit are (\d+) tokens/.exec(message)![1]);
        expect(fits).toBeGreaterThan(256);
        expect(fits).toBeLessThan(4096);
        // and the estimate it gives for the longest that fits is what the plan says at that length
        const atFit = await plan(await rows(fits), fits, ["--memory-budget", "1024", "--recompute", "off"]);
        expect(atFit.step_mb).toBeLessThan(1024 * 0.9);
    }, 60_000);

    it("refuses a row longer than the model's context", async () => {
        const err = await trainer(["sft", "--model", await testModel("tiny"), "--data", await randomSftData(263, 2, 15),
            "--out", path.join(tmpDir, "c.gguf"), "--ctx", "131073"]).catch((e: unknown) => e);
        expect((err as Error).message).toMatch(/--ctx must be a whole number from 2 to 131072|longer than the model's context/);
    });
});

describe("long-form thoughts of 8k tokens", () => {
    it("train end to end (still's sft(), chunked), and the scorer's NLL on them falls", async () => {
        const modelFile = await testModel("tiny");
        // thoughts of about 8,000 characters (one token each in the tiny model's vocabulary)
        const lines = (n: number, seed: number) => Array.from({length: n}, (_, i) => `step ${(i * seed) % 997}: carry ${(i + seed) % 10} and go on.`).join("\n");
        const examples = [3].map((seed) => ({question: `Count on from ${seed}.`, response: formatThought({thought: lines(280, seed), solution: `\\boxed{${seed}}`})}));
        const model = await loadModel(modelFile);
        try {
            const scorer = model.scorer({contextSize: 8800});
            const nll = async (adapter?: string) => {
                scorer.setAdapters(adapter == null ? [] : [{adapter: await model.loadAdapter(adapter)}]);
                const scored = await scorer.score(examples.map((e) => ({prompt: e.question, completion: e.response})));
                expect(scored[0]!.tokens).toBeGreaterThan(8000);
                return scored.reduce((s, r) => s - r.mean, 0) / scored.length;
            };
            const before = await nll();
            const out = path.join(tmpDir, "long-thoughts.gguf");
            const events: TrainerEvent[] = [];
            const result = await sft({model: modelFile, data: examples, out, systemPrompt: null, ctx: 8800, recompute: "on", epochs: 3,
                lora: {rank: 8, alpha: 16}, optimizer: {lr: 3e-3}, threads: 2, onProgress: (e) => events.push(e)});
            expect(result.steps).toBe(3);
            expect(events.find((e) => e.type === "plan")).toMatchObject({recompute: true});
            const after = await nll(out);
            expect(after).toBeLessThan(before - 0.05);
        } finally {
            await model.dispose();
        }
    }, 600_000);
});
