// One grader for every problem type: math, choice and exact answers by grade(), code by
// running it against the problem's tests in the sandbox (a CodeVerifier). Exploration,
// evaluation, GRPO's rewards and the code lines of `still grade --file` grade through here.
// A response cut short (at maxTokens, or ending inside its thought or solution) is never
// correct, whatever it wrote last: the evaluation scores what the rewards reward.
import type {CodeResult} from "../code/codeSpec.js";
import type {CodeVerifier} from "../code/verifyCode.js";
import type {Problem} from "../data/problemSchema.js";
import {OptionError} from "../errors.js";
import {cutShortReason} from "../format/parseThought.js";
import type {ProblemType} from "./answerType.js";
import {grade} from "./grade.js";

export type ProblemGrade = {
    correct: boolean,
    /** The answer found (for code: the program's first line); null when none was found. */
    extracted: string | null,
    type: ProblemType,
    /** For code problems: how the check ended. */
    code?: CodeResult,
    /** Why the response counts as cut short (then it is not correct), or null. */
    cutShort: string | null
};

export type GradeProblemOptions = {
    /** Runs code checks; needed for code problems. */
    verifier?: CodeVerifier | undefined,
    signal?: AbortSignal | undefined,
    /** How generation ended, when known: "length" (cut at maxTokens) makes the response cut short. */
    finish?: "stop" | "length" | undefined
};

export async function gradeProblem(problem: Problem, response: string, o: GradeProblemOptions = {}): Promise<ProblemGrade> {
    const cutShort = cutShortReason(response, o.finish);
    if (problem.type === "code") {
        if (o.verifier == null) throw new OptionError(`problem ${problem.id} is a code problem: grading it needs a CodeVerifier.`);
        const r = await o.verifier.verifyResponse(response, problem.code!, o.signal);
        const {code, ...result} = r;
        const first = code?.split("\n").find((l) => l.trim().length > 0)?.trim() ?? null;
        // a cut-short response is still checked: its verdict says what the code did
        return {correct: cutShort == null && result.status === "passed", extracted: first == null ? null : first.slice(0, 200), type: "code", code: result, cutShort};
    }
    const options = {type: problem.type, ...(problem.choices == null ? {} : {choices: problem.choices})};
    const g = grade(response, problem.answer, options);
    // any accepted answer will do; the first answer's extraction is kept when none matches
    const alternative = g.correct ? undefined : problem.alternatives?.map((a) => grade(response, a, options)).find((r) => r.correct);
    return {correct: cutShort == null && (g.correct || alternative != null), extracted: (alternative ?? g).extracted, type: problem.type, cutShort};
}
