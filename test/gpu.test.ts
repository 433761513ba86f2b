// GPU checks: run only where a GPU backend registers a device (never in CI; the GPU check,
// scripts/gpu-check.mjs, runs them with the other model tests on the CUDA variant).
import fs from "node:fs";
import path from "node:path";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {getBackend} from "../src/engine/binding.js";
import {loadModel, type Model} from "../src/engine/Model.js";
import type {TrainerEvent} from "../src/train/runTrainer.js";
import {testModel, tmpDir} from "./helpers/models.js";
import {randomSftData, trainer} from "./helpers/trainer.js";

const backend = getBackend();

function logSoftmax(row: Float32Array): Float64Array {
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    const lse = max + Math.log(sum);
    return Float64Array.from(row, (v) => v - lse);
}

const PROMPT = "<|im_start|>user\nWhat is 6 × 7? Think step by step.<|im_end|>\n<|im_start|>assistant\n";

describe.skipIf(!backend.hasGpu)(`GPU (${backend.variant.name})`, () => {
    let file: string;
    let gpu: Model;
    let cpu: Model;
    beforeAll(async () => {
        file = await testModel("tiny", "f32");
        gpu = await loadModel(file, {gpuLayers: "max"});
        cpu = await loadModel(file, {gpuLayers: 0});
    });
    afterAll(async () => {
        await gpu?.dispose();
        await cpu?.dispose();
    });

    it("offloads every layer to device memory and generates there", async () => {
        const device = backend.devices.find((d) => d.type === "gpu" || d.type === "igpu")!;
        const freeBefore = device.memoryFree;
        const again = await loadModel(file, {gpuLayers: "max"});
        expect(again.facts.gpuLayers).toBe(-1);
        const after = (backend.binding.devices() as typeof backend.devices).find((d) => d.name === device.name)!;
        // The weights (13 MB) now live in device memory.
        expect(freeBefore - after.memoryFree).toBeGreaterThan(10_000_000);
        const out = await again.generateGreedy(again.applyChatTemplate([{role: "user", content: "2+2?"}]), {maxTokens: 8});
        expect(out.tokens.length).toBeGreaterThan(0);
        await again.dispose();
    });

    it("greedy rollouts on the GPU equal the CPU's, or part where the CPU's two best tokens are within 1e-2 in log-probability", async () => {
        const prompt = cpu.tokenize(PROMPT, {special: true});
        const a = await gpu.generateGreedy(prompt, {maxTokens: 48});
        const b = await cpu.generateGreedy(prompt, {maxTokens: 48});
        const n = Math.min(a.tokens.length, b.tokens.length);
        let i = 0;
        while (i < n && a.tokens[i] === b.tokens[i]) i++;
        if (i === n) {
            expect(a.tokens.length).toBe(b.tokens.length);
            return;
        }
        // first divergence: a near-tie that kernel differences may tip either way
        const rows = await cpu.logits([...prompt, ...b.tokens.slice(0, i)]);
        const lp = logSoftmax(rows.at(-1)!);
        expect(Math.abs(lp[a.tokens[i]!]! - lp[b.tokens[i]!]!)).toBeLessThanOrEqual(1e-2);
    });

    it("the scorer's perplexity on the GPU is the CPU's within 0.5%", async () => {
        const text = fs.readFileSync(path.join(import.meta.dirname, "fixtures", "data", "math500.jsonl"), "utf8").slice(0, 20_000);
        const g = await gpu.perplexity(text, {ctx: 128, chunks: 8});
        const c = await cpu.perplexity(text, {ctx: 128, chunks: 8});
        expect(Math.abs(g.perplexity / c.perplexity - 1)).toBeLessThanOrEqual(0.005);
    });

    it("still-train on the GPU: the same first loss as on the CPU (1e-3), 20 SFT steps lower it, and the engine loads the adapter", async () => {
        const data = await randomSftData(cpu.facts.vocabSize, 8);
        const run = async (extra: string[], steps: number, out: string) => {
            const events: TrainerEvent[] = await trainer(["sft", "--model", file, "--data", data, "--out", out, "--max-steps", String(steps),
                "--lr", "1e-2", "--constant-lr", "--seed", "3", ...extra]);
            return events.filter((e): e is Extract<TrainerEvent, {type: "step"}> => e.type === "step").map((e) => e.loss);
        };
        const adapter = path.join(tmpDir, "gpu-sft.gguf");
        const onGpu = await run([], 20, adapter);
        const onCpu = await run(["--no-gpu"], 1, path.join(tmpDir, "cpu-sft.gguf"));
        expect(Math.abs(onGpu[0]! - onCpu[0]!) / Math.abs(onCpu[0]!)).toBeLessThanOrEqual(1e-3);
        expect(onGpu.at(-1)!).toBeLessThan(onGpu[0]!);
        const loaded = await gpu.loadAdapter(adapter);
        expect(loaded.path).toBe(adapter);
    });
});
