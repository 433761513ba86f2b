// The built-in offline task: multi-step integer arithmetic with exact answers, and a
// scripted teacher that writes long-form thoughts in the STILL format (steps, a check,
// and now and then a slip caught by "wait, let me re-check").
import type {Problem} from "../data/problemSchema.js";
import {formatThought} from "../format/formatThought.js";

/** A seeded generator (mulberry32): the same seed gives the same problems and thoughts. */
export function rng(seed: number): () => number {
    let s = seed >>> 0;
    return () => {
        s = (s + 0x6d2b79f5) >>> 0;
        let t = s;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

export type DemoProblem = Problem & {terms: number[], ops: ("+" | "-")[]};

/**
 * `count` problems like "What is 47 + 38 - 12?": two or three two-digit numbers, the
 * result kept between 0 and 199. Ids are stable for a seed: "demo-<seed>-<i>".
 */
export function demoProblems(seed: number, count: number): DemoProblem[] {
    const next = rng(seed);
    const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
    const out: DemoProblem[] = [];
    for (let i = 0; i < count; i++) {
        const n = next() < 0.5 ? 2 : 3;
        const terms = [int(10, 99)];
        const ops: ("+" | "-")[] = [];
        let value = terms[0]!;
        for (let k = 1; k < n; k++) {
            const op: "+" | "-" = value > 60 && next() < 0.6 ? "-" : "+";
            const t = op === "-" ? int(10, Math.min(99, value)) : int(10, Math.min(99, 199 - value));
            ops.push(op);
            terms.push(t);
            value = op === "+" ? value + t : value - t;
        }
        const expr = terms.map((t, k) => (k === 0 ? String(t) : `${ops[k - 1]} ${t}`)).join(" ");
        out.push({
            id: `demo-${seed}-${i}`, question: `What is ${expr}?`, answer: String(value),
            domain: "math", type: "math", source: "demo", terms, ops
        });
    }
    return out;
}

/** The digit-by-digit working of a + b or a - b, as a teacher would write it. */
function stepText(a: number, op: "+" | "-", b: number): {text: string, result: number} {
    const [a1, a0] = [Math.floor(a / 10), a % 10];
    const [b1, b0] = [Math.floor(b / 10), b % 10];
    if (op === "+") {
        const ones = a0 + b0;
        const carry = ones >= 10 ? 1 : 0;
        const result = a + b;
        const onesText = `ones: ${a0} + ${b0} = ${ones}${carry ? `, write ${ones % 10} carry 1` : ""}`;
        const tensText = `tens: ${a1} + ${b1}${carry ? " + 1" : ""} = ${a1 + b1 + carry}`;
        return {text: `${a} + ${b}: ${onesText}; ${tensText}; so ${result}.`, result};
    }
    const borrow = a0 < b0 ? 1 : 0;
    const result = a - b;
    const onesText = `ones: ${borrow ? `${a0 + 10} - ${b0}` : `${a0} - ${b0}`} = ${a0 + 10 * borrow - b0}${borrow ? " (borrow 1)" : ""}`;
    const tensText = `tens: ${a1}${borrow ? " - 1" : ""} - ${b1} = ${a1 - borrow - b1}`;
    return {text: `${a} - ${b}: ${onesText}; ${tensText}; so ${result}.`, result};
}

/**
 * A long-form thought and solution for a problem. With probability `slipRate` one step
 * first comes out wrong by one ten, and the check that follows finds and fixes it.
 */
export function teacherResponse(problem: DemoProblem, next: () => number, slipRate = 0.15): string {
    const lines: string[] = [`We need ${problem.question.replace(/^What is /, "").replace(/\?$/, "")}. Work left to right.`];
    let value = problem.terms[0]!;
    for (let k = 1; k < problem.terms.length; k++) {
        const op = problem.ops[k - 1]!;
        const b = problem.terms[k]!;
        const step = stepText(value, op, b);
        if (next() < slipRate) {
            const wrong = step.result + (next() < 0.5 ? 10 : -10);
            lines.push(`${value} ${op} ${b} = ${wrong}.`);
            const check = op === "+" ? `${wrong} - ${b} = ${wrong - b}, not ${value}` : `${wrong} + ${b} = ${wrong + b}, not ${value}`;
            lines.push(`Wait, let me re-check: ${check}. Redo it.`);
        }
        lines.push(step.text);
        value = step.result;
    }
    const last = problem.ops.at(-1)!;
    const b = problem.terms.at(-1)!;
    const before = last === "+" ? value - b : value + b;
    lines.push(`Check: ${value} ${last === "+" ? "-" : "+"} ${b} = ${before}. Correct.`);
    const expr = problem.question.replace(/^What is /, "").replace(/\?$/, "");
    return formatThought({thought: lines.join("\n"), solution: `${expr} = \\boxed{${value}}`});
}

/**
 * The skill a base model brings from pre-training: a problem worked step by step, digit
 * by digit, when asked for it in so many words (plain text, no thought format, no checks;
 * the steps read as the teacher's do). Requests and openings vary in wording and length,
 * so that the model learns to copy the numbers by what they are, not by how far back
 * they stand: a thought puts other text between the question and the steps.
 */
export function workedSteps(problem: DemoProblem, next: () => number): {question: string, response: string} {
    const expr = problem.question.replace(/^What is /, "").replace(/\?$/, "");
    const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
    const question = pick([
        `Work out ${expr} step by step.`, `Show the steps for ${expr}.`, `${expr}: work it out digit by digit, please.`,
        `Please compute ${expr}, one step at a time.`, `Steps for ${expr}?`
    ]);
    const opening = pick(["", "", "Sure. ", "Let me see. ", "Right.\n\n", "OK, step by step.\n", "\n\n"]);
    const lines: string[] = [];
    let value = problem.terms[0]!;
    for (let k = 1; k < problem.terms.length; k++) {
        const step = stepText(value, problem.ops[k - 1]!, problem.terms[k]!);
        lines.push(step.text);
        value = step.result;
    }
    return {question, response: opening + [`We need ${expr}. Work left to right.`, ...lines].join("\n")};
}

/** The plain worked answer the base model is pre-trained on: no thought format. */
export function plainAnswer(problem: DemoProblem): string {
    return `${problem.question.replace(/^What is /, "").replace(/\?$/, "")} = ${problem.answer}`;
}
