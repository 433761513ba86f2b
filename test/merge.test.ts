// `still merge`: base + adapters as one GGUF, against the same adapters applied at run
// time by llama.cpp (per-token log-probabilities of a text scored by both), for F32, F16 and
// Q8_0 bases, two adapters with scales, a quantized output; bad input refused with nothing written.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {beforeAll, describe, expect, it} from "vitest";
import {loadModel} from "../src/engine/Model.js";
import {fixtures, readJsonlFixture} from "./helpers/fixtures.js";
import {qwen2Adapter, randomAdapter, testModel, tmpDir} from "./helpers/models.js";

const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});
const text = readJsonlFixture<{problem: string}>(path.join(fixtures, "data/math500.jsonl")).slice(0, 3).map((r) => r.problem).join("\n");

/** Per-token log-probs of `text` under the model, with the adapters applied at run time. */
async function logprobs(model: string, adapters: {path: string, scale: number}[] = []) {
    const m = await loadModel(model);
    try {
        const scorer = m.scorer();
        scorer.setAdapters(await Promise.all(adapters.map(async (a) => ({adapter: await m.loadAdapter(a.path), scale: a.scale}))));
        const [r] = await scorer.score([{prompt: "Problem:", completion: text}]);
        return r!.logprobs;
    } finally {
        await m.dispose();
    }
}

const maxDiff = (a: number[], b: number[]) => {
    expect(a.length).toBe(b.length);
    return Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));
};

let a1: string, a2: string;
beforeAll(async () => {
    a1 = await randomAdapter(path.join(tmpDir, "merge-a1.gguf"), 1, ["attn_q", "attn_v", "ffn_down"]);
    a2 = await randomAdapter(path.join(tmpDir, "merge-a2.gguf"), 2, ["attn_k", "attn_output", "ffn_up"], 2, 4);
});

describe("still merge", () => {
    it("gives the adapters' log-probs: F32 within 1e-3, F16 and Q8_0 bases within their rounding", async () => {
        const adapters = [{path: a1, scale: 1}, {path: a2, scale: 0.5}];
        for (const type of ["f32", "f16", "q8_0"] as const) {
            const base = await testModel("tiny", type, 4);
            const out = path.join(tmpDir, `merged-${type}.gguf`);
            const r = await cli(["merge", "--model", base, "--adapter", a1, "--adapter", a2, "--adapter-scale", "1", "0.5", "--out", out, "--json"]);
            expect(r.exitCode, r.stderr).toBe(0);
            expect(JSON.parse(r.stdout)).toMatchObject({tensors: 24, adapters: 2, architecture: "llama", type: "keep"});
            expect(fs.statSync(out).size).toBe(fs.statSync(base).size);
            const merged = await logprobs(out);
            const applied = await logprobs(base, adapters);
            const plain = await logprobs(base);
            const diff = maxDiff(merged, applied);
            // the adapters move the log-probs far more than the merge's rounding does
            expect(maxDiff(plain, applied)).toBeGreaterThan(0.05);
            expect(diff, type).toBeLessThan(type === "f32" ? 1e-3 : type === "f16" ? 1e-2 : 5e-2);
        }
    }, 180_000);

    it("quantizes the merged model with llama.cpp's quantizer", async () => {
        const base = await testModel("tiny", "f32", 4);
        const out = path.join(tmpDir, "merged-q8.gguf");
        const r = await cli(["merge", "--model", base, "--adapter", a1, "--out", out, "--type", "q8_0", "--json"]);
        expect(r.exitCode, r.stderr).toBe(0);
        expect(fs.statSync(out).size).toBeLessThan(fs.statSync(base).size / 3);
        expect(maxDiff(await logprobs(out), await logprobs(base, [{path: a1, scale: 1}]))).toBeLessThan(5e-2);
    }, 120_000);

    it("refuses bad input with one sentence and writes nothing", async () => {
        const base = await testModel("tiny", "f32", 4);
        const cases: [string[], RegExp][] = [
            [["--adapter", await qwen2Adapter()], /is an adapter for qwen2 models, but .* is llama/],
            [["--adapter", base], /is not a LoRA adapter/],
            [["--adapter", path.join(tmpDir, "none.gguf")], /none\.gguf: does not exist \(the adapter\)/],
            [["--adapter", a1, "--type", "q3"], /type/]
        ];
        for (const [k, [args, message]] of cases.entries()) {
            const out = path.join(tmpDir, `merge-bad-${k}.gguf`);
            const r = await cli(["merge", "--model", base, ...args, "--out", out]);
            expect(r.exitCode, args.join(" ")).toBe(1);
            expect(r.stderr, args.join(" ")).toMatch(message);
            expect(fs.existsSync(out)).toBe(false);
            expect(fs.readdirSync(tmpDir).filter((f) => f.startsWith(`merge-bad-${k}.gguf`))).toEqual([]);
        }
    }, 60_000);
});
