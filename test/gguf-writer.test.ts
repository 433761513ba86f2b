// The GGUF writer and the presets, read back with node-llama-cpp's independent GGUF reader.
import fs from "node:fs";
import path from "node:path";
import {readGgufFileInfo} from "node-llama-cpp";
import {describe, expect, it} from "vitest";
import {GgufWriter} from "../src/models/GgufWriter.js";
import {makeModel} from "../src/models/makeModel.js";
import {presetTensors, presets} from "../src/models/presets.js";
import {byteSymbols, charVocab, qwenLikeVocab} from "../src/models/vocab.js";
import {tmpDir} from "./helpers/models.js";

describe("GgufWriter", () => {
    it("writes metadata and tensors that an independent reader parses back", async () => {
        const file = path.join(tmpDir, "writer.gguf");
        await new GgufWriter()
            .string("general.architecture", "llama")
            .u32("llama.block_count", 3)
            .f32("llama.rope.freq_base", 10000.5)
            .bool("flag", true)
            .strings("list", ["a", "ü", ""])
            .i32s("ints", [-1, 2, 3])
            .tensor("t0", [32, 3], (start, out) => { for (let i = 0; i < out.length; i++) out[i] = start + i; })
            .tensor("t1", [5], (_s, out) => out.fill(0.25))
            .write(file);
        const info = await readGgufFileInfo(file, {logWarnings: false});
        expect(info.version).toBe(3);
        const meta = info.metadata as any;
        expect(meta.general.architecture).toBe("llama");
        expect(meta.llama.block_count).toBe(3);
        expect(meta.llama.rope.freq_base).toBeCloseTo(10000.5);
        expect(meta.flag).toBe(true);
        expect(meta.list).toEqual(["a", "ü", ""]);
        expect(meta.ints).toEqual([-1, 2, 3]);
        const tensors = info.tensorInfo!;
        expect(tensors.map((t) => [t.name, t.dimensions.map(Number)])).toEqual([["t0", [32, 3]], ["t1", [5]]]);

        // Data sits at the recorded offsets, 32-byte aligned.
        const bytes = fs.readFileSync(file);
        for (const t of tensors) expect(Number(t.fileOffset) % 32).toBe(0);
        const t0 = new Float32Array(bytes.buffer.slice(bytes.byteOffset + Number(tensors[0]!.fileOffset), bytes.byteOffset + Number(tensors[0]!.fileOffset) + 96 * 4));
        expect(Array.from(t0.subarray(0, 3))).toEqual([0, 1, 2]);
        expect(t0[95]).toBe(95);
        const t1 = new Float32Array(bytes.buffer.slice(bytes.byteOffset + Number(tensors[1]!.fileOffset), bytes.byteOffset + Number(tensors[1]!.fileOffset) + 20));
        expect(Array.from(t1)).toEqual([0.25, 0.25, 0.25, 0.25, 0.25]);
        expect(bytes.length).toBe(Number(tensors[1]!.fileOffset) + 32);
    });

    it("refuses duplicate keys, duplicate tensors and bad shapes", () => {
        const w = new GgufWriter().u32("k", 1).tensor("t", [4], () => {});
        expect(() => w.u32("k", 2)).toThrow(/duplicate metadata key/);
        expect(() => w.tensor("t", [4], () => {})).toThrow(/duplicate tensor/);
        expect(() => w.tensor("u", [0, 4], () => {})).toThrow(/bad dimensions/);
        expect(() => w.tensor("v", [1, 1, 1, 1, 1], () => {})).toThrow(/bad dimensions/);
    });
});

describe("vocabularies", () => {
    it("maps the 256 bytes to 256 distinct printable symbols", () => {
        const symbols = byteSymbols();
        expect(new Set(symbols).size).toBe(256);
        expect(symbols["a".charCodeAt(0)]).toBe("a");
        expect(symbols[0x20]).toBe("Ġ"); // GPT-2's symbol for space
        expect(symbols[0x0a]).toBe("Ċ");
    });

    it("char vocabulary: bytes, ChatML control tokens, the four STILL markers as user-defined tokens", () => {
        const v = charVocab();
        expect(v.tokens.length).toBe(263);
        expect(v.tokens.slice(256)).toEqual(["<|endoftext|>", "<|im_start|>", "<|im_end|>",
            "<|begin_of_thought|>", "<|end_of_thought|>", "<|begin_of_solution|>", "<|end_of_solution|>"]);
        expect(v.types.slice(256)).toEqual([3, 3, 3, 4, 4, 4, 4]);
        expect(v.tokens[v.eos]).toBe("<|im_end|>");
        expect(v.merges).toEqual([]);
    });

    it("Qwen-shaped vocabulary: 151,936 unique tokens, merges that build existing tokens", () => {
        const v = qwenLikeVocab();
        expect(v.tokens.length).toBe(151_936);
        expect(new Set(v.tokens).size).toBe(151_936);
        expect(v.tokens[151_643]).toBe("<|endoftext|>");
        expect(v.tokens[151_644]).toBe("<|im_start|>");
        expect(v.tokens[151_645]).toBe("<|im_end|>");
        expect(v.merges.length).toBe(151_643 - 256);
        const known = new Set(v.tokens);
        for (const m of v.merges.slice(0, 2000).concat(v.merges.slice(-2000))) {
            const [a, b] = m.split(" ");
            expect(known.has(a!) && known.has(b!) && known.has(a! + b!)).toBe(true);
        }
    });
});

describe("presets", () => {
    it("qwen2.5-0.5b has exactly Qwen2.5-0.5B's parameter count", () => {
        const count = presetTensors(presets["qwen2.5-0.5b"], 151_936)
            .reduce((n, [, dims]) => n + dims.reduce((a, b) => a * b, 1), 0);
        expect(count).toBe(494_032_768);
    });

    it("tiny is a few million parameters with 2-D shapes that Q8_0 can hold", () => {
        const tensors = presetTensors(presets.tiny, 263);
        const count = tensors.reduce((n, [, dims]) => n + dims.reduce((a, b) => a * b, 1), 0);
        expect(count).toBeGreaterThan(2_000_000);
        expect(count).toBeLessThan(5_000_000);
        for (const p of Object.values(presets))
            for (const [, dims] of presetTensors(p, 263)) if (dims.length === 2) expect(dims[0]! % 32).toBe(0);
    });

    it("makes the same bytes from the same seed and different weights from another", async () => {
        const a = await makeModel({preset: "tiny-qwen2", out: path.join(tmpDir, "seed-a.gguf"), seed: 7});
        const b = await makeModel({preset: "tiny-qwen2", out: path.join(tmpDir, "seed-b.gguf"), seed: 7});
        const c = await makeModel({preset: "tiny-qwen2", out: path.join(tmpDir, "seed-c.gguf"), seed: 8});
        const [ba, bb, bc] = [a, b, c].map((m) => fs.readFileSync(m.path));
        expect(ba!.equals(bb!)).toBe(true);
        expect(ba!.length).toBe(bc!.length);
        expect(ba!.equals(bc!)).toBe(false);
    });

    it("refuses unknown presets, types and seeds with one clear sentence", async () => {
        const out = path.join(tmpDir, "never.gguf");
        await expect(makeModel({preset: "huge" as any, out})).rejects.toThrow(/unknown preset 'huge'; choose one of: tiny/);
        await expect(makeModel({preset: "tiny", out, type: "q4" as any})).rejects.toThrow(/unknown model type 'q4'/);
        await expect(makeModel({preset: "tiny", out, seed: -1})).rejects.toThrow(/seed must be/);
        expect(fs.existsSync(out)).toBe(false);
    });
});
