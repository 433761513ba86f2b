// Files that are not usable models: each gives one ModelError sentence, and the process
// survives (llama.cpp never sees a file it could abort on).
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {beforeAll, describe, expect, it} from "vitest";
import {GgufWriter} from "../src/models/GgufWriter.js";
import {loadModel} from "../src/engine/Model.js";
import {ModelError, StillError} from "../src/errors.js";
import {testModel, tmpDir, tmpFile} from "./helpers/models.js";

let good: Buffer;
beforeAll(async () => {
    good = fs.readFileSync(await testModel("tiny"));
});

/** A copy of the good model with a metadata string value replaced (same length). */
function withString(from: string, to: string): Buffer {
    const copy = Buffer.from(good);
    const i = copy.indexOf(Buffer.from(from));
    expect(i).toBeGreaterThan(0);
    Buffer.from(to).copy(copy, i);
    return copy;
}

/** A copy of the good model with a uint32 metadata value replaced. */
function withU32(key: string, value: number): Buffer {
    const copy = Buffer.from(good);
    const i = copy.indexOf(Buffer.from(key));
    expect(i).toBeGreaterThan(0);
    expect(copy.readUInt32LE(i + key.length)).toBe(4); // GGUF type uint32
    copy.writeUInt32LE(value, i + key.length + 4);
    return copy;
}

/** A copy of the good model whose vocabulary lists "a" twice (in place of "b"). */
function withDuplicateToken(): Buffer {
    const copy = Buffer.from(good);
    const entry = (c: string) => Buffer.concat([Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]), Buffer.from(c)]);
    const i = copy.indexOf(Buffer.concat([entry("a"), entry("b")]));
    expect(i).toBeGreaterThan(0);
    copy.write("a", i + 9 + 8);
    return copy;
}

