// An evaluation set from its file: a problem file (JSONL or Parquet, any layout of
// loadMathProblems.ts) or the GPQA CSV, picked by `format` or, with "auto", by the file's
// extension. A set with no problems, or with a repeated id, is an error naming the file.
import path from "node:path";
import {z} from "zod";
import {DataError} from "../errors.js";
import {loadGpqa} from "../data/loadGpqa.js";
import {loadProblems} from "../data/loadMathProblems.js";
import type {EvalSet} from "./evaluate.js";

export const evalSetFormats = ["auto", "math", "gpqa"] as const;

export const evalSetSchema = z.strictObject({
    name: z.string().min(1).describe("The set's name in reports"),
    path: z.string().min(1).describe("Problems: JSONL or Parquet (MATH500 / AIME / MATH layouts, {id, question, answer}, answer lists), or a GPQA CSV"),
    format: z.enum(evalSetFormats).describe("auto: by extension (.csv: GPQA, else a problem file); math: a problem file; gpqa: the GPQA CSV").default("auto"),
    limit: z.number().int().min(1).optional().describe("Only the first N problems")
});
export type EvalSetSpec = z.input<typeof evalSetSchema>;

/** Which reader a set's file takes. */
export function evalSetFormat(spec: {path: string, format?: (typeof evalSetFormats)[number] | undefined}): "math" | "gpqa" {
    const format = spec.format ?? "auto";
    if (format !== "auto") return format;
    return path.extname(spec.path).toLowerCase() === ".csv" ? "gpqa" : "math";
}

/** Reads one evaluation set strictly: the first bad line stops with its file, line and field. */
export async function loadEvalSet(spec: EvalSetSpec, o: {seed?: number, signal?: AbortSignal | undefined} = {}): Promise<EvalSet> {
    const s = evalSetSchema.parse(spec);
    const strict = {policy: "strict" as const, ...(o.signal == null ? {} : {signal: o.signal})};
    const loaded = evalSetFormat(s) === "gpqa" ? await loadGpqa(s.path, {...strict, seed: o.seed ?? 0}) : await loadProblems(s.path, strict);
    if (loaded.items.length === 0) throw new DataError(s.path, `holds no problems (evaluation set ${JSON.stringify(s.name)})`);
    const seen = new Set<string>();
    for (const p of loaded.items) {
        if (seen.has(p.id)) throw new DataError(s.path, `repeats id ${JSON.stringify(p.id)}`, undefined, "id");
        seen.add(p.id);
    }
    return {name: s.name, problems: loaded.items.slice(0, s.limit ?? Infinity)};
}
