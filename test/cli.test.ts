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
        expect(info.stdout).toMatch(/^Q8_0 kernel\s+(on|off)\b/m);
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

describe("still generate", () => {
    const problemsFile = path.join(tmpDir, "problems.jsonl");
    const problems = Array.from({length: 6}, (_, i) => ({id: `p${i}`, question: `What is ${i} + ${i}?`}));

    const generate = (out: string, extra: string[] = []) => cli(["generate", "--model", modelFile, "--problems", problemsFile,
        "--samples", "3", "--max-tokens", "24", "--seed", "5", "--parallel", "4", "--out", out, ...extra]);
    let modelFile: string;

    const readOut = (file: string) => fs.readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l));

    it("writes one line per sample and skips what is done when rerun", async () => {
        const {testModel} = await import("./helpers/models.js");
        modelFile = await testModel("tiny");
        fs.writeFileSync(problemsFile, problems.map((p) => JSON.stringify(p)).join("\n") + "\n");
        const out = path.join(tmpDir, "gen", "rollouts.jsonl");
        fs.mkdirSync(path.dirname(out), {recursive: true});
        const first = await generate(out, ["--json"]);
        expect(first.exitCode, first.stderr).toBe(0);
        expect(JSON.parse(first.stdout)).toMatchObject({written: 18, skipped: 0});
        const records = readOut(out);
        expect(records).toHaveLength(18);
        expect(new Set(records.map((r) => `${r.id}/${r.sample}`)).size).toBe(18);
        for (const r of records) {
            expect(r.tokens.length).toBe(r.completion_tokens);
            expect(r.logprobs.length).toBe(r.completion_tokens);
            expect(["stop", "length"]).toContain(r.finish);
        }

        const again = await generate(out, ["--json"]);
        expect(JSON.parse(again.stdout)).toMatchObject({written: 0, skipped: 18});

        // A crash left 4 samples missing and half a line: the rerun drops the half line
        // and makes exactly the missing samples, the same as before.
        const lines = fs.readFileSync(out, "utf8").split("\n").filter((l) => l !== "");
        fs.writeFileSync(out, lines.slice(0, 14).join("\n") + "\n" + lines[14]!.slice(0, 30));
        const resumed = await generate(out, ["--json"]);
        expect(resumed.exitCode, resumed.stderr).toBe(0);
        expect(JSON.parse(resumed.stdout)).toMatchObject({written: 4, skipped: 14});
        expect(resumed.stderr).toMatch(/dropping an incomplete last line/);
        const after = readOut(out);
        expect(after).toHaveLength(18);
        const key = (r: {id: string, sample: number}) => `${r.id}/${r.sample}`;
        expect(new Set(after.map(key))).toEqual(new Set(records.map(key)));
    });

    it("refuses to mix samples made with other settings, naming the file and line", async () => {
        const out = path.join(tmpDir, "gen", "rollouts.jsonl");
        const res = await generate(out, ["--temperature", "0.5"]);
        expect(res.exitCode).toBe(1);
        expect(res.stderr.trim()).toBe(`still: error: ${out}:1: config: holds samples made with other settings (model, sampling or prompt); ` +
            "give a new --out file, or the same settings to continue it");
    });

    it("stops on Ctrl-C with what it finished written, and continues on the next run", async () => {
        const out = path.join(tmpDir, "gen", "interrupted.jsonl");
        const child = execa(process.execPath, ["dist/src/cli/main.js", "generate", "--model", modelFile, "--problems", problemsFile,
            "--samples", "3", "--max-tokens", "300", "--seed", "5", "--parallel", "2", "--out", out], {reject: false, env: {STILL_THREADS: "1"}});
        // Wait for the first finished sample, then interrupt.
        const t0 = Date.now();
        while (Date.now() - t0 < 30_000 && !(fs.existsSync(out) && fs.readFileSync(out, "utf8").includes("\n"))) await new Promise((r) => setTimeout(r, 50));
        child.kill("SIGINT");
        const res = await child;
        expect(res.exitCode).toBe(0);
        expect(res.stdout).toMatch(/^stopped: \d+ samples written to .*, \d+ left; run the same command to continue$/m);
        const written = readOut(out).length;
        expect(written).toBeGreaterThan(0);
        expect(written).toBeLessThan(18);

        const rest = await cli(["generate", "--model", modelFile, "--problems", problemsFile, "--samples", "3", "--max-tokens", "300",
            "--seed", "5", "--parallel", "2", "--out", out, "--json"]);
        expect(JSON.parse(rest.stdout)).toMatchObject({written: 18 - written, skipped: written});
        expect(new Set(readOut(out).map((r) => `${r.id}/${r.sample}`)).size).toBe(18);
    });

    it("names the line and field of a bad problem", async () => {
        const bad = path.join(tmpDir, "bad-problems.jsonl");
        fs.writeFileSync(bad, '{"id": "a", "question": "ok"}\n{"id": "b", "question": 7}\n');
        const res = await cli(["generate", "--model", modelFile, "--problems", bad, "--out", path.join(tmpDir, "never.jsonl")]);
        expect(res.exitCode).toBe(1);
        expect(res.stderr).toMatch(new RegExp(`^still: error: ${bad.replace(/[.]/g, "\\.")}:2: question: `));
        expect(fs.existsSync(path.join(tmpDir, "never.jsonl"))).toBe(false);
    });
});

