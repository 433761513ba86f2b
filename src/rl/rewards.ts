// Rewards of online RL: the verifiable outcome from the grader (STILL-3's scheme by default:
// correct +1, wrong −1, unfinished −2), an optional format bonus, DAPO's soft over-length
// penalty and the user's own reward functions, summed; each part kept for the metrics.
import {z} from "zod";
import type {Problem} from "../data/problemSchema.js";
import {StillError} from "../errors.js";
import {cutShortReason, parseThought} from "../format/parseThought.js";
import type {CodeVerifier} from "../code/verifyCode.js";
import {gradeProblem} from "../grade/gradeProblem.js";

export const rewardSchemeSchema = z.strictObject({
    correct: z.number().describe("Reward of a finished response whose answer is right").default(1),
    wrong: z.number().describe("Reward of a finished response whose answer is wrong").default(-1),
    unfinished: z.number().describe("Reward of a response without a final answer, cut at maxTokens, or whose thought never closed " +
        "(never counted as correct, whatever its last line holds)").default(-2),
    format: z.number().describe("Added to a response that follows the thought format exactly (0: off)").default(0),
    requireFormat: z.boolean().describe("A format gate: a finished response that does not follow the thought format exactly gets the wrong " +
        "reward whatever its answer (its grade, and the accuracy metrics, stay the grader's)").default(false),
    overlong: z.strictObject({
        buffer: z.number().int().min(1).describe("The last tokens before maxTokens over which the penalty grows from 0 to its full size"),
        penalty: z.number().min(0).describe("The penalty at maxTokens and beyond").default(1)
    }).optional().describe("DAPO's soft over-length penalty: 0 up to maxTokens − buffer, then growing linearly to −penalty at maxTokens")
}).describe("How a sampled response is rewarded");
export type RewardScheme = z.output<typeof rewardSchemeSchema>;

/** What a reward function sees of one sample. */
export type RewardInput = {
    problem: Problem,
    /** The sample's index among its prompt's samples. */
    sample: number,
    text: string,
    completionTokens: number,
    finish: "stop" | "length",
    /** The grader's verdict. */
    correct: boolean,
    extracted: string | null,
    unfinished: boolean
};

/** A reward of your own: a number, or null when it does not apply to the sample (then it adds nothing). */
export type RewardFunction = {
    name: string,
    fn: (input: RewardInput) => number | null | Promise<number | null>,
    weight?: number
};

export type RewardedSample = RewardInput & {
    reward: number,
    /** Each part of the reward: outcome, format, overlong and every reward function by name (null: did not apply). */
    parts: Record<string, number | null>
};

/** Why a response counts as unfinished (cut short, see cutShortReason, or without a final answer), or null when it is finished. */
export function unfinishedReason(text: string, finish: "stop" | "length", extracted: string | null,
                                 parsed: ReturnType<typeof parseThought> = parseThought(text)): string | null {
    return cutShortReason(text, finish, parsed) ?? (extracted == null ? "no final answer" : null);
}

/** DAPO's soft over-length penalty of a response of `tokens` tokens (0 or negative). */
export function overlongPenalty(tokens: number, maxTokens: number, o: {buffer: number, penalty: number}): number {
    const free = maxTokens - o.buffer;
    if (tokens <= free) return 0;
    if (tokens >= maxTokens) return -o.penalty;
    return -o.penalty * (tokens - free) / o.buffer;
}

/** Grades and rewards one sample; a reward function that throws or gives a non-finite number stops with an error naming the sample. */
export async function rewardSample(problem: Problem,
                                   s: {sample: number, text: string, completionTokens: number, finish: "stop" | "length",
                                       /** The grader's verdict when the sample was graded already. */
                                       grade?: {correct: boolean, extracted: string | null}},
                                   scheme: RewardScheme, maxTokens: number, functions: readonly RewardFunction[] = [],
                                   verifier?: CodeVerifier): Promise<RewardedSample> {
    const g = s.grade ?? await gradeProblem(problem, s.text, {verifier, finish: s.finish});
    const parsed = parseThought(s.text);
    const unfinished = unfinishedReason(s.text, s.finish, g.extracted, parsed) != null;
    const input: RewardInput = {
        problem, sample: s.sample, text: s.text, completionTokens: s.completionTokens, finish: s.finish,
        correct: g.correct && !unfinished, extracted: g.extracted, unfinished
    };
    const parts: Record<string, number | null> = {
        outcome: unfinished ? scheme.unfinished : input.correct && (parsed.wellFormed || !scheme.requireFormat) ? scheme.correct : scheme.wrong
    };
    if (scheme.format !== 0) parts.format = parsed.wellFormed ? scheme.format : 0;
    if (scheme.overlong != null) parts.overlong = overlongPenalty(s.completionTokens, maxTokens, scheme.overlong);
    for (const f of functions) {
        let value: number | null;
        const where = `problem ${problem.id}, sample ${s.sample}`;
        try {
            value = await f.fn(input);
        } catch (err) {
            throw new StillError(`the reward function ${f.name} failed on ${where}: ${(err as Error).message ?? String(err)}`, {cause: err});
        }
        if (value !== null && (typeof value !== "number" || !Number.isFinite(value)))
            throw new StillError(`the reward function ${f.name} returned ${String(value)} for ${where}; a reward is a finite number or null.`);
        parts[f.name] = value === null ? null : value * (f.weight ?? 1);
    }
    let reward = 0;
    for (const v of Object.values(parts)) reward += v ?? 0;
    return {...input, reward, parts};
}
