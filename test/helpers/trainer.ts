// Running still-train directly, and writing its input, for the trainer's tests.
import fs from "node:fs";
import path from "node:path";
import {expect} from "vitest";
import {getBackend} from "../../src/engine/binding.js";
import {type TrainerEvent, runTrainer, trainerBinary} from "../../src/train/runTrainer.js";
import {TrainingFile} from "../../src/train/TrainingFile.js";
import {tmpDir} from "./models.js";

/** Runs a still-train command on this process's variant, one thread; returns its events. */
export async function trainer(args: string[], options: {signal?: AbortSignal, onEvent?: (e: TrainerEvent) => void} = {}): Promise<TrainerEvent[]> {
    const {command, backendDir} = trainerBinary(getBackend());
    const run = await runTrainer(command, [...args, "--backend-dir", backendDir, "--threads", "1"], options);
    return run.events;
}

let fileNo = 0;

/** The gradients of one `still-train grad-check` pass (args: its options; --dump-grads is added), and how many products took still's F32 and Q8_0 kernels. */
export async function gradientDump(args: string[]): Promise<{grads: Float32Array, f32Products: number | undefined, q8Products: number | undefined}> {
    const out = path.join(tmpDir, `grads-${fileNo++}.bin`);
    const events = await trainer(["grad-check", ...args, "--dump-grads", out]);
    const check = events.find((e) => e.type === "grad_check");
    const buf = fs.readFileSync(out);
    const summary = check?.type === "grad_check" ? check : undefined;
    return {grads: new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4), f32Products: summary?.f32_products, q8Products: summary?.q8_products};
}

/** Largest |a − b| over the largest |a|: the relative difference of two gradient dumps. */
export function relDiff(a: Float32Array, b: Float32Array): number {
    expect(b.length).toBe(a.length);
    let diff = 0, scale = 0;
    for (let i = 0; i < a.length; i++) {
        diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
        scale = Math.max(scale, Math.abs(a[i]!));
    }
    expect(scale).toBeGreaterThan(0);
    return diff / scale;
}

/** ‖a − b‖ / ‖a‖: a tensor's relative error. (Twenty AdamW steps turn last-place differences
 * of near-zero gradients into differences of a few lr in single entries, so the largest
 * entry's difference is not the measure for weights.) */
export function normDiff(a: Float32Array, b: Float32Array): number {
    expect(b.length).toBe(a.length);
    let diff = 0, norm = 0;
    for (let i = 0; i < a.length; i++) {
        diff += (a[i]! - b[i]!) ** 2;
        norm += a[i]! ** 2;
    }
    return Math.sqrt(diff / norm);
}

/** An SFT data file of random token sequences with loss weights 0, 0.5 and 1. */
export async function randomSftData(vocab: number, count: number, seed = 1): Promise<string> {
    const file = path.join(tmpDir, `sft-${fileNo++}.bin`);
    const out = await TrainingFile.create(file, "sft", vocab);
    let s = seed;
    const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let i = 0; i < count; i++) {
        const n = 8 + Math.floor(rnd() * 12);
        const tokens = Array.from({length: n}, () => Math.floor(rnd() * vocab));
        const weights = tokens.map((_, j) => (j < 3 ? 0 : j % 5 === 0 ? 0.5 : 1));
        await out.addSft({tokens, weights});
    }
    await out.close();
    return file;
}

/** A DPO data file of random pairs (prompt, chosen, rejected), the SFT term on every other chosen token. */
export async function randomDpoData(vocab: number, count: number, seed = 2): Promise<string> {
    const file = path.join(tmpDir, `dpo-${fileNo++}.bin`);
    const out = await TrainingFile.create(file, "dpo", vocab);
    let s = seed;
    const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
    const toks = (k: number) => Array.from({length: k}, () => Math.floor(rnd() * vocab));
    for (let i = 0; i < count; i++) {
        const chosen = toks(4 + Math.floor(rnd() * 6));
        const rejected = toks(4 + Math.floor(rnd() * 6));
        await out.addDpo({
            prompt: toks(3 + Math.floor(rnd() * 4)),
            chosen, chosenWeights: chosen.map(() => 1), chosenSftWeights: chosen.map((_, j) => (j % 2 ? 1 : 0.5)),
            rejected, rejectedWeights: rejected.map(() => 1)
        });
    }
    await out.close();
    return file;
}
