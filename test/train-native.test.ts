// still-train's own graph against llama.cpp (logits) and its gradients against central
// finite differences, on the three architectures it builds.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {getBackend} from "../src/engine/binding.js";
import {loadModel, type Model} from "../src/engine/Model.js";
import {TrainerError} from "../src/errors.js";
import {type TrainerEvent, trainerBinary} from "../src/train/runTrainer.js";
import {hasAvx512Bf16, hasAvx512Vnni, hasAvxVnni} from "./helpers/cpu.js";
import {testModel, tmpDir} from "./helpers/models.js";
import {gradientDump, normDiff, randomDpoData, randomSftData, relDiff, trainer} from "./helpers/trainer.js";

type Grad = Extract<TrainerEvent, {type: "grad"}>;
const grads = (events: TrainerEvent[]) => events.filter((e): e is Grad => e.type === "grad");

describe.each(["tiny", "tiny-qwen2", "tiny-qwen3"] as const)("still-train on %s", (preset) => {
    let modelPath: string;
    let model: Model;
    let sftData: string;
    beforeAll(async () => {
        modelPath = await testModel(preset);
        model = await loadModel(modelPath);
        sftData = await randomSftData(model.facts.vocabSize, 6);
    });
    afterAll(() => model?.dispose());

    it("computes llama.cpp's logits (F32: max abs difference ≤ 1e-3)", async () => {
        const tokens = model.tokenize("<|im_start|>user\nWhat is 6 × 7? Think step by step.<|im_end|>\n<|im_start|>assistant\n", {special: true});
        const ref = await model.logits(tokens);
        const out = path.join(tmpDir, `logits-${preset}.f32`);
        await trainer(["logits", "--model", modelPath, "--tokens", tokens.join(","), "--out", out]);
        const ours = new Float32Array(fs.readFileSync(out).buffer.slice(0));
        const V = model.facts.vocabSize;
        expect(ours.length).toBe(tokens.length * V);
        let maxDiff = 0;
        let maxAbs = 0;
        ref.forEach((row, i) => row.forEach((v, j) => {
            maxDiff = Math.max(maxDiff, Math.abs(v - ours[i * V + j]!));
            maxAbs = Math.max(maxAbs, Math.abs(v));
        }));
        expect(maxAbs).toBeGreaterThan(0.01); // the comparison is not between near-zero rows
        expect(maxDiff).toBeLessThanOrEqual(1e-3);
    });

    it("LoRA gradients agree with central finite differences (SFT loss with weights)", async () => {
        const events = await trainer(["grad-check", "--model", modelPath, "--data", sftData, "--init-random-b", "--rank", "4", "--entries", "1"]);
        const g = grads(events);
        expect(g.length).toBe(2 * 7 * model.facts.layerCount);
        for (const t of g) {
            expect(t.grad_norm, t.tensor).toBeGreaterThan(0);
            expect(t.rel_error, t.tensor).toBeLessThanOrEqual(1e-2);
        }
    });

    it("full fine-tuning gradients of every weight, K/V projections and embeddings included, agree with finite differences", async () => {
        const events = await trainer(["grad-check", "--model", modelPath, "--data", sftData, "--full", "--entries", "1"]);
        const g = grads(events);
        const names = g.map((t) => t.tensor);
        expect(names).toContain("token_embd.weight");
        expect(names).toContain("blk.0.attn_k.weight");
        expect(names).toContain("blk.0.attn_v.weight");
        expect(g.length).toBe(model.gguf.tensorCount);
        for (const t of g) {
            expect(t.grad_norm, t.tensor).toBeGreaterThan(0);
            expect(t.rel_error, t.tensor).toBeLessThanOrEqual(1e-2);
        }
    });
});

describe("still-train DPO gradients", () => {
    it.each(["sigmoid", "ipo", "hinge"])("agree with finite differences for the %s loss with an SFT term", async (loss) => {
        const modelPath = await testModel("tiny-qwen2");
        const data = await randomDpoData(263, 4);
        const events = await trainer(["grad-check", "--model", modelPath, "--data", data, "--init-random-b", "--loss", loss, "--beta", "0.5", "--sft-alpha", "0.3", "--entries", "1"]);
        const g = grads(events);
        expect(g.length).toBe(2 * 7 * 2);
        for (const t of g) expect(t.rel_error, t.tensor).toBeLessThanOrEqual(1e-2);
    });
});

