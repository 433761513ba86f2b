// The code verifier: extraction, output comparison, and a suite of 40 small problems
// (both test shapes, both languages) whose right solutions pass and whose wrong ones fail
// at the recorded test, identically over 20 runs.
import {execFile} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {promisify} from "node:util";
import {describe, expect, it} from "vitest";
import {type CodeResult, codeSpecSchema, isProgramSpec} from "../src/code/codeSpec.js";
import {detectIsolation, runSandboxed, runUnisolated} from "../src/code/sandbox.js";
import {CodeVerifier, extractCode, normalizeOutput} from "../src/code/verifyCode.js";
import {loadCodeProblems} from "../src/data/loadMathProblems.js";
import {grade} from "../src/grade/grade.js";
import {fixtures, readJsonlFixture, repoRoot, scratchFile} from "./helpers/fixtures.js";

type SuiteRow = {id: string, right: string, wrong: string, wrong_test: number, language: "python" | "javascript"};
const suiteFile = path.join(fixtures, "code-suite.jsonl");
const suite = readJsonlFixture<SuiteRow>("code-suite.jsonl");
const isolation = await detectIsolation();
const fence = (language: string, code: string) => "```" + language + "\n" + code + "```";
const asResponse = (language: string, code: string) =>
    `<|begin_of_thought|>Let me write it.<|end_of_thought|><|begin_of_solution|>Here is the program:\n\n${fence(language, code)}\n<|end_of_solution|>`;

describe("extractCode", () => {
    it("takes the last block of the solution's language, else the last untagged one", () => {
        const r = "```python\nx = 1\n```\ntext\n```js\nconsole.log(1)\n```\n```python\nx = 2\n```\n";
        expect(extractCode(r, "python")).toBe("x = 2\n");
        expect(extractCode(r, "javascript")).toBe("console.log(1)\n");
        expect(extractCode("```\nprint(3)\n```", "python")).toBe("print(3)\n");
        expect(extractCode("```rust\nfn main() {}\n```", "python")).toBeNull();
    });

    it("reads the solution part, not the thought, and takes a whole solution that is code", () => {
        const r = "<|begin_of_thought|>```python\nprint('draft')\n```<|end_of_thought|><|begin_of_solution|>```python\nprint('final')\n```<|end_of_solution|>";
        expect(extractCode(r, "python")).toBe("print('final')\n");
        expect(extractCode("def f(x):\n    return x + 1\n", "python")).toBe("def f(x):\n    return x + 1\n");
        expect(extractCode("The answer is that you should add the two numbers together carefully.", "python")).toBeNull();
        expect(extractCode("", "javascript")).toBeNull();
    });
});

describe("normalizeOutput", () => {
    it("compares line by line with white space normalised", () => {
        expect(normalizeOutput("1 2 3  \n\n")).toBe(normalizeOutput("1 2 3"));
        expect(normalizeOutput("a\r\nb\t c\n")).toBe("a\nb c");
        expect(normalizeOutput("a\n\nb")).not.toBe(normalizeOutput("a\nb"));
        expect(normalizeOutput("12")).not.toBe(normalizeOutput("1 2"));
    });
});

describe.skipIf(isolation.kind !== "namespaces")("the 40-problem suite, in the sandbox", async () => {
    const {items: problems} = await loadCodeProblems(suiteFile);
    const verifier = new CodeVerifier({concurrency: 2});
    const rows = new Map(suite.map((r) => [r.id, r]));
    const key = (r: CodeResult) => JSON.stringify([r.status, r.test, r.expected, r.got, r.message]);
    const runAll = () => Promise.all(problems.flatMap((p) => {
        const row = rows.get(p.id)!;
        return [row.right, row.wrong].map((code) => verifier.verifyResponse(asResponse(row.language, code), p.code!));
    }));

    it("has both shapes in both languages", () => {
        expect(problems).toHaveLength(40);
        const shape = (p: typeof problems[number]) => `${p.code!.language}/${isProgramSpec(codeSpecSchema.parse(p.code)) ? "io" : "function"}`;
        const counts: Record<string, number> = {};
        for (const p of problems) counts[shape(p)] = (counts[shape(p)] ?? 0) + 1;
        expect(counts).toEqual({"python/function": 10, "python/io": 10, "javascript/function": 10, "javascript/io": 10});
    });

    let first: string[] = [];
    it("passes every right solution and fails every wrong one at its recorded test", async () => {
        const results = await runAll();
        for (const [i, p] of problems.entries()) {
            const row = rows.get(p.id)!;
            const right = results[2 * i]!, wrong = results[2 * i + 1]!;
            expect(right.status, `${p.id} right: ${right.message}`).toBe("passed");
            expect(right.passed).toBe(right.tests);
            expect(wrong.status, `${p.id} wrong: ${wrong.message}`).toBe("failed");
            expect(wrong.test, `${p.id} wrong: ${wrong.message}`).toBe(row.wrong_test);
            expect(wrong.message).toMatch(new RegExp(`^test ${row.wrong_test} of ${wrong.tests}`));
            expect(wrong.passed).toBe(row.wrong_test - 1);
        }
        first = results.map(key);
    }, 120_000);

    it("gives identical results over 20 repeated runs", async () => {
        expect(first).toHaveLength(80);
        for (let run = 1; run < 20; run++) expect((await runAll()).map(key)).toEqual(first);
    }, 900_000);
});

