// Code problems in the public releases' layouts: each read into still's problem, its right
// and wrong solutions checked in the sandbox; bad lines named by file, line and field; one
// file mixing math, choice and code lines.
import {execFileSync} from "node:child_process";
import zlib from "node:zlib";
import {describe, expect, it} from "vitest";
import {detectIsolation} from "../src/code/sandbox.js";
import {CodeVerifier} from "../src/code/verifyCode.js";
import {decodeLcbCases, unpickleString} from "../src/data/codeProblems.js";
import {loadCodeProblems, loadProblems} from "../src/data/loadMathProblems.js";
import {DataError} from "../src/errors.js";
import {scratchFile} from "./helpers/fixtures.js";

const isolation = await detectIsolation();
const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join("\n") + "\n";

/** LiveCodeBench's compression of test cases, made by Python's own pickle (our test's code, not a model's). */
function compressed(cases: unknown, protocol = 4): string {
    const py = "import base64, json, pickle, sys, zlib\n" +
        "print(base64.b64encode(zlib.compress(pickle.dumps(json.dumps(json.loads(sys.argv[1])), protocol=int(sys.argv[2])))).decode())";
    return execFileSync("python3", ["-c", py, JSON.stringify(cases), String(protocol)], {encoding: "utf8"}).trim();
}

const rows = [
    {task_id: "HumanEval/0", prompt: "def inc(x):\n    \"\"\"Return x + 1.\"\"\"\n", canonical_solution: "    return x + 1\n",
        test: "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-1) == 0\n", entry_point: "inc"},
    {task_id: 2, text: "Write a function to multiply two numbers.", code: "def mul(a, b):\n    return a * b\n",
        test_list: ["assert mul(2, 3) == 6", "assert mul(0, 5) == 0"], test_setup_code: ""},
    {problem_id: 10, question: "Print the sum of two integers.", input_output: JSON.stringify({inputs: ["1 2\n", "3 4\n"], outputs: ["3\n", "7\n"]})},
    {problem_id: 11, question: "Return the square of x.", input_output: JSON.stringify({fn_name: "square", inputs: [[2], [3]], outputs: [[4], [9]]})},
    {name: "cc-square", description: "Print n squared.", public_tests: {input: ["2\n"], output: ["4\n"]},
        private_tests: {input: ["3\n"], output: ["9\n"]}, generated_tests: {input: ["10\n"], output: ["100\n"]}},
    {question_id: "abc001_a", question_content: "Print n + 1.", starter_code: "", metadata: "{}",
        public_test_cases: JSON.stringify([{input: "5\n", output: "6\n", testtype: "stdin"}]),
        private_test_cases: compressed([{input: "41\n", output: "42\n", testtype: "stdin"}])},
    {question_id: "lc-double", question_content: "Return twice x.", starter_code: "class Solution:\n    def double(self, x: int) -> int:\n        ",
        public_test_cases: JSON.stringify([{input: "3", output: "6", testtype: "functional"}]),
        private_test_cases: compressed([{input: "10", output: "20", testtype: "functional"}], 2), metadata: JSON.stringify({func_name: "double"})},
    {id: "still-js", type: "code", language: "javascript", domain: "code", question: "Write half(x).", tests: ["assert.strictEqual(half(8), 4)"]}
];
const order = ["HumanEval/0", "2", "10", "11", "cc-square", "abc001_a", "lc-double", "still-js"];
const solutions: [string, [string, string]][] = Object.entries({
    "HumanEval/0": ["def inc(x):\n    return x + 1\n", "def inc(x):\n    return x + 2\n"],
    "2": ["def mul(a, b):\n    return a * b\n", "def mul(a, b):\n    return a + b\n"],
    "10": ["a, b = map(int, input().split())\nprint(a + b)\n", "a, b = map(int, input().split())\nprint(a * b)\n"],
    "11": ["def square(x):\n    return x * x\n", "def square(x):\n    return x + 1\n"],
    "cc-square": ["n = int(input())\nprint(n * n)\n", "n = int(input())\nprint(n * n + 1)\n"],
    "abc001_a": ["print(int(input()) + 1)\n", "print(int(input()) + 2)\n"],
    "lc-double": ["class Solution:\n    def double(self, x: int) -> int:\n        return 2 * x\n", "class Solution:\n    def double(self, x: int) -> int:\n        return x * x\n"],
    "still-js": ["function half(x) { return x / 2; }\n", "function half(x) { return x * 2; }\n"]
} as Record<string, [string, string]>).sort(([a], [b]) => order.indexOf(a) - order.indexOf(b));