describe("packing", () => {
    it("spreads many short DPO pairs over rows with a bounded number of loss groups", async () => {
        const modelPath = await testModel("tiny-qwen2");
        const data = await randomDpoData(263, 300, 11);
        const events = await trainer(["dpo", "--model", modelPath, "--data", data, "--out", path.join(tmpDir, "many.gguf"),
            "--ctx", "16384", "--sft-alpha", "0.5", "--max-steps", "3"]);
        const start = events.find((e) => e.type === "start");
        // 300 pairs of about 20 tokens fit one 16384-token row, but not its loss groups
        expect(start?.type === "start" && start.steps).toBe(3);
        expect(events.filter((e) => e.type === "step").length).toBe(3);
    });
});

describe("backward products through frozen weights", () => {
    it("give the same gradients on the matrix kernels as ggml's OUT_PROD, on F32, F16 and Q8_0 bases", async () => {
        for (const type of ["f32", "f16", "q8_0"] as const) {
            const modelPath = await testModel("tiny-qwen2", type);
            const data = await randomSftData(263, 4, 7);
            const norms = async (mode: string) => new Map(grads(await trainer(["grad-check", "--model", modelPath, "--data", data,
                "--init-random-b", "--no-finite-differences", "--backward-products", mode])).map((g) => [g.tensor, g.grad_norm]));
            const a = await norms("mul_mat");
            const b = await norms("out_prod");
            expect(a.size).toBe(28);
            for (const [name, v] of a) expect(Math.abs(v - b.get(name)!) / v, `${type} ${name}`).toBeLessThan(1e-3);
        }
    });
});

const vocabSize = async (modelPath: string) => {
    const m = await loadModel(modelPath, {vocabOnly: true});
    try { return m.facts.vocabSize; } finally { await m.dispose(); }
};

describe("the trainer's F32 products on still's kernel", () => {
    const dump = (modelPath: string, data: string, extra: string[]) =>
        gradientDump(["--model", modelPath, "--data", data, "--init-random-b", "--no-finite-differences", ...extra]);
    // x86-64 only (AVX2 or AVX-512); elsewhere every product stays on ggml's kernel
    it.skipIf(process.arch !== "x64").each(["tiny", "tiny-qwen2"] as const)("give ggml's gradients on %s, with the AVX-512 and the AVX2 kernel", async (preset) => {
        const modelPath = await testModel(preset);
        const data = await randomSftData(await vocabSize(modelPath), 3, 11);
        const ggml = await dump(modelPath, data, ["--rank", "8", "--f32-products", "ggml"]);
        expect(ggml.f32Products).toBe(0);
        for (const kernel of ["widest", "avx2"]) {
            const saved = process.env.STILL_TRAIN_F32_KERNEL;
            process.env.STILL_TRAIN_F32_KERNEL = kernel;
            try {
                const ours = await dump(modelPath, data, ["--rank", "8", "--f32-products", "still"]);
                // attention's products, LoRA's and the backward products through the frozen weights
                expect(ours.f32Products, kernel).toBeGreaterThan(100);
                expect(ours.grads.length).toBe(ggml.grads.length);
                expect(normDiff(ggml.grads, ours.grads), kernel).toBeLessThan(1e-4);
            } finally {
                if (saved == null) delete process.env.STILL_TRAIN_F32_KERNEL;
                else process.env.STILL_TRAIN_F32_KERNEL = saved;
            }
        }
    });

    it("leave the gradient within 1% with BF16 copies of the frozen weights", async () => {
        const modelPath = await testModel("tiny-qwen2", "q8_0");
        const data = await randomSftData(await vocabSize(modelPath), 3, 12);
        const exact = await dump(modelPath, data, ["--backward-weights", "f32"]);
        const bf16 = await dump(modelPath, data, ["--backward-weights", "bf16"]);
        const err = normDiff(exact.grads, bf16.grads);
        // different numbers (the copies are used), but close ones
        expect(err).toBeGreaterThan(0);
        expect(err).toBeLessThan(0.01);
        if (!hasAvx512Bf16) return;
        // with AVX-512 BF16 every product of a copy is still's too, and gives ggml's BF16 products to rounding
        expect(bf16.f32Products).toBe(exact.f32Products);
        const ggml = await dump(modelPath, data, ["--backward-weights", "bf16", "--f32-products", "ggml"]);
        const diff = normDiff(ggml.grads, bf16.grads);
        expect(diff).toBeGreaterThan(0);
        expect(diff).toBeLessThan(1e-3);
        // B's columns converted in runs of 6 (long rows take several runs of ~8 MB): the same numbers
        const saved = process.env.STILL_TRAIN_BF16_RUN_COLUMNS;
        process.env.STILL_TRAIN_BF16_RUN_COLUMNS = "6";
        try {
            const runs = await dump(modelPath, data, ["--backward-weights", "bf16"]);
            expect(relDiff(bf16.grads, runs.grads)).toBe(0);
        } finally {
            if (saved == null) delete process.env.STILL_TRAIN_BF16_RUN_COLUMNS;
            else process.env.STILL_TRAIN_BF16_RUN_COLUMNS = saved;
        }
    });
});

