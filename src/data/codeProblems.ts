// Code problems in the layouts their public releases use, read line by line into still's
// Problem (type "code", a CodeSpec with the tests):
//  - HumanEval: task_id, prompt, test (defines check(candidate)), entry_point
//  - MBPP: task_id, text, test_list (assert strings), test_setup_code
//  - APPS: problem_id, question, input_output (JSON text: inputs, outputs, fn_name for call-based)
//  - CodeContests: name, description, public_tests / private_tests / generated_tests ({input: [], output: []})
//  - LiveCodeBench: question_id, question_content, starter_code, public_test_cases and private_test_cases
//    (JSON text, or base64 of zlib of a pickled JSON string), metadata (JSON text with func_name)
//  - still's own: question, type "code", language, tests (assert strings or {input, output}),
//    check + entry_point, call, setup
// The test data are only read here; nothing is executed.
import zlib from "node:zlib";
import {z} from "zod";
import {type CodeLanguage, codeLanguageSchema, codeSpecSchema, codeTestSchema} from "../code/codeSpec.js";
import {DataError} from "../errors.js";
import {schemaIssue} from "../io/jsonl.js";
import type {Problem} from "./problemSchema.js";

type Row = Record<string, unknown>;

export const codeLayouts = ["still", "humaneval", "mbpp", "apps", "codecontests", "livecodebench"] as const;
export type CodeLayout = typeof codeLayouts[number];

/** The code layout a row is in, or null when it is not a code problem. */
export function codeLayout(row: Row): CodeLayout | null {
    if (row.type === "code") return "still";
    if ("question_content" in row && ("public_test_cases" in row || "private_test_cases" in row)) return "livecodebench";
    if ("description" in row && ("public_tests" in row || "private_tests" in row || "generated_tests" in row)) return "codecontests";
    if ("input_output" in row && "question" in row) return "apps";
    if ("test_list" in row && "text" in row) return "mbpp";
    if ("prompt" in row && "test" in row && "entry_point" in row) return "humaneval";
    return null;
}

const text = z.string().min(1);
const lines = z.union([z.string(), z.array(z.string()).transform((a) => a.join("\n"))]);
const ioLists = z.object({input: z.array(lines), output: z.array(lines)}).loose();

const humanEvalSchema = z.object({prompt: text, test: text, entry_point: text}).loose();
const mbppSchema = z.object({text: text, test_list: z.array(text).min(1), test_setup_code: z.string().optional()}).loose();
const appsIoSchema = z.object({inputs: z.array(z.unknown()), outputs: z.array(z.unknown()), fn_name: z.string().optional()}).loose();
const appsSchema = z.object({question: text, input_output: z.union([z.string(), z.record(z.string(), z.unknown())])}).loose();
const codeContestsSchema = z.object({
    description: text, public_tests: ioLists.optional(), private_tests: ioLists.optional(), generated_tests: ioLists.optional()
}).loose();
const lcbCaseSchema = z.object({input: z.string(), output: z.string(), testtype: z.enum(["stdin", "functional"]).default("stdin")}).loose();
const lcbSchema = z.object({
    question_content: text, starter_code: z.string().optional(),
    public_test_cases: z.union([z.string(), z.array(lcbCaseSchema)]).optional(),
    private_test_cases: z.union([z.string(), z.array(lcbCaseSchema)]).optional(),
    metadata: z.union([z.string(), z.record(z.string(), z.unknown())]).optional()
}).loose();
const stillSchema = z.object({
    question: text.optional(), problem: text.optional(),
    language: codeLanguageSchema.optional(),
    tests: z.array(codeTestSchema).default([]),
    check: z.string().optional(), entry_point: z.string().optional(), entryPoint: z.string().optional(),
    call: z.string().optional(), setup: z.string().optional()
}).loose();

const fenced = (language: CodeLanguage, code: string) => "```" + language + "\n" + code.trimEnd() + "\n```";

