// Models for tests: made by the project's own maker into a temporary folder, once per
// test file (process), and removed at exit.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
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
