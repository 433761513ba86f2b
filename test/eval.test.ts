// `still eval` as a user runs it (the built CLI in a child process) on a made model, the
// problem layouts it reads, the statistics behind --compare, and one sentence for each
// kind of bad input with nothing written.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {execa} from "execa";
import {parquetWriteFile} from "hyparquet-writer";
import {beforeAll, describe, expect, it} from "vitest";
import {loadProblems} from "../src/data/loadMathProblems.js";
import {type Problem, problemSchema} from "../src/data/problemSchema.js";
import {compareEvaluations, mcnemarExact, pairedBootstrap} from "../src/evaluate/compare.js";
import {type EvalMetrics, standardError} from "../src/evaluate/evaluate.js";
import {evaluationRecordSchema} from "../src/evaluate/runEvaluation.js";
import {MARKERS} from "../src/format/markers.js";
import {gradeProblem} from "../src/grade/gradeProblem.js";
import {fixtures, readJsonlFixture} from "./helpers/fixtures.js";
import {qwen2Adapter, testModel, tmpDir, tmpFile} from "./helpers/models.js";

const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});
const math500 = readJsonlFixture<{problem: string, solution: string, answer: string, subject: string, level: number, unique_id: string}>(
    path.join(fixtures, "data/math500.jsonl"));
