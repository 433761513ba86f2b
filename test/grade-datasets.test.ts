// Real data as a conformance check: every MATH500 solution against its own answer, and
// solutions against other problems' answers; the same for AIME 2024.
import {describe, expect, it} from "vitest";
import {formatThought} from "../src/format/formatThought.js";
import {grade} from "../src/grade/grade.js";
import {readJsonlFixture, seeded} from "./helpers/fixtures.js";

type MathRow = {problem: string, solution: string, answer: string, unique_id: string};
type AimeRow = {id: string, problem: string, answer: string, answer_raw: string};

const math500 = readJsonlFixture<MathRow>("data/math500.jsonl");
const aime = readJsonlFixture<AimeRow>("data/aime24.jsonl");

describe("MATH500", () => {
    it("grades every gold solution correct against its answer (500/500)", () => {
        expect(math500).toHaveLength(500);
        const missed = math500.filter((r) => !grade(r.solution, r.answer).correct);
        expect(missed.map((r) => `${r.unique_id}: ${r.answer}`)).toEqual([]);
    });

    it("grades solutions against a different problem's answer incorrect in at least 99% of 2,000 seeded pairs", () => {
        const random = seeded(2024);
        let pairs = 0;
        let accepted = 0;
        const examples: string[] = [];
        while (pairs < 2000) {
            const i = Math.floor(random() * math500.length);
            const j = Math.floor(random() * math500.length);
            // Pairs whose gold answers are the same text are the same answer, not a mismatch.
            if (i === j || math500[i]!.answer.trim() === math500[j]!.answer.trim()) continue;
            pairs++;
            if (grade(math500[i]!.solution, math500[j]!.answer).correct) {
                accepted++;
                examples.push(`${math500[i]!.answer} ~ ${math500[j]!.answer}`);
            }
        }
        expect(1 - accepted / pairs, examples.join("\n")).toBeGreaterThanOrEqual(0.99);
    });
});

describe("AIME 2024", () => {
    const response = (answer: string) => formatThought({
        thought: "Let me work through the problem carefully and check each step.",
        solution: `Putting the pieces together, the requested quantity is $\\boxed{${answer}}$.`
    });

    it("grades each answer (as written with leading zeros) correct in the long-form format (30/30)", () => {
        expect(aime).toHaveLength(30);
        for (const r of aime) {
            expect(grade(response(r.answer_raw), r.answer).correct, r.id).toBe(true);
            expect(grade(`The final answer is ${r.answer_raw}.`, r.answer).correct, r.id).toBe(true);
        }
    });

    it("grades every mismatched pair with a different answer incorrect", () => {
        let pairs = 0;
        for (const a of aime) {
            for (const b of aime) {
                if (a.answer === b.answer) continue;
                pairs++;
                expect(grade(response(a.answer_raw), b.answer).correct, `${a.id} vs ${b.id}`).toBe(false);
            }
        }
        expect(pairs).toBeGreaterThan(800);
    });
});
