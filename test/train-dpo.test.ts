// dpo() on a generated tiny model: the loss and rewards at step 0, learning a preference
// (held-out reward accuracy, confirmed by our scorer against the reference), thought-only
// alignment, continuing an SFT adapter, and cached or given reference log-probs.
import fs from "node:fs";
import path from "node:path";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {loadModel, type Model} from "../src/engine/Model.js";
import {AbortError} from "../src/errors.js";
import {formatThought} from "../src/format/formatThought.js";
import {type DpoPair, dpo, writeDpoData} from "../src/train/dpo.js";
import type {StepEvent, TrainerEvent} from "../src/train/runTrainer.js";
import {sft} from "../src/train/sft.js";
import {tokenizeChat} from "../src/train/tokenizeForTraining.js";
import {TrainingFile} from "../src/train/TrainingFile.js";
import {testModel, tmpDir} from "./helpers/models.js";
import {trainer} from "./helpers/trainer.js";

// A preference the tiny model can learn: the chosen answer reasons to "yes", the rejected one to "no".
const pair = (i: number): DpoPair => ({
    question: `Is ${i} a fine number?`,
    chosen: formatThought({thought: `Looking at ${i}, yes, it is fine.`, solution: "Yes."}),
    rejected: formatThought({thought: `Looking at ${i}, no, it is not.`, solution: "No."})
});
const trainPairs = Array.from({length: 16}, (_, i) => pair(i + 10));
const heldOut = Array.from({length: 12}, (_, i) => pair(i + 60));

const base = {systemPrompt: null, ctx: 512, threads: 1, seed: 5, lora: {rank: 8, alpha: 16}} as const;

