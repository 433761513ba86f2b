// Files that are not usable models: each gives one ModelError sentence, and the process
// survives (llama.cpp never sees a file it could abort on).
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {beforeAll, describe, expect, it} from "vitest";
import {GgufWriter} from "../models/GgufWriter.js";
import {loadModel} from "../src/engine/Model.js";
import {ModelError} from "../src/errors.js";
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