describe("the trainer's Q8_0 forward products on still's kernel", () => {
    // AVX-512 VNNI (16-row tiles) or AVX-VNNI (8-row tiles; STILL_Q8_ISA picks one where the
    // CPU has both); elsewhere they stay on ggml's kernel. Each block's integer sums are
    // ggml's, the scaling is not: products agree to float rounding, and where a later
    // layer's activations sit at a Q8_0 rounding edge a value moves by one quant. tiny-qwen2
    // has none in these rows (3e-7 here); tiny has some (2e-3, as with only the F32
    // products on still's kernel), so it gets the looser bound.
    const withIsa = async <T>(isa: string | undefined, fn: () => Promise<T>): Promise<T> => {
        const saved = process.env.STILL_Q8_ISA;
        if (isa == null) delete process.env.STILL_Q8_ISA;
        else process.env.STILL_Q8_ISA = isa;
        try {
            return await fn();
        } finally {
            if (saved == null) delete process.env.STILL_Q8_ISA;
            else process.env.STILL_Q8_ISA = saved;
        }
    };
    const presets = [["tiny-qwen2", 1e-5], ["tiny", 1e-2]] as const;
    const dumper = async (preset: string) => {
        const modelPath = await testModel(preset, "q8_0");
        const data = await randomSftData(await vocabSize(modelPath), 3, 13);
        return (kernel: string) => gradientDump(["--model", modelPath, "--data", data, "--init-random-b", "--no-finite-differences",
            "--rank", "8", "--q8-products", kernel]);
    };

    describe.each([["avx512vnni", hasAvx512Vnni], ["avxvnni", hasAvxVnni]] as const)("on %s", (isa, cpuHas) => {
        it.skipIf(!cpuHas).each(presets)("give ggml's gradients on %s at Q8_0 (within %s)", async (preset, bound) => {
            const dump = await dumper(preset);
            const ggml = await dump("ggml");
            expect(ggml.q8Products).toBe(0);
            const ours = await withIsa(isa, () => dump("still"));
            // the frozen weights' products of every layer and the output's
            expect(ours.q8Products).toBeGreaterThan(10);
            const err = normDiff(ggml.grads, ours.grads);
            expect(err).toBeGreaterThan(0);
            expect(err).toBeLessThan(bound);
        });
    });

    it.skipIf(!hasAvx512Vnni || !hasAvxVnni)("give the same gradients on both tile widths", async () => {
        const dump = await dumper("tiny");
        const wide = await withIsa("avx512vnni", () => dump("still"));
        const narrow = await withIsa("avxvnni", () => dump("still"));
        expect(narrow.q8Products).toBe(wide.q8Products);
        expect(relDiff(wide.grads, narrow.grads)).toBe(0);
    });

    it("leaves the products on ggml's kernel where STILL_Q8_ISA names an instruction set it does not know", async () => {
        const dump = await dumper("tiny-qwen2");
        const res = await withIsa("avx9", () => dump("still"));
        expect(res.q8Products).toBe(0);
    });
});

describe("a Q4_K base", () => {
    it("trains, with the same gradients on the matrix kernels as through OUT_PROD", async () => {
        const file = path.join(tmpDir, "tiny-q4_k.gguf");
        await getBackend().binding.quantize(await testModel("tiny"), file, 15 /* LLAMA_FTYPE_MOSTLY_Q4_K_M */, 1);
        const data = await randomSftData(263, 4, 9);
        const norms = async (mode: string) => new Map(grads(await trainer(["grad-check", "--model", file, "--data", data,
            "--init-random-b", "--no-finite-differences", "--backward-products", mode])).map((g) => [g.tensor, g.grad_norm]));
        const a = await norms("mul_mat");
        const b = await norms("out_prod");
        expect(a.size).toBe(56);
        for (const [name, v] of a) expect(Math.abs(v - b.get(name)!) / v, name).toBeLessThan(1e-3);
        const events = await trainer(["sft", "--model", file, "--data", data, "--out", path.join(tmpDir, "q4k.gguf"), "--epochs", "3"]);
        expect(events.filter((e) => e.type === "step").length).toBe(3);
    });
});

