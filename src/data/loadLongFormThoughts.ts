// STILL-2's public long-form thought data (fields question, combined_text, domain), from
// JSONL or Parquet, as thought examples. Our own layout (question, response) reads too.
// Responses are checked against the thought/solution format; malformed ones are issues.
import path from "node:path";
import {z} from "zod";
import {DataError} from "../errors.js";
import {parseThought} from "../format/parseThought.js";
import type {LoadOptions, Loaded} from "./loadMathProblems.js";
import {readJsonl, type Row} from "../io/jsonl.js";
import {readParquet} from "../io/readParquet.js";
import {thoughtExampleSchema, type ThoughtExample} from "./thoughtExampleSchema.js";

export const stillRowSchema = z.object({
    question: z.string().min(1),
    combined_text: z.string().min(1).optional(),
    response: z.string().min(1).optional(),
    domain: z.string().min(1).optional(),
    source: z.string().optional()
}).refine((r) => r.combined_text != null || r.response != null, {message: "missing (combined_text or response)", path: ["combined_text"]});

/** Reads long-form thought examples; `checkFormat` (default true) reports responses that are not well formed. */
export async function loadLongFormThoughts(file: string, options: LoadOptions & {checkFormat?: boolean, source?: string} = {}): Promise<Loaded<ThoughtExample>> {
    const policy = options.policy ?? "strict";
    const issues: DataError[] = [];
    const onIssue = (i: DataError) => {
        issues.push(i);
        options.onIssue?.(i);
    };
    const read = {schema: stillRowSchema, policy, onIssue, signal: options.signal};
    const rows: AsyncIterable<Row<z.output<typeof stillRowSchema>>> = /\.parquet$/i.test(file) ? readParquet(file, read) : readJsonl(file, read);
    const items: ThoughtExample[] = [];
    const source = options.source ?? path.basename(file, path.extname(file));
    for await (const {line, value} of rows) {
        const response = value.combined_text ?? value.response!;
        if (options.checkFormat ?? true) {
            const parsed = parseThought(response);
            if (!parsed.wellFormed) {
                const issue = new DataError(file, `not in the thought/solution format: ${parsed.issues.map((i) => i.message).join("; ")}`,
                    line, value.combined_text != null ? "combined_text" : "response");
                if (policy === "strict") throw issue;
                onIssue(issue);
                continue;
            }
        }
        items.push(thoughtExampleSchema.parse({question: value.question, response, domain: value.domain ?? "math", source: value.source ?? source}));
    }
    return {items, issues};
}
