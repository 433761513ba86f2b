// `still grade`: grade one prediction against a gold answer, or a JSONL file of them.
import type {Command} from "commander";
import {z} from "zod";
import {OptionError, type DataError} from "../errors.js";
import {readJsonl} from "../io/jsonl.js";
import {answerTypeSchema, grade, gradeOptionsSchema, type GradeResult} from "../grade/grade.js";
import {addOptions, parseCli} from "./cliOptions.js";

const optionsSchema = z.object({
    pred: z.string().optional().describe("The prediction (a model's response or just its answer)"),
    gold: z.string().optional().describe("The gold answer"),
    type: gradeOptionsSchema.shape.type,
    file: z.string().min(1).optional().describe("Grade every line of a JSONL file: pred (or response), gold, and optionally type and choices"),
    json: z.boolean().describe("Print one JSON object per graded item").default(false)
});
const flags = ["--pred <text>", "--gold <text>", "--type <type>", "--file <file.jsonl>", "--json"];

const text = z.union([z.string(), z.number().transform(String)]);
const lineSchema = z.object({
    pred: text.optional(),
    response: text.optional(),
    gold: text,
    type: answerTypeSchema.optional(),
    choices: z.array(z.string()).optional()
}).refine((l) => l.pred != null || l.response != null, {message: "missing (pred or response)", path: ["pred"]});

export function gradeCommand(program: Command, signal: AbortSignal) {
    addOptions(program.command("grade")
        .description("Grade answers: one prediction against a gold answer, or a JSONL file with pred (or response), gold and an optional type per line"),
    optionsSchema, flags)
        .action(async (raw: Record<string, unknown>) => {
            const opts = parseCli(optionsSchema, raw, flags);
            if (opts.file != null) {
                if (opts.pred != null || opts.gold != null) throw new OptionError("grade takes either --file or --pred and --gold, not both.");
                await gradeFile(opts.file, opts.type, opts.json, signal);
                return;
            }
            if (opts.pred == null || opts.gold == null) throw new OptionError("grade needs --pred and --gold, or --file.");
            const result = grade(opts.pred, opts.gold, {type: opts.type});
            if (opts.json) process.stdout.write(JSON.stringify(result) + "\n");
            else process.stdout.write(`${result.correct ? "correct" : "wrong"}  extracted: ${result.extracted ?? "(none)"}\n`);
        });
}

async function gradeFile(file: string, defaultType: GradeResult["type"], json: boolean, signal: AbortSignal) {
    let graded = 0;
    let correct = 0;
    let unreadable = 0;
    const out = (s: string) => process.stdout.write(s + "\n");
    const onIssue = (issue: DataError) => {
        unreadable++;
        if (json) out(JSON.stringify({line: issue.line ?? null, correct: false, extracted: null, error: issue.message}));
        else out(`line ${issue.line ?? "?"}: unreadable  ${issue.message}`);
    };
    for await (const {line, value} of readJsonl(file, {schema: lineSchema, policy: "skip", onIssue, signal})) {
        const type = value.type ?? defaultType;
        const result = grade(value.pred ?? value.response!, value.gold, {type, ...(value.choices == null ? {} : {choices: value.choices})});
        graded++;
        if (result.correct) correct++;
        if (json) out(JSON.stringify({line, ...result}));
        else out(`line ${line}: ${result.correct ? "correct" : "wrong  "}  extracted: ${result.extracted ?? "(none)"}`);
    }
    if (!json) {
        const pct = graded === 0 ? 0 : (100 * correct) / graded;
        out(`${graded} graded, ${correct} correct (${pct.toFixed(1)}%)${unreadable > 0 ? `, ${unreadable} unreadable lines` : ""}`);
    }
    if (unreadable > 0) process.exitCode = 1;
}
