// `still grade`: grade one prediction against a gold answer, or a JSONL file of them; code
// lines (type "code", with tests) are checked in the sandbox, several at once, reported in order.
// A line's `response` cut short (its `finish` "length", or ending inside its thought or
// solution) is wrong, as the evaluation grades it; a bare `pred` is graded as it stands.
import type {Command} from "commander";
import {z} from "zod";
import {DataError, OptionError} from "../errors.js";
import {CodeVerifier, verifyOptionsSchema} from "../code/verifyCode.js";
import {codeProblemFromRow} from "../data/codeProblems.js";
import {readJsonl, validate} from "../io/jsonl.js";
import {cutShortReason} from "../format/parseThought.js";
import {answerTypeSchema, grade, gradeOptionsSchema, type GradeResult} from "../grade/grade.js";
import {gradeProblem} from "../grade/gradeProblem.js";
import {addOptions, parseCli} from "./cliOptions.js";

const optionsSchema = z.object({
    pred: z.string().optional().describe("The prediction (a model's response or just its answer)"),
    gold: z.string().optional().describe("The gold answer"),
    type: gradeOptionsSchema.shape.type,
    file: z.string().min(1).optional().describe("Grade every line of a JSONL file: pred (or response, and optionally its finish), gold (or a list of accepted answers), and optionally type and choices; " +
        "code lines: response, type \"code\", language, tests (assert strings or {input, output}), or check and entry_point"),
    codeTimeout: verifyOptionsSchema.shape.testTimeoutMs,
    unsafeRunCodeWithoutSandbox: z.boolean().describe("Where no sandbox is available, run code lines unisolated (unsafe)").default(false),
    json: z.boolean().describe("Print one JSON object per graded item").default(false)
});
const flags = ["--pred <text>", "--gold <text>", "--type <type>", "--file <file.jsonl>", "--code-timeout <ms>", "--unsafe-run-code-without-sandbox", "--json"];

const text = z.union([z.string(), z.number().transform(String)]);
const finishSchema = z.enum(["stop", "length"]).optional();
const codeLineSchema = z.object({response: z.string(), type: z.literal("code"), finish: finishSchema}).loose();
const lineSchema = z.object({
    pred: text.optional(),
    response: text.optional(),
    /** How the response's generation ended ("length": cut at the token limit). */
    finish: finishSchema,
    /** The gold answer, or a list of accepted ones. */
    gold: z.union([text, z.array(text).min(1)]),
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
                const verifier = new CodeVerifier({testTimeoutMs: opts.codeTimeout, unsafe: opts.unsafeRunCodeWithoutSandbox});
                await gradeFile(opts.file, opts.type, opts.json, verifier, signal);
                return;
            }
            if (opts.pred == null || opts.gold == null) throw new OptionError("grade needs --pred and --gold, or --file.");
            const result = grade(opts.pred, opts.gold, {type: opts.type});
            if (opts.json) process.stdout.write(JSON.stringify(result) + "\n");
            else process.stdout.write(`${result.correct ? "correct" : "wrong"}  extracted: ${result.extracted ?? "(none)"}\n`);
        });
}

type Verdict = {line: number, text: string, correct: boolean} | {line: number, text: string, unreadable: true};

async function gradeFile(file: string, defaultType: GradeResult["type"], json: boolean, verifier: CodeVerifier, signal: AbortSignal) {
    let graded = 0;
    let correct = 0;
    let unreadable = 0;
    const out = (s: string) => process.stdout.write(s + "\n");
    const unreadableLine = (line: number | null, message: string): Verdict => ({
        line: line ?? 0, unreadable: true,
        text: json ? JSON.stringify({line, correct: false, extracted: null, error: message}) : `line ${line ?? "?"}: unreadable  ${message}`
    });
    // verdicts in line order; code checks run concurrently (the verifier bounds how many)
    const pending: Promise<Verdict>[] = [];
    let checked = false;
    const flush = async (all: boolean) => {
        while (pending.length > (all ? 0 : 64)) {
            const v = await pending.shift()!;
            if ("unreadable" in v) unreadable++;
            else {
                graded++;
                if (v.correct) correct++;
            }
            out(v.text);
        }
    };
    const onIssue = (issue: DataError) => { pending.push(Promise.resolve(unreadableLine(issue.line ?? null, issue.message))); };
    for await (const {line, value} of readJsonl(file, {schema: z.record(z.string(), z.unknown()), policy: "skip", onIssue, signal})) {
        let issue: DataError | undefined;
        const onBad = (i: DataError) => { issue = i; };
        if (value.type === "code") {
            const row = validate(value, codeLineSchema, file, line, onBad);
            const problem = row == null ? issue! : codeProblemFromRow(value, {id: String(line), file, line, source: file, questionOptional: true});
            if (problem instanceof DataError) {
                pending.push(Promise.resolve(unreadableLine(line, problem.message)));
                continue;
            }
            if (!checked) {
                await verifier.ready([problem.code!.language ?? "python"]);
                checked = true;
            }
            pending.push(gradeProblem(problem, row!.value.response, {verifier, signal, finish: row!.value.finish}).then(({correct: ok, code: r, cutShort}) => {
                return {line, correct: ok, text: json ? JSON.stringify({line, correct: ok, type: "code", ...r, ...(cutShort == null ? {} : {cut_short: cutShort})})
                    : `line ${line}: ${ok ? "correct" : "wrong  "}  ${r!.status}: ${r!.message}${cutShort == null ? "" : `, cut short: ${cutShort}`}`};
            }, (err: Error) => unreadableLine(line, `the check failed to run: ${err.message}`)));
        } else {
            const parsed = validate(value, lineSchema, file, line, onBad);
            if (parsed == null) {
                pending.push(Promise.resolve(unreadableLine(line, issue!.message)));
                continue;
            }
            const v = parsed.value;
            const options = {type: v.type ?? defaultType, ...(v.choices == null ? {} : {choices: v.choices})};
            const golds = Array.isArray(v.gold) ? v.gold : [v.gold];
            const results = golds.map((g) => grade(v.pred ?? v.response!, g, options));
            const found = results.find((r) => r.correct) ?? results[0]!;
            const cutShort = v.pred == null ? cutShortReason(v.response!, v.finish) : null;
            const result = cutShort == null ? found : {...found, correct: false};
            pending.push(Promise.resolve({line, correct: result.correct, text: json ? JSON.stringify({line, ...result, ...(cutShort == null ? {} : {cut_short: cutShort})})
                : `line ${line}: ${result.correct ? "correct" : "wrong  "}  extracted: ${result.extracted ?? "(none)"}${cutShort == null ? "" : `, cut short: ${cutShort}`}`}));
        }
        await flush(false);
    }
    await flush(true);
    if (!json) {
        const pct = graded === 0 ? 0 : (100 * correct) / graded;
        out(`${graded} graded, ${correct} correct (${pct.toFixed(1)}%)${unreadable > 0 ? `, ${unreadable} unreadable lines` : ""}`);
    }
    if (unreadable > 0) process.exitCode = 1;
}
