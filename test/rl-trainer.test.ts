// The trainer's side of online RL: the GRPO / DAPO / Dr.GRPO losses by hand on a 2-prompt ×
// 3-sample batch (still-train policy-loss), clipping exactly on the advantage's side, equal
// groups contributing nothing, gradients against central finite differences on a tiny
// model, the chunked step equal to the one-graph step, and the resident trainer (still-train
// serve): its line protocol, errors that leave it serving, and a resume after kill -9 that
// ends with the same adapter as an uninterrupted run.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {describe, expect, it} from "vitest";
import {getBackend} from "../src/engine/binding.js";
import {readGgufHeader} from "../src/engine/readGguf.js";
import {TrainerError} from "../src/errors.js";
import {ResidentTrainer} from "../src/rl/ResidentTrainer.js";
import {trainerBinary} from "../src/train/runTrainer.js";
import {TrainingFile} from "../src/train/TrainingFile.js";
import {testModel, tmpDir} from "./helpers/models.js";
import {gradientDump, relDiff, trainer} from "./helpers/trainer.js";

type LossOut = {loss: number, advantages: number[], coef: number[][], kl: number, clip_low: number, clip_high: number, tokens: number};
type Sample = {group: number, reward: number, lp: number[], old?: number[], ref?: number[], sampler?: number[]};

async function policyLoss(samples: Sample[], args: string[] = []): Promise<LossOut> {
    const {command} = trainerBinary(getBackend());
    const r = await execa(command, ["policy-loss", ...args], {input: JSON.stringify({samples}), reject: false});
    if (r.exitCode !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout) as LossOut;
}

async function policyLossError(samples: Sample[], args: string[] = []): Promise<string> {
    const {command} = trainerBinary(getBackend());
    const r = await execa(command, ["policy-loss", ...args], {input: JSON.stringify({samples}), reject: false});
    expect(r.exitCode).toBe(1);
    return r.stderr;
}

// Two prompts, three samples each. Group 0 has rewards 1, −1, −1; group 1 is all 1 (equal).
// Sample 0's first token moved up since sampling (ratio e^0.125), sample 1's down (e^−0.125),
// sample 2's second token up by 0.25 (ratio 1.28, outside 1 ± 0.2, but A < 0 there). (Log-probs
// the trainer holds in F32: these are exact in it.)
const batch: Sample[] = [
    {group: 0, reward: 1, lp: [-0.5, -1.0], old: [-0.625, -1.0]},
    {group: 0, reward: -1, lp: [-0.25], old: [-0.125]},
    {group: 0, reward: -1, lp: [-2.0, -0.125, -0.375], old: [-2.0, -0.375, -0.375]},
    {group: 1, reward: 1, lp: [-0.1], old: [-0.1]},
    {group: 1, reward: 1, lp: [-0.3, -0.3], old: [-0.3, -0.3]},
    {group: 1, reward: 1, lp: [-0.7], old: [-0.7]}
];

