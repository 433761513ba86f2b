// Models for tests: made by the project's own maker into a temporary folder, once per
// test file (process), and removed at exit.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {GgufWriter} from "../../src/models/GgufWriter.js";
import {makeModel, type ModelType} from "../../src/models/makeModel.js";
import type {Preset, PresetName} from "../../src/models/presets.js";

export const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), "still-test-"));
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
