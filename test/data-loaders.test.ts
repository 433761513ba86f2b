// Loaders for MATH500, AIME, GPQA (a fake CSV of our own), and STILL-2's long-form thought
// layout from JSONL and Parquet; the CSV and Parquet readers underneath.
import path from "node:path";
import {parquetWriteFile} from "hyparquet-writer";
import {describe, expect, it} from "vitest";
import {z} from "zod";
import {loadGpqa, shuffledOrder} from "../src/data/loadGpqa.js";
import {loadLongFormThoughts} from "../src/data/loadLongFormThoughts.js";
import {loadAime, loadMath500} from "../src/data/loadMathProblems.js";
import {readCsv} from "../src/io/readCsv.js";
import {readParquet} from "../src/io/readParquet.js";
import {DataError} from "../src/errors.js";
import {formatThought} from "../src/format/formatThought.js";
import {grade} from "../src/grade/grade.js";
import {fixtures, scratch, scratchFile} from "./helpers/fixtures.js";

const csvCell = (s: string) => `"${s.replace(/"/g, "\"\"")}"`;
function gpqaCsv(rows: string[][], header = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "High-level domain"]) {
    return [header, ...rows].map((r) => r.map(csvCell).join(",")).join("\n") + "\n";
}
const fakeRows = Array.from({length: 12}, (_, i) => [`rec${i}`, `Made-up question ${i}, with a comma\nand a second line?`, ` right ${i} `, `wrong ${i}a`, `wrong ${i}b`, `wrong "${i}" c`, "Physics"]);

describe("MATH500 and AIME loaders", () => {
    it("reads MATH500 as math problems with ids, levels and solutions", async () => {
        const {items, issues} = await loadMath500(path.join(fixtures, "data/math500.jsonl"));
        expect(issues).toEqual([]);
        expect(items).toHaveLength(500);
        expect(items[0]).toMatchObject({id: "test/precalculus/807.json", type: "math", domain: "math", difficulty: 2, source: "math500",
            answer: "\\left( 3, \\frac{\\pi}{2} \\right)"});
        expect(items.every((p) => p.solution != null && p.difficulty! >= 1 && p.difficulty! <= 5)).toBe(true);
        expect(new Set(items.map((p) => p.id)).size).toBe(500);
    });

    it("reads AIME 2024 with its ids and integer answers", async () => {
        const {items} = await loadAime(path.join(fixtures, "data/aime24.jsonl"));
        expect(items).toHaveLength(30);
        expect(items.find((p) => p.id === "2024-I-2")).toMatchObject({answer: "25", type: "math", source: "aime24"});
    });

    it("reports a bad problem line by number and field, and accepts numeric answers", async () => {
        const file = scratchFile("math.jsonl", [
            JSON.stringify({problem: "1+1?", answer: 2}), JSON.stringify({answer: "3"}), JSON.stringify({question: "2+2?", answer: "4", level: "Level 3"})
        ].join("\n"));
        const {items, issues} = await loadMath500(file, {policy: "skip"});
        expect(items.map((p) => [p.question, p.answer, p.difficulty])).toEqual([["1+1?", "2", undefined], ["2+2?", "4", 3]]);
        expect(issues.map((i) => [i.line, i.field])).toEqual([[2, "problem"]]);
        await expect(loadMath500(file)).rejects.toThrow(`${file}:2: problem: missing (problem or question)`);
    });
});

