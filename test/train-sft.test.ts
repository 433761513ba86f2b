// sft() end to end on a generated tiny model: the NLL of its data as our scorer measures
// it with the adapter applied, llama.cpp loading the adapter, the adapter applied by
// still-train as llama.cpp applies it, and stopping/killing then resuming.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {getBackend, packageRoot} from "../src/engine/binding.js";
import {loadModel, type Model} from "../src/engine/Model.js";
import {AbortError} from "../src/errors.js";
import {formatThought} from "../src/format/formatThought.js";
import {trainerBinary} from "../src/train/runTrainer.js";
import {type SftExample, sft} from "../src/train/sft.js";
import {tokenizeChat} from "../src/train/tokenizeForTraining.js";
import {trainerArgs, trainingOptionsSchema} from "../src/train/trainingOptions.js";
import {testModel, tmpDir} from "./helpers/models.js";
import {llamaPerplexity} from "./helpers/llamaPerplexity.js";
import {trainer} from "./helpers/trainer.js";

const examples: SftExample[] = Array.from({length: 12}, (_, i) => {
    const a = (i % 5) + 2, b = (i % 4) + 3;
    return {
        question: `What is ${a} plus ${b}?`,
        response: formatThought({thought: `${a} and ${b}: count on from ${a}, ${b} more, gives ${a + b}.`, solution: `The sum is ${a + b}.`})
    };
});

const base = {
    systemPrompt: null, ctx: 256, threads: 1, seed: 3,
    lora: {rank: 8, alpha: 16},
    optimizer: {lr: 3e-3, warmupSteps: 2}
} as const;

