// A code problem's tests and a check's result: the shapes shared by the problem files,
// the verifier and the run folder (no execution here).
import {z} from "zod";

export const codeLanguages = ["python", "javascript"] as const;
export const codeLanguageSchema = z.enum(codeLanguages);
export type CodeLanguage = z.infer<typeof codeLanguageSchema>;

export const codeTestSchema = z.union([
    z.string().min(1).describe("A test statement (an assert), run after the solution"),
    z.object({input: z.string(), output: z.string()}).strict()
        .describe("Standard input and the expected standard output; with `call`, JSON arguments (one per line) and the JSON result")
]);

export const codeSpecSchema = z.object({
    language: codeLanguageSchema.describe("The language the solution is written in").default("python"),
    tests: z.array(codeTestSchema).describe("Assert statements, or {input, output} cases").default([]),
    check: z.string().min(1).optional().describe("Test code defining check(candidate), called with the entry point (HumanEval)"),
    entryPoint: z.string().min(1).optional().describe("The function that check() is given"),
    call: z.string().min(1).optional().describe("With {input, output} cases: the function called (a method of class Solution where there is one)"),
    setup: z.string().optional().describe("Code run after the solution and before the tests (MBPP's test_setup_code)")
}).refine((s) => s.tests.length > 0 || s.check != null, {message: "a code problem needs tests or a check harness", path: ["tests"]})
    .refine((s) => s.check == null || s.entryPoint != null, {message: "a check harness needs entryPoint", path: ["entryPoint"]})
    .refine((s) => s.tests.every((t) => typeof t === "string") || s.tests.every((t) => typeof t !== "string"),
        {message: "tests are either all assert statements or all {input, output} cases", path: ["tests"]})
    .refine((s) => s.call == null || s.tests.every((t) => typeof t !== "string"), {message: "call goes with {input, output} cases", path: ["call"]});
export type CodeSpec = z.input<typeof codeSpecSchema>;
export type ResolvedCodeSpec = z.output<typeof codeSpecSchema>;

/** A whole program on standard input and output ({input, output} cases without `call`), not functions under test. */
export function isProgramSpec(s: ResolvedCodeSpec): boolean {
    return s.tests.length > 0 && typeof s.tests[0] !== "string" && s.call == null;
}

export const codeStatuses = ["passed", "failed", "timeout", "crashed", "no_code"] as const;
export const codeResultSchema = z.object({
    status: z.enum(codeStatuses),
    tests: z.number().int(),
    passed: z.number().int(),
    /** The failing (or timed-out) test, counted from 1. */
    test: z.number().int().nullable(),
    expected: z.string().nullable(),
    got: z.string().nullable(),
    message: z.string(),
    isolation: z.enum(["namespaces", "none"])
});
export type CodeResult = z.infer<typeof codeResultSchema>;


const LANGUAGE_NAMES: Record<CodeLanguage, {name: string, fence: string, stdin: string}> = {
    python: {name: "Python 3", fence: "python", stdin: "sys.stdin"},
    javascript: {name: "JavaScript (Node.js)", fence: "javascript", stdin: "require(\"fs\").readFileSync(0, \"utf8\")"}
};

/** What the prompt says under a code problem: the language, and the shape the tests expect. */
export function codeInstruction(spec: CodeSpec): string {
    const s = codeSpecSchema.parse(spec);
    const l = LANGUAGE_NAMES[s.language];
    const shape = isProgramSpec(s)
        ? `Write a complete ${l.name} program that reads the input from standard input (${l.stdin}) and prints the answer to standard output.`
        : s.call != null || s.entryPoint != null
            ? `Write the ${l.name} function \`${s.call ?? s.entryPoint}\` that the tests call.`
            : `Write the ${l.name} code that the tests call, with the names the question uses.`;
    return `${shape} Give the final code in one \`\`\`${l.fence} code block in the solution.`;
}
