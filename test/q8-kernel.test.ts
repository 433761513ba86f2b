// still's own Q8_0 matrix-product kernel (native/engine/q8_gemm.cpp), on only with
// STILL_Q8_GEMM=1 and on CPUs with AVX-512 VNNI. The backend is chosen once per process,
// so the kernel's figures come from a child process and are set against this one's.
import {execa} from "execa";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {getBackend} from "../src/engine/binding.js";
import {loadModel, type Model} from "../src/engine/Model.js";
import {hasAvx512Vnni as vnni} from "./helpers/cpu.js";
import {testModel} from "./helpers/models.js";

const text = "Hello my name is Q and 6×7 = 42; the quick brown fox jumps over the lazy dog.";
const requests = Array.from({length: 40}, (_, i) => ({id: `q${i}`, prompt: `${["Hello my name is", "数学: 1 + 1 = ", "Once upon a time"][i % 3]} ${i}`}));
const greedy = {temperature: 0, maxTokens: 12, stopAfter: [] as string[]};

// What the child computes, and this process too: the logits of every position of `text`,
// and greedy completions at 8 and 32 sequences.
const script = `
import {loadModel} from "./dist/src/index.js";
import {getBackend} from "./dist/src/engine/binding.js";
const [file, text, requests, greedy] = JSON.parse(process.argv[1]);
const model = await loadModel(file);
const logits = (await model.logits(model.tokenize(text, {special: true, addSpecial: true}))).map((r) => Array.from(r));
const outputs = [];
for (const parallel of [8, 32]) {
    const engine = model.rollouts({parallel});
    const tokens = new Map();
    for await (const s of engine.generate(requests, greedy)) tokens.set(s.id, s.tokens.join(","));
    outputs.push(requests.map((r) => tokens.get(r.id)));
}
await model.dispose();
process.stdout.write(JSON.stringify({devices: getBackend().devices.map((d) => d.name), kernel: getBackend().binding.q8Kernel(), logits, outputs}) + "\\n");
`;

type Result = {devices: string[], kernel: {active: boolean, status: string, products: number}, logits: number[][], outputs: string[][]};

async function compute(model: Model): Promise<Result> {
    const logits = (await model.logits(model.tokenize(text, {special: true, addSpecial: true}))).map((r) => Array.from(r));
    const outputs: string[][] = [];
    for (const parallel of [8, 32]) {
        const tokens = new Map<string, string>();
        for await (const s of model.rollouts({parallel}).generate(requests, greedy)) tokens.set(s.id, s.tokens.join(","));
        outputs.push(requests.map((r) => tokens.get(r.id)!));
    }
    return {devices: getBackend().devices.map((d) => d.name), kernel: getBackend().binding.q8Kernel(), logits, outputs};
}

describe.each(["tiny", "tiny-qwen2"] as const)("the Q8_0 kernel on %s", (preset) => {
    let file: string;
    let model: Model;
    let here: Result;
    let kernel: Result;
    beforeAll(async () => {
        file = await testModel(preset, "q8_0");
        model = await loadModel(file);
        here = await compute(model);
        if (!vnni) return;
        const res = await execa(process.execPath, ["--input-type=module", "-e", script, JSON.stringify([file, text, requests, greedy])],
            {env: {STILL_Q8_GEMM: "1"}});
        kernel = JSON.parse(res.stdout.trim().split("\n").at(-1)!) as Result;
    }, 120_000);
    afterAll(() => model?.dispose());

    it("is off unless asked for", () => {
        expect(here.devices).not.toContain("still-q8");
        expect(here.kernel).toMatchObject({active: false, products: 0});
        expect(here.kernel.status).toMatch(/^off/);
    });

    it.skipIf(!vnni)("is on with STILL_Q8_GEMM=1 and gives llama.cpp's logits to rounding", () => {
        expect(kernel.devices).toContain("still-q8");
        expect(kernel.kernel.active).toBe(true);
        // every layer's products of every batch of 8 columns or more: prompt, decode steps
        expect(kernel.kernel.products).toBeGreaterThan(50);
        expect(kernel.logits).toHaveLength(here.logits.length);
        let maxDiff = 0, scale = 0, argmaxDiffers = 0;
        for (const [i, row] of kernel.logits.entries()) {
            const ref = here.logits[i]!;
            for (const [j, v] of row.entries()) {
                maxDiff = Math.max(maxDiff, Math.abs(v - ref[j]!));
                scale = Math.max(scale, Math.abs(ref[j]!));
            }
            const top = (r: number[]) => r.indexOf(Math.max(...r));
            if (top(row) !== top(ref)) argmaxDiffers++;
        }
        // Products equal to float rounding; the next layer's Q8_0 activations turn some
        // roundings into a step of one quant, so logits move by about 1e-3 of their scale.
        expect(maxDiff).toBeLessThan(0.05 * scale);
        expect(argmaxDiffers).toBeLessThanOrEqual(1);
    });

    it.skipIf(!vnni)("gives the same greedy outputs at 8 and 32 sequences (each column's sums do not depend on the batch)", () => {
        expect(kernel.outputs[1]).toEqual(kernel.outputs[0]);
        // and most of them are llama.cpp's own
        const same = kernel.outputs[0]!.filter((o, i) => o === here.outputs[0]![i]).length;
        expect(same).toBeGreaterThanOrEqual(30);
    });
});
