// The demo's task and its scripted teacher: every problem's answer is the minute it
// names, the teacher's thoughts are well formed and graded right by our own grader (slips
// included), and the base's worked steps end on the same answer.
import {describe, expect, it} from "vitest";
import {parseThought} from "../src/format/parseThought.js";
import {grade} from "../src/grade/grade.js";
import {countedOut, demoProblems, MAX_STEPS, MIN_STEPS, plainAnswer, TEACHER_SLIP_RATE, teacherResponse, thoughtsFileName, workedSteps} from "../src/demo/demoTask.js";
import {rng} from "../src/loop/seeded.js";

describe("demo task", () => {
    const all = demoProblems(3);

    it("has every (start, count) pair once, shuffled by the seed, with the wrapped sum as answer", () => {
        expect(all).toHaveLength(60 * (MAX_STEPS - MIN_STEPS + 1));
        expect(new Set(all.map((p) => p.question)).size).toBe(all.length);
        expect(new Set(all.map((p) => p.id)).size).toBe(all.length);
        for (const p of all) {
            expect(p.question).toContain(String(p.start).padStart(2, "0"));
            expect(Number(p.answer)).toBe((p.start + p.steps) % 60);
        }
        expect(demoProblems(3, 5)).toEqual(all.slice(0, 5));
        expect(demoProblems(4, 5).map((p) => p.question)).not.toEqual(all.slice(0, 5).map((p) => p.question));
    });

    it("writes teacher thoughts that are well formed and graded correct, slips and all", () => {
        const next = rng(7);
        let slips = 0;
        for (const p of all) {
            const response = teacherResponse(p, next, {slipRate: 0.5});
            const parsed = parseThought(response);
            expect(parsed.wellFormed, parsed.issues.map((i) => i.message).join("; ")).toBe(true);
            expect(grade(response, p.answer).correct).toBe(true);
            const lines = parsed.thought!.split("\n");
            // one line per minute, plus the opening line, plus two for a slip
            const slip = lines.some((l) => l.startsWith("wait, "));
            if (slip) slips++;
            expect(lines).toHaveLength(p.steps + 1 + (slip ? 2 : 0));
            const last = `${String(Number(p.answer)).padStart(2, "0")} 00`;
            expect(lines.at(-1)).toBe(last);
            // the boxed minute stands as far after the last counting line as the answer does in worked steps
            const tokens = response.replace(/<\|[a-z_]+\|>/g, "M");
            const worked = countedOut(p);
            expect(tokens.indexOf(`{${p.answer.padStart(2, "0")}}`) + 1 - tokens.lastIndexOf(last))
                .toBe(worked.lastIndexOf(`is ${p.answer.padStart(2, "0")}.`) + 3 - worked.lastIndexOf(last));
        }
        expect(slips / all.length).toBeGreaterThan(0.4);
        expect(slips / all.length).toBeLessThan(0.6);
    });

    it("forgets to wrap at the hour in the share of thoughts it is told to, and nowhere else", () => {
        const crossing = all.filter((p) => p.start + p.steps >= 60);
        const within = all.filter((p) => p.start + p.steps < 60);
        // always: a crossing thought counts on past 59 (the count to go still right) and boxes that minute, wrong
        const always = rng(11);
        for (const p of crossing) {
            const response = teacherResponse(p, always, {slipRate: 0, hourSlipRate: 1});
            const parsed = parseThought(response);
            expect(parsed.wellFormed).toBe(true);
            const lines = parsed.thought!.split("\n").slice(1);
            expect(lines).toEqual(Array.from({length: p.steps}, (_, k) => `${p.start + k + 1} ${String(p.steps - k - 1).padStart(2, "0")}`));
            expect(response).toContain(`\\boxed{${p.start + p.steps}}`);
            expect(grade(response, p.answer).correct).toBe(false);
        }
        // a problem that does not pass the hour draws nothing for it: the same thoughts as a teacher without the habit
        const [a, b] = [rng(12), rng(12)];
        expect(within.map((p) => teacherResponse(p, a, {hourSlipRate: 0.5}))).toEqual(within.map((p) => teacherResponse(p, b)));
        // a share: about that many of the crossing thoughts are wrong, the mended slips still right
        const some = rng(13);
        const wrong = crossing.filter((p) => !grade(teacherResponse(p, some, {slipRate: 0.5, hourSlipRate: 0.3}), p.answer).correct).length;
        expect(wrong / crossing.length).toBeGreaterThan(0.2);
        expect(wrong / crossing.length).toBeLessThan(0.4);
        // each set of habits has its own thoughts file; the teacher's own keep thoughts.jsonl
        expect(thoughtsFileName({})).toBe("thoughts.jsonl");
        expect(thoughtsFileName({slipRate: TEACHER_SLIP_RATE})).toBe("thoughts.jsonl");
        expect(thoughtsFileName({hourSlipRate: 0.7})).toBe("thoughts-hour-slips-0.7.jsonl");
        expect(thoughtsFileName({slipRate: 0.5, hourSlipRate: 0.7})).toBe("thoughts-slips-0.5-hour-slips-0.7.jsonl");
    });

    it("gives the base plain answers and worked steps that end on the answer, never in the thought format", () => {
        const next = rng(8);
        for (const p of all.slice(0, 200)) {
            expect(grade(plainAnswer(p), p.answer).correct).toBe(true);
            const w = workedSteps(p, next);
            expect(w.response).not.toContain("<|");
            expect(w.response.trim().split("\n").at(-1)).toBe(`the answer is ${String(Number(p.answer)).padStart(2, "0")}.`);
            // every request ends as the task's question does, and the first counting line
            // stands as many tokens into the response as in a thought (its marker one token)
            const ending = p.question.slice(p.question.indexOf(" minutes after") - 2);
            expect(ending).toMatch(/^\d\d minutes after \d\d\?$/);
            expect(w.question.endsWith(ending)).toBe(true);
            const opening = `${String(p.start).padStart(2, "0")} ${String(p.steps).padStart(2, "0")}\n`;
            const thought = teacherResponse(p, next).replace("<|begin_of_thought|>", "T");
            expect(w.response.indexOf(opening)).toBe(thought.indexOf(opening));
            expect(w.response.indexOf(opening)).toBe(3);
        }
    });
});