describe("policy losses by hand (2 prompts × 3 samples)", () => {
    // group 0: mean −1/3, deviations 4/3, −2/3, −2/3; sample std √(24/9 / 2) = √(4/3)
    const std = Math.sqrt(4 / 3);
    const scaled = [(4 / 3) / (std + 1e-4), (-2 / 3) / (std + 1e-4), (-2 / 3) / (std + 1e-4), 0, 0, 0];
    const plain = [4 / 3, -2 / 3, -2 / 3, 0, 0, 0];
    const r = {a: Math.exp(0.125), b: Math.exp(-0.125), c: Math.exp(0.25)};
    // −min(ρA, clip(ρ)A) per token of group 0 (group 1 has A = 0)
    const terms = (A: number[]) => [
        [-r.a * A[0]!, -A[0]!],
        [-r.b * A[1]!], // ρ = 0.88 inside the band
        [-A[2]!, -r.c * A[2]!, -A[2]!] // ρ = 1.28 above the band, but A < 0: the unclipped ρA is the min's choice
    ];

    it("grpo: per-sequence mean, then mean over the 6 samples; coefficients −norm·∂ℓ/∂lp", async () => {
        const out = await policyLoss(batch, ["--policy-loss", "grpo"]);
        expect(out.advantages.map((a, i) => a - scaled[i]!).every((d) => Math.abs(d) < 1e-12)).toBe(true);
        const t = terms(scaled);
        const expected = (t[0]![0]! + t[0]![1]!) / (6 * 2) + t[1]![0]! / 6 + (t[2]![0]! + t[2]![1]! + t[2]![2]!) / (6 * 3);
        expect(out.loss).toBeCloseTo(expected, 12);
        expect(out.coef[0]![0]).toBeCloseTo(scaled[0]! * r.a / 12, 7);
        expect(out.coef[1]![0]).toBeCloseTo(scaled[1]! * r.b / 6, 7);
        expect(out.coef[2]![1]).toBeCloseTo(scaled[2]! * r.c / 18, 7);
        expect(out.coef.slice(3).flat()).toEqual([0, 0, 0, 0]);
        expect([out.clip_low, out.clip_high, out.tokens]).toEqual([0, 0, 10]);
    });

    it("dapo: token-level mean over the batch's 10 tokens", async () => {
        const out = await policyLoss(batch, ["--policy-loss", "dapo", "--clip-high", "0.28"]);
        const t = terms(scaled);
        expect(out.loss).toBeCloseTo(t.flat().reduce((a, b) => a + b, 0) / 10, 12);
        expect(out.coef[2]![1]).toBeCloseTo(scaled[2]! * r.c / 10, 7);
    });

    it("dr_grpo: no std scaling, a constant length normaliser (N × L)", async () => {
        const out = await policyLoss(batch, ["--policy-loss", "dr_grpo", "--max-completion", "4"]);
        expect(out.advantages).toEqual(plain.map((a) => expect.closeTo(a, 12)));
        const t = terms(plain);
        expect(out.loss).toBeCloseTo(t.flat().reduce((a, b) => a + b, 0) / (6 * 4), 12);
        expect(out.coef[0]![1]).toBeCloseTo(plain[0]! / 24, 7);
    });

    it("KL (k3, β) and truncated importance sampling on one token", async () => {
        // one group of two: rewards 1 and 0 → A = ±0.5 / (std 0.7071 + 1e-4)
        const A = 0.5 / (Math.SQRT1_2 + 1e-4);
        const s: Sample[] = [
            {group: 0, reward: 1, lp: [-1.0], old: [-1.125], ref: [-1.25], sampler: [-1.5]},
            {group: 0, reward: 0, lp: [-0.375], old: [-0.375], ref: [-0.375], sampler: [-0.375]}
        ];
        const out = await policyLoss(s, ["--kl-beta", "0.1", "--tis-cap", "1.2"]);
        const rho = Math.exp(0.125), w = Math.min(Math.exp(-1.125 + 1.5), 1.2); // w capped at 1.2
        const d = -1.25 + 1.0, kl = Math.exp(d) - d - 1;
        const l0 = -rho * A * w + 0.1 * kl, l1 = A * 1; // sample 1: ρ = 1, w = 1, A = −A
        expect(out.loss).toBeCloseTo((l0 + l1) / 2, 10);
        expect(out.coef[0]![0]).toBeCloseTo(-(1 / 2) * (-A * rho * w + 0.1 * (1 - Math.exp(d))), 7);
        expect(out.kl).toBeCloseTo(kl / 2, 10);
    });

    it("clipping zeroes the gradient exactly where the ratio left its band on the advantage's side", async () => {
        const ratios = [0.5, 0.79, 0.9, 1.1, 1.21, 1.5];
        const lp = ratios.map((x) => Math.log(x) - 1);
        const old = ratios.map(() => -1);
        const out = await policyLoss([{group: 0, reward: 1, lp, old}, {group: 0, reward: 0, lp, old}]);
        // A > 0: only ratios above 1.2 are clipped; A < 0: only those below 0.8
        expect(out.coef[0]!.map((c) => c === 0)).toEqual([false, false, false, false, true, true]);
        expect(out.coef[1]!.map((c) => c === 0)).toEqual([true, true, false, false, false, false]);
        expect([out.clip_low, out.clip_high]).toEqual([2, 2]);
        // and the surviving coefficients are ±norm·|A|·ρ
        const A = 0.5 / (Math.SQRT1_2 + 1e-4);
        expect(out.coef[0]![0]).toBeCloseTo(A * 0.5 / 12, 7);
        expect(out.coef[1]![5]).toBeCloseTo(-A * 1.5 / 12, 7);
    });

    it("all-equal groups contribute nothing, whatever their ratios", async () => {
        const out = await policyLoss([
            {group: 3, reward: -2, lp: [-1, -2], old: [-1.5, -1]},
            {group: 3, reward: -2, lp: [-0.1], old: [-0.9]},
            {group: 3, reward: -2, lp: [-3], old: [-3]}
        ]);
        expect(out.advantages).toEqual([0, 0, 0]);
        expect(out.coef.flat().every((c) => c === 0)).toBe(true);
        expect(out.loss).toBe(0);
    });

    it("refuses impossible options before any work", async () => {
        expect(await policyLossError([{group: 0, reward: 1, lp: [-1]}, {group: 1, reward: 0, lp: [-1]}]))
            .toMatch(/group 0 has one sample; scaling advantages by the group's reward std needs at least 2/);
        expect(await policyLossError(batch, ["--clip-low", "0.3", "--clip-high", "0.2"])).toMatch(/--clip-high \(ε_high\) is below --clip-low/);
        // without std scaling a group of one is fine (its advantage is 0)
        expect((await policyLoss([{group: 0, reward: 1, lp: [-1]}], ["--scale-rewards", "none"])).advantages).toEqual([0]);
    });
});

let files = 0;
/** Policy samples on a tiny model's vocabulary: `groups` prompts × `g` samples, rewards from {1, −1, −2, 0.5}. */
async function policyData(groups: number, g: number, seed: number, len = 6): Promise<string> {
    const file = path.join(tmpDir, `policy-${files++}.bin`);
    const out = await TrainingFile.create(file, "policy", 263);
    let s = seed;
    const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
    const toks = (k: number) => Array.from({length: k}, () => Math.floor(rnd() * 263));
    for (let k = 0; k < groups; k++) {
        const prompt = toks(4 + Math.floor(rnd() * 4));
        for (let i = 0; i < g; i++) {
            const completion = toks(len + Math.floor(rnd() * 6));
            await out.addPolicy({prompt, completion, reward: [1, -1, -2, 0.5][Math.floor(rnd() * 4)]!, group: k,
                samplerLogprobs: completion.map(() => -5.5 + rnd())});
        }
    }
    await out.close();
    return file;
}

describe("policy gradients on a tiny model", () => {
    for (const [loss, extra] of [["grpo", []], ["dapo", ["--clip-high", "0.28"]], ["dr_grpo", ["--max-completion", "16"]]] as const) {
        it(`${loss}: the clipped ratio, KL and importance weights against central finite differences`, async () => {
            const model = await testModel("tiny");
            const data = await policyData(2, 3, 7);
            // old and reference log-probs moved off by up to 0.3 per token: ratios on both sides of the band
            const events = await trainer(["grad-check", "--model", model, "--data", data, "--init-random-b", "--ctx", "256", "--policy-loss", loss,
                ...extra, "--kl-beta", "0.1", "--tis-cap", "2", "--ref-shift", "0.3", "--fd-step", "1e-2"]);
            const summary = events.find((e) => e.type === "grad_check")!;
            expect(summary).toMatchObject({tensors: 56});
            if (summary.type === "grad_check") expect(summary.worst_rel_error).toBeLessThan(1e-2);
        }, 240_000);
    }

    it("at a sampling temperature (logits / T): the clipped ratio, KL and importance weights against finite differences", async () => {
        const model = await testModel("tiny");
        const data = await policyData(2, 3, 13);
        // (a smaller step than the tests above: at 1e-2 a ratio of this data crosses its band's edge inside the difference)
        const events = await trainer(["grad-check", "--model", model, "--data", data, "--init-random-b", "--ctx", "256", "--policy-loss", "grpo",
            "--temperature", "0.6", "--kl-beta", "0.1", "--tis-cap", "2", "--ref-shift", "0.3", "--fd-step", "3e-3"]);
        const summary = events.find((e) => e.type === "grad_check")!;
        if (summary.type === "grad_check") expect(summary.worst_rel_error).toBeLessThan(1e-2);
    }, 240_000);

    it("the one-pass step (the old policy is the current one) against finite differences", async () => {
        const model = await testModel("tiny");
        const data = await policyData(2, 4, 11);
        const events = await trainer(["grad-check", "--model", model, "--data", data, "--init-random-b", "--ctx", "256", "--ref-shift", "0", "--fd-step", "1e-2"]);
        const summary = events.find((e) => e.type === "grad_check")!;
        if (summary.type === "grad_check") expect(summary.worst_rel_error).toBeLessThan(1e-2);
    }, 240_000);

    it("chunked with recomputation gives the one-graph step's gradients", async () => {
        const model = await testModel("tiny-qwen2");
        const data = await policyData(3, 3, 5);
        const grads = async (recompute: string) => (await gradientDump(["--model", model, "--data", data, "--init-random-b", "--no-finite-differences",
            "--ctx", "64", "--block-tokens", "16", "--loss-rows", "5", "--policy-loss", "dapo", "--kl-beta", "0.1", "--tis-cap", "2", "--ref-shift", "0.3",
            "--recompute", recompute])).grads;
        expect(relDiff(await grads("off"), await grads("on"))).toBeLessThan(1e-4);
    }, 120_000);
});

/** An adapter's tensor bytes, for exact comparison. */
async function adapterBytes(file: string): Promise<Buffer> {
    const header = await readGgufHeader(file);
    return fs.readFileSync(file).subarray(header.dataOffset);
}

describe("the resident trainer (still-train serve)", () => {
    const options = async (dir: string) => ({
        model: await testModel("tiny"), checkpoint: path.join(dir, "ckpt.gguf"), ctx: 128, lora: {rank: 4, alpha: 8},
        policy: {loss: "grpo" as const, klBeta: 0.05}, threads: 1
    });

    it("takes steps, saves, checkpoints; a bad file or command is answered and it keeps serving", async () => {
        const dir = fs.mkdtempSync(path.join(tmpDir, "serve-"));
        const data = await policyData(2, 4, 3);
        const t = await ResidentTrainer.start(await options(dir));
        try {
            expect(t.ready).toMatchObject({step: 0, policy_step: 0, resumed: false, loss: "grpo"});
            expect(t.plan?.tokens).toBe(128);
            const s1 = await t.step({data, lr: 1e-2});
            expect(s1).toMatchObject({step: 1, updates: 1, samples: 8, kl: 0});
            expect(s1["seconds/ref_logps"]).toBeGreaterThan(0);
            const missing = path.join(dir, "missing.bin");
            await expect(t.step({data: missing, lr: 1e-2})).rejects.toThrow(new RegExp(`cannot read the data file ${missing}`));
            const sft = path.join(dir, "sft.bin");
            const f = await TrainingFile.create(sft, "sft", 263);
            await f.addSft({tokens: [1, 2, 3], weights: [0, 1, 1]});
            await f.close();
            await expect(t.step({data: sft, lr: 1e-2})).rejects.toThrow(/holds sft records; a step takes policy samples/);
            // still serving: two minibatches × two iterations are four more updates
            const s2 = await t.step({data, lr: 1e-2, minibatches: 2, iterations: 2});
            expect(s2).toMatchObject({step: 5, updates: 4});
            expect(s2.kl).toBeGreaterThan(0);
            await t.save(path.join(dir, "a.gguf"));
            expect((await readGgufHeader(path.join(dir, "a.gguf"))).tensors.length).toBe(56);
            await t.checkpoint(2);
        } finally {
            await t.stop();
        }
        expect(t.alive).toBe(false);
        const again = await ResidentTrainer.start(await options(dir));
        expect(again.ready).toMatchObject({step: 5, policy_step: 2, resumed: true});
        await again.stop();
    }, 120_000);

    it("scores completions at the sampling temperature: log softmax(logits / T) of the model's logits", async () => {
        const model = await testModel("tiny");
        const prompt = [5, 17, 200, 3], completion = [44, 9, 130, 250, 7];
        const all = [...prompt, ...completion];
        const logitsFile = path.join(tmpDir, "temperature-logits.f32");
        await trainer(["logits", "--model", model, "--tokens", all.join(","), "--out", logitsFile]);
        const buf = fs.readFileSync(logitsFile);
        const logits = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
        const vocab = logits.length / all.length;
        // the completion's log-probs at temperature T, from the logits by hand (in doubles)
        const expected = (T: number) => completion.map((tok, i) => {
            const row = logits.subarray((prompt.length - 1 + i) * vocab, (prompt.length + i) * vocab);
            const max = Math.max(...row);
            let sum = 0;
            for (const z of row) sum += Math.exp((z - max) / T);
            return (row[tok]! - max) / T - Math.log(sum);
        });
        const lp06 = expected(0.6), lp1 = expected(1);
        expect(Math.max(...lp06.map((v, i) => Math.abs(v - lp1[i]!)))).toBeGreaterThan(0.05);
        for (const T of [0.6, 1]) {
            const dir = fs.mkdtempSync(path.join(tmpDir, "serve-t-"));
            const data = path.join(dir, "batch.bin");
            const f = await TrainingFile.create(data, "policy", 263);
            // the sampler's log-probs set to those at 0.6: the trainer's differ from them only when it scores at another temperature
            for (const reward of [1, -1]) await f.addPolicy({prompt, completion, reward, group: 0, samplerLogprobs: lp06});
            await f.close();
            const t = await ResidentTrainer.start({...await options(dir), policy: {loss: "grpo"}, temperature: T});
            try {
                const s = await t.step({data, lr: 1e-6});
                if (T === 0.6) expect(s["sampler/logp_diff"]).toBeLessThan(1e-4);
                else expect(s["sampler/logp_diff"]).toBeCloseTo(lp06.reduce((a, v, i) => a + Math.abs(v - lp1[i]!), 0) / lp06.length, 3);
            } finally {
                await t.stop();
            }
        }
    }, 120_000);

    it("after kill -9 mid-step, a restart from the checkpoint ends with the uninterrupted run's adapter", async () => {
        const batches = [await policyData(2, 4, 21), await policyData(2, 4, 22), await policyData(2, 4, 23)];
        // uninterrupted
        const a = fs.mkdtempSync(path.join(tmpDir, "serve-a-"));
        let t = await ResidentTrainer.start(await options(a));
        for (const data of batches) await t.step({data, lr: 1e-2, iterations: 2});
        await t.save(path.join(a, "out.gguf"));
        await t.stop();
        // killed during the second step, after a checkpoint at the first
        const b = fs.mkdtempSync(path.join(tmpDir, "serve-b-"));
        t = await ResidentTrainer.start(await options(b));
        await t.step({data: batches[0]!, lr: 1e-2, iterations: 2});
        await t.checkpoint(1);
        const killed = t.step({data: batches[1]!, lr: 1e-2, iterations: 2});
        t.kill();
        await expect(killed).rejects.toThrow(TrainerError);
        t = await ResidentTrainer.start(await options(b));
        expect(t.ready.policy_step).toBe(1);
        for (const data of batches.slice(t.ready.policy_step)) await t.step({data, lr: 1e-2, iterations: 2});
        await t.save(path.join(b, "out.gguf"));
        await t.stop();
        expect((await adapterBytes(path.join(b, "out.gguf"))).equals(await adapterBytes(path.join(a, "out.gguf")))).toBe(true);
    }, 120_000);
});
