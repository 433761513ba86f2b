// The built-in offline task: counting on round a clock's minute display ("What does the
// minute display read 18 minutes after 47?"), and a scripted teacher that
// writes long-form thoughts in the STILL format: one minute per line with the count still
// to go, and now and then a slip caught by "wait".
//
// Why this task: a model answering at once must add and wrap round in one go, which a
// tiny model only memorises for the pairs it saw, and the held-out pairs are ones it never
// saw answered; a model that thinks slowly needs only two local rules applied once per
// line (the next minute, one less to go) and to copy the two numbers of the question,
// which a tiny character-level model learns in minutes on two cores. So slow thinking is
// what turns a skill the base has into answers it cannot give directly. (Numbers, not
// letters: the tiny model learns to find and copy a question's numbers quickly, a letter
// among words it does not.) Every number in the working has two digits, so each line
// stands at the same distance from the one before.
import type {Problem} from "../data/problemSchema.js";
import {formatThought} from "../format/formatThought.js";
import {pick, shuffle} from "../loop/seeded.js";

/** Minutes to count on, from MIN_STEPS to MAX_STEPS: every (start, count) pair is one problem. */
export const MIN_STEPS = 6;
export const MAX_STEPS = 24;
const MINUTES = 60;

export type DemoProblem = Problem & {start: number, steps: number};

const two = (n: number) => String(n).padStart(2, "0");
const later = (minute: number, n = 1) => (minute + n) % MINUTES;

/**
 * Every (start, count) pair as a problem, in an order shuffled by `seed`, the first
 * `count` of them (all 1,140 by default). Distinct pairs are distinct problems, so slices
 * of one call are disjoint sets. Ids are stable for a seed: "demo-<seed>-<start>+<count>".
 */
export function demoProblems(seed: number, count = MINUTES * (MAX_STEPS - MIN_STEPS + 1)): DemoProblem[] {
    const all: DemoProblem[] = [];
    for (let start = 0; start < MINUTES; start++) {
        for (let steps = MIN_STEPS; steps <= MAX_STEPS; steps++) {
            all.push({
                id: `demo-${seed}-${two(start)}+${steps}`,
                question: `What does the minute display read ${steps} minutes after ${two(start)}?`,
                answer: String(later(start, steps)), domain: "puzzle", type: "math", source: "demo", start, steps
            });
        }
    }
    return shuffle(all, seed).slice(0, count);
}

/** The counting lines from the start to the answer: "48 27", "49 26", … "15 00". */
function countingLines(problem: DemoProblem): string[] {
    const lines: string[] = [];
    for (let k = 1; k <= problem.steps; k++) lines.push(`${two(later(problem.start, k))} ${two(problem.steps - k)}`);
    return lines;
}

/**
 * The working's first line: the question's two numbers copied, as a counting line reads
 * (the minute, the minutes still to go), so that every later line follows from the one
 * before by the same two rules.
 */
export const opening = (p: DemoProblem) => `${two(p.start)} ${two(p.steps)}`;
const answerText = (p: DemoProblem) => two(later(p.start, p.steps));

/**
 * A long-form thought and solution for a problem. With probability `slipRate` one line
 * first skips a minute, and the next line notices it ("wait, after 17 comes 18, not
 * 19.") and goes on from the right one.
 */
export function teacherResponse(problem: DemoProblem, next: () => number, slipRate = 0.15): string {
    const lines = countingLines(problem);
    if (next() < slipRate) {
        // line `at` should reach start + at + 1; it reaches one further first
        const at = Math.floor(next() * lines.length);
        const [previous, right, wrong] = [at, at + 1, at + 2].map((k) => two(later(problem.start, k)));
        lines.splice(at, 0, `${wrong} ${two(problem.steps - at - 1)}`, `wait, after ${previous} comes ${right}, not ${wrong}.`);
    }
    return formatThought({
        thought: [opening(problem), ...lines, plainAnswer(problem)].join("\n"),
        solution: `the answer is \\boxed{${answerText(problem)}}.`
    });
}

/**
 * The skill a base model brings from pre-training: a problem counted out line by line
 * when asked for it in so many words (plain text, no thought format, no slips; the lines
 * read as the teacher's do). Requests and openings vary in wording and length, so that the
 * model learns to copy the two numbers by their order (the start, then the count), not by
 * how far back they stand: a thought puts other text between the question and the
 * counting.
 */
export function workedSteps(problem: DemoProblem, next: () => number): {question: string, response: string} {
    const [start, steps] = [two(problem.start), problem.steps];
    // The start always comes before the count, as in the task's questions.
    const question = pick(next, [
        `From ${start}, count on ${steps} minutes, one line per minute.`, `The display reads ${start}: count ${steps} minutes forward, minute by minute.`,
        `Start at ${start} and count out ${steps} minutes.`, `${start} and then ${steps} minutes on, counted minute by minute?`,
        `Please count from ${start} for ${steps} minutes.`
    ]);
    const first = pick(next, ["", "", "Sure.\n", "Let me count.\n", "Right.\n\n", "OK, one at a time.\n", "\n\n"]);
    return {question, response: first + countedOut(problem)};
}

/** A problem counted out: the opening line, a line per minute, the answer (as worked steps end). */
export function countedOut(problem: DemoProblem): string {
    return [opening(problem), ...countingLines(problem), plainAnswer(problem)].join("\n");
}

/**
 * Whether `text` counts on correctly from its own first line ("47 28", whatever numbers
 * it copied): every minute and count to go in turn, then the answer line. The counting
 * half of the skill, apart from the copying.
 */
export function countsOnFromItsStart(text: string): boolean {
    const m = /^(\d\d) (\d\d)$/m.exec(text);
    if (m == null) return false;
    const [start, steps] = [Number(m[1]), Number(m[2])];
    if (start >= MINUTES || steps < 1) return false;
    return text.slice(m.index).startsWith(countedOut({start, steps} as DemoProblem));
}

/**
 * The pre-training probe's request: counting a problem out, in words none of the worked
 * steps use, with the question's two numbers in the task's order.
 */
export function probeRequest(problem: DemoProblem): string {
    return `Count ${problem.steps} minutes on from ${two(problem.start)}, a line for each minute.`;
}

/**
 * A drill a base model also brings: the working's first line alone ("47 28"), asked for
 * in other words. Copying the question's two numbers is the one step
 * that reaches back to the question; short drills give it many more examples per minute
 * of pre-training than whole workings do.
 */
export function firstLine(problem: DemoProblem, next: () => number): {question: string, response: string} {
    const [start, steps] = [two(problem.start), problem.steps];
    const question = pick(next, [
        `Only the first line, please: from ${start}, ${steps} minutes on.`, `Set it up, don't count yet: ${start} and ${steps} minutes.`,
        `The display reads ${start}; I want ${steps} minutes later. How do you start?`, `First line for ${start} plus ${steps} minutes?`,
        `Starting from ${start} with ${steps} minutes to count: what is the first line?`
    ]);
    return {question, response: opening(problem)};
}

/** The direct answer the base model is pre-trained on: no thought format, no counting. */
export function plainAnswer(problem: DemoProblem): string {
    return `the answer is ${answerText(problem)}.`;
}