const jsonl = (rows: readonly object[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

describe("the statistics of an evaluation", () => {
    it("standard errors, McNemar's exact test and the paired bootstrap", () => {
        expect(standardError([1, 0, 1, 0])).toBeCloseTo(Math.sqrt(1 / 3 / 4), 12);
        expect(standardError([1])).toBe(0);
        // 1 vs 9 discordant pairs: 2 · P(Bin(10, ½) ≤ 1) = 2 · 11/1024
        expect(mcnemarExact(1, 9)).toBeCloseTo(22 / 1024, 12);
        expect(mcnemarExact(9, 1)).toBeCloseTo(22 / 1024, 12);
        expect(mcnemarExact(5, 5)).toBe(1);
        expect(mcnemarExact(0, 0)).toBe(1);
        expect(mcnemarExact(0, 400)).toBeLessThan(1e-100);
        const a = Array.from({length: 200}, (_, i) => (i % 3 === 0 ? 1 : 0));
        const same = pairedBootstrap(a, a, {resamples: 2000});
        expect(same).toMatchObject({difference: 0, p: 1});
        const better = a.map((x, i) => (i % 2 === 0 ? 1 : x));
        const boot = pairedBootstrap(a, better, {resamples: 2000, seed: 3});
        expect(boot.difference).toBeCloseTo(better.reduce((s, x) => s + x, 0) / 200 - a.reduce((s, x) => s + x, 0) / 200, 12);
        expect(boot.low).toBeLessThan(boot.difference);
        expect(boot.high).toBeGreaterThan(boot.difference);
        expect(boot.low).toBeGreaterThan(0);
        expect(boot.p).toBeLessThan(0.001);
        expect(pairedBootstrap(a, better, {resamples: 2000, seed: 3})).toEqual(boot);
        // a difference of one problem in 200 is no evidence
        const one = [...a];
        one[1] = 1;
        expect(pairedBootstrap(a, one, {resamples: 2000}).p).toBeGreaterThan(0.2);
    });

    it("pairs two evaluations by problem id and counts the problems only one has", () => {
        const metrics = (outcomes: EvalMetrics["outcomes"]): EvalMetrics => ({
            set: "s", problems: outcomes.length, accuracy: 0, stderr: 0, formatAdherence: 0, meanTokens: 0, truncated: 0,
            lengths: [], domains: [], subjects: [], levels: [], examples: [], outcomes
        });
        const before = metrics(Array.from({length: 40}, (_, i) => ({id: `p${i}`, greedy: i < 10, correct: i < 10 ? 3 : 0, samples: 4})));
        const after = metrics([...Array.from({length: 40}, (_, i) => ({id: `p${i}`, greedy: i < 30 && i !== 0, correct: i < 30 ? 4 : 0, samples: 4})),
            {id: "new", greedy: true, correct: 4, samples: 4}]);
        const [c] = compareEvaluations([before], [after], {resamples: 2000});
        expect(c).toMatchObject({set: "s", paired: 40, unpaired: 1});
        expect(c!.greedy).toMatchObject({a: 0.25, b: 29 / 40, onlyA: 1, onlyB: 20});
        expect(c!.greedy!.p).toBeCloseTo(mcnemarExact(1, 20), 12);
        expect(c!.greedy!.p).toBeLessThan(1e-4);
        expect(c!.sampled!.a).toBeCloseTo(30 / 160, 12);
        expect(c!.sampled!.b).toBeCloseTo(120 / 160, 12);
        expect(c!.sampled!.p).toBeLessThan(0.001);
        expect(compareEvaluations([before], [{...after, set: "other"}])).toEqual([]);
    });
});

describe("responses cut short", () => {
    const problem = problemSchema.parse({id: "p", question: "6 times 7?", answer: "42"});
    const {beginThought: bT, endThought: eT, beginSolution: bS, endSolution: eS} = MARKERS;

    it("are never correct, whatever they wrote last; finished ones in any form are graded as before", async () => {
        const g = (text: string, finish?: "stop" | "length") => gradeProblem(problem, text, finish == null ? {} : {finish});
        const whole = `${bT}\n6 sevens\n${eT}\n${bS}\n\\boxed{42}\n${eS}`;
        expect(await g(whole, "stop")).toMatchObject({correct: true, extracted: "42", cutShort: null});
        expect(await g(whole, "length")).toMatchObject({correct: false, extracted: "42", cutShort: "cut at maxTokens"});
        expect(await g(`${bT}\n6 sevens: \\boxed{42}`, "stop")).toMatchObject({correct: false, extracted: "42", cutShort: "the thought never closed"});
        expect(await g(`<think>\n6 sevens: \\boxed{42}`)).toMatchObject({correct: false, cutShort: "the thought never closed"});
        expect(await g(`${bT}\n6 sevens\n${eT}\n${bS}\n\\boxed{42}`)).toMatchObject({correct: false, cutShort: "the response ends inside its thought or solution"});
        // malformed but finished: the thought closed, the answer outside the solution block
        expect(await g(`${bT}\n6 sevens\n${eT}\n\\boxed{42}`)).toMatchObject({correct: true, cutShort: null});
        // no markers at all (a model without the thought format), and a thinking model's form
        expect(await g("6 sevens make \\boxed{42}.", "stop")).toMatchObject({correct: true, cutShort: null});
        expect(await g("6 sevens\n</think>\n\\boxed{42}", "stop")).toMatchObject({correct: true, cutShort: null});
        expect(await g("6 sevens make \\boxed{42}.", "length")).toMatchObject({correct: false});
        expect(await g(whole.replace("42", "41"))).toMatchObject({correct: false, cutShort: null});
    });
});

describe("problem layouts", () => {
    const golds = async (file: string) => (await loadProblems(file, {policy: "strict"})).items;
    const gradeAll = async (problems: readonly Problem[], responses: readonly string[]) =>
        Promise.all(problems.map(async (p, i) => (await gradeProblem(p, responses[i]!)).correct));

    it("answers only boxed in the solution (the MATH release's layout, its type as the subject): right on their own solutions, wrong on others' answers", async () => {
        const file = tmpFile("boxed-only.jsonl", jsonl(math500.map((r) => ({
            problem: r.problem, solution: r.solution, level: `Level ${r.level}`, type: r.subject
        }))));
        const problems = await golds(file);
        expect(problems).toHaveLength(500);
        expect(problems[0]).toMatchObject({subject: "Precalculus", difficulty: 2, type: "math"});
        const own = await gradeAll(problems, math500.map((r) => r.solution));
        expect(own.filter(Boolean).length).toBe(500);
        const other = await gradeAll(problems, math500.map((_, i) => `The answer is $\\boxed{${math500[(i + 1) % 500]!.answer}}$.`));
        expect(other.filter((c) => !c).length / 500).toBeGreaterThanOrEqual(0.99);
    }, 120_000);

    it("answer lists (any accepted answer is right), question keys and Parquet", async () => {
        const rows = math500.slice(0, 200).map((r, i) => ({
            id: r.unique_id, question: r.problem,
            // the gold last among decoys (another problem's answers)
            answers: [math500[(i + 7) % 500]!.answer, math500[(i + 11) % 500]!.answer, r.answer].filter((a, k, all) => k === 2 || a !== r.answer && all.indexOf(a) === k),
            subject: r.subject
        }));
        const file = tmpFile("lists.jsonl", jsonl(rows));
        const parquet = path.join(tmpDir, "lists.parquet");
        await parquetWriteFile({
            filename: parquet, columnData: [
                {name: "id", data: rows.map((r) => r.id), type: "STRING"},
                {name: "question", data: rows.map((r) => r.question), type: "STRING"},
                {name: "answers", data: rows.map((r) => r.answers)},
                {name: "subject", data: rows.map((r) => r.subject), type: "STRING"}
            ]
        });
        for (const f of [file, parquet]) {
            const problems = await golds(f);
            expect(problems).toHaveLength(200);
            expect(problems.every((p) => p.alternatives != null && p.alternatives.length >= 1)).toBe(true);
            expect(problems[5]!.alternatives!.at(-1)).toBe(math500[5]!.answer);
            expect((await gradeAll(problems, math500.map((r) => r.solution))).every(Boolean)).toBe(true);
            // against other problems' answers that are on none of the lists (small integers recur)
            const pairs = problems.map((p, i) => ({p, other: math500[(i + 250) % 500]!.answer}))
                .filter(({p, other}) => ![p.answer, ...p.alternatives!].includes(other));
            expect(pairs.length).toBeGreaterThan(190);
            const other = await gradeAll(pairs.map((x) => x.p), pairs.map((x) => `$\\boxed{${x.other}}$`));
            expect(other.filter((c) => !c).length / pairs.length).toBeGreaterThanOrEqual(0.99);
        }
    }, 120_000);

    it("a row without any answer names the fields it looked for", async () => {
        const file = tmpFile("no-answer.jsonl", jsonl([{problem: "1+1?", solution: "two"}]));
        await expect(golds(file)).rejects.toThrow(/no-answer\.jsonl:1: answer: missing \(answer, answers, final_answer or expected_answer, or an answer boxed in solution\)/);
        const typo = tmpFile("typo.jsonl", jsonl([{question: "1+1?", answer: "2", type: "choise"}]));
        await expect(golds(typo)).rejects.toThrow(/typo\.jsonl:1: type: must be one of math, choice, exact/);
    });
});

describe("still eval", () => {
    let model: string;
    let set: string;
    beforeAll(async () => {
        model = await testModel("tiny");
        set = tmpFile("eval-set.jsonl", jsonl(math500.slice(0, 10)));
    });
    const base = (out: string) => ["eval", "--model", model, "--set", `math=${set}`, "--max-tokens", "12", "--parallel", "4", "--out", out];
    const record = (out: string) => evaluationRecordSchema.parse(JSON.parse(fs.readFileSync(path.join(out, "eval.json"), "utf8")));

    it("writes figures, each problem's outcome, gradable responses and a report; resumes; compares", async () => {
        const a = path.join(tmpDir, "eval-a");
        const run = await cli([...base(a), "--samples", "2", "--json"]);
        expect(run.stderr).toBe("");
        expect(run.exitCode).toBe(0);
        const r = record(a);
        expect(JSON.parse(run.stdout.trim().split("\n").at(-1)!)).toEqual(JSON.parse(JSON.stringify(r)));
        const m = r.sets[0]!;
        expect(m).toMatchObject({set: "math", problems: 10, k: 2});
        expect(m.outcomes.map((o) => o.id)).toEqual(math500.slice(0, 10).map((x) => x.unique_id));
        expect(m.outcomes.every((o) => o.greedy != null && o.samples === 2)).toBe(true);
        expect(m.subjects.reduce((n, g) => n + g.problems, 0)).toBe(10);
        expect(m.levels.map((g) => Number(g.group))).toEqual([...m.levels.map((g) => Number(g.group))].sort((x, y) => x - y));
        // the responses file grades again to the same verdicts
        const responses = path.join(a, "responses", "math.jsonl");
        const lines = fs.readFileSync(responses, "utf8").trim().split("\n").map((l) => JSON.parse(l) as {kind: string, correct: boolean, finish: string});
        expect(lines.filter((l) => l.kind === "greedy")).toHaveLength(10);
        expect(lines.filter((l) => l.kind === "sampled")).toHaveLength(20);
        const regraded = await cli(["grade", "--file", responses, "--json"]);
        expect(regraded.stdout.trim().split("\n").map((l) => (JSON.parse(l) as {correct: boolean}).correct)).toEqual(lines.map((l) => l.correct));
        expect(m.truncated).toBe(lines.filter((l) => l.kind === "greedy" && l.finish === "length").length / 10);
        const html = fs.readFileSync(path.join(a, "report.html"), "utf8");
        expect(html).toContain("Figures with standard errors");
        expect(html).toContain("Sampled evaluation");

        // the same command again: refused without --resume; with it, the chunks are read back and the figures are the same
        const again = await cli([...base(a), "--samples", "2"]);
        expect(again.exitCode).toBe(1);
        expect(again.stderr).toMatch(/already holds an evaluation: resume it/);
        const resumed = await cli([...base(a), "--samples", "2", "--resume", "--json"]);
        expect(resumed.exitCode).toBe(0);
        expect(record(a).sets).toEqual(r.sets);
        const changed = await cli([...base(a), "--samples", "3", "--resume"]);
        expect(changed.stderr).toMatch(/other settings \(samples\)/);

        // B against A: the same model and seed gives the same outcomes, so no difference
        const b = path.join(tmpDir, "eval-b");
        const compared = await cli([...base(b), "--samples", "2", "--compare", a, "--label", "again"]);
        expect(compared.exitCode).toBe(0);
        expect(compared.stdout).toMatch(/against tiny-f32-0 .*paired by problem/);
        const c = record(b).compare!;
        expect(c.label).toBe("tiny-f32-0");
        expect(c.sets[0]).toMatchObject({set: "math", paired: 10, unpaired: 0, greedy: {difference: 0, onlyA: 0, onlyB: 0, p: 1}, sampled: {difference: 0, p: 1}});
        expect(fs.readFileSync(path.join(b, "report.html"), "utf8")).toContain("again against tiny-f32-0");
    }, 180_000);

    it("bad input: one sentence each, and no output folder", async () => {
        const dup = tmpFile("dup.jsonl", jsonl([{id: "a", question: "q", answer: "1"}, {id: "a", question: "r", answer: "2"}]));
        const empty = tmpFile("empty.jsonl", "");
        const csv = tmpFile("gpqa.csv", "Question,Correct Answer,Incorrect Answer 1\nq,a,b\n");
        const other = await qwen2Adapter();
        const cases: [string[], RegExp][] = [
            [["--set", `d=${dup}`], /dup\.jsonl:2: id: repeats id "a"/],
            [["--set", `e=${empty}`], /empty\.jsonl: holds no problems/],
            [["--set", `g=${csv}`], /gpqa\.csv:1: has no columns "Incorrect Answer 2", "Incorrect Answer 3"/],
            [["--set", `m=${set}`, "--samples", "0"], /Too small: expected number to be >=1\s+→ at samples/],
            [["--set", `m=${set}`, "--no-greedy"], /nothing to evaluate/],
            [["--set", `m=${set}`, "--adapter", other], /is an adapter for qwen2 models, but .* is llama/],
            [["--set", `m=${set}`, "--set", `m=${dup}`], /two evaluation sets are named "m"/],
            [["--set", `m=${path.join(tmpDir, "missing.jsonl")}`], /missing\.jsonl: does not exist \(the set m\)/],
            // long generations: 128 slots of twice the free memory's worth of KV cache (the tiny model: 2 KiB per token)
            [["--set", `m=${set}`, "--parallel", "128", "--max-tokens", String(Math.ceil((2 * os.freemem()) / (128 * 2048)))],
                /128 parallel samples of up to \d+ tokens .* need [\d.]+ GiB of KV cache but [\d.]+ GiB are free: at most \d+ fit; lower parallel to \d+/]
        ];
        for (const [k, [args, message]] of cases.entries()) {
            const out = path.join(tmpDir, `eval-bad-${k}`);
            const r = await cli(["eval", "--model", model, "--max-tokens", "8", ...args, "--out", out]);
            expect(r.exitCode, args.join(" ")).toBe(1);
            const text = r.stderr.trim();
            expect(text, args.join(" ")).toMatch(message);
            expect(text.split("\n").filter((l) => l.startsWith("still: error:")), text).toHaveLength(1);
            expect(fs.existsSync(out), args.join(" ")).toBe(false);
        }
    }, 120_000);
});
