// Models for tests: made by the project's own maker into a temporary folder, once per
// test file (process), and removed at exit.
import fs from "node:fs";
import path from "node:path";
import {GgufWriter} from "../../src/models/GgufWriter.js";
import {makeModel, type ModelType} from "../../src/models/makeModel.js";
import {presets, type Preset, type PresetName} from "../../src/models/presets.js";
import {seeded, testTmpRoot} from "./fixtures.js";

export const tmpDir = fs.mkdtempSync(path.join(testTmpRoot, "still-test-"));
process.on("exit", () => fs.rmSync(tmpDir, {recursive: true, force: true}));

const made = new Map<string, Promise<string>>();

export function testModel(preset: PresetName | Preset = "tiny", type: ModelType = "f32", seed = 0): Promise<string> {
    const name = typeof preset === "string" ? preset : preset.name;
    const key = `${name}-${type}-${seed}`;
    let p = made.get(key);
    if (p == null) {
        p = makeModel({preset, type, seed, out: path.join(tmpDir, `${key}.gguf`)}).then((m) => m.path);
        made.set(key, p);
    }
    return p;
}

export function tmpFile(name: string, content: string | Uint8Array): string {
    const file = path.join(tmpDir, name);
    fs.writeFileSync(file, content);
    return file;
}

/** A LoRA adapter GGUF for the qwen2 architecture (one rank-4 pair), for refusals of adapters made for another model. */
export async function qwen2Adapter(): Promise<string> {
    const file = path.join(tmpDir, "qwen2-lora.gguf");
    await new GgufWriter().string("general.architecture", "qwen2").string("general.type", "adapter")
        .string("adapter.type", "lora").f32("adapter.lora.alpha", 4)
        .tensor("blk.0.attn_q.weight.lora_a", [128, 4], (_s, o) => o.fill(0.1))
        .tensor("blk.0.attn_q.weight.lora_b", [4, 128], (_s, o) => o.fill(0.1))
        .write(file);
    return file;
}

/** A random LoRA adapter for the tiny preset on `modules` of every layer. */
export async function randomAdapter(file: string, seed: number, modules: string[], rank = 4, alpha = 8) {
    const p = presets.tiny;
    const kv = p.kvHeads * (p.embedding / p.heads);
    const shapes: Record<string, [number, number]> = {
        attn_q: [p.embedding, p.embedding], attn_k: [p.embedding, kv], attn_v: [p.embedding, kv], attn_output: [p.embedding, p.embedding],
        ffn_gate: [p.embedding, p.feedForward], ffn_up: [p.embedding, p.feedForward], ffn_down: [p.feedForward, p.embedding]
    };
    const next = seeded(seed);
    const w = new GgufWriter().string("general.architecture", "llama").string("general.type", "adapter")
        .string("adapter.type", "lora").f32("adapter.lora.alpha", alpha);
    for (let l = 0; l < p.layers; l++) for (const m of modules) {
        const [cols, rows] = shapes[m]!;
        const fill = (_s: number, o: Float32Array) => { for (let i = 0; i < o.length; i++) o[i] = (next() - 0.5) * 0.2; };
        w.tensor(`blk.${l}.${m}.weight.lora_a`, [cols, rank], fill).tensor(`blk.${l}.${m}.weight.lora_b`, [rank, rows], fill);
    }
    await w.write(file);
    return file;
}
