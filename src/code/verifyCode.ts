// Checks a program against a problem's tests, in the sandbox: function tests (assert
// statements, a check(candidate) harness, or calls with JSON arguments) in one run of the
// language's harness, standard-input/standard-output cases one run each, compared line by
// line with white space normalised.
import {randomBytes} from "node:crypto";
import os from "node:os";
import {z} from "zod";
import {parseThought} from "../format/parseThought.js";
import {JAVASCRIPT_HARNESS, PYTHON_HARNESS} from "./harness.js";
import {type CodeResult, type CodeSpec, codeSpecSchema, isProgramSpec, type ResolvedCodeSpec} from "./codeSpec.js";
import {type CodeLanguage, interpreter} from "./interpreters.js";
import {CodeExecutionError, codeRefusal, detectIsolation, type Isolation, runSandboxed, type RunResult, type SandboxLimits,
    sandboxLimitsSchema} from "./sandbox.js";

export const verifyOptionsSchema = z.object({
    testTimeoutMs: z.number().int().min(100).describe("Wall-clock limit per test (LiveCodeBench uses 6 s)").default(6000),
    problemTimeoutMs: z.number().int().min(100).describe("Wall-clock limit for all of a problem's tests").default(60_000),
    limits: sandboxLimitsSchema.omit({wallMs: true}).partial().describe("The sandbox's other limits").prefault({}),
    unsafe: z.boolean().describe("Run code unisolated where no sandbox is available (unsafe)").default(false)
});
export type VerifyOptions = z.input<typeof verifyOptionsSchema>;

// --- finding the program in a response -------------------------------------------------

const TAGS: Record<CodeLanguage, RegExp> = {
    python: /^(python3?|py)$/i,
    javascript: /^(javascript|js|node|nodejs|mjs|cjs)$/i
};

/**
 * The program in a response: the last fenced block of the solution part (one tagged with
 * the language first, else an untagged one), or the whole solution when it is code.
 */
