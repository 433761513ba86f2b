// How an answer is graded: math equivalence, a multiple-choice letter, or exact text.
import {z} from "zod";

export const answerTypes = ["math", "choice", "exact"] as const;
export const answerTypeSchema = z.enum(answerTypes);
export type AnswerType = z.infer<typeof answerTypeSchema>;
