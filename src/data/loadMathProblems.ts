// Problem files: JSONL (or Parquet, by the .parquet extension) in the shape of MATH500
// (problem, solution, answer, subject, level, unique_id), the original MATH release
// (problem, solution, level, type = the subject; the gold answer only boxed in the
// solution), AIME (id, problem, answer, answer_raw, url), plain {id, question, answer}
// (with `type` choice/exact/math, `choices`, `domain`), answer lists (answer or answers,
// final_answer, expected_answer as a list: any of them is accepted), or code problems in
// the layouts of codeProblems.ts; one file may mix them, line by line. One reader gives
// every problem its id by one rule, for `still generate` and the loop alike.
import path from "node:path";
import {z} from "zod";
import {DataError} from "../errors.js";
import {chatMessageSchema} from "../format/chatMessage.js";
import {issueReporter, type ReadPolicy, readJsonl, validate} from "../io/jsonl.js";
import {problemQuestion} from "../format/buildChatMessages.js";
import {answerTypes} from "../grade/answerType.js";
import {boxedAnswer} from "../grade/extractAnswer.js";
import {readParquet} from "../io/readParquet.js";
import {codeLayout, codeProblemFromRow} from "./codeProblems.js";
import {problemSchema, type Problem} from "./problemSchema.js";

const goldText = z.union([z.string(), z.number().transform(String)]);
/** A gold answer, or a list of accepted ones. */
const goldValue = z.union([goldText, z.array(goldText)]);

export const problemRowSchema = z.object({
    id: z.union([z.string().min(1), z.number()]).optional(),
    unique_id: z.string().min(1).optional(),
    problem: z.string().min(1).optional(),
    question: z.string().min(1).optional(),
    /** Raw prompt text (`still generate --raw`). */
    prompt: z.string().min(1).optional(),
    /** Chat messages, sent to the model as they are. */
    messages: z.array(chatMessageSchema).min(1).optional(),
    answer: goldValue.optional(),
    answers: goldValue.optional(),
    final_answer: goldValue.optional(),
    expected_answer: goldValue.optional(),
    /** Multiple-choice options, for the prompt (`still generate`). */
    choices: z.array(z.string()).min(2).optional(),
    solution: z.string().optional(),
    subject: z.string().optional(),
    level: z.union([z.number(), z.string()]).optional(),
    /** How the answer is graded (math, choice, exact; default math); in the MATH release's rows, the subject. */
    type: z.string().optional(),
    /** The problem's domain, for per-domain figures (default math). */
    domain: z.string().min(1).optional()
}).refine((r) => r.problem != null || r.question != null || r.prompt != null || r.messages != null,
    {message: "missing (problem or question)", path: ["problem"]})
  .refine((r) => r.type == null || (answerTypes as readonly string[]).includes(r.type) || r.level != null || r.solution != null,
    {message: `must be one of ${answerTypes.join(", ")}`, path: ["type"]});
export type ProblemRow = z.output<typeof problemRowSchema>;

const GOLD_KEYS = ["answer", "answers", "final_answer", "expected_answer"] as const;

/**
 * A row's accepted answers: the first of answer, answers, final_answer, expected_answer that
 * is given (a list gives several), else the answer boxed in its solution; empty when none.
 */
export function goldAnswers(row: ProblemRow): string[] {
    for (const key of GOLD_KEYS) {
        const v = row[key];
        if (v == null) continue;
        const list = (Array.isArray(v) ? v : [v]).map((a) => a.trim()).filter((a) => a.length > 0);
        if (list.length > 0) return [...new Set(list)];
    }
    const boxed = row.solution == null ? null : boxedAnswer(row.solution);
    return boxed == null || boxed.trim() === "" ? [] : [boxed.trim()];
}

/** The answer type a row names; a `type` that is not one (the MATH release's subject) is its subject. */
function typeAndSubject(row: ProblemRow): {type: (typeof answerTypes)[number] | undefined, subject: string | undefined} {
    const isAnswerType = row.type != null && (answerTypes as readonly string[]).includes(row.type);
    return {
        type: isAnswerType ? row.type as (typeof answerTypes)[number] : undefined,
        subject: row.subject?.trim() || (isAnswerType ? undefined : row.type?.trim() || undefined)
    };
}

export type LoadOptions = {
    policy?: ReadPolicy,
    onIssue?: (issue: DataError) => void,
    signal?: AbortSignal
};

export type Loaded<T> = {items: T[], issues: DataError[]};

const ID_KEYS = ["id", "unique_id", "task_id", "question_id", "problem_id", "name"] as const;

/** The id rule: `id`, else `unique_id`, else a code release's own key (task_id, question_id, problem_id, name), else "<file name>:<line>". */
export function rowId(row: Record<string, unknown>, file: string, line: number): string {
    for (const key of ID_KEYS) {
        const v = row[key];
        if ((typeof v === "string" && v.length > 0) || typeof v === "number") return String(v);
    }
    return `${path.basename(file, path.extname(file))}:${line}`;
}

const objectRow = z.record(z.string(), z.unknown());

