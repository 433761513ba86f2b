// GPQA from the user's own CSV (columns Question, Correct Answer, Incorrect Answer 1-3).
// GPQA may not be redistributed in plain text, so it is never shipped: point this at your
// copy. The four options are shuffled with a seed (per question, so adding questions does
// not move the others) and the correct letter is recorded.
import {z} from "zod";
import {DataError} from "../errors.js";
import type {LoadOptions, Loaded} from "./loadMathProblems.js";
import {problemSchema, type Problem} from "./problemSchema.js";
import {readCsv} from "../io/readCsv.js";

const cell = z.string().transform((s) => s.trim()).pipe(z.string().min(1, "empty"));

export const gpqaRowSchema = z.object({
    "Question": cell,
    "Correct Answer": cell,
    "Incorrect Answer 1": cell,
    "Incorrect Answer 2": cell,
    "Incorrect Answer 3": cell,
    "Record ID": z.string().optional(),
    "High-level domain": z.string().optional(),
    "Subdomain": z.string().optional()
});

const GPQA_COLUMNS = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"];

/** Reads GPQA questions as choice problems with shuffled options. */
export async function loadGpqa(file: string, options: LoadOptions & {seed?: number} = {}): Promise<Loaded<Problem>> {
    const seed = options.seed ?? 0;
    const issues: DataError[] = [];
    const items: Problem[] = [];
    for await (const {line, value} of readCsv(file, {
        schema: gpqaRowSchema, columns: GPQA_COLUMNS, policy: options.policy ?? "strict", signal: options.signal,
        onIssue: (i) => {
            issues.push(i);
            options.onIssue?.(i);
        }
    })) {
        const id = value["Record ID"]?.trim() || `gpqa:${line}`;
        const options4 = [value["Correct Answer"], value["Incorrect Answer 1"], value["Incorrect Answer 2"], value["Incorrect Answer 3"]];
        if (new Set(options4).size !== 4) {
            const issue = new DataError(file, "two of the answers are the same text", line, "Incorrect Answer");
            if ((options.policy ?? "strict") === "strict") throw issue;
            issues.push(issue);
            options.onIssue?.(issue);
            continue;
        }
        const order = shuffledOrder(4, `${seed}:${id}`);
        const choices = order.map((k) => options4[k]!);
        const answer = String.fromCharCode(65 + order.indexOf(0));
        items.push(problemSchema.parse({
            id, question: value.Question, answer, choices, type: "choice", source: "gpqa",
            domain: value["High-level domain"]?.trim() || "science",
            ...(value.Subdomain?.trim() ? {subject: value.Subdomain.trim()} : {})
        }));
    }
    return {items, issues};
}

/** A Fisher–Yates permutation of 0..n-1 from a string seed (FNV-1a, then xorshift). */
export function shuffledOrder(n: number, seed: string): number[] {
    let h = 2166136261;
    for (let k = 0; k < seed.length; k++) h = Math.imul(h ^ seed.charCodeAt(k), 16777619);
    let state = h >>> 0 || 1;
    const next = () => {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        state >>>= 0;
        return state / 2 ** 32;
    };
    const order = Array.from({length: n}, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
    }
    return order;
}