describe("code problem layouts", async () => {
    const file = scratchFile("code-layouts.jsonl", jsonl(rows));
    const {items, issues} = await loadCodeProblems(file);

    it("reads HumanEval, MBPP, APPS (stdio and call-based), CodeContests, LiveCodeBench (stdin and functional, compressed cases) and still's own", () => {
        expect(issues).toEqual([]);
        expect(items.map((p) => p.id)).toEqual(order);
        const [he, mbpp, apps, appsCall, cc, lcb, lcbFn, own] = items;
        expect(he!.code).toMatchObject({language: "python", entryPoint: "inc"});
        expect(he!.question).toContain("def inc(x):");
        expect(he!.solution).toBe("def inc(x):\n    \"\"\"Return x + 1.\"\"\"\n    return x + 1\n");
        expect(mbpp!.code!.tests).toEqual(["assert mul(2, 3) == 6", "assert mul(0, 5) == 0"]);
        expect(mbpp!.question).toContain("assert mul(2, 3) == 6");
        expect(apps!.code!.tests).toEqual([{input: "1 2\n", output: "3\n"}, {input: "3 4\n", output: "7\n"}]);
        expect(appsCall!.code).toMatchObject({call: "square", tests: [{input: "2", output: "4"}, {input: "3", output: "9"}]});
        expect(cc!.code!.tests).toHaveLength(3);
        expect(lcb!.code!.tests).toEqual([{input: "5\n", output: "6\n"}, {input: "41\n", output: "42\n"}]);
        expect(lcbFn!.code).toMatchObject({call: "double", tests: [{input: "3", output: "6"}, {input: "10", output: "20"}]});
        expect(lcbFn!.question).toContain("class Solution:");
        expect(own!.code).toMatchObject({language: "javascript"});
        for (const p of items) expect([p.type, p.domain, p.answer]).toEqual(["code", "code", ""]);
    });

    it.skipIf(isolation.kind !== "namespaces")("checks each layout's right solution as passed and its wrong one as failed", async () => {
        const verifier = new CodeVerifier({concurrency: 2});
        for (const p of items) {
            const [right, wrong] = new Map(solutions).get(p.id)!;
            const ok = await verifier.verify(right, p.code!);
            expect(ok.status, `${p.id}: ${ok.message}`).toBe("passed");
            const bad = await verifier.verify(wrong, p.code!);
            expect(bad.status, `${p.id}: ${bad.message}`).toBe("failed");
            expect(bad.test, p.id).toBe(1);
        }
    }, 120_000);
});

describe("bad code lines", () => {
    it("are named by file, line and field", async () => {
        const file = scratchFile("code-bad.jsonl", jsonl([
            {problem_id: 1, question: "q", input_output: "{not json"},
            {question_id: "x", question_content: "q", public_test_cases: "[]", private_test_cases: "bm90IHpsaWI="},
            {id: "mixed", type: "code", question: "q", tests: ["assert 1", {input: "", output: ""}]},
            {question_id: "y", question_content: "q", public_test_cases: JSON.stringify([{input: "1", output: "2", testtype: "functional"}])},
            {name: "cc", description: "q", public_tests: {input: ["1", "2"], output: ["1"]}},
            {id: "ok", type: "code", question: "q", tests: ["assert True"]},
            {id: "ok", type: "code", question: "q", tests: ["assert True"]}
        ]));
        const {items, issues} = await loadCodeProblems(file, {policy: "skip"});
        expect(items.map((p) => p.id)).toEqual(["ok"]);
        const where = issues.map((i) => [i.line, i.field]);
        expect(where).toEqual([[1, "input_output"], [2, "private_test_cases"], [3, "tests"], [4, "metadata"], [5, "public_tests"], [7, "id"]]);
        expect(issues[0]!.message).toMatch(/code-bad\.jsonl:1: input_output: not valid JSON/);
        await expect(loadCodeProblems(file)).rejects.toThrow(DataError);
    });
});

describe("one problem file with math, choice and code lines", () => {
    it("gives each its type and domain", async () => {
        const file = scratchFile("mixed.jsonl", jsonl([
            {unique_id: "m1", problem: "1 + 1?", answer: "2"},
            {id: "c1", question: "Which is a noble gas?", type: "choice", choices: ["Neon", "Iron"], answer: "A", domain: "chemistry"},
            {id: "k1", type: "code", question: "Write f.", tests: ["assert f() == 1"]},
            {id: "e1", question: "Spell cat backwards.", answer: "tac", type: "exact", domain: "puzzle"}
        ]));
        const {items} = await loadProblems(file);
        expect(items.map((p) => [p.id, p.type, p.domain])).toEqual([["m1", "math", "math"], ["c1", "choice", "chemistry"], ["k1", "code", "code"], ["e1", "exact", "puzzle"]]);
    });
});

describe("LiveCodeBench's compressed cases", () => {
    it("are read from pickles of protocols 2 to 5 without executing anything", () => {
        const cases = [{input: "1", output: "2", testtype: "stdin"}];
        for (const protocol of [2, 3, 4, 5]) expect(decodeLcbCases(compressed(cases, protocol))).toEqual(cases);
    });

    it("refuses a pickle that is anything but one string", () => {
        // GLOBAL 'os system', a string, REDUCE: what a hostile pickle would do
        const hostile = Buffer.concat([Buffer.from("\x80\x02cos\nsystem\n", "latin1"), Buffer.from([0x58, 4, 0, 0, 0]), Buffer.from("true"), Buffer.from("\x85R.", "latin1")]);
        expect(unpickleString(hostile)).toBeNull();
        expect(typeof decodeLcbCases(zlib.deflateSync(hostile).toString("base64"))).toBe("string");
        expect(unpickleString(Buffer.from([0x80, 4, 0x8c, 200]))).toBeNull();   // a length past the end
    });
});