describe("still score", () => {
    it("scores JSONL records in input order, continues an interrupted file, and reports a text's perplexity", async () => {
        const {testModel} = await import("./helpers/models.js");
        const model = await testModel("tiny");
        const data = path.join(tmpDir, "score-records.jsonl");
        const records = Array.from({length: 7}, (_, i) => ({
            id: `r${i}`,
            prompt: [{role: "user", content: `What is ${i} + ${i}?`}],
            completion: `<|begin_of_thought|>${i} + ${i} = ${2 * i}<|end_of_thought|><|begin_of_solution|>\\boxed{${2 * i}}<|end_of_solution|>`
        }));
        fs.writeFileSync(data, records.map((r) => JSON.stringify(r)).join("\n") + "\n");
        const out = path.join(tmpDir, "scores.jsonl");
        const first = await cli(["score", "--model", model, "--data", data, "--out", out, "--logprobs", "--json"]);
        expect(first.exitCode, first.stderr).toBe(0);
        expect(JSON.parse(first.stdout)).toMatchObject({written: 7, skipped: 0});
        const lines = fs.readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l));
        expect(lines.map((l) => l.id)).toEqual(records.map((r) => r.id));
        for (const l of lines) {
            expect(l.logprobs).toHaveLength(l.tokens);
            expect(l.sum).toBeCloseTo(l.logprobs.reduce((a: number, b: number) => a + b, 0), 3);
            expect(l.segments.thought.tokens).toBeGreaterThan(0);
            expect(l.segments.solution.tokens).toBeGreaterThan(0);
        }
        // Cut the file after 3 records and half a line: the rerun scores the other 4.
        const raw = fs.readFileSync(out, "utf8").split("\n");
        fs.writeFileSync(out, raw.slice(0, 3).join("\n") + "\n" + raw[3]!.slice(0, 20));
        const again = await cli(["score", "--model", model, "--data", data, "--out", out, "--logprobs", "--json"]);
        expect(JSON.parse(again.stdout)).toMatchObject({written: 4, skipped: 3});
        expect(fs.readFileSync(out, "utf8").trim().split("\n").map((l) => JSON.parse(l).sum)).toEqual(lines.map((l) => l.sum));

        const text = path.join(tmpDir, "score.txt");
        fs.writeFileSync(text, "The quick brown fox jumps over the lazy dog. ".repeat(40));
        const ppl = await cli(["score", "--model", model, "--text", text, "--ctx", "128", "--json"]);
        expect(ppl.exitCode, ppl.stderr).toBe(0);
        expect(JSON.parse(ppl.stdout)).toMatchObject({chunks: 14, ctx: 128, tokens_scored: 14 * 63});
    });

    it("names the line and field of a bad record", async () => {
        const {testModel} = await import("./helpers/models.js");
        const bad = path.join(tmpDir, "bad-records.jsonl");
        fs.writeFileSync(bad, '{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n');
        const res = await cli(["score", "--model", await testModel("tiny"), "--data", bad, "--out", path.join(tmpDir, "never-scores.jsonl")]);
        expect(res.exitCode).toBe(1);
        expect(res.stderr).toMatch(new RegExp(`^still: error: ${bad.replace(/[.]/g, "\\.")}:2: completion: `));
    });
});
