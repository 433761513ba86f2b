// still's own Q8_0 matrix-product kernel (native/engine/q8_gemm.cpp), on CPUs with AVX-512
// VNNI (16-row tiles) or AVX-VNNI (8-row tiles; STILL_Q8_ISA=avxvnni runs them on a CPU that
// has both): by default for the output layer's products only (logits to float rounding,
// every hidden state ggml's); STILL_Q8_GEMM=all for every Q8_0 product, =0 for none. The
// backend is chosen once per process, so the other modes' figures come from child processes
// and are set against this one's (the default).
import {execa} from "execa";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {getBackend} from "../src/engine/binding.js";
import {loadModel, type Model} from "../src/engine/Model.js";
import {hasAvxVnni, hasAvx512Vnni} from "./helpers/cpu.js";
import {testModel} from "./helpers/models.js";

const text = "Hello my name is Q and 6×7 = 42; the quick brown fox jumps over the lazy dog.";
const requests = Array.from({length: 40}, (_, i) => ({id: `q${i}`, prompt: `${["Hello my name is", "数学: 1 + 1 = ", "Once upon a time"][i % 3]} ${i}`}));
const greedy = {temperature: 0, maxTokens: 12, stopAfter: [] as string[]};
// The kernel runs where the CPU has either width (unless STILL_Q8_ISA asks for one it lacks).
const forced = process.env.STILL_Q8_ISA;
const vnni = forced === "avx512vnni" ? hasAvx512Vnni : forced === "avxvnni" ? hasAvxVnni : hasAvx512Vnni || hasAvxVnni;
const widest = forced === "avxvnni" || !hasAvx512Vnni ? "AVX-VNNI" : "AVX-512 VNNI";

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

type Result = {devices: string[], kernel: {active: boolean, mode: string, status: string, isa: string, products: number}, logits: number[][], outputs: string[][]};

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

async function child(file: string, mode: string, isa?: string): Promise<Result> {
    const env = {STILL_Q8_GEMM: mode, STILL_Q8_ISA: isa ?? process.env.STILL_Q8_ISA};
    const res = await execa(process.execPath, ["--input-type=module", "-e", script, JSON.stringify([file, text, requests, greedy])], {env});
    return JSON.parse(res.stdout.trim().split("\n").at(-1)!) as Result;
}

/** The largest difference of two runs' logits, the largest logit, and the rows whose arg-max differs. */
function compare(a: Result, b: Result) {
    expect(a.logits).toHaveLength(b.logits.length);
    let maxDiff = 0, scale = 0, argmaxDiffers = 0;
    const top = (r: number[]) => r.indexOf(Math.max(...r));
    for (const [i, row] of a.logits.entries()) {
        const ref = b.logits[i]!;
        for (const [j, v] of row.entries()) {
            maxDiff = Math.max(maxDiff, Math.abs(v - ref[j]!));
            scale = Math.max(scale, Math.abs(ref[j]!));
        }
        if (top(row) !== top(ref)) argmaxDiffers++;
    }
    return {maxDiff, scale, argmaxDiffers};
}

