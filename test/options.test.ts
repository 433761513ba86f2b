// Options come from one source: the zod schemas. `still schema` shows every field's
// meaning, the command line's help shows the schemas' defaults, and a problem file gets
// the same ids whichever command reads it.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {describe, expect, it} from "vitest";
import {loadInputs} from "../src/loop/runLoop.js";
import {parseRunConfig} from "../src/loop/config.js";
import {testModel, tmpDir} from "./helpers/models.js";

const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});

type JsonSchema = {description?: string, properties?: Record<string, JsonSchema>, items?: JsonSchema | JsonSchema[],
    anyOf?: JsonSchema[], prefixItems?: JsonSchema[]};

/** Every property of a JSON Schema, with its dotted path. */
function properties(schema: JsonSchema, at = ""): [string, JsonSchema][] {
    const out: [string, JsonSchema][] = [];
    for (const [key, value] of Object.entries(schema.properties ?? {})) {
        const p = at === "" ? key : `${at}.${key}`;
        out.push([p, value]);
        out.push(...properties(value, p));
        if (value.items != null && !Array.isArray(value.items)) out.push(...properties(value.items, `${p}[]`));
    }
    return out;
}

describe("options from one source", () => {
    it("still schema describes every field of the run configuration", async () => {
        const res = await cli(["schema"]);
        expect(res.exitCode, res.stderr).toBe(0);
        const schema = JSON.parse(res.stdout) as JsonSchema;
        const all = properties(schema);
        expect(all.length).toBeGreaterThan(50);
        expect(all.filter(([, s]) => s.description == null || s.description.trim() === "").map(([p]) => p)).toEqual([]);
        expect(Object.fromEntries(all)["explore.temperature"]).toMatchObject({default: 0.8, description: expect.stringMatching(/temperature/i)});
        expect(Object.fromEntries(all)["imitate.train.lora.rank"]).toMatchObject({default: 16});
    });

    it("shows the schemas' defaults in --help, and the same LoRA default in the loop and in still train", async () => {
        const help = (await cli(["train", "sft", "--help"])).stdout;
        expect(help).toMatch(/--rank <r>\s+LoRA rank.*\(default: 16\)/);
        expect(help).toMatch(/--lora-alpha <a>[^]*\(default: 32\)/);
        const config = parseRunConfig({name: "x", model: {path: "m.gguf"}, data: {problems: "p.jsonl"}}, "x.json");
        expect(config.imitate.train.lora).toMatchObject({rank: 16, alpha: 32});
        const gen = (await cli(["generate", "--help"])).stdout;
        expect(gen).toMatch(/--top-k <k>\s+Top-k cut; 0 is off \(default: 0\)/);
        expect(gen).toMatch(/--no-system\s+No system message/);
    });

    it("refuses fractional epochs in a run configuration", () => {
        expect(() => parseRunConfig({name: "x", model: {path: "m.gguf"}, data: {problems: "p.jsonl"}, imitate: {train: {epochs: 1.5}}}, "x.json"))
            .toThrow(/imitate\.train\.epochs/);
    });

    it("gives a problem file with both id and unique_id the same ids under still generate and still run", async () => {
        const dir = path.join(tmpDir, "ids");
        fs.mkdirSync(dir, {recursive: true});
        const problems = path.join(dir, "problems.jsonl");
        fs.writeFileSync(problems, [
            {id: 7, unique_id: "test/algebra/1.json", problem: "1 + 1?", answer: "2"},
            {unique_id: "test/algebra/2.json", problem: "2 + 2?", answer: "4"},
            {id: "third", problem: "3 + 3?", answer: "6"},
            {problem: "4 + 4?", answer: "8"}
        ].map((p) => JSON.stringify(p)).join("\n") + "\n");
        const model = await testModel("tiny");

        const out = path.join(dir, "rollouts.jsonl");
        const gen = await cli(["generate", "--model", model, "--problems", problems, "--max-tokens", "2", "--out", out, "--json"]);
        expect(gen.exitCode, gen.stderr).toBe(0);
        const generated = fs.readFileSync(out, "utf8").trim().split("\n").map((l) => (JSON.parse(l) as {id: string}).id).sort();

        const config = parseRunConfig({name: "ids", model: {path: model}, data: {problems}}, path.join(dir, "ids.json"));
        const loop = (await loadInputs(config)).problems.map((p) => p.id).sort();
        expect(generated).toEqual(loop);
        expect(loop).toEqual(["7", "problems:4", "test/algebra/2.json", "third"]);

        const repeated = path.join(dir, "repeated.jsonl");
        fs.writeFileSync(repeated, '{"id": "a", "problem": "1?", "answer": "1"}\n{"unique_id": "a", "problem": "2?", "answer": "2"}\n');
        const refused = await cli(["generate", "--model", model, "--problems", repeated, "--out", path.join(dir, "never.jsonl")]);
        expect(refused.stderr.trim()).toBe(`still: error: ${repeated}:2: id: repeats id "a"`);
        await expect(loadInputs(parseRunConfig({name: "r", model: {path: model}, data: {problems: repeated}}, path.join(dir, "r.json"))))
            .rejects.toThrow(`${repeated}:2: id: repeats id "a"`);
    }, 60_000);
});
