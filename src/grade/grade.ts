// The grader: one response against one gold answer, by the problem's type.
//  - math: extract the final answer, then mathEqual (a gold that is a choice letter is
//    graded as a choice);
//  - choice: the letter the response picks against the gold letter;
//  - exact: the extracted answer against the gold text, ignoring case, spacing, LaTeX
//    wrappers and trailing punctuation.
import {z} from "zod";
import {OptionError, parseOptions} from "../errors.js";
import {answerTypes, answerTypeSchema, type AnswerType} from "./answerType.js";
import {extractGoldAnswer, extractMathAnswer} from "./extractAnswer.js";
import {extractChoice, gradeChoice, parseChoiceGold} from "./gradeChoice.js";
import {mathEqual} from "./mathEqual.js";
import {normalizeAnswer, stripMathDelimiters, unbox} from "./normalizeAnswer.js";

export {answerTypes, answerTypeSchema, type AnswerType};

export const gradeOptionsSchema = z.object({
    type: answerTypeSchema.describe(`How the answer is graded: ${answerTypes.join(", ")}`).default("math"),
    choices: z.array(z.string()).optional().describe("For choice problems: the options' texts in letter order"),
    letters: z.string().regex(/^[A-Z]+$/).optional().describe("Letters that can be answers (default A–J)"),
    timeoutMs: z.number().positive().optional().describe("Time allowed for one math comparison, in milliseconds")
});
export type GradeOptions = z.input<typeof gradeOptionsSchema>;

export const gradeResultSchema = z.object({
    correct: z.boolean(),
    /** The answer found in the response (a letter for choice problems); null when none was found. */
    extracted: z.string().nullable(),
    type: answerTypeSchema
});
export type GradeResult = z.infer<typeof gradeResultSchema>;

/** Grades `response` against `gold` (a number is read as its decimal text). */
export function grade(response: string, gold: string | number, options: GradeOptions = {}): GradeResult {
    if (typeof response !== "string") throw new OptionError("grade needs the response as a string.");
    if (typeof gold === "number") gold = String(gold);
    if (typeof gold !== "string") throw new OptionError("grade needs the gold answer as a string or a number.");
    if ((options as {type?: string}).type === "code")
        throw new OptionError("grade() checks answers synchronously; a code answer is checked by running it: use gradeProblem() or a CodeVerifier (they run it in the sandbox).");
    const opts = parseOptions(gradeOptionsSchema, options, "grade options");
    const choiceOptions = {
        ...(opts.letters == null ? {} : {letters: opts.letters}),
        ...(opts.choices == null ? {} : {choices: opts.choices})
    };
    switch (opts.type) {
        case "choice": {
            const r = gradeChoice(response, gold, choiceOptions);
            return {...r, type: "choice"};
        }
        case "exact": {
            const extracted = extractExact(response);
            return {correct: extracted != null && exactKey(extracted) === exactKey(goldText(gold)), extracted, type: "exact"};
        }
        case "math": {
            // A gold that is only a choice letter ("C", "(C)", "\text{(C)}") is a choice question.
            if (parseChoiceGold(gold, opts.letters) != null) {
                const r = gradeChoice(response, gold, choiceOptions);
                return {...r, type: "math"};
            }
            const found = extractMathAnswer(response);
            const goldAnswer = extractGoldAnswer(gold);
            if (found == null) return {correct: false, extracted: null, type: "math"};
            const correct = mathEqual(found.text, goldAnswer, opts.timeoutMs == null ? {} : {timeoutMs: opts.timeoutMs});
            return {correct, extracted: found.text, type: "math"};
        }
    }
}

function extractExact(response: string): string | null {
    const found = extractMathAnswer(response);
    return found == null ? null : found.text;
}

function goldText(gold: string): string {
    return extractGoldAnswer(gold);
}

/** Case-, space- and wrapper-insensitive text. */
function exactKey(s: string): string {
    if (s.length > 5000) return s.trim();
    return normalizeAnswer(stripMathDelimiters(unbox(s))).normalize("NFKC").toLowerCase().replace(/\s+/g, " ").replace(/^["'“‘]|["'”’]$/g, "").trim();
}

/** The letter (choice) or answer text (math, exact) found in a response, without grading. */
export function extractAnswer(response: string, type: AnswerType = "math", options: {letters?: string, choices?: readonly string[]} = {}): string | null {
    if (type === "choice") return extractChoice(response, options);
    return extractMathAnswer(response)?.text ?? null;
}
