// `npm run bench:grade [-- --json] [-- --rounds N]`: grading speed on the math cases.
// One cold pass grades each case once in a fresh process (the engine is built on first
// use and reported apart); warm rounds repeat the same comparisons.
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {z} from "zod";
import {parseArgv} from "../cli/cliOptions.js";
import {grade} from "../grade/grade.js";
import {warmParser} from "../grade/parseLatex.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const {json, rounds} = parseArgv(z.object({
    rounds: z.number().int().min(1).describe("Timed rounds over the pairs (the median is reported)").default(3),
    json: z.boolean().describe("Print one JSON object").default(false)
}), ["--rounds <n>", "--json"]);

type Pair = {pred: string, gold: string, type: "math" | "choice" | "exact"};

function readLines(file: string): Record<string, unknown>[] {
    return fs.readFileSync(path.join(root, file), "utf8").split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Record<string, unknown>);
}

const cases = readLines("test/fixtures/grader-cases/cases.jsonl").map((c): Pair => ({pred: String(c.pred), gold: String(c.gold), type: "math"}));
const math500 = readLines("test/fixtures/data/math500.jsonl");
const solutions = math500.map((r): Pair => ({pred: String(r.solution), gold: String(r.answer), type: "math"}));
let seed = 7;
const random = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32;
};
const mismatched: Pair[] = [];
while (mismatched.length < 500) {
    const i = Math.floor(random() * math500.length);
    const j = Math.floor(random() * math500.length);
    if (i !== j) mismatched.push({pred: String(math500[i]!.solution), gold: String(math500[j]!.answer), type: "math"});
}
const all = [...cases, ...solutions, ...mismatched];

const t0 = performance.now();
warmParser();
const engineMs = performance.now() - t0;

function pass(pairs: Pair[]): number {
    const start = performance.now();
    for (const p of pairs) grade(p.pred, p.gold, {type: p.type});
    return performance.now() - start;
}

const coldMs = pass(all);
let warmMs = 0;
for (let r = 0; r < rounds; r++) warmMs += pass(all);
const perSet = {cases: pass(cases), solutions: pass(solutions), mismatched: pass(mismatched)};

const result = {
    comparisons: all.length,
    engineStartMs: Number(engineMs.toFixed(1)),
    coldPerSecond: Math.round(all.length / (coldMs / 1000)),
    warmPerSecond: Math.round((all.length * rounds) / (warmMs / 1000)),
    perSet: {
        graderCases: {n: cases.length, perSecond: Math.round(cases.length / (perSet.cases / 1000))},
        math500Solutions: {n: solutions.length, perSecond: Math.round(solutions.length / (perSet.solutions / 1000))},
        math500Mismatched: {n: mismatched.length, perSecond: Math.round(mismatched.length / (perSet.mismatched / 1000))}
    }
};

if (json) process.stdout.write(JSON.stringify(result) + "\n");
else {
    process.stdout.write(`grading benchmark: ${all.length} comparisons (207 grader cases, 500 MATH500 solutions, 500 mismatched pairs)\n`);
    process.stdout.write(`engine start        ${result.engineStartMs} ms\n`);
    process.stdout.write(`cold pass           ${result.coldPerSecond} comparisons/s\n`);
    process.stdout.write(`warm (${rounds} rounds)    ${result.warmPerSecond} comparisons/s\n`);
    for (const [name, s] of Object.entries(result.perSet)) process.stdout.write(`  ${name.padEnd(18)}${s.perSecond} comparisons/s (${s.n})\n`);
}