describe("sft on the tiny model", () => {
    let modelPath: string;
    let model: Model;
    let adapterPath: string;
    beforeAll(async () => {
        modelPath = await testModel("tiny");
        model = await loadModel(modelPath);
        adapterPath = path.join(tmpDir, "sft-adapter.gguf");
    });
    afterAll(() => model?.dispose());

    const records = () => examples.map((e) => {
        const t = tokenizeChat(model, [{role: "user", content: (e as {question: string}).question},
            {role: "assistant", content: (e as {response: string}).response}]);
        return {prompt: t.prompt, completion: t.completion.slice(0, t.completionWeights.lastIndexOf(1) + 1)};
    });

    it("lowers the NLL of its data as our scorer measures it with the adapter, and llama.cpp's loader accepts the adapter", async () => {
        const result = await sft({...base, model: modelPath, data: examples, out: adapterPath, epochs: 6});
        expect(result.steps).toBeGreaterThan(5);
        expect(result.history.length).toBe(result.steps);
        expect(result.history.at(-1)!.loss).toBeLessThan(result.history[0]!.loss);

        const adapter = await model.loadAdapter(adapterPath); // llama_adapter_lora_init
        const scorer = model.scorer({parallel: 4});
        const before = await scorer.score(records());
        scorer.setAdapters([{adapter, scale: 1}]);
        const after = await scorer.score(records());
        scorer.dispose();
        const nll = (rs: typeof before) => -rs.reduce((s, r) => s + r.sum, 0) / rs.reduce((s, r) => s + r.tokens, 0);
        // from ~ln(263) per token for random weights to well below it
        expect(nll(before)).toBeGreaterThan(5);
        expect(nll(after)).toBeLessThan(0.6 * nll(before));
    });

    it("applies its adapter as llama.cpp does: still-train's logits with the adapter give the scorer's log-probabilities", async () => {
        const adapter = await model.loadAdapter(adapterPath);
        const scorer = model.scorer({parallel: 2});
        scorer.setAdapters([{adapter, scale: 1}]);
        const recs = records().slice(0, 3);
        const scored = await scorer.score(recs);
        scorer.dispose();
        const V = model.facts.vocabSize;
        for (const [i, r] of recs.entries()) {
            const tokens = [...r.prompt, ...r.completion];
            const out = path.join(tmpDir, `adapter-logits-${i}.f32`);
            await trainer(["logits", "--model", modelPath, "--adapter", adapterPath, "--tokens", tokens.join(","), "--out", out]);
            const logits = new Float32Array(fs.readFileSync(out).buffer.slice(0));
            r.completion.forEach((tok, j) => {
                const row = logits.subarray((r.prompt.length - 1 + j) * V, (r.prompt.length + j) * V);
                const max = row.reduce((m, v) => Math.max(m, v), -Infinity);
                const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
                expect(Math.abs(row[tok]! - lse - scored[i]!.logprobs[j]!)).toBeLessThan(2e-3);
            });
        }
    });

    it("writes an adapter that llama.cpp's own llama-perplexity loads (--lora)", async () => {
        const text = records().map((r) => model.detokenize([...r.prompt, ...r.completion], {special: true})).join("").repeat(3);
        const textFile = path.join(tmpDir, "sft-ppl.txt");
        fs.writeFileSync(textFile, text);
        const ppl = (extra: string[]) => llamaPerplexity(modelPath, textFile, ["-c", "128", "-b", "512", "-t", "1", ...extra]);
        const plain = await ppl([]);
        const adapted = await ppl(["--lora", adapterPath]);
        expect(plain).toBeGreaterThan(100);
        expect(adapted).toBeLessThan(plain / 2);
    }, 120_000);

    it("trains every weight with full: true and writes a model llama.cpp loads, with a lower NLL", async () => {
        const small = await testModel("tiny-qwen2");
        const out = path.join(tmpDir, "full.gguf");
        const r = await sft({...base, model: small, data: examples, out, full: true, epochs: 4, optimizer: {lr: 2e-3}});
        expect(r.done.out).toBe(out);
        const before = await loadModel(small);
        const after = await loadModel(out);
        try {
            expect(after.facts.architecture).toBe("qwen2");
            const recs = examples.map((e) => tokenizeChat(before, [{role: "user", content: (e as {question: string}).question},
                {role: "assistant", content: (e as {response: string}).response}])).map((t) => ({prompt: t.prompt, completion: t.completion}));
            const nll = async (m: Model) => {
                const s = m.scorer({parallel: 4});
                const rs = await s.score(recs);
                s.dispose();
                return -rs.reduce((a, x) => a + x.sum, 0) / rs.reduce((a, x) => a + x.tokens, 0);
            };
            expect(await nll(after)).toBeLessThan(0.7 * await nll(before));
        } finally {
            await before.dispose();
            await after.dispose();
        }
    });

    it("runs from the command line: still train sft … --json", async () => {
        const data = path.join(tmpDir, "cli-sft.jsonl");
        fs.writeFileSync(data, examples.map((e) => JSON.stringify(e)).join("\n") + "\n");
        const out = path.join(tmpDir, "cli-sft.gguf");
        const res = await execa(process.execPath, [path.join(packageRoot, "dist", "src", "cli", "main.js"), "train", "sft", "--model", modelPath,
            "--data", data, "--out", out, "--no-system", "--ctx", "256", "--max-steps", "2", "--threads", "1", "--json"], {reject: false});
        expect(res.exitCode, res.stderr).toBe(0);
        const summary = JSON.parse(res.stdout.trim()) as {out: string, steps: number, records: number};
        expect(summary).toMatchObject({out, steps: 2, records: examples.length});
        const bad = await execa(process.execPath, [path.join(packageRoot, "dist", "src", "cli", "main.js"), "train", "sft", "--model", modelPath,
            "--data", data, "--out", out, "--rank", "zero"], {reject: false});
        expect(bad.exitCode).toBe(1);
        expect(bad.stderr).toMatch(/^still: error: invalid options/);
    });

    it("trains only the thought with mask 'thought'", async () => {
        const result = await sft({...base, model: modelPath, data: examples.slice(0, 4), out: path.join(tmpDir, "thought.gguf"), mask: "thought", maxSteps: 1});
        // the records hold the thought's tokens with weight 1 and nothing else
        const bin = fs.readFileSync(path.join(result.workDir, "data.bin"));
        const n = bin.readUInt32LE(32);
        const tokens = Array.from({length: n}, (_, j) => bin.readInt32LE(36 + 4 * j));
        const weights = Array.from({length: n}, (_, j) => bin.readFloatLE(36 + 4 * n + 4 * j));
        const trained = tokens.filter((_, j) => weights[j] === 1);
        const text = model.detokenize(trained, {special: true});
        expect(text.startsWith("<|begin_of_thought|>")).toBe(true);
        expect(text.endsWith("<|end_of_thought|>")).toBe(true);
        expect(text).not.toContain("solution");
    });
});