export function extractCode(response: string, language: CodeLanguage): string | null {
    const parsed = parseThought(response);
    const text = parsed.solution ?? response;
    const blocks: {tag: string, body: string}[] = [];
    const fence = /^[ \t]*(```+|~~~+)[ \t]*([\w+#.-]*)[^\n]*\n([\s\S]*?)^[ \t]*\1[ \t]*$/gm;
    for (let m = fence.exec(text); m != null; m = fence.exec(text)) blocks.push({tag: m[2] ?? "", body: m[3] ?? ""});
    const tagged = blocks.filter((b) => TAGS[language].test(b.tag));
    const pick = tagged.at(-1) ?? blocks.filter((b) => b.tag === "").at(-1);
    if (pick != null) return pick.body.trim().length === 0 ? null : pick.body;
    if (blocks.length > 0) return null;   // only blocks of other languages
    return looksLikeCode(text, language) ? text.trim() + "\n" : null;
}

function looksLikeCode(text: string, language: CodeLanguage): boolean {
    const lines = text.split("\n").map((l) => l.trimEnd()).filter((l) => l.trim().length > 0);
    if (lines.length === 0) return false;
    const defines = language === "python"
        ? /^(def |class |import |from \S+ import |print\(|for |while |if |[A-Za-z_]\w*\s*=)/
        : /^(function[\s*]|const |let |var |class |console\.log\(|for |while |if |module\.exports|process\.stdin)/;
    if (!lines.some((l) => defines.test(l.trim()))) return false;
    // prose reads as sentences: a capital, words, a full stop at the end
    const prose = lines.filter((l) => /^[A-Z][a-z]+( [a-z,;'’-]+){3,}.*[.!?]$/.test(l.trim()));
    return prose.length / lines.length < 0.2;
}

/** Output compared line by line: trailing white space cut, runs of spaces folded, blank lines at the ends dropped. */
export function normalizeOutput(s: string): string {
    const lines = s.replace(/\r\n?/g, "\n").split("\n").map((l) => l.trim().replace(/[ \t]+/g, " "));
    while (lines.length > 0 && lines.at(-1) === "") lines.pop();
    while (lines.length > 0 && lines[0] === "") lines.shift();
    return lines.join("\n");
}

// --- running -------------------------------------------------------------------------------

const cut = (s: string, n = 300) => s.length <= n ? s : s.slice(0, n) + "…";

type HarnessTest =
    | {kind: "assert", code: string}
    | {kind: "check", code: string, entryPoint: string}
    | {kind: "call", name: string, args: unknown[], expected: unknown};

const eventSchema = z.object({
    key: z.string(),
    event: z.enum(["start", "pass", "fail", "crash", "done"]),
    test: z.number().int().optional(),
    expected: z.string().optional(),
    got: z.string().optional(),
    message: z.string().optional()
});

/** A small counting semaphore: runs at most `n` sandboxes at once. */
class Slots {
    private free: number;
    private readonly waiting: (() => void)[] = [];

    constructor(n: number) {
        this.free = n;
    }

    async use<T>(work: () => Promise<T>): Promise<T> {
        if (this.free > 0) this.free--;
        else await new Promise<void>((resolve) => this.waiting.push(resolve));
        try {
            return await work();
        } finally {
            const next = this.waiting.shift();
            if (next != null) next();
            else this.free++;
        }
    }
}

/**
 * Runs code checks with at most `concurrency` sandboxes at once (default: the CPU count).
 * One verifier is shared by everything that grades code in a process.
 */
export class CodeVerifier {
    private readonly slots: Slots;
    readonly options: z.output<typeof verifyOptionsSchema>;

    private readonly tmpDir: string | undefined;

    /** `concurrency`: sandboxes at once (default the CPU count); `tmpDir`: where runs make their folders. */
    constructor(options: VerifyOptions & {concurrency?: number, tmpDir?: string} = {}) {
        const {concurrency, tmpDir, ...rest} = options;
        this.tmpDir = tmpDir;
        this.options = verifyOptionsSchema.parse(rest);
        this.slots = new Slots(Math.max(1, concurrency ?? os.availableParallelism()));
    }

    /**
     * Throws (CodeExecutionError) unless code in these languages can run here: isolated, or
     * unisolated when the verifier was made with `unsafe`. Runs must call it before any work.
     */
    async ready(languages: Iterable<CodeLanguage>): Promise<Isolation> {
        const refused = await codeRefusal(this.options.unsafe);
        if (refused != null) throw new CodeExecutionError(`code problems cannot be checked: ${refused}`);
        for (const language of new Set(languages)) await interpreter(language);
        return detectIsolation();
    }

    /** Checks the program in `response` (see extractCode) against `spec`. */
    async verifyResponse(response: string, spec: CodeSpec, signal?: AbortSignal): Promise<CodeResult & {code: string | null}> {
        const s = codeSpecSchema.parse(spec);
        const code = extractCode(response, s.language);
        return {...await this.verify(code, s, signal), code};
    }

    /** Checks `code` (null: none was found) against `spec`. */
    async verify(code: string | null, spec: CodeSpec, signal?: AbortSignal): Promise<CodeResult> {
        const s = codeSpecSchema.parse(spec);
        const total = s.tests.length + (s.check != null ? 1 : 0);
        const isolation = (await detectIsolation()).kind;
        const result = (r: Partial<CodeResult> & Pick<CodeResult, "status" | "message">): CodeResult =>
            ({tests: total, passed: 0, test: null, expected: null, got: null, isolation, ...r});
        if (code == null || code.trim().length === 0) return result({status: "no_code", message: "no code found in the response"});
        return isProgramSpec(s) ? this.verifyIo(code, s, total, result, signal) : this.verifyFunctions(code, s, total, result, signal);
    }

    private async run(language: CodeLanguage, file: string, files: Record<string, string>, stdin: string, wallMs: number, signal?: AbortSignal): Promise<RunResult> {
        const interp = await interpreter(language);
        const argv = language === "python" ? [interp.executable, "-I", `/code/${file}`] : [interp.executable, `/code/${file}`];
        const limits: SandboxLimits = {...this.options.limits, wallMs: Math.max(100, Math.round(wallMs))};
        limits.cpuSeconds ??= Math.max(1, Math.ceil(wallMs / 1000));
        return this.slots.use(() => runSandboxed({argv, files, stdin, limits, readOnly: interp.readOnly, unsafe: this.options.unsafe, tmpDir: this.tmpDir, signal}));
    }

    private async verifyIo(code: string, s: ResolvedCodeSpec, total: number, result: (r: Partial<CodeResult> & Pick<CodeResult, "status" | "message">) => CodeResult, signal?: AbortSignal): Promise<CodeResult> {
        const file = s.language === "python" ? "solution.py" : "solution.js";
        const deadline = performance.now() + this.options.problemTimeoutMs;
        let passed = 0;
        for (const [i, t] of s.tests.entries()) {
            if (typeof t === "string") continue;
            const left = deadline - performance.now();
            if (left <= 0) return result({status: "timeout", passed, test: i + 1, message: `test ${i + 1} of ${total}: the problem's time limit ran out`});
            const wall = Math.min(this.options.testTimeoutMs, left);
            const r = await this.run(s.language, file, {[file]: code}, t.input, wall, signal);
            const where = `test ${i + 1} of ${total}`;
            const ended = endedBadly(r, where, wall);
            if (ended != null) return result({...ended, passed, test: i + 1});
            const got = normalizeOutput(r.stdout), expected = normalizeOutput(t.output);
            if (got !== expected)
                return result({status: "failed", passed, test: i + 1, expected: cut(expected), got: cut(got), message: `${where}: wrong output`});
            passed++;
        }
        return result({status: "passed", passed, message: `${passed} of ${total} tests passed`});
    }

    private async verifyFunctions(code: string, s: ResolvedCodeSpec, total: number, result: (r: Partial<CodeResult> & Pick<CodeResult, "status" | "message">) => CodeResult, signal?: AbortSignal): Promise<CodeResult> {
        const tests: HarnessTest[] = [];
        for (const t of s.tests) {
            if (typeof t === "string") tests.push({kind: "assert", code: t});
            else tests.push({kind: "call", name: s.call!, args: parseArgs(t.input), expected: parseJson(t.output)});
        }
        if (s.check != null) tests.push({kind: "check", code: s.check, entryPoint: s.entryPoint!});
        const ext = s.language === "python" ? "py" : "js";
        const key = randomBytes(16).toString("hex");
        const files = {
            [`solution.${ext}`]: code,
            [`harness.${ext}`]: s.language === "python" ? PYTHON_HARNESS : JAVASCRIPT_HARNESS,
            "spec.json": JSON.stringify({tests, ...(s.setup == null ? {} : {setup: s.setup})})
        };
        const wall = Math.min(this.options.problemTimeoutMs, this.options.testTimeoutMs * Math.max(1, tests.length));
        const r = await this.run(s.language, `harness.${ext}`, files, key + "\n", wall, signal);
        // only lines that carry the key are the harness's
        const events = r.stdout.split("\n").flatMap((line) => {
            if (!line.includes(key)) return [];
            try {
                const e = eventSchema.safeParse(JSON.parse(line));
                return e.success && e.data.key === key ? [e.data] : [];
            } catch {
                return [];
            }
        });
        let passed = 0, current: number | null = null;
        for (const e of events) {
            if (e.event === "start") current = e.test ?? null;
            else if (e.event === "pass") passed++;
            else if (e.event === "crash") return result({status: "crashed", message: e.message ?? "the solution failed to load"});
            else if (e.event === "fail") {
                const n = (e.test ?? 0) + 1;
                return result({status: "failed", passed, test: n, expected: e.expected ?? null, got: e.got ?? null,
                    message: `test ${n} of ${total}: ${e.message ?? "failed"}`});
            } else if (e.event === "done") {
                return passed === tests.length
                    ? result({status: "passed", passed, message: `${passed} of ${total} tests passed`})
                    : result({status: "crashed", passed, message: "the harness ended with tests unaccounted for"});
            }
        }
        const where = current == null ? "before the tests" : `test ${current + 1} of ${total}`;
        const ended = endedBadly(r, where, wall);
        if (ended != null) return result({...ended, passed, test: current == null ? null : current + 1});
        return result({status: "crashed", passed, test: current == null ? null : current + 1,
            message: `${where}: the program exited before the tests finished${stderrTail(r)}`});
    }
}

