// A problem with a known answer: what exploration samples and evaluation grades.
import {z} from "zod";
import {codeSpecSchema} from "../code/codeSpec.js";
import {problemTypeSchema} from "../grade/answerType.js";

export const problemSchema = z.object({
    id: z.string().min(1),
    question: z.string().min(1),
    /** The gold answer: LaTeX or text for math and exact problems, a letter for choice problems (none for code). */
    answer: z.string().default(""),
    /** Other accepted answers, where the source lists several (a response matching any of them is correct). */
    alternatives: z.array(z.string().min(1)).optional(),
    domain: z.string().min(1).default("math"),
    /** The subject, where the source gives one (MATH: "Algebra", …; GPQA: the subdomain). */
    subject: z.string().min(1).optional(),
    /** A difficulty level where the source gives one (MATH: 1–5). */
    difficulty: z.number().optional(),
    /** How the answer is graded. */
    type: problemTypeSchema.default("math"),
    /** For code problems: the language and the tests. */
    code: codeSpecSchema.optional(),
    /** Multiple-choice options, in letter order (A first). */
    choices: z.array(z.string()).min(2).optional(),
    /** A reference solution, where the source has one. */
    solution: z.string().optional(),
    source: z.string().optional()
}).refine((p) => p.type === "code" || p.answer.length > 0, {message: "missing", path: ["answer"]})
  .refine((p) => (p.type === "code") === (p.code != null), {message: "a code problem (and only one) has a code spec", path: ["code"]})
  .refine((p) => p.type !== "choice" || (p.choices != null && /^[A-Z]$/.test(p.answer) && p.answer.charCodeAt(0) - 65 < p.choices.length), {
    message: "a choice problem needs choices and a letter answer among them", path: ["answer"]
});
export type Problem = z.infer<typeof problemSchema>;