describe("GPQA loader (user's own CSV)", () => {
    it("shuffles the options with the seed and records the correct letter", async () => {
        const file = scratchFile("gpqa.csv", gpqaCsv(fakeRows));
        const {items, issues} = await loadGpqa(file, {seed: 1});
        expect(issues).toEqual([]);
        expect(items).toHaveLength(12);
        for (const [i, p] of items.entries()) {
            expect(p).toMatchObject({id: `rec${i}`, type: "choice", domain: "Physics", source: "gpqa"});
            expect(p.question).toContain("with a comma\nand a second line?");
            expect(p.choices).toHaveLength(4);
            expect(p.choices![p.answer.charCodeAt(0) - 65]).toBe(`right ${i}`);
            expect(new Set(p.choices)).toEqual(new Set([`right ${i}`, `wrong ${i}a`, `wrong ${i}b`, `wrong "${i}" c`]));
            // The stored letter is what the grader expects.
            expect(grade(`Answer: ${p.answer}`, p.answer, {type: "choice", choices: p.choices!}).correct).toBe(true);
        }
        // Correct answers land on several letters, the same ones for the same seed, others for another seed.
        expect(new Set(items.map((p) => p.answer)).size).toBeGreaterThan(1);
        expect((await loadGpqa(file, {seed: 1})).items.map((p) => p.choices)).toEqual(items.map((p) => p.choices));
        expect((await loadGpqa(file, {seed: 2})).items.map((p) => p.choices)).not.toEqual(items.map((p) => p.choices));
    });

    it("names a missing column or an empty answer by line and field", async () => {
        const noColumn = scratchFile("gpqa-cols.csv", gpqaCsv([["r", "Q?", "a", "b", "c"]], ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2"]));
        await expect(loadGpqa(noColumn)).rejects.toThrow(/gpqa-cols\.csv:1: has no column "Incorrect Answer 3" \(its header: "Record ID", "Question"/);
        const empty = scratchFile("gpqa-empty.csv", gpqaCsv([fakeRows[0]!, ["r1", "Q?", "  ", "b", "c", "d", "Chemistry"], fakeRows[2]!]));
        const {items, issues} = await loadGpqa(empty, {policy: "skip"});
        expect(items.map((p) => p.id)).toEqual(["rec0", "rec2"]);
        expect(issues.map((i) => [i.line, i.field])).toEqual([[4, "Correct Answer"]]);
    });

    it("keeps the permutation of each question independent of the others", () => {
        expect(shuffledOrder(4, "0:rec3")).toEqual(shuffledOrder(4, "0:rec3"));
        expect([...shuffledOrder(4, "x")].sort()).toEqual([0, 1, 2, 3]);
    });
});

describe("CSV reader", () => {
    it("reports broken rows by line, in order with the good ones, under skip", async () => {
        const file = scratchFile("broken.csv", "a,b\n1,2\n3,4,5\n8,9\n\"6,7\n");
        const events: string[] = [];
        const issues: DataError[] = [];
        for await (const r of readCsv(file, {policy: "skip", onIssue: (i) => {
            issues.push(i);
            events.push(`issue ${i.line}`);
        }})) events.push(`row ${r.line} ${JSON.stringify(r.value)}`);
        expect(events).toEqual(["row 2 {\"a\":\"1\",\"b\":\"2\"}", "issue 3", "row 4 {\"a\":\"8\",\"b\":\"9\"}", "issue 5"]);
        expect(issues[0]!.message).toMatch(/broken\.csv:3: not valid CSV \(Invalid Record Length/);
        expect(issues[1]!.message).toMatch(/Quote Not Closed/);
        await expect((async () => {
            for await (const _ of readCsv(file)) void _;
        })()).rejects.toThrow(/broken\.csv:3: not valid CSV/);
    });
});

describe("STILL-2 long-form thought data", () => {
    const example = (i: number) => ({
        question: `Question ${i}?`, combined_text: formatThought({thought: `thinking about ${i}`, solution: `so \\boxed{${i}}`}), domain: i % 2 === 0 ? "math" : "code"
    });

    it("reads the public layout from JSONL and checks the format", async () => {
        const rows = [example(1), {question: "Q2", combined_text: "no markers at all", domain: "math"}, example(3), {question: "Q4"}];
        const file = scratchFile("still.jsonl", rows.map((r) => JSON.stringify(r)).join("\n"));
        const {items, issues} = await loadLongFormThoughts(file, {policy: "skip"});
        expect(items.map((e) => [e.question, e.domain, e.source])).toEqual([["Question 1?", "code", "still"], ["Question 3?", "code", "still"]]);
        expect(items[0]!.response).toBe(example(1).combined_text);
        expect(issues.map((i) => [i.line, i.field])).toEqual([[2, "combined_text"], [4, "combined_text"]]);
        expect(issues[0]!.message).toMatch(/not in the thought\/solution format: .*is missing/);
    });

    it("reads the same layout from Parquet, one row group at a time, numbering rows", async () => {
        const rows = Array.from({length: 25}, (_, i) => example(i));
        rows[7] = {...rows[7]!, combined_text: "broken"};
        const file = path.join(scratch, "still.parquet");
        parquetWriteFile({
            filename: file, rowGroupSize: 10,
            columnData: [
                {name: "question", data: rows.map((r) => r.question), type: "STRING"},
                {name: "combined_text", data: rows.map((r) => r.combined_text), type: "STRING"},
                {name: "domain", data: rows.map((r) => r.domain), type: "STRING"},
                {name: "n", data: rows.map((_, i) => BigInt(i)), type: "INT64"}
            ]
        });
        const {items, issues} = await loadLongFormThoughts(file, {policy: "skip"});
        expect(items).toHaveLength(24);
        expect(issues.map((i) => i.line)).toEqual([8]);
        const numbered: number[] = [];
        for await (const r of readParquet(file, {schema: z.object({n: z.number()})})) numbered.push(r.value.n * 100 + r.line);
        expect(numbered).toEqual(rows.map((_, i) => i * 100 + i + 1));
    });

    it("says when a file is not Parquet", async () => {
        const file = scratchFile("fake.parquet", "this is not parquet at all");
        await expect(loadLongFormThoughts(file)).rejects.toThrow(/fake\.parquet: not a readable Parquet file/);
    });
});