/** A row of any code layout as a Problem (domain "code" unless the row names one), or what is wrong with it (by file, line and field). */
export function codeProblemFromRow(row: Row, o: {id: string, file: string, line: number, source: string, language?: CodeLanguage,
                                                  /** Grading a response needs only the tests (`still grade --file`). */
                                                  questionOptional?: boolean}): Problem | DataError {
    const firstIssue = (e: z.ZodError) => schemaIssue(e, o.file, o.line);
    const bad = (field: string, message: string) => new DataError(o.file, message, o.line, field);
    const layout = codeLayout(row);
    const domain = typeof row.domain === "string" && row.domain.length > 0 ? row.domain : "code";
    const base = {id: o.id, domain, type: "code" as const, answer: "", source: o.source};
    const build = (question: string, spec: unknown, solution?: unknown): Problem | DataError => {
        const parsed = codeSpecSchema.safeParse(spec);
        if (!parsed.success) return firstIssue(parsed.error);
        return {...base, question, code: parsed.data, ...(typeof solution === "string" ? {solution} : {})};
    };
    const language = o.language ?? "python";
    switch (layout) {
        case null:
            return bad("type", "not a code problem in any known layout");
        case "still": {
            const r = stillSchema.safeParse(row);
            if (!r.success) return firstIssue(r.error);
            const v = r.data;
            if (v.question == null && v.problem == null && o.questionOptional !== true) return bad("question", "missing (question or problem)");
            const entryPoint = v.entryPoint ?? v.entry_point;
            return build(v.question ?? v.problem ?? "", {
                language: v.language ?? language, tests: v.tests,
                ...(v.check == null ? {} : {check: v.check}), ...(entryPoint == null ? {} : {entryPoint}),
                ...(v.call == null ? {} : {call: v.call}), ...(v.setup == null ? {} : {setup: v.setup})
            }, row.solution);
        }
        case "humaneval": {
            const r = humanEvalSchema.safeParse(row);
            if (!r.success) return firstIssue(r.error);
            const question = `Complete the following ${language === "python" ? "Python" : "JavaScript"} function, and give the whole function.\n\n${fenced(language, r.data.prompt)}`;
            return build(question, {language, tests: [], check: r.data.test, entryPoint: r.data.entry_point},
                typeof row.canonical_solution === "string" ? r.data.prompt + row.canonical_solution : undefined);
        }
        case "mbpp": {
            const r = mbppSchema.safeParse(row);
            if (!r.success) return firstIssue(r.error);
            // MBPP's own prompt shows the tests: they name the function and its arguments
            const question = `${r.data.text.trim()}\n\nYour code should pass these tests:\n\n${r.data.test_list.join("\n")}`;
            const setup = r.data.test_setup_code?.trim();
            return build(question, {language, tests: r.data.test_list, ...(setup ? {setup} : {})}, row.code);
        }
        case "apps": {
            const r = appsSchema.safeParse(row);
            if (!r.success) return firstIssue(r.error);
            // a JSON text in the releases, an object in some conversions
            const raw = typeof r.data.input_output === "string" ? safeJson(r.data.input_output) : r.data.input_output;
            if (raw == null) return bad("input_output", "not valid JSON");
            const parsedIo = appsIoSchema.safeParse(raw);
            if (!parsedIo.success) return bad("input_output", `JSON of the wrong shape: ${parsedIo.error.issues[0]?.message ?? ""}`);
            const io = parsedIo.data;
            if (io.inputs.length !== io.outputs.length) return bad("input_output", "inputs and outputs differ in number");
            if (io.fn_name != null) {
                const tests = io.inputs.map((args, i) => ({
                    input: (Array.isArray(args) ? args : [args]).map((a) => JSON.stringify(a)).join("\n"),
                    output: JSON.stringify(appsExpected(io.outputs[i]))
                }));
                return build(r.data.question, {language, tests, call: io.fn_name});
            }
            const asText = (v: unknown) => Array.isArray(v) ? v.map(String).join("\n") : String(v);
            return build(r.data.question, {language, tests: io.inputs.map((input, i) => ({input: asText(input), output: asText(io.outputs[i])}))});
        }
        case "codecontests": {
            const r = codeContestsSchema.safeParse(row);
            if (!r.success) return firstIssue(r.error);
            const tests: {input: string, output: string}[] = [];
            for (const key of ["public_tests", "private_tests", "generated_tests"] as const) {
                const t = r.data[key];
                if (t == null) continue;
                if (t.input.length !== t.output.length) return bad(key, "input and output differ in number");
                t.input.forEach((input, i) => tests.push({input, output: t.output[i]!}));
            }
            return build(r.data.description, {language, tests});
        }
        case "livecodebench": {
            const r = lcbSchema.safeParse(row);
            if (!r.success) return firstIssue(r.error);
            const cases: z.output<typeof lcbCaseSchema>[] = [];
            for (const key of ["public_test_cases", "private_test_cases"] as const) {
                const v = r.data[key];
                if (v == null || v === "") continue;
                const decoded = typeof v === "string" ? decodeLcbCases(v) : v;
                if (typeof decoded === "string") return bad(key, decoded);
                const parsed = z.array(lcbCaseSchema).safeParse(decoded);
                if (!parsed.success) return bad(key, `test cases of the wrong shape: ${parsed.error.issues[0]?.message ?? ""}`);
                cases.push(...parsed.data);
            }
            const meta = typeof r.data.metadata === "string" ? safeJson(r.data.metadata) : r.data.metadata;
            const funcName = meta != null && typeof meta === "object" && typeof (meta as Row).func_name === "string" ? (meta as Row).func_name as string : undefined;
            const functional = cases.some((c) => c.testtype === "functional");
            if (functional && funcName == null) return bad("metadata", "functional test cases need metadata.func_name");
            const starter = r.data.starter_code?.trim();
            const question = starter ? `${r.data.question_content.trim()}\n\nUse this starter code:\n\n${fenced(language, starter)}` : r.data.question_content;
            return build(question, {language, tests: cases.map((c) => ({input: c.input, output: c.output})), ...(functional ? {call: funcName} : {})});
        }
    }
}

