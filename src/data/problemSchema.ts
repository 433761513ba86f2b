// A problem with a known answer: what exploration samples and evaluation grades.
import {z} from "zod";
import {answerTypeSchema} from "../grade/answerType.js";

export const problemSchema = z.object({
    id: z.string().min(1),
    question: z.string().min(1),
    /** The gold answer: LaTeX or text for math and exact problems, a letter for choice problems. */
    answer: z.string().min(1),
    domain: z.string().min(1).default("math"),
    /** A difficulty level where the source gives one (MATH: 1–5). */
    difficulty: z.number().optional(),
    /** How the answer is graded. */
    type: answerTypeSchema.default("math"),
    /** Multiple-choice options, in letter order (A first). */
    choices: z.array(z.string()).min(2).optional(),
    /** A reference solution, where the source has one. */
    solution: z.string().optional(),
    source: z.string().optional()
}).refine((p) => p.type !== "choice" || (p.choices != null && /^[A-Z]$/.test(p.answer) && p.answer.charCodeAt(0) - 65 < p.choices.length), {
    message: "a choice problem needs choices and a letter answer among them", path: ["answer"]
});
export type Problem = z.infer<typeof problemSchema>;
