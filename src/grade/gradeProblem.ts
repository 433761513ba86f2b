// One grader for every problem type: math, choice and exact answers by grade(), code by
// running it against the problem's tests in the sandbox (a CodeVerifier). Exploration,
// evaluation, GRPO's rewards and `still grade --file` all grade through here.
import type {CodeResult} from "../code/codeSpec.js";
import type {CodeVerifier} from "../code/verifyCode.js";
import type {Problem} from "../data/problemSchema.js";
import {OptionError} from "../errors.js";
import type {ProblemType} from "./answerType.js";
import {grade} from "./grade.js";

export type ProblemGrade = {
    correct: boolean,
    /** The answer found (for code: the program's first line); null when none was found. */
    extracted: string | null,
    type: ProblemType,
    /** For code problems: how the check ended. */
    code?: CodeResult
};

export type GradeProblemOptions = {
    /** Runs code checks; needed for code problems. */
    verifier?: CodeVerifier | undefined,
    signal?: AbortSignal | undefined
};

export async function gradeProblem(problem: Problem, response: string, o: GradeProblemOptions = {}): Promise<ProblemGrade> {
    if (problem.type === "code") {
        if (o.verifier == null) throw new OptionError(`problem ${problem.id} is a code problem: grading it needs a CodeVerifier.`);
        const r = await o.verifier.verifyResponse(response, problem.code!, o.signal);
        const {code, ...result} = r;
        const first = code?.split("\n").find((l) => l.trim().length > 0)?.trim() ?? null;
        return {correct: result.status === "passed", extracted: first == null ? null : first.slice(0, 200), type: "code", code: result};
    }
    const options = {type: problem.type, ...(problem.choices == null ? {} : {choices: problem.choices})};
    const g = grade(response, problem.answer, options);
    // any accepted answer will do; the first answer's extraction is kept when none matches
    const alternative = g.correct ? undefined : problem.alternatives?.map((a) => grade(response, a, options)).find((r) => r.correct);
    return {correct: g.correct || alternative != null, extracted: (alternative ?? g).extracted, type: problem.type};
}
