// The `still` command line, run as a user runs it (the built CLI in a child process).
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {describe, expect, it} from "vitest";
import {tmpDir} from "./helpers/models.js";

const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});

describe("still CLI", () => {
    it("make-model writes a model that info describes, as JSON", async () => {
        const out = path.join(tmpDir, "cli", "tiny-q8.gguf");
        const made = await cli(["make-model", "--preset", "tiny", "--type", "q8_0", "--seed", "3", "--out", out, "--json"]);
        expect(made.exitCode, made.stderr).toBe(0);
        expect(JSON.parse(made.stdout)).toMatchObject({path: out, preset: "tiny", type: "q8_0", seed: 3, parameterCount: 3_282_688});
        expect(fs.statSync(out).size).toBeGreaterThan(3_000_000);
        expect(fs.readdirSync(path.dirname(out))).toEqual(["tiny-q8.gguf"]); // no temporary files left

        const info = await cli(["info", out, "--json"]);
        expect(info.exitCode, info.stderr).toBe(0);
        const facts = JSON.parse(info.stdout);
        expect(facts).toMatchObject({
            path: out, architecture: "llama", fileType: "Q8_0", vocabSize: 263, layerCount: 4,
            markers: {beginThought: 259, endThought: 260, beginSolution: 261, endSolution: 262},
            gguf: {version: 3, tensorCount: 39}
        });
        expect(facts.gguf.metadata["still.seed"]).toBe(3);
        expect(facts.chatTemplate).toContain("<|im_start|>");
    });

    it("info prints a readable table", async () => {
        const out = path.join(tmpDir, "cli", "tiny-qwen3.gguf");
        expect((await cli(["make-model", "--preset", "tiny-qwen3", "--out", out])).exitCode).toBe(0);
        const info = await cli(["info", out]);
        expect(info.exitCode, info.stderr).toBe(0);
        expect(info.stdout).toMatch(/^architecture\s+qwen3$/m);
        expect(info.stdout).toMatch(/^STILL markers\s+<\|begin_of_thought\|> 259$/m);
        expect(info.stdout).toMatch(/^chat template\s+\d+ characters \(ChatML\)$/m);
        expect(info.stdout).toMatch(/^backend\s+\w+ \(llama\.cpp /m);
    });

    it("lists presets, and refuses bad options with one line", async () => {
        const list = await cli(["make-model", "--list"]);
        expect(list.stdout.split("\n").map((l) => l.split(" ")[0])).toEqual(expect.arrayContaining(["tiny", "tiny-qwen2", "tiny-qwen3", "qwen2.5-0.5b"]));

        const missing = await cli(["make-model", "--preset", "tiny"]);
        expect(missing.exitCode).toBe(1);
        expect(missing.stderr.trim()).toBe("still: error: make-model needs --preset and --out (see --list for presets).");

        const badType = await cli(["make-model", "--preset", "tiny", "--out", path.join(tmpDir, "x.gguf"), "--type", "q4_k"]);
        expect(badType.exitCode).toBe(1);
        expect(badType.stderr).toMatch(/^still: error: invalid options: .*type/s);

        const badLayers = await cli(["info", path.join(tmpDir, "x.gguf"), "--gpu-layers", "lots"]);
        expect(badLayers.exitCode).toBe(1);
        expect(badLayers.stderr).toMatch(/invalid options: .*gpuLayers/s);
    });
});
