// Problem files: JSONL in the shape of MATH500 (problem, solution, answer, subject, level,
// unique_id), AIME (id, problem, answer, answer_raw, url), or plain {id, question, answer}.
// One reader gives every problem its id by one rule, for `still generate` and the loop alike.
import path from "node:path";
import {z} from "zod";
import {DataError} from "../errors.js";
import {chatMessageSchema} from "../format/chatMessage.js";
import {issueReporter, type ReadPolicy, readJsonl} from "../io/jsonl.js";
import {problemSchema, type Problem} from "./problemSchema.js";

export const problemRowSchema = z.object({
    id: z.union([z.string().min(1), z.number()]).optional(),
    unique_id: z.string().min(1).optional(),
    problem: z.string().min(1).optional(),
    question: z.string().min(1).optional(),
    /** Raw prompt text (`still generate --raw`). */
    prompt: z.string().min(1).optional(),
    /** Chat messages, sent to the model as they are. */
    messages: z.array(chatMessageSchema).min(1).optional(),
    answer: z.union([z.string().min(1), z.number()]).transform(String).optional(),
    /** Multiple-choice options, for the prompt (`still generate`). */
    choices: z.array(z.string()).min(2).optional(),
    solution: z.string().optional(),
    subject: z.string().optional(),
    level: z.union([z.number(), z.string()]).optional()
}).refine((r) => r.problem != null || r.question != null || r.prompt != null || r.messages != null,
    {message: "missing (problem or question)", path: ["problem"]});
export type ProblemRow = z.output<typeof problemRowSchema>;

export type LoadOptions = {
    policy?: ReadPolicy,
    onIssue?: (issue: DataError) => void,
    signal?: AbortSignal
};

export type Loaded<T> = {items: T[], issues: DataError[]};

/**
 * The rows of a problem file with their ids: `id`, else `unique_id`, else
 * "<file name>:<line>". A repeated id is a bad line like any other.
 */
export async function* readProblemRows(file: string, options: LoadOptions = {}): AsyncGenerator<{line: number, id: string, row: ProblemRow}> {
    const report = issueReporter(options);
    const source = path.basename(file, path.extname(file));
    const seen = new Set<string>();
    for await (const {line, value} of readJsonl(file, {schema: problemRowSchema, ...options})) {
        const id = value.id != null ? String(value.id) : value.unique_id ?? `${source}:${line}`;
        if (seen.has(id)) {
            report(new DataError(file, `repeats id ${JSON.stringify(id)}`, line, "id"));
            continue;
        }
        seen.add(id);
        yield {line, id, row: value};
    }
}

/** Reads a MATH500- or AIME-style JSONL file as problems with answers. */
export async function loadMathProblems(file: string, options: LoadOptions & {source?: string} = {}): Promise<Loaded<Problem>> {
    const issues: DataError[] = [];
    const onIssue = (i: DataError) => {
        issues.push(i);
        options.onIssue?.(i);
    };
    const report = issueReporter({policy: options.policy, onIssue});
    const items: Problem[] = [];
    const source = options.source ?? path.basename(file, path.extname(file));
    for await (const {line, id, row} of readProblemRows(file, {...options, onIssue})) {
        const question = row.problem ?? row.question;
        if (question == null || row.answer == null) {
            report(new DataError(file, "missing", line, question == null ? "problem" : "answer"));
            continue;
        }
        const level = typeof row.level === "number" ? row.level : Number(/\d+/.exec(row.level ?? "")?.[0] ?? NaN);
        const parsed = problemSchema.safeParse({
            id, question, answer: row.answer.trim(), domain: "math", type: "math", source,
            ...(Number.isFinite(level) ? {difficulty: level} : {}),
            ...(row.solution == null ? {} : {solution: row.solution})
        });
        if (!parsed.success) {
            const issue = parsed.error.issues[0];
            report(new DataError(file, issue?.message ?? "not a problem", line, issue?.path.join(".") || undefined));
            continue;
        }
        items.push(parsed.data);
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