describe.each(["tiny", "tiny-qwen2"] as const)("the Q8_0 kernel on %s", (preset) => {
    let file: string;
    let model: Model;
    let here: Result;
    let ggml: Result;
    let all: Result;
    let narrow: Result; // AVX-VNNI's 8-row tiles, the output layer's products
    let narrowAll: Result; // and every product
    beforeAll(async () => {
        file = await testModel(preset, "q8_0");
        model = await loadModel(file);
        here = await compute(model);
        ggml = await child(file, "0");
        if (vnni) all = await child(file, "all");
        if (hasAvxVnni) {
            narrow = await child(file, "output", "avxvnni");
            narrowAll = await child(file, "all", "avxvnni");
        }
    }, 180_000);
    afterAll(() => model?.dispose());

    it("is off with STILL_Q8_GEMM=0, and on CPUs without VNNI", () => {
        expect(ggml.devices).not.toContain("still-q8");
        expect(ggml.kernel).toMatchObject({active: false, mode: "off", products: 0});
        expect(ggml.kernel.status).toMatch(/^off \(STILL_Q8_GEMM=0\)/);
        if (!vnni) expect(here.kernel).toMatchObject({active: false, mode: "off", products: 0});
    });

    it("names a value of STILL_Q8_GEMM it does not know, and stays off", async () => {
        const res = await child(file, "fast");
        expect(res.kernel).toMatchObject({active: false, mode: "off", products: 0});
        expect(res.kernel.status).toContain("STILL_Q8_GEMM=fast is not one of output, all, 0");
        // the engine runs as with ggml's products
        expect(res.outputs).toEqual(ggml.outputs);
    }, 60_000);

    it("names an instruction set it does not know (STILL_Q8_ISA), and stays off", async () => {
        const res = await child(file, "output", "avx9");
        expect(res.kernel).toMatchObject({active: false, mode: "off", isa: "none", products: 0});
        expect(res.kernel.status).toContain("STILL_Q8_ISA=avx9 is not one of avx512vnni, avxvnni, auto");
        expect(res.outputs).toEqual(ggml.outputs);
    }, 60_000);

    it.skipIf(!vnni)("takes the output layer's products by default and gives llama.cpp's logits to float rounding, hidden states bit for bit", () => {
        expect(here.devices).toContain("still-q8");
        expect(here.kernel).toMatchObject({active: true, mode: "output"});
        expect(here.kernel.isa).toBe(widest);
        // the logits of the text (one product) and of every decode step of 8 or more sequences
        expect(here.kernel.products).toBeGreaterThan(10);
        const {maxDiff, scale, argmaxDiffers} = compare(here, ggml);
        // Only the last product's sums are added in another order: about 1e-7 of the scale.
        // (A changed hidden state would move them by a quant of the next layer: 1e-3.)
        expect(maxDiff).toBeLessThan(1e-5 * scale);
        expect(argmaxDiffers).toBe(0);
        expect(here.outputs).toEqual(ggml.outputs);
    });

    it.skipIf(!vnni)("takes every Q8_0 product with STILL_Q8_GEMM=all and gives llama.cpp's logits to rounding", () => {
        expect(all.devices).toContain("still-q8");
        expect(all.kernel).toMatchObject({active: true, mode: "all"});
        // every layer's products of every batch of 8 columns or more: prompt, decode steps
        expect(all.kernel.products).toBeGreaterThan(50);
        const {maxDiff, scale, argmaxDiffers} = compare(all, ggml);
        // Products equal to float rounding; the next layer's Q8_0 activations turn some
        // roundings into a step of one quant, so logits move by about 1e-3 of their scale.
        expect(maxDiff).toBeLessThan(0.05 * scale);
        expect(argmaxDiffers).toBeLessThanOrEqual(1);
    });

    it.skipIf(!vnni)("gives the same greedy outputs at 8 and 32 sequences with every product on it (each column's sums do not depend on the batch)", () => {
        expect(all.outputs[1]).toEqual(all.outputs[0]);
        // and most of them are llama.cpp's own
        const same = all.outputs[0]!.filter((o, i) => o === ggml.outputs[0]![i]).length;
        expect(same).toBeGreaterThanOrEqual(30);
    });

    it.skipIf(!hasAvxVnni)("runs on AVX-VNNI's 8-row tiles too: the output layer's products to float rounding, every product to rounding", () => {
        expect(narrow.kernel).toMatchObject({active: true, mode: "output", isa: "AVX-VNNI"});
        expect(narrow.kernel.status).toBe("on: the output layer's Q8_0 product (AVX-VNNI)");
        expect(narrow.kernel.products).toBeGreaterThan(10);
        const out = compare(narrow, ggml);
        expect(out.maxDiff).toBeLessThan(1e-5 * out.scale);
        expect(out.argmaxDiffers).toBe(0);
        expect(narrow.outputs).toEqual(ggml.outputs);

        expect(narrowAll.kernel).toMatchObject({active: true, mode: "all", isa: "AVX-VNNI"});
        expect(narrowAll.kernel.products).toBeGreaterThan(50);
        const every = compare(narrowAll, ggml);
        expect(every.maxDiff).toBeLessThan(0.05 * every.scale);
        expect(every.argmaxDiffers).toBeLessThanOrEqual(1);
        expect(narrowAll.outputs[1]).toEqual(narrowAll.outputs[0]);
    });

    it.skipIf(!hasAvx512Vnni || !hasAvxVnni)("gives the same sums on both tile widths (each row's block sums are the same integers, scaled in the same order)", () => {
        expect(compare(narrow, here).maxDiff).toBe(0);
        expect(compare(narrowAll, all).maxDiff).toBe(0);
        expect(narrowAll.outputs).toEqual(all.outputs);
    });
});
