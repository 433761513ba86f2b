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
// among words it does not.) Every number has two digits, in the question as in the
// working: each line stands at the same distance from the one before, and the question's
// two numbers at the same distance from the working's first line, whatever the problem.
import type {Problem} from "../data/problemSchema.js";
import {formatThought} from "../format/formatThought.js";
import {pick, shuffle} from "../loop/seeded.js";

/** Minutes to count on, from MIN_STEPS to MAX_STEPS (two digits each): every (start, count) pair is one problem. */
export const MIN_STEPS = 10;
export const MAX_STEPS = 20;
const MINUTES = 60;

export type DemoProblem = Problem & {start: number, steps: number};

const two = (n: number) => String(n).padStart(2, "0");
const later = (minute: number, n = 1) => (minute + n) % MINUTES;

/**
 * Every (start, count) pair as a problem, in an order shuffled by `seed`, the first
 * `count` of them (all 660 by default). Distinct pairs are distinct problems, so slices
 * of one call are disjoint sets. Ids are stable for a seed: "demo-<seed>-<start>+<count>".
 */
export function demoProblems(seed: number, count = MINUTES * (MAX_STEPS - MIN_STEPS + 1)): DemoProblem[] {
    const all: DemoProblem[] = [];
    for (let start = 0; start < MINUTES; start++) {
        for (let steps = MIN_STEPS; steps <= MAX_STEPS; steps++) {
            all.push({
                id: `demo-${seed}-${two(start)}+${steps}`,
                question: `What does the minute display read ${askFor({start, steps})}`,
                answer: String(later(start, steps)), domain: "puzzle", type: "math", source: "demo", start, steps
            });
        }
    }
    return shuffle(all, seed).slice(0, count);
}

/**
 * The counting lines from the start to the answer: "48 27", "49 26", … "15 00". `minute`
 * gives the minute k minutes after the start (wrapping at the hour unless a slip says not).
 */
function countingLines(problem: DemoProblem, minute = (k: number) => later(problem.start, k)): string[] {
    const lines: string[] = [];
    for (let k = 1; k <= problem.steps; k++) lines.push(`${two(minute(k))} ${two(problem.steps - k)}`);
    return lines;
}

/**
 * The working's first line: the question's two numbers copied, as a counting line reads
 * (the minute, the minutes still to go), so that every later line follows from the one
 * before by the same two rules.
 */
export const opening = (p: DemoProblem) => `${two(p.start)} ${two(p.steps)}`;
const answerText = (p: DemoProblem) => two(later(p.start, p.steps));

/** Share of the teacher's thoughts with a slip it mends, unless its habits say otherwise. */
export const TEACHER_SLIP_RATE = 0.15;

/** How the scripted teacher errs. */
export type TeacherHabits = {
    /** Share of thoughts with one skipped minute that the next line notices and mends ("wait, …"); default TEACHER_SLIP_RATE. */
    slipRate?: number,
    /**
     * Share of the thoughts that pass the hour in which the teacher forgets to wrap and counts
     * on past 59 (60, 61, …), boxing a minute the display never shows: a mistake it never
     * notices, so those thoughts end on a wrong answer. Default 0 (draws nothing then).
     */
    hourSlipRate?: number
};

/**
 * The file name for thoughts written with `habits`: thoughts.jsonl for the teacher's own,
 * a name per habit changed otherwise ("thoughts-hour-slips-0.7.jsonl"), so that runs with
 * different teachers in one folder never overwrite each other's data.
 */
export function thoughtsFileName(habits: TeacherHabits): string {
    const {slipRate = TEACHER_SLIP_RATE, hourSlipRate = 0} = habits;
    return `thoughts${slipRate === TEACHER_SLIP_RATE ? "" : `-slips-${slipRate}`}${hourSlipRate === 0 ? "" : `-hour-slips-${hourSlipRate}`}.jsonl`;
}

/**
 * A long-form thought and solution for a problem: the thought counts on, line by line,
 * and ends on its last counting line ("15 00"); the solution is the minute it reached,
 * boxed. With probability `slipRate` one line first skips a minute, and the next line
 * notices it ("wait, after 17 comes 18, not 19.") and goes on from the right one. With
 * `hourSlipRate`, a thought that passes the hour may not wrap (TeacherHabits).
 *
 * The boxed minute stands as far from the last counting line ("15 00", then the thought's
 * end, the solution's marker and blank lines, "\boxed{") as the answer does in worked steps
 * ("15 00", then "the answer is "): 20 tokens, each marker one. The tiny model copies by
 * distance, so what it learnt for its own answers carries over to the solution.
 */
export function teacherResponse(problem: DemoProblem, next: () => number, habits: TeacherHabits = {}): string {
    const {slipRate = TEACHER_SLIP_RATE, hourSlipRate = 0} = habits;
    // the hour slip is drawn only when it can happen, so a teacher without it draws as before
    const noWrap = hourSlipRate > 0 && problem.start + problem.steps >= MINUTES && next() < hourSlipRate;
    const minute = (k: number) => noWrap ? problem.start + k : later(problem.start, k);
    const lines = countingLines(problem, minute);
    if (next() < slipRate) {
        // line `at` should reach start + at + 1; it reaches one further first
        const at = Math.floor(next() * lines.length);
        const [previous, right, wrong] = [at, at + 1, at + 2].map((k) => two(minute(k)));
        lines.splice(at, 0, `${wrong} ${two(problem.steps - at - 1)}`, `wait, after ${previous} comes ${right}, not ${wrong}.`);
    }
    return formatThought({thought: [opening(problem), ...lines].join("\n"), solution: `\\boxed{${two(minute(problem.steps))}}.`});
}

/**
 * The skill a base model brings from pre-training: a problem counted out line by line
 * when asked for it in so many words (plain text, no thought format, no slips; the lines
 * read as the teacher's do). Requests vary in their opening words and end as the task's
 * questions do ("… 18 minutes after 47?"); the response opens with a line of three
 * characters, as many tokens as stand before a thought's first line (its marker and a
 * blank line). So the question's two numbers stand at the same distance from the first
 * counting line as they do in a thought, and a model this small, which copies by distance
 * long before it copies by order, brings the copy it needs to imitation.
 */
export function workedSteps(problem: DemoProblem, next: () => number): {question: string, response: string} {
    const ask = pick(next, [
        "Count it out, a line per minute: where is the display", "Minute by minute, what does the display read",
        "One line for each minute, please: what does the clock show", "Counting on, what is the minute",
        "Please count: where does the minute display stand"
    ]);
    const lead = pick(next, ["Ok\n", "So\n", "Go\n"]);
    return {question: `${ask} ${askFor(problem)}`, response: lead + countedOut(problem)};
}

/** The end every request and question shares, the two numbers in it at fixed places: "18 minutes after 47?". */
const askFor = (p: {start: number, steps: number}) => `${two(p.steps)} minutes after ${two(p.start)}?`;

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
 * The pre-training probe's request: counting a problem out, in opening words none of the
 * worked steps use, ending as they do.
 */
export function probeRequest(problem: DemoProblem): string {
    return `Say each minute in turn: what will the display read ${askFor(problem)}`;
}

/** The direct answer the base model is pre-trained on: no thought format, no counting. */
export function plainAnswer(problem: DemoProblem): string {
    return `the answer is ${answerText(problem)}.`;
}