describe("dpo on the tiny model", () => {
    let modelPath: string;
    let model: Model;
    beforeAll(async () => {
        modelPath = await testModel("tiny");
        model = await loadModel(modelPath);
    });
    afterAll(() => model?.dispose());

    /** Σ log p over the answer's trained tokens (up to its end-of-turn), per pair, by our scorer. */
    async function scoreAnswers(pairs: DpoPair[], adapterPath?: string) {
        const records = pairs.flatMap((p) => [p.chosen, p.rejected].map((answer) => {
            const t = tokenizeChat(model, [{role: "user", content: p.question!}, {role: "assistant", content: answer}]);
            return {prompt: t.prompt, completion: t.completion.slice(0, t.completionWeights.lastIndexOf(1) + 1)};
        }));
        const scorer = model.scorer({parallel: 4});
        if (adapterPath != null) scorer.setAdapters([{adapter: await model.loadAdapter(adapterPath), scale: 1}]);
        const results = await scorer.score(records);
        scorer.dispose();
        return pairs.map((_, i) => ({chosen: results[2 * i]!.sum, rejected: results[2 * i + 1]!.sum}));
    }

    it("starts at loss ln 2 with every reward 0, then learns the preference: held-out reward accuracy above 0.9, confirmed by our scorer", async () => {
        const out = path.join(tmpDir, "dpo.gguf");
        const steps: StepEvent[] = [];
        const beta = 0.1;
        const result = await dpo({...base, model: modelPath, pairs: trainPairs, out, beta, gradAccum: 2, epochs: 6,
            optimizer: {lr: 5e-3}, onProgress: (e) => { if (e.type === "step") steps.push(e); }});
        const first = steps[0]!;
        expect(Math.abs(first.loss - Math.LN2)).toBeLessThan(1e-4);
        for (const k of ["rewards/chosen", "rewards/rejected", "rewards/margins"] as const) expect(Math.abs(first[k]!)).toBeLessThan(1e-4);
        const last = steps.at(-1)!;
        expect(last.loss).toBeLessThan(0.3);
        expect(last["rewards/accuracies"]).toBe(1);
        expect(last["rewards/margins"]!).toBeGreaterThan(0);
        expect(result.steps).toBe(steps.length);

        // the reference is the base model (a fresh adapter starts as a no-op)
        for (const [name, pairs] of [["train", trainPairs], ["held out", heldOut]] as const) {
            const ref = await scoreAnswers(pairs);
            const pol = await scoreAnswers(pairs, out);
            const margins = pairs.map((_, i) => (pol[i]!.chosen - pol[i]!.rejected) - (ref[i]!.chosen - ref[i]!.rejected));
            const accuracy = margins.filter((m) => beta * m > 0).length / margins.length;
            expect(accuracy, name).toBeGreaterThan(0.9);
            expect(margins.reduce((a, b) => a + b, 0) / margins.length, name).toBeGreaterThan(1);
        }
    });

    it("with align 'thought', the answer after the thought gets no gradient from the DPO term", async () => {
        // two sets that differ only in the solutions (same lengths): the DPO term and its
        // gradients do not change with align "thought", and do with align "response"
        const make = (solutions: [string, string]) => Array.from({length: 4}, (_, i): DpoPair => ({
            question: `Case ${i}?`,
            chosen: formatThought({thought: `Case ${i} holds.`, solution: solutions[0]}),
            rejected: formatThought({thought: `Case ${i} fails.`, solution: solutions[1]})
        }));
        const check = async (pairs: DpoPair[], align: "response" | "thought") => {
            const file = path.join(tmpDir, `align-${align}-${pairs[0]!.chosen.length}-${Math.random()}.bin`);
            const tf = await TrainingFile.create(file, "dpo", model.facts.vocabSize);
            await writeDpoData(model, tf, pairs, align, 512, "error", null);
            await tf.close();
            const events = await trainer(["grad-check", "--model", modelPath, "--data", file, "--init-random-b", "--no-finite-differences", "--sft-alpha", "0"]);
            const check = events.find((e) => e.type === "grad_check") as Extract<TrainerEvent, {type: "grad_check"}>;
            const norms = events.filter((e): e is Extract<TrainerEvent, {type: "grad"}> => e.type === "grad").map((g) => g.grad_norm);
            return {loss: check.loss, norms};
        };
        const a = make(["Good.", "Gold."]);
        const b = make(["Bald.", "Bolt."]);
        const ta = await check(a, "thought");
        const tb = await check(b, "thought");
        expect(ta.norms.every((n) => n > 0)).toBe(true);
        expect(tb.loss).toBe(ta.loss);
        expect(tb.norms).toEqual(ta.norms);
        const ra = await check(a, "response");
        const rb = await check(b, "response");
        expect(rb.norms).not.toEqual(ra.norms);
    });

    it("continues an SFT adapter, which is then the reference (loss ln 2 at step 0), and takes reference log-probs from the caller", async () => {
        const sftOut = path.join(tmpDir, "for-dpo-sft.gguf");
        await sft({...base, model: modelPath, out: sftOut, maxSteps: 4, optimizer: {lr: 3e-3},
            data: trainPairs.map((p) => ({question: p.question!, response: p.chosen}))});
        const firstStep = async (extra: Record<string, unknown>) => {
            let first: StepEvent | undefined;
            const r = await dpo({...base, model: modelPath, pairs: trainPairs.slice(0, 6), out: path.join(tmpDir, `dpo-cont-${Math.random()}.gguf`),
                adapter: sftOut, maxSteps: 2, ...extra, onProgress: (e) => { if (e.type === "step") first ??= e; }});
            return {first: first!, result: r};
        };
        const own = await firstStep({});
        expect(Math.abs(own.first.loss - Math.LN2)).toBeLessThan(1e-4);
        // the caller's reference: our scorer with the SFT adapter, which is the starting policy
        const refs = await scoreAnswers(trainPairs.slice(0, 6), sftOut);
        const given = await firstStep({referenceLogps: refs});
        expect(Math.abs(given.first.loss - Math.LN2)).toBeLessThan(1e-3);
        expect(Math.abs(given.first["rewards/chosen"]!)).toBeLessThan(1e-3);
    });

    it("caches the reference log-probs: a resumed run does not compute them again, and continues the loss curve", async () => {
        const options = {...base, model: modelPath, pairs: trainPairs.slice(0, 8), epochs: 3, optimizer: {lr: 3e-3}};
        const whole = await dpo({...options, out: path.join(tmpDir, "dpo-whole.gguf")});
        const out = path.join(tmpDir, "dpo-stopped.gguf");
        const controller = new AbortController();
        const events: TrainerEvent[] = [];
        await expect(dpo({...options, out, signal: controller.signal, onProgress: (e) => {
            events.push(e);
            if (e.type === "step" && e.step === 3) controller.abort();
        }})).rejects.toBeInstanceOf(AbortError);
        expect(events.find((e) => e.type === "reference")).toMatchObject({cached: false});
        const resumedEvents: TrainerEvent[] = [];
        const resumed = await dpo({...options, out, resume: true, onProgress: (e) => resumedEvents.push(e)});
        expect(resumedEvents.find((e) => e.type === "reference")).toMatchObject({cached: true});
        expect(resumed.startStep).toBeGreaterThanOrEqual(3);
        expect(resumed.history.map((e) => e.loss)).toEqual(whole.history.slice(resumed.startStep).map((e) => e.loss));
        expect(fs.readFileSync(out).equals(fs.readFileSync(whole.out))).toBe(true);
    });
});