describe("bad input to still-train", () => {
    it("refuses a model architecture it has no graph for, naming it", async () => {
        const file = path.join(tmpDir, "not-llama.gguf");
        const bytes = fs.readFileSync(await testModel("tiny-qwen2"));
        // same length: qwen2 -> gpt2x in the architecture string
        const at = bytes.indexOf(Buffer.from("qwen2"));
        bytes.write("gpt2x", at, "latin1");
        fs.writeFileSync(file, bytes);
        const err = await trainer(["logits", "--model", file, "--tokens", "1,2", "--out", path.join(tmpDir, "l.f32")]).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TrainerError);
        expect((err as Error).message).toMatch(/not-llama\.gguf.*'gpt2x'.*supports llama, qwen2 and qwen3|cannot read/);
    });

    it("refuses a truncated base GGUF with one clear error", async () => {
        const file = path.join(tmpDir, "truncated.gguf");
        const bytes = fs.readFileSync(await testModel("tiny"));
        fs.writeFileSync(file, bytes.subarray(0, bytes.length - 1000));
        const err = await trainer(["logits", "--model", file, "--tokens", "1,2", "--out", path.join(tmpDir, "l.f32")]).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TrainerError);
        expect((err as TrainerError).exitCode).toBe(1);
        expect((err as Error).message).toMatch(/truncated\.gguf/);
    });

    it("refuses damaged data files, naming the record", async () => {
        const good = await randomSftData(263, 3);
        const bytes = fs.readFileSync(good);
        const cut = path.join(tmpDir, "cut.bin");
        fs.writeFileSync(cut, bytes.subarray(0, bytes.length - 6));
        const modelPath = await testModel("tiny");
        const run = (data: string) => trainer(["sft", "--model", modelPath, "--data", data, "--out", path.join(tmpDir, "x.gguf")]).catch((e: unknown) => e as Error);
        expect((await run(cut)).message).toMatch(/record 2 is truncated/);
        const badToken = Buffer.from(bytes);
        badToken.writeInt32LE(5000, 32 + 4 + 4); // record 0, tokens[1]
        fs.writeFileSync(cut, badToken);
        expect((await run(cut)).message).toMatch(/record 0: tokens\[1\] = 5000 is not a token of the model/);
        fs.writeFileSync(cut, "not a data file at all");
        expect((await run(cut)).message).toMatch(/not a still-train data file/);
        const otherVocab = await randomSftData(100, 2);
        expect((await run(otherVocab)).message).toMatch(/tokenized for a vocabulary of 100 tokens, but the model has 263/);
    });

    it("refuses impossible options", async () => {
        const modelPath = await testModel("tiny");
        const err = await trainer(["sft", "--model", modelPath, "--data", "x", "--out", "y", "--rank", "0"]).catch((e: unknown) => e as Error);
        expect(err.message).toMatch(/--rank must be a whole number from 1/);
        const err2 = await trainer(["sft", "--model", modelPath, "--data", "x", "--out", "y", "--modules", "q,zz"]).catch((e: unknown) => e as Error);
        expect(err2.message).toMatch(/unknown module 'zz'/);
    });
});

describe("still-train q8-bench", () => {
    it("times still's Q8_0 kernel, each width this CPU runs, against ggml's product, with results that agree", async () => {
        const {command, backendDir} = trainerBinary(getBackend());
        const res = await execa(command, ["q8-bench", "--shapes", "263x64,40x96", "--columns", "8,13", "--repeats", "1", "--threads", "1", "--backend-dir", backendDir]);
        const lines = res.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as {rows: number, columns: number, kernel: string, ms: number, max_rel_diff: number});
        const widths = [hasAvx512Vnni ? "AVX-512 VNNI" : null, hasAvxVnni ? "AVX-VNNI" : null].filter((w) => w != null);
        expect(lines.map((l) => l.kernel)).toEqual(Array.from({length: 4}, () => ["ggml", ...widths]).flat());
        expect(lines.map((l) => `${l.rows}:${l.columns}`)).toEqual([263, 40].flatMap((r) => [8, 13].flatMap((c) => Array.from({length: 1 + widths.length}, () => `${r}:${c}`))));
        for (const l of lines) {
            expect(l.ms).toBeGreaterThan(0);
            expect(l.max_rel_diff).toBeLessThan(1e-5);
        }
        const bad = await execa(command, ["q8-bench", "--shapes", "263x63"], {reject: false});
        expect(bad.exitCode).toBe(1);
        expect(bad.stderr).toContain("--shapes takes ROWSxK pairs (K a multiple of 32)");
    });
});