describe("stopping and resuming sft", () => {
    const options = (out: string) => ({...base, model: "", data: examples, out, epochs: 3, saveEvery: 3});

    it("resumes after a stop: same step count, the loss curve continues, the same adapter as an uninterrupted run", async () => {
        const modelPath = await testModel("tiny");
        const whole = await sft({...options(path.join(tmpDir, "whole.gguf")), model: modelPath});
        const steps = whole.steps;
        expect(steps).toBeGreaterThan(6);

        const out = path.join(tmpDir, "stopped.gguf");
        const controller = new AbortController();
        const err = await sft({...options(out), model: modelPath, signal: controller.signal,
            onProgress: (e) => { if (e.type === "step" && e.step === 4) controller.abort(); }}).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(AbortError);
        const stoppedAt = Number(/cancelled at step (\d+)/.exec((err as Error).message)?.[1]);
        expect(stoppedAt).toBeGreaterThanOrEqual(4);
        expect(stoppedAt).toBeLessThan(steps);
        expect(fs.existsSync(out)).toBe(false);

        const resumed = await sft({...options(out), model: modelPath, resume: true});
        expect(resumed.startStep).toBe(stoppedAt);
        expect(resumed.steps).toBe(steps);
        expect(resumed.history.map((e) => e.step)).toEqual(Array.from({length: steps - stoppedAt}, (_, i) => stoppedAt + 1 + i));
        // the curve continues exactly where the uninterrupted run went
        expect(resumed.history.map((e) => e.loss)).toEqual(whole.history.slice(stoppedAt).map((e) => e.loss));
        expect(fs.readFileSync(out).equals(fs.readFileSync(whole.out))).toBe(true);
        const metrics = fs.readFileSync(path.join(resumed.workDir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).step);
        expect(metrics).toEqual(Array.from({length: steps}, (_, i) => i + 1));
    });

    it("resumes after a hard kill from its last periodic checkpoint", async () => {
        const modelPath = await testModel("tiny");
        const whole = await sft({...options(path.join(tmpDir, "whole2.gguf")), model: modelPath});
        const out = path.join(tmpDir, "killed.gguf");
        // write the run's input and start the trainer by hand, to kill it with SIGKILL
        const first = await sft({...options(out), model: modelPath, maxSteps: 1}); // makes the run directory and data file
        const resolved = trainingOptionsSchema.parse({...options(out), model: modelPath, workDir: first.workDir});
        const {command, backendDir} = trainerBinary(getBackend());
        const child = execa(command, ["sft", ...trainerArgs(resolved, {data: path.join(first.workDir, "data.bin"),
            checkpoint: path.join(first.workDir, "checkpoint.gguf")}), "--backend-dir", backendDir], {reject: false, buffer: false});
        let lastCheckpoint = 0;
        let killed = false;
        for await (const line of child.iterable({from: "stdout"})) {
            const e = JSON.parse(String(line)) as {type: string, step: number};
            if (e.type === "checkpoint") lastCheckpoint = e.step;
            if (e.type === "step" && e.step === 5 && !killed) {
                killed = child.kill("SIGKILL");
            }
        }
        const res = await child;
        expect(res.signal).toBe("SIGKILL");
        expect(lastCheckpoint).toBe(3);

        const resumed = await sft({...options(out), model: modelPath, resume: true});
        expect(resumed.startStep).toBe(3);
        expect(resumed.steps).toBe(whole.steps);
        expect(resumed.history.map((e) => e.loss)).toEqual(whole.history.slice(3).map((e) => e.loss));
        expect(fs.readFileSync(out).equals(fs.readFileSync(whole.out))).toBe(true);
    });
});
