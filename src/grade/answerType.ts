// How an answer is graded: math equivalence, a multiple-choice letter, exact text (the
// synchronous grader, grade()), or a program run against tests in the sandbox (code).
import {z} from "zod";

export const answerTypes = ["math", "choice", "exact"] as const;
export const answerTypeSchema = z.enum(answerTypes);
export type AnswerType = z.infer<typeof answerTypeSchema>;

export const problemTypes = [...answerTypes, "code"] as const;
export const problemTypeSchema = z.enum(problemTypes);
export type ProblemType = z.infer<typeof problemTypeSchema>;
