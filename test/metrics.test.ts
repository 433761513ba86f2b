// Metrics: accuracy, unbiased pass@k against the combinatorial definition, maj@k, mean@k,
// format adherence.
import {describe, expect, it} from "vitest";
import {accuracy, formatAdherence, majAtK, majorityCorrect, meanAtK, meanPassAtK, passAtK} from "../src/evaluate/metrics.js";
import {formatThought} from "../src/format/formatThought.js";
import {mathEqual} from "../src/grade/mathEqual.js";
import {OptionError} from "../src/errors.js";

function choose(n: number, k: number): number {
    let r = 1;
    for (let i = 1; i <= k; i++) r = (r * (n - k + i)) / i;
    return r;
}

describe("pass@k", () => {
    it("matches 1 - C(n-c,k)/C(n,k) and its edge cases", () => {
        for (const [n, c, k] of [[10, 3, 1], [10, 3, 5], [20, 1, 10], [16, 0, 4], [5, 5, 5], [100, 7, 20]] as const) {
            const expected = n - c < k ? 1 : 1 - choose(n - c, k) / choose(n, k);
            expect(passAtK(n, c, k)).toBeCloseTo(expected, 12);
        }
        expect(passAtK(10, 3, 1)).toBeCloseTo(0.3, 12);
        expect(passAtK(10, 0, 10)).toBe(0);
        expect(passAtK(10, 8, 3)).toBe(1);
        expect(passAtK(200, 10, 100)).toBeGreaterThan(0.999);
    });

    it("refuses impossible arguments", () => {
        expect(() => passAtK(5, 6, 1)).toThrow(OptionError);
        expect(() => passAtK(5, 1, 6)).toThrow(/needs at least 6 samples/);
        expect(() => passAtK(5, 1, 0)).toThrow(OptionError);
    });

    it("averages over problems", () => {
        expect(meanPassAtK([[true, false], [false, false]], 1)).toBeCloseTo(0.25, 12);
        expect(meanPassAtK([[true, false], [false, false]], 2)).toBeCloseTo(0.5, 12);
    });
});

describe("maj@k, mean@k, accuracy, format adherence", () => {
    it("votes by answer, ties to the first seen, ignoring samples without an answer", () => {
        const s = (extracted: string | null, correct: boolean) => ({extracted, correct});
        expect(majorityCorrect([s("4", true), s("5", false), s("5", false)], 3)).toBe(false);
        expect(majorityCorrect([s("4", true), s("5", false), s(null, false), s("4", true)], 4)).toBe(true);
        expect(majorityCorrect([s("5", false), s("4", true)], 2)).toBe(false);
        expect(majorityCorrect([s(null, false)], 1)).toBe(false);
        // With an equivalence, 1/2 and 0.5 are one answer.
        const votes = [s("\\frac{1}{2}", true), s("0.5", true), s("3", false), s("3", false), s("2/4", true)];
        expect(majorityCorrect(votes, 5)).toBe(false);
        expect(majorityCorrect(votes, 5, (a, b) => mathEqual(a, b))).toBe(true);
        expect(majAtK([[s("1", true)], [s("2", false)]], 1)).toBe(0.5);
        expect(() => majorityCorrect([s("1", true)], 2)).toThrow(OptionError);
    });

    it("computes mean@k over the first k samples and plain accuracy", () => {
        expect(meanAtK([[true, false, true], [false, false, true]], 2)).toBeCloseTo(0.25, 12);
        expect(accuracy([true, false, true, true])).toBe(0.75);
        expect(accuracy([])).toBe(0);
    });

    it("counts well-formed responses", () => {
        const ok = formatThought({thought: "t", solution: "s"});
        const responses = [ok, ok, "<think>x</think> y", `${ok} trailing`];
        expect(formatAdherence(responses)).toBe(0.5);
        expect(formatAdherence(responses, "think")).toBe(0.25);
        expect(formatAdherence(responses, "auto")).toBe(0.75);
    });
});