function parseJson(text: string): unknown {
    try {
        return JSON.parse(text);
    } catch {
        return text;
    }
}

function parseArgs(input: string): unknown[] {
    return input.split("\n").filter((l) => l.trim().length > 0).map(parseJson);
}

function stderrTail(r: RunResult) {
    const lines = r.stderr.trim().split("\n").filter((l) => l.trim().length > 0);
    // the error's own line (Node.js ends its report with a version line)
    const line = lines.findLast((l) => /^\s*\w*(Error|Exception)\b/.test(l)) ?? lines.at(-1);
    return line == null ? "" : ` (${cut(line.trim(), 200)})`;
}

const SIGNALS: Record<number, string> = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 24: "SIGXCPU", 25: "SIGXFSZ"};

/** How a run that did not end normally is graded; null when it exited by itself (code 0). */
function endedBadly(r: RunResult, where: string, wallMs: number): Pick<CodeResult, "status" | "message"> | null {
    switch (r.status) {
        case "timeout": return {status: "timeout", message: `${where}: no result within ${(wallMs / 1000).toFixed(1)} s`};
        case "output_limit": return {status: "crashed", message: `${where}: the program printed more than the output limit`};
        case "exec_failed": return {status: "crashed", message: `${where}: the interpreter could not start${stderrTail(r)}`};
        case "signaled": {
            const name = SIGNALS[r.signal ?? 0] ?? `signal ${r.signal}`;
            if (r.signal === 24 || r.signal === 9) return {status: "timeout", message: `${where}: the CPU time limit ran out (${name})`};
            if (r.signal === 25) return {status: "crashed", message: `${where}: the program wrote past the file size limit (${name})`};
            return {status: "crashed", message: `${where}: killed by ${name}${stderrTail(r)}`};
        }
        case "exited":
            return r.code === 0 ? null : {status: "crashed", message: `${where}: exit status ${r.code}${stderrTail(r)}`};
    }
}