describe.skipIf(isolation.kind !== "namespaces")("what a program cannot fake", () => {
    const verifier = new CodeVerifier({concurrency: 2, testTimeoutMs: 3000});
    const asserts = {language: "python" as const, tests: ["assert f() == 1", "assert f() == 1"]};

    it("does not pass by exiting early, printing a report line, or closing its output", async () => {
        const early = await verifier.verify("import os\ndef f():\n    os._exit(0)\n", asserts);
        expect(early.status).toBe("crashed");
        expect(early.test).toBe(1);
        const fake = await verifier.verify('print(\'{"event": "done", "key": "x"}\')\nimport sys\nsys.exit(0)\n', asserts);
        expect(fake.status).toBe("crashed");
        const closed = await verifier.verify("import os\nos.close(1)\nos.close(2)\ndef f():\n    return 2\n", asserts);
        expect(closed.status).not.toBe("passed");
        const js = await verifier.verify("process.exit(0)", {language: "javascript", tests: ["assert.strictEqual(1, 1)"]});
        expect(js.status).toBe("crashed");
    }, 60_000);

    it("refuses malformed specs with the field named", async () => {
        await expect(verifier.verify("x", {language: "python", tests: []})).rejects.toThrow(/tests/);
        await expect(verifier.verify("x", {language: "python", check: "def check(c): pass"})).rejects.toThrow(/entryPoint/);
        await expect(verifier.verify("x", {language: "python", tests: ["assert 1", {input: "", output: ""}]})).rejects.toThrow(/either all/);
        await expect(verifier.verify("x", {language: "cobol" as "python", tests: ["assert 1"]})).rejects.toThrow(/language/);
    });

    it("reports no code, and a solution that fails to load, as such", async () => {
        expect((await verifier.verifyResponse("I could not solve it.", asserts)).status).toBe("no_code");
        const broken = await verifier.verify("def f(:\n", asserts);
        expect(broken.status).toBe("crashed");
        expect(broken.message).toMatch(/SyntaxError/);
    });
});

describe("grade()", () => {
    it("points a code answer to the sandboxed graders", () => {
        expect(() => grade("print(1)", "1", {type: "code" as "math"})).toThrow(/gradeProblem\(\) or a CodeVerifier/);
    });
});

describe("code execution switched off", () => {
    it("refuses every run with STILL_CODE_EXECUTION=off", async () => {
        const saved = process.env.STILL_CODE_EXECUTION;
        process.env.STILL_CODE_EXECUTION = "off";
        try {
            await expect(runSandboxed({argv: ["/bin/true"], files: {}})).rejects.toThrow(/turned off/);
            await expect(new CodeVerifier().ready(["python"])).rejects.toThrow(/turned off/);
        } finally {
            if (saved == null) delete process.env.STILL_CODE_EXECUTION;
            else process.env.STILL_CODE_EXECUTION = saved;
        }
    });
});

describe("the unisolated runner (opt-in only)", () => {
    it("still applies its limits and a clean environment", async () => {
        process.env.STILL_TEST_SECRET = "do-not-leak";
        try {
            const node = process.execPath;
            const r = await runSandboxedUnisolated(node, "console.log(JSON.stringify(process.env)); while (true) {}");
            expect(r.status).toBe("signaled");   // SIGXCPU at the CPU limit, long before the wall limit
            expect(r.stdout).not.toContain("do-not-leak");
        } finally {
            delete process.env.STILL_TEST_SECRET;
        }
    }, 30_000);
});

/** The unisolated runner itself (what `unsafe` gives where no isolation exists). */
function runSandboxedUnisolated(node: string, code: string) {
    return runUnisolated({argv: [node, "/code/main.js"], files: {"main.js": code}, limits: {cpuSeconds: 1, wallMs: 10_000}});
}

describe.skipIf(isolation.kind !== "namespaces")("still grade --file with code lines", () => {
    it("checks them in the sandbox, in line order, among other answer types", async () => {
        const lines = [
            {type: "code", language: "python", response: fence("python", "print(int(input()) * 2)\n"), tests: [{input: "2", output: "4"}]},
            {pred: "\\boxed{4}", gold: "4"},
            {type: "code", language: "javascript", response: fence("js", "function f(x) { return x + 1; }\n"), tests: ["assert.strictEqual(f(1), 3)"]},
            {type: "code", language: "python", response: "no code here", tests: ["assert f() == 1"]},
            {type: "code", language: "python", tests: ["assert 1"]},
            // passes its test, but the response was cut at the token limit: checked, and wrong
            {type: "code", language: "python", response: fence("python", "print(int(input()) * 2)\n"), tests: [{input: "2", output: "4"}], finish: "length"}
        ];
        const file = scratchFile("code-grade.jsonl", lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
        const run = promisify(execFile);
        const r = await run(process.execPath, [path.join(repoRoot, "dist/src/cli/main.js"), "grade", "--file", file, "--json"]).catch((e: {stdout: string}) => e);
        const out = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as {line: number, correct: boolean, status?: string, test?: number, error?: string, cut_short?: string});
        expect(out.map((o) => o.line)).toEqual([1, 2, 3, 4, 5, 6]);
        expect(out.map((o) => o.correct)).toEqual([true, true, false, false, false, false]);
        expect(out[5]).toMatchObject({status: "passed", cut_short: "cut at maxTokens"});
        expect(out[2]!.status).toBe("failed");
        expect(out[2]!.test).toBe(1);
        expect(out[3]!.status).toBe("no_code");
        expect(out[4]!.error).toMatch(/:5: response: /);
        expect(fs.existsSync(file)).toBe(true);
    }, 60_000);
});
