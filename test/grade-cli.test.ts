// `still grade` as a user runs it (the built CLI in a child process).
import {execa} from "execa";
import {describe, expect, it} from "vitest";
import {scratchFile} from "./helpers/fixtures.js";

const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});

describe("still grade", () => {
    it("grades one prediction, as text or JSON", async () => {
        const human = await cli(["grade", "--pred", "so $\\boxed{\\dfrac{1}{2}}$", "--gold", "0.5"]);
        expect(human.exitCode, human.stderr).toBe(0);
        expect(human.stdout).toBe("correct  extracted: \\dfrac{1}{2}");

        const json = await cli(["grade", "--pred", "The answer is (B).", "--gold", "C", "--type", "choice", "--json"]);
        expect(json.exitCode, json.stderr).toBe(0);
        expect(JSON.parse(json.stdout)).toEqual({correct: false, extracted: "B", type: "choice"});
    });

    it("grades a JSONL file line by line, in order, reporting unreadable lines in place", async () => {
        const lines = [
            JSON.stringify({pred: "\\boxed{2}", gold: "2"}),
            "{not json",
            JSON.stringify({response: "Answer: B", gold: "B", type: "choice"}),
            JSON.stringify({gold: 5}),
            JSON.stringify({pred: "x = 3", gold: 3}),
            JSON.stringify({pred: "Paris", gold: "paris", type: "exact"}),
            JSON.stringify({pred: "\\boxed{7}", gold: "8"})
        ];
        const file = scratchFile("grade.jsonl", lines.join("\n") + "\n");
        const run = await cli(["grade", "--file", file, "--json"]);
        expect(run.exitCode).toBe(1);
        const out = run.stdout.split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(out.map((o) => o.line)).toEqual([1, 2, 3, 4, 5, 6, 7]);
        expect(out.map((o) => o.correct)).toEqual([true, false, true, false, true, true, false]);
        expect(out.map((o) => o.extracted)).toEqual(["2", null, "B", null, "x = 3", "Paris", "7"]);
        expect(out[1]!.error).toMatch(/:2: not valid JSON/);
        expect(out[3]!.error).toMatch(/:4: pred: missing/);

        const human = await cli(["grade", "--file", file]);
        expect(human.stdout.split("\n").at(-1)).toBe("5 graded, 4 correct (80.0%), 2 unreadable lines");
    });

    it("a response cut short is wrong, as the evaluation grades it; a bare prediction is graded as it stands", async () => {
        const whole = "<|begin_of_thought|>\n6 sevens\n<|end_of_thought|>\n<|begin_of_solution|>\n\\boxed{42}\n<|end_of_solution|>";
        const lines = [
            {response: whole, gold: "42"},
            {response: whole, gold: "42", finish: "length"},
            {response: "<|begin_of_thought|>\n6 sevens: \\boxed{42}", gold: "42", finish: "stop"},
            {pred: "<|begin_of_thought|>\n6 sevens: \\boxed{42}", gold: "42"},
            {response: whole, gold: "42", finish: "halted"}
        ];
        const file = scratchFile("cut-short.jsonl", lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
        const run = await cli(["grade", "--file", file, "--json"]);
        const out = run.stdout.split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
        expect(out.map((o) => o.correct)).toEqual([true, false, false, true, false]);
        expect(out.map((o) => o.cut_short)).toEqual([undefined, "cut at maxTokens", "the thought never closed", undefined, undefined]);
        expect(out[1]!.extracted).toBe("42");
        expect(out[4]!.error).toMatch(/:5: finish/);
        const human = await cli(["grade", "--file", file]);
        expect(human.stdout.split("\n")[1]).toBe("line 2: wrong    extracted: 42, cut short: cut at maxTokens");
    });

    it("refuses bad options with one line", async () => {
        const none = await cli(["grade", "--gold", "1"]);
        expect(none.exitCode).toBe(1);
        expect(none.stderr.trim()).toBe("still: error: grade needs --pred and --gold, or --file.");
        const both = await cli(["grade", "--file", "x.jsonl", "--pred", "1", "--gold", "1"]);
        expect(both.stderr.trim()).toBe("still: error: grade takes either --file or --pred and --gold, not both.");
        const type = await cli(["grade", "--pred", "1", "--gold", "1", "--type", "fuzzy"]);
        expect(type.exitCode).toBe(1);
        expect(type.stderr).toMatch(/^still: error: invalid options: .*type/s);
        const missing = await cli(["grade", "--file", "/nonexistent/file.jsonl"]);
        expect(missing.stderr.trim()).toMatch(/^still: error: \/nonexistent\/file\.jsonl: cannot read the file/);
        expect(missing.stderr.trim().split("\n")).toHaveLength(1);
    });
});
