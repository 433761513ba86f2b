// Math problems from JSONL in the shape of MATH500 (problem, solution, answer, subject,
// level, unique_id) and AIME (id, problem, answer, answer_raw, url).
import path from "node:path";
import {z} from "zod";
import type {DataError} from "../errors.js";
import {problemSchema, type Problem} from "./problemSchema.js";
import {readJsonl, type ReadPolicy} from "../io/jsonl.js";

export const mathRowSchema = z.object({
    problem: z.string().min(1).optional(),
    question: z.string().min(1).optional(),
    answer: z.union([z.string().min(1), z.number()]).transform(String),
    solution: z.string().optional(),
    subject: z.string().optional(),
    level: z.union([z.number(), z.string()]).optional(),
    unique_id: z.string().optional(),
    id: z.union([z.string(), z.number()]).optional()
}).refine((r) => r.problem != null || r.question != null, {message: "missing (problem or question)", path: ["problem"]});

export type LoadOptions = {
    policy?: ReadPolicy,
    onIssue?: (issue: DataError) => void,
    signal?: AbortSignal
};

export type Loaded<T> = {items: T[], issues: DataError[]};

/** Reads a MATH500- or AIME-style JSONL file as problems. */
export async function loadMathProblems(file: string, options: LoadOptions & {source?: string} = {}): Promise<Loaded<Problem>> {
    const issues: DataError[] = [];
    const items: Problem[] = [];
    const source = options.source ?? path.basename(file, path.extname(file));
    for await (const {line, value} of readJsonl(file, {
        schema: mathRowSchema, policy: options.policy ?? "strict", signal: options.signal,
        onIssue: (i) => {
            issues.push(i);
            options.onIssue?.(i);
        }
    })) {
        const level = typeof value.level === "number" ? value.level : Number(/\d+/.exec(value.level ?? "")?.[0] ?? NaN);
        items.push(problemSchema.parse({
            id: value.unique_id ?? (value.id == null ? `${source}:${line}` : String(value.id)),
            question: value.problem ?? value.question,
            answer: value.answer.trim(),
            domain: "math",
            type: "math",
            source,
            ...(Number.isFinite(level) ? {difficulty: level} : {}),
            ...(value.solution == null ? {} : {solution: value.solution})
        }));
    }
    return {items, issues};
}

/** MATH500 ("MATH-OAI", the PRM800K test split). */
export function loadMath500(file: string, options: LoadOptions = {}): Promise<Loaded<Problem>> {
    return loadMathProblems(file, {...options, source: "math500"});
}

/** AIME problems (Qwen2.5-Math evaluation layout). */
export function loadAime(file: string, options: LoadOptions = {}): Promise<Loaded<Problem>> {
    return loadMathProblems(file, {...options, source: path.basename(file, path.extname(file))});
}
