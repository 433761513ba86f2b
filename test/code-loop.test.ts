// The mixed-domain loop: a miniature `still run` on a made model whose problems mix math,
// multiple choice and code. Per-domain figures reach summary.json, metrics.jsonl and
// report.html; code samples are checked in the sandbox; domain weights share out a round.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {beforeAll, describe, expect, it} from "vitest";
import {detectIsolation} from "../src/code/sandbox.js";
import {testModel, tmpDir} from "./helpers/models.js";

const isolation = await detectIsolation();
const root = path.join(tmpDir, "code-loop");
const cli = (args: string[], env: Record<string, string> = {}) =>
    execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false, env});
const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

const math = (i: number) => ({id: `m${i}`, problem: `What is ${i} + ${i}?`, answer: String(2 * i)});
const choice = (i: number) => ({id: `c${i}`, question: `Which number is ${i}?`, type: "choice", choices: [String(i), String(i + 1)], answer: "A", domain: "science"});
const code = (i: number) => ({id: `k${i}`, type: "code", language: "python", question: `Print ${i}.`, tests: [{input: "", output: String(i)}]});

let configFile: string;

beforeAll(async () => {
    const model = await testModel("tiny", "f32", 7);
    fs.mkdirSync(root, {recursive: true});
    fs.writeFileSync(path.join(root, "problems.jsonl"), jsonl([...[1, 2, 3, 4, 5].map(math), ...[1, 2, 3].map(choice), ...[1, 2, 3].map(code)]));
    fs.writeFileSync(path.join(root, "eval.jsonl"), jsonl([math(9), choice(9), code(9), code(8)]));
    const config = {
        name: "mixed", runsDir: "runs", seed: 1,
        model: {path: model},
        prompt: {system: "Think, then answer."},
        data: {problems: "problems.jsonl", eval: [{name: "mixed", path: "eval.jsonl"}]},
        explore: {samples: 2, temperature: 1, topK: 20, maxTokens: 24, parallel: 4, chunk: 4, problemsPerRound: 6, domainWeights: {math: 2, code: 1}},
        rounds: [{method: "sft", train: {learningRate: 1e-3, epochs: 1, batchTokens: 256, context: 256, lora: {rank: 4, alpha: 8}}}],
        evaluate: {greedy: true, maxTokens: 24, parallel: 4}
    };
    configFile = path.join(root, "mixed.json");
    fs.writeFileSync(configFile, JSON.stringify(config, null, 2));
});

describe.skipIf(isolation.kind !== "namespaces")("a run with math, choice and code problems", () => {
    it("reports per-domain figures and shares a round out by domain weight", async () => {
        const r = await cli(["run", "--config", configFile, "--json"]);
        expect(r.exitCode, r.stderr).toBe(0);
        const dir = path.join(root, "runs", "mixed");

        const summary = JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8"));
        const base = summary.phases[0].sets[0];
        expect(base.domains.map((d: {domain: string}) => d.domain)).toEqual(["math", "science", "code"]);
        expect(base.domains.map((d: {problems: number}) => d.problems)).toEqual([1, 1, 2]);
        for (const d of base.domains) for (const k of ["accuracy", "format_adherence", "mean_tokens", "truncated"]) expect(typeof d[k]).toBe("number");

        // 6 problems at 2:1 over math and code (none of the weightless science)
        const state = JSON.parse(fs.readFileSync(path.join(dir, "state.json"), "utf8"));
        const explored: string[] = state.steps["round-1/explore"].info.problems;
        expect(explored.filter((id) => id.startsWith("m"))).toHaveLength(4);
        expect(explored.filter((id) => id.startsWith("k"))).toHaveLength(2);
        expect(explored.filter((id) => id.startsWith("c"))).toHaveLength(0);

        const lines = fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
        const explore = lines.find((l) => l.kind === "explore");
        expect(explore.domains.map((d: {domain: string, problems: number}) => [d.domain, d.problems])).toEqual(expect.arrayContaining([["math", 4], ["code", 2]]));

        // code samples carry their check's verdict
        const greedy = fs.readFileSync(path.join(dir, "eval", "base", "mixed", "greedy", "chunk-0000.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
        const codeSamples = greedy.filter((s) => s.id.startsWith("k"));
        expect(codeSamples).toHaveLength(2);
        for (const s of codeSamples) expect(["passed", "failed", "timeout", "crashed", "no_code"]).toContain(s.check.status);
        expect(greedy.filter((s) => !s.id.startsWith("k")).every((s) => s.check === undefined)).toBe(true);

        const report = fs.readFileSync(path.join(dir, "report.html"), "utf8");
        expect(report).toContain("Accuracy per domain");
        expect(report).toContain("Exploration yield per domain");
        expect(report).toMatch(/<td>code<\/td>/);
    }, 600_000);

    it("stops before any work when code cannot be checked", async () => {
        const r = await cli(["run", "--config", configFile], {STILL_CODE_EXECUTION: "off"});
        expect(r.exitCode).not.toBe(0);
        expect(r.stderr).toMatch(/code problems cannot be checked: code execution is turned off/);
    }, 60_000);
});