/**
 * The rows of a problem file with their ids (rowId), each checked by `parse`; a repeated
 * id is a bad line like any other.
 */
async function* rowsWithIds<T>(file: string, options: LoadOptions,
                               parse: (row: Record<string, unknown>, line: number, id: string) => T | DataError): AsyncGenerator<{line: number, id: string, row: T}> {
    const report = issueReporter(options);
    const seen = new Set<string>();
    const read = {schema: objectRow, ...options};
    const rows = /\.parquet$/i.test(file) ? readParquet(file, read) : readJsonl(file, read);
    for await (const {line, value} of rows) {
        const id = rowId(value, file, line);
        const row = parse(value, line, id);
        if (row instanceof DataError) {
            report(row);
            continue;
        }
        if (seen.has(id)) {
            report(new DataError(file, `repeats id ${JSON.stringify(id)}`, line, "id"));
            continue;
        }
        seen.add(id);
        yield {line, id, row};
    }
}

type ProblemLine = {kind: "code", problem: Problem} | {kind: "answer", row: ProblemRow};

/** One line of a problem file: a code problem in any of its layouts, or a row with an answer. */
function parseProblemLine(raw: Record<string, unknown>, file: string, line: number, id: string, source: string): ProblemLine | DataError {
    if (codeLayout(raw) != null) {
        const problem = codeProblemFromRow(raw, {id, file, line, source});
        return problem instanceof DataError ? problem : {kind: "code", problem};
    }
    let issue: DataError | undefined;
    const parsed = validate(raw, problemRowSchema, file, line, (i) => { issue = i; });
    return parsed == null ? issue! : {kind: "answer", row: parsed.value};
}

const sourceOf = (file: string) => path.basename(file, path.extname(file));

/** The rows of a problem file (`still generate`'s prompts) with their ids; a code problem's question is asked as the loop asks it. */
export function readProblemRows(file: string, options: LoadOptions = {}): AsyncGenerator<{line: number, id: string, row: ProblemRow}> {
    return rowsWithIds(file, options, (raw, line, id) => {
        const p = parseProblemLine(raw, file, line, id, sourceOf(file));
        if (p instanceof DataError) return p;
        return p.kind === "code" ? {question: problemQuestion(p.problem)} : p.row;
    });
}

/** Reads a problem file (math, choice, exact and code lines, see above) as problems. */
export async function loadProblems(file: string, options: LoadOptions & {source?: string} = {}): Promise<Loaded<Problem>> {
    const issues: DataError[] = [];
    const onIssue = (i: DataError) => {
        issues.push(i);
        options.onIssue?.(i);
    };
    const report = issueReporter({policy: options.policy, onIssue});
    const items: Problem[] = [];
    const source = options.source ?? sourceOf(file);
    const lines = rowsWithIds(file, {...options, onIssue}, (raw, line, id) => parseProblemLine(raw, file, line, id, source));
    for await (const {line, id, row: r} of lines) {
        if (r.kind === "code") {
            items.push(r.problem);
            continue;
        }
        const row = r.row;
        const question = row.problem ?? row.question;
        const answers = goldAnswers(row);
        if (question == null || answers.length === 0) {
            report(question == null ? new DataError(file, "missing", line, "problem")
                : new DataError(file, "missing (answer, answers, final_answer or expected_answer, or an answer boxed in solution)", line, "answer"));
            continue;
        }
        const level = typeof row.level === "number" ? row.level : Number(/\d+/.exec(row.level ?? "")?.[0] ?? NaN);
        const {type, subject} = typeAndSubject(row);
        const parsed = problemSchema.safeParse({
            id, question, answer: answers[0], domain: row.domain ?? "math", type: type ?? "math", source,
            ...(answers.length > 1 ? {alternatives: answers.slice(1)} : {}),
            ...(subject == null ? {} : {subject}),
            ...(row.choices == null ? {} : {choices: row.choices}),
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

/** The same reader as loadProblems (its earlier name). */
export const loadMathProblems = loadProblems;

/** Code problems only: a file in any of codeProblems.ts' layouts; other lines are bad lines. */
export async function loadCodeProblems(file: string, options: LoadOptions & {source?: string} = {}): Promise<Loaded<Problem>> {
    const loaded = await loadProblems(file, options);
    const report = issueReporter({policy: options.policy, onIssue: (i) => loaded.issues.push(i)});
    const items = loaded.items.filter((p) => {
        if (p.type === "code") return true;
        report(new DataError(file, "not a code problem in any known layout", undefined, p.id));
        return false;
    });
    return {items, issues: loaded.issues};
}

/** MATH500 ("MATH-OAI", the PRM800K test split). */
export function loadMath500(file: string, options: LoadOptions = {}): Promise<Loaded<Problem>> {
    return loadMathProblems(file, {...options, source: "math500"});
}

/** AIME problems (Qwen2.5-Math evaluation layout). */
export function loadAime(file: string, options: LoadOptions = {}): Promise<Loaded<Problem>> {
    return loadMathProblems(file, {...options, source: path.basename(file, path.extname(file))});
}