const corpus: [string, () => string, RegExp][] = [
    ["missing path", () => path.join(tmpDir, "no-such-model.gguf"), /does not exist/],
    ["directory", () => tmpDir, /is a directory, not a GGUF model file/],
    ["empty file", () => tmpFile("empty.gguf", ""), /is empty, not a GGUF model/],
    ["text file", () => tmpFile("notes.gguf", "# my model\nweights: none\n"), /is a text file, not a GGUF model/],
    ["other binary", () => tmpFile("image.gguf", Buffer.from("89504e470d0a1a0a0000000d49484452000001000000010008060000005c72a8", "hex")),
        /is not a GGUF model \(it starts with bytes 89 50 4e 47/],
    ["only the magic", () => tmpFile("magic.gguf", "GGUF"), /truncated or damaged: the file ends inside the header/],
    ["truncated in the tensor data", () => tmpFile("cut-data.gguf", good.subarray(0, Math.floor(good.length * 0.6))),
        /is truncated: tensor .* needs bytes up to \d+ but the file ends at \d+/],
    ["truncated in the metadata", () => tmpFile("cut-meta.gguf", good.subarray(0, 2000)), /truncated or damaged/],
    ["garbage after the magic", () => tmpFile("garbage.gguf", Buffer.concat([Buffer.from("GGUF\x03\x00\x00\x00"),
        Buffer.from(Array.from({length: 4096}, (_, i) => (i * 7919 + 13) & 255))])), /truncated or damaged: the header claims/],
    ["absurd tensor count", () => {
        const copy = Buffer.from(good);
        copy.writeBigUInt64LE(1n << 60n, 8);
        return tmpFile("absurd-count.gguf", copy);
    }, /claims 1152921504606846976 tensors/],
    ["tensor count beyond the tensor infos", () => {
        const copy = Buffer.from(good);
        copy.writeBigUInt64LE(100_000n, 8);
        return tmpFile("more-tensors.gguf", copy);
    }, /GGUF metadata that cannot be read|truncated or damaged/],
    ["unknown GGUF version", () => {
        const copy = Buffer.from(good);
        copy.writeUInt32LE(9, 4);
        return tmpFile("v9.gguf", copy);
    }, /GGUF version 9/],
    ["unsupported architecture", () => tmpFile("arch.gguf", withString("llama", "zzzzz")),
        /has architecture 'zzzzz', which llama\.cpp .* does not support/],
    // The next two make llama.cpp's loader assert (abort); the child-process check sees it.
    ["layer count over llama.cpp's limit", () => tmpFile("layers.gguf", withU32("llama.block_count", 100_000)),
        /llama\.cpp cannot load .*: its loader aborts on this file \(.*n_layer_all.*\)/],
    ["duplicate vocabulary entries", () => tmpFile("dup-token.gguf", withDuplicateToken()),
        /llama\.cpp cannot load .*: its loader aborts on this file \(.*id_to_token.*\)/],
    ["architecture without its hyperparameters", () => tmpFile("wrong-arch.gguf", withString("llama", "qwen2")),
        /llama\.cpp could not load .*key not found in model: qwen2\.context_length/]
];

describe("bad model files", () => {
    it.each(corpus)("%s gives a ModelError", async (_name, make, message) => {
        const file = make();
        const err = await loadModel(file).then(() => null, (e: unknown) => e);
        expect(err).toBeInstanceOf(ModelError);
        expect((err as ModelError).message).toMatch(message);
        expect((err as ModelError).message.split("\n")).toHaveLength(1);
        expect((err as ModelError).path).toBe(file);
    });

    it("a model whose tensor is missing or misshapen is refused by llama.cpp, not fatal", async () => {
        const missing = path.join(tmpDir, "missing-tensor.gguf");
        await new GgufWriter()
            .string("general.architecture", "llama")
            .u32("llama.context_length", 64).u32("llama.embedding_length", 32).u32("llama.block_count", 1)
            .u32("llama.feed_forward_length", 64).u32("llama.attention.head_count", 2)
            .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
            .string("tokenizer.ggml.model", "gpt2").string("tokenizer.ggml.pre", "qwen2")
            .strings("tokenizer.ggml.tokens", ["a", "b", "c", "d"]).strings("tokenizer.ggml.merges", [])
            .tensor("token_embd.weight", [32, 4], (_s, o) => o.fill(0.01))
            .tensor("output_norm.weight", [32], (_s, o) => o.fill(1))
            .write(missing);
        await expect(loadModel(missing)).rejects.toThrow(/llama\.cpp could not load .*: tensor 'blk\.0\.attn_norm\.weight' not found\.$/);
    });

    it("random damage to the header or the end of the file never takes the process down", async () => {
        // Deterministic: the same 40 damaged files every run.
        let seed = 12345;
        const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
        const headerEnd = good.indexOf(Buffer.from("output_norm.weight")) + 200;
        let loaded = 0;
        for (let i = 0; i < 40; i++) {
            const copy = Buffer.from(good);
            let damaged: Buffer = copy;
            if (i % 3 === 0) damaged = copy.subarray(0, Math.floor(rnd() * good.length));
            else for (let k = 0; k < 1 + (i % 4); k++) copy[Math.floor(rnd() * headerEnd)] = Math.floor(rnd() * 256);
            const file = tmpFile(`damaged-${i}.gguf`, damaged);
            try {
                const model = await loadModel(file);
                model.tokenize("Hello <|im_start|> world");
                await model.generateGreedy("Hi", {maxTokens: 2});
                await model.dispose();
                loaded++;
            } catch (err) {
                expect(err, `damaged-${i}`).toBeInstanceOf(StillError);
            }
        }
        expect(loaded).toBeLessThan(40);
    });

    it("the CLI says the same in one line and exits 1", async () => {
        const file = tmpFile("cli-text.gguf", "hello\n");
        const res = await execa(process.execPath, ["dist/src/cli/main.js", "info", file], {reject: false});
        expect(res.exitCode).toBe(1);
        expect(res.stderr.trim()).toBe(`still: error: ${file} is a text file, not a GGUF model.`);
        expect(res.stdout).toBe("");
    });

    it("the process is still alive and loads a good model afterwards", async () => {
        const model = await loadModel(await testModel("tiny"));
        expect(model.facts.architecture).toBe("llama");
        await model.dispose();
    });
});
