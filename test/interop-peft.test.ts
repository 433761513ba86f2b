// LoRA adapters to and from PEFT: GGUF → PEFT → GGUF gives the same file; the PEFT folder
// has PEFT's names, shapes and config keys (read back here by a reader of the test's own);
// llama's query/key rows in Hugging Face's order; foreign dtypes and rsLoRA converted; bad
// folders refused with one sentence.
import fs from "node:fs";
import path from "node:path";
import {describe, expect, it} from "vitest";
import {loadModel} from "../src/engine/Model.js";
import {exportPeft, importPeft} from "../src/interop/peft.js";
import {DataError, OptionError} from "../src/errors.js";
import {testModel, tmpDir} from "./helpers/models.js";
import {randomSftData, trainer} from "./helpers/trainer.js";

/** safetensors read the plain way: length, JSON header, raw bytes after it. */
function readBack(file: string) {
    const bytes = fs.readFileSync(file);
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8")) as Record<string, {dtype: string, shape: number[], data_offsets: [number, number]}>;
    const tensor = (name: string) => {
        const t = header[name]!;
        const raw = bytes.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
        return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    };
    return {header, tensor};
}

async function trainedAdapter(modelPath: string, name: string) {
    const model = await loadModel(modelPath, {vocabOnly: true});
    const data = await randomSftData(model.facts.vocabSize, 4);
    await model.dispose();
    const out = path.join(tmpDir, `${name}.gguf`);
    await trainer(["sft", "--model", modelPath, "--data", data, "--out", out, "--max-steps", "2", "--rank", "4", "--alpha", "8", "--lr", "1e-2", "--init-random-b"]);
    return out;
}

const PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