/** APPS wraps a call-based answer in a one-element list. */
function appsExpected(v: unknown): unknown {
    return Array.isArray(v) && v.length === 1 ? v[0] : v;
}

function safeJson(s: string): unknown {
    try {
        return JSON.parse(s);
    } catch {
        return null;
    }
}

/** LiveCodeBench's test cases: JSON text, or base64 of zlib of a pickled JSON string. A string result is what went wrong. */
export function decodeLcbCases(s: string): unknown {
    const direct = safeJson(s);
    if (direct != null) return direct;
    let raw: Buffer;
    try {
        raw = zlib.inflateSync(Buffer.from(s, "base64"));
    } catch {
        return "neither JSON nor base64 zlib data";
    }
    const json = unpickleString(raw);
    if (json == null) return "compressed test cases that are not a pickled string";
    return safeJson(json) ?? "compressed test cases whose string is not JSON";
}

/**
 * The one string a pickle holds, for pickles of a single str (protocols 2-5: PROTO,
 * FRAME, the unicode opcodes, memo puts, STOP). Anything else is refused: this reads
 * bytes and never executes or constructs objects.
 */
export function unpickleString(b: Buffer): string | null {
    let i = 0;
    let found: string | null = null;
    const need = (n: number) => i + n <= b.length;
    while (i < b.length) {
        const op = b[i++]!;
        switch (op) {
            case 0x80: if (!need(1)) return null; i += 1; break;                 // PROTO
            case 0x95: if (!need(8)) return null; i += 8; break;                 // FRAME
            case 0x94: break;                                                    // MEMOIZE
            case 0x71: if (!need(1)) return null; i += 1; break;                 // BINPUT
            case 0x72: if (!need(4)) return null; i += 4; break;                 // LONG_BINPUT
            case 0x8c: case 0x58: case 0x8d: {                                   // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                if (found != null) return null;
                const width = op === 0x8c ? 1 : op === 0x58 ? 4 : 8;
                if (!need(width)) return null;
                const n = width === 1 ? b[i]! : width === 4 ? b.readUInt32LE(i) : Number(b.readBigUInt64LE(i));
                i += width;
                if (!need(n)) return null;
                found = b.toString("utf8", i, i + n);
                i += n;
                break;
            }
            case 0x2e: return i === b.length ? found : null;                    // STOP
            default: return null;
        }
    }
    return null;
}