describe.each(["tiny", "tiny-qwen2", "tiny-qwen3"] as const)("PEFT adapters on %s", (preset) => {
    it("GGUF → PEFT → GGUF gives the same file, and the PEFT folder has PEFT's names, shapes and config", async () => {
        const modelPath = await testModel(preset);
        const adapter = await trainedAdapter(modelPath, `peft-${preset}`);
        const dir = path.join(tmpDir, `peft-${preset}`);
        const r = await exportPeft(adapter, dir, {model: modelPath, baseModelName: "made/tiny"});
        const config = JSON.parse(fs.readFileSync(path.join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
        expect(config).toMatchObject({peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 8, bias: "none", use_dora: false, use_rslora: false,
            fan_in_fan_out: false, base_model_name_or_path: "made/tiny"});
        expect([...(config.target_modules as string[])].sort()).toEqual(["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]);

        const model = await loadModel(modelPath, {vocabOnly: true});
        const {layerCount: layers, embeddingLength: embd} = model.facts;
        await model.dispose();
        const {header} = readBack(path.join(dir, "adapter_model.safetensors"));
        const names = Object.keys(header).filter((k) => k !== "__metadata__");
        expect(names.length).toBe(2 * 7 * layers);
        expect(r.tensors).toBe(names.length);
        for (let l = 0; l < layers; l++)
            for (const p of PROJ) {
                const a = header[`base_model.model.model.layers.${l}.${p}.lora_A.weight`]!;
                const b = header[`base_model.model.model.layers.${l}.${p}.lora_B.weight`]!;
                expect(a.dtype).toBe("F32");
                expect(a.shape[0]).toBe(4); // [r, in_features]
                expect(b.shape[1]).toBe(4); // [out_features, r]
                // the layer's input feeds q, k, v, gate and up; o and down write back to it
                if (p === "self_attn.o_proj" || p === "mlp.down_proj") expect(b.shape[0]).toBe(embd);
                else expect(a.shape[1]).toBe(embd);
            }

        const back = path.join(tmpDir, `peft-${preset}-back.gguf`);
        await importPeft(dir, back, {model: modelPath});
        expect(Buffer.compare(fs.readFileSync(back), fs.readFileSync(adapter))).toBe(0);
        // and llama.cpp loads it
        const m = await loadModel(modelPath);
        await m.loadAdapter(back);
        await m.dispose();
    });
});

describe("PEFT adapters: conversions and refusals", () => {
    it("puts a llama query/key lora_B's rows in Hugging Face's rope order (each head's pairs split into halves)", async () => {
        const modelPath = await testModel("tiny");
        const adapter = await trainedAdapter(modelPath, "peft-order");
        const dir = path.join(tmpDir, "peft-order");
        await exportPeft(adapter, dir, {model: modelPath});
        const model = await loadModel(modelPath);
        const heads = model.facts.headCount, kvHeads = model.facts.headCountKv;
        await model.dispose();
        const {tensor, header} = readBack(path.join(dir, "adapter_model.safetensors"));
        // the GGUF's rows, through the trainer-independent header reader of another folder: a qwen2-free
        // reference is the export of the same adapter without permutation, i.e. lora_B of v_proj (never permuted)
        const hfQ = tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
        const [rows, r] = header["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]!.shape as [number, number];
        const gguf = fs.readFileSync(adapter);
        const {readGgufHeader} = await import("../src/engine/readGguf.js");
        const h = await readGgufHeader(adapter);
        const info = h.tensors.find((t) => t.name === "blk.0.attn_q.weight.lora_b")!;
        const start = h.dataOffset + Number(info.offset);
        const g = new Float32Array(gguf.buffer.slice(gguf.byteOffset + start, gguf.byteOffset + start + rows * r * 4));
        const hd = rows / heads;
        for (let head = 0; head < heads; head++)
            for (let i = 0; i < hd / 2; i++)
                for (let p = 0; p < 2; p++)
                    for (let c = 0; c < r; c++)
                        expect(hfQ[(head * hd + p * (hd / 2) + i) * r + c]).toBe(g[(head * hd + 2 * i + p) * r + c]);
        expect(kvHeads).toBeGreaterThan(0);
    });

    it("imports BF16 and rsLoRA adapters exactly (alpha · √r for llama.cpp's alpha / r)", async () => {
        const modelPath = await testModel("tiny-qwen2");
        const adapter = await trainedAdapter(modelPath, "peft-bf16");
        const dir = path.join(tmpDir, "peft-bf16");
        await exportPeft(adapter, dir, {model: modelPath});
        // rewrite the folder as BF16 (values rounded to BF16 first, so the import must give them back exactly), rsLoRA, no metadata
        const file = path.join(dir, "adapter_model.safetensors");
        const bytes = fs.readFileSync(file);
        const n = Number(bytes.readBigUInt64LE(0));
        const header = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8")) as Record<string, {dtype: string, shape: number[], data_offsets: [number, number]}>;
        delete (header as Record<string, unknown>).__metadata__;
        const parts: Buffer[] = [];
        const expected = new Map<string, Float32Array>();
        let offset = 0;
        for (const [name, t] of Object.entries(header)) {
            const raw = bytes.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1]);
            const out = Buffer.alloc(raw.length / 2);
            const rounded = new Float32Array(raw.length / 4);
            for (let i = 0; i < rounded.length; i++) {
                const hi = raw.readUInt32LE(4 * i) >>> 16;
                out.writeUInt16LE(hi, 2 * i);
                rounded[i] = new Float32Array(new Uint32Array([hi << 16]).buffer)[0]!;
            }
            expected.set(name, rounded);
            t.dtype = "BF16";
            t.data_offsets = [offset, offset + out.length];
            offset += out.length;
            parts.push(out);
        }
        const json = Buffer.from(JSON.stringify(header));
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(json.length));
        fs.writeFileSync(file, Buffer.concat([len, json, ...parts]));
        const configFile = path.join(dir, "adapter_config.json");
        fs.writeFileSync(configFile, JSON.stringify({...JSON.parse(fs.readFileSync(configFile, "utf8")), use_rslora: true}));

        const back = path.join(tmpDir, "peft-bf16-back.gguf");
        const r = await importPeft(dir, back, {model: modelPath});
        expect(r.alpha).toBeCloseTo(8 * 2, 6); // r = 4
        const again = path.join(tmpDir, "peft-bf16-again");
        await exportPeft(back, again, {model: modelPath});
        const {tensor} = readBack(path.join(again, "adapter_model.safetensors"));
        for (const [name, values] of expected) expect(tensor(name)).toEqual(values);
    });

    it("refuses bad folders and mismatched models with one sentence", async () => {
        const qwen2 = await testModel("tiny-qwen2");
        const qwen3 = await testModel("tiny-qwen3");
        const llama = await testModel("tiny");
        const adapter = await trainedAdapter(qwen2, "peft-bad");
        const dir = path.join(tmpDir, "peft-bad");
        await exportPeft(adapter, dir, {model: qwen2});
        const out = path.join(tmpDir, "peft-bad-imported.gguf");
        // another architecture
        await expect(importPeft(dir, out, {model: llama})).rejects.toThrow(OptionError);
        await expect(exportPeft(adapter, path.join(tmpDir, "x"), {model: qwen3})).rejects.toThrow(/is for qwen2, the model .* is qwen3/);
        // DoRA, per-module ranks
        const configFile = path.join(dir, "adapter_config.json");
        const config = JSON.parse(fs.readFileSync(configFile, "utf8")) as Record<string, unknown>;
        fs.writeFileSync(configFile, JSON.stringify({...config, use_dora: true}));
        await expect(importPeft(dir, out, {model: qwen2})).rejects.toThrow(/adapter_config\.json: use_dora/);
        fs.writeFileSync(configFile, JSON.stringify({...config, rank_pattern: {q_proj: 8}}));
        await expect(importPeft(dir, out, {model: qwen2})).rejects.toThrow(/per-module ranks/);
        fs.writeFileSync(configFile, JSON.stringify(config));
        // a truncated weights file
        const weights = path.join(dir, "adapter_model.safetensors");
        const whole = fs.readFileSync(weights);
        fs.writeFileSync(weights, whole.subarray(0, whole.length - 100));
        const err = await importPeft(dir, out, {model: qwen2}).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DataError);
        expect((err as DataError).message).toMatch(/adapter_model\.safetensors.*truncated/);
        expect(fs.existsSync(out)).toBe(false); // nothing half-written
        // a llama adapter without its base model
        const llamaAdapter = await trainedAdapter(llama, "peft-llama-nobase");
        await expect(exportPeft(llamaAdapter, path.join(tmpDir, "y"))).rejects.toThrow(/give its base model/);
    });
});
