// The grader piece by piece: extraction, normalisation, structures, exact equivalence,
// multiple choice, exact match, and inputs meant to stall it.
import {describe, expect, it} from "vitest";
import {extractMathAnswer} from "../src/grade/extractAnswer.js";
import {grade, extractAnswer} from "../src/grade/grade.js";
import {extractChoice, parseChoiceGold} from "../src/grade/gradeChoice.js";
import {mathEqual} from "../src/grade/mathEqual.js";
import {normalizeAnswer} from "../src/grade/normalizeAnswer.js";
import {parseAnswer} from "../src/grade/parseAnswer.js";
import {OptionError} from "../src/errors.js";

const boxed = (x: string) => `So we get $\\boxed{${x}}$.`;

describe("answer extraction", () => {
    it("takes the last box, matching nested braces, and \\fbox", () => {
        expect(extractMathAnswer("first \\boxed{1}, then \\boxed{\\frac{\\sqrt{3}}{2}}.")?.text).toBe("\\frac{\\sqrt{3}}{2}");
        expect(extractMathAnswer("\\fbox{x^{2}+1}")?.text).toBe("x^{2}+1");
        expect(extractMathAnswer("\\boxed 5 and done")?.text).toBe("5");
    });

    it("merges boxes joined only by 'and', commas or spacing, not by prose", () => {
        expect(extractMathAnswer("$\\boxed{1}\\boxed{2}$")?.text).toBe("1, 2");
        expect(extractMathAnswer("$\\boxed{a} \\quad \\text{and} \\quad \\boxed{b}$")?.text).toBe("a, b");
        expect(extractMathAnswer("\\boxed{1} no no no \\boxed{2}")?.text).toBe("2");
    });

    it("reads the solution part of a well-formed response before the thought", () => {
        const r = "<|begin_of_thought|>\nmaybe \\boxed{3}?\n<|end_of_thought|>\n\n<|begin_of_solution|>\nSo \\boxed{4}.\n<|end_of_solution|>";
        expect(extractAnswer(r)).toBe("4");
        expect(grade(r, "3").correct).toBe(false);
        // After </think> for R1-style text; a truncated thought still yields its last box.
        expect(extractAnswer("<think>try \\boxed{3}</think>\nAnswer: \\boxed{4}")).toBe("4");
        expect(extractAnswer("<think>long and never closed \\boxed{7}")).toBe("7");
    });

    it("prefers a final answer stated after intermediate boxes", () => {
        expect(extractAnswer("so \\boxed{200} and then \\boxed{255}. Final Answer: The final answer is $10,455$. I hope it is correct.")).toBe("10,455");
    });

    it("reads answer anchors in several forms", () => {
        expect(extractAnswer("So the answer is 42.")).toBe("42");
        expect(extractAnswer("**Answer:** 42")).toBe("42");
        expect(extractAnswer("steps\n#### 1,200")).toBe("1,200");
        expect(extractAnswer("Final Answer: The largest $n$ is 34.")).toBe("34");
        expect(extractAnswer("La réponse est 12.")).toBe("12");
        expect(extractAnswer("所以答案是 7")).toBe("7");
    });

    it("falls back to the last math segment or a number that ends a sentence", () => {
        expect(extractAnswer("Therefore $x \\geq 5$ is the solution.")).toBe("x \\geq 5");
        expect(extractAnswer("We have $a=1$, so the error increases by 100%.")).toBe("100%");
        expect(extractAnswer("The value is $\\$16386.20$ after 5 years.")).toBe("\\$16386.20");
        expect(extractAnswer("the number is not 10 which is 1,000.99€")).toBe("1,000.99");
        expect(extractAnswer("AZYUK2A")).toBe("AZYUK2A");
        expect(grade("AZYUK2A", "2").correct).toBe(false);
    });

    it("ignores a new chat turn the model started", () => {
        expect(extractAnswer("so it is 2/3. <|im_start|>user\nWhat is 5+5?")).toBe("2/3");
    });

    it("finds nothing in an empty response", () => {
        expect(extractAnswer("")).toBeNull();
        expect(grade("", "5")).toEqual({correct: false, extracted: null, type: "math"});
        expect(grade("   \n ", "5").correct).toBe(false);
    });
});

describe("normalisation", () => {
    it.each([
        ["\\$1,000.99", "1000.99"], ["7,425,000", "7425000"], ["1 000", "1000"], ["11,\\! 111,\\! 111,\\! 100", "11111111100"],
        ["14{,}916", "14916"], ["90^\\circ", "90"], ["30 degrees", "30"], ["28 percent", "28"], ["5.4 \\text{ cents}", "5.4"],
        ["864 \\mbox{ inches}^2", "864"], ["\\dfrac{1}{3}", "\\frac{1}{3}"], ["\\left( x \\right)", "( x )"], [".4", "0.4"],
        ["\\frac94\\pi", "\\frac{9}{4}\\pi"], ["\\sqrta", "\\sqrt{a}"], ["1 \\frac{1}{2}", "\\frac{3}{2}"], ["-3 \\frac{1}{2}", "-\\frac{7}{2}"],
        ["7 3/4", "\\frac{31}{4}"], ["x \\in [0,1)", "[0,1)"], ["\\text{Evelyn}", "Evelyn"], ["x >= 5", "x \\ge 5"], ["5!", "5!"]
    ])("%s -> %s", (raw, normal) => {
        expect(normalizeAnswer(raw)).toBe(normal);
    });
});

describe("answer structure", () => {
    it("tells lists, sets, tuples, intervals, relations, assignments and matrices apart", () => {
        expect(parseAnswer("1, 2").kind).toBe("list");
        expect(parseAnswer("\\{1, 2\\}")).toMatchObject({kind: "list", braces: "set"});
        expect(parseAnswer("(1, 2)")).toMatchObject({kind: "tuple", open: "(", close: ")"});
        expect(parseAnswer("[0, 1)")).toMatchObject({kind: "tuple", open: "[", close: ")"});
        expect(parseAnswer("x \\le 5").kind).toBe("relation");
        expect(parseAnswer("x = 5")).toMatchObject({kind: "assign", name: "x"});
        expect(parseAnswer("(1,2) \\cup (3,4)").kind).toBe("union");
        expect(parseAnswer("\\begin{pmatrix}1 & 2\\\\3 & 4\\end{pmatrix}")).toMatchObject({kind: "matrix"});
        expect(parseAnswer("204_5")).toEqual({kind: "base", digits: "204", base: 5});
        expect(parseAnswer("1 \\pm \\sqrt{2}")).toMatchObject({kind: "list", braces: "pm"});
    });
});

describe("math equivalence", () => {
    it.each([
        // [pred, gold, equal]
        ["\\frac{1}{2}", "0.5", true], ["\\frac{2}{4}", "\\frac{1}{2}", true], ["2\\sqrt{2}", "\\sqrt{8}", true],
        ["x^2+2x+1", "(x+1)^2", true], ["(x+1)^2", "x^2+2x", false], ["\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}", true],
        ["\\sec^2(y)", "\\tan^2(y)+1", true], ["\\sin^2 x + \\cos^2 x", "1", true], ["\\log_2 8", "3", true],
        ["\\binom{5}{2}", "10", true], ["5!", "120", true], ["\\sqrt[3]{-8}", "-2", true], ["(3-2i)(3+2i)", "13", true],
        ["e^{i\\pi}", "-1", true], ["6-5i", "-5i+6", true], ["2.5\\times 10^2", "250", true], ["1500E-1", "150", true],
        ["n^2", "\\sum_{k=1}^{n} (2k-1)", true], ["\\frac{n(n+1)}{2}", "\\binom{n+1}{2}", true],
        ["x\\approx 11", "11", true], ["k = 1", "1", true], ["1", "k=1", true], ["0", "a+3z=0", false],
        ["y=-\\frac{1}{2}x+\\frac{3}{4}", "2x+4y-3=0", true], ["-34x-45y+20z-100=0", "34x+45y-20z+100=0", true],
        ["x < 5", "x > 5", false], ["5 \\geq x", "x \\leq 5", true], ["-x > -1", "x < 1", true],
        ["[0,1)", "[0,9)", false], ["(0,9)", "[0,9)", false], ["(2,\\infty)", "x > 2", true], ["[2,\\infty)", "x > 2", false],
        ["(-\\infty,1)\\cup(2,\\infty)", "x<1 \\text{ or } x>2", true], ["\\{-1\\} \\cup [0,7)", "\\{-1\\}\\cup[0,7)", true],
        ["3, 1, 2", "1, 2, 3", true], ["(1, 2)", "(2, 1)", false], ["\\{1,3\\}", "(1,3)", false],
        ["\\{-2021, 2021\\}", "\\pm 2021", true], ["2021", "\\pm 2021", false], ["3 \\pm \\sqrt{2}", "3+\\sqrt2, 3-\\sqrt2", true],
        ["\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)", true], ["\\begin{bmatrix}0&0\\\\0&0\\end{bmatrix}", "\\begin{pmatrix}0&0\\\\0&1\\end{pmatrix}", false],
        ["204_5", "204_{5}", true], ["1112122_3", "1112112_3", false], ["\\text{Evelyn}", "Evelyn", true], ["\\text{odd}", "even", false],
        ["x=2 \\text{ or } x=3", "2, 3", true], ["(3,4)", "x=3, y=4", true], ["(4,3)", "x=3, y=4", false],
        ["7:32", "S_{MBCN}:S=7:32", true], ["1:00", "12:00", false], ["\\emptyset", "\\{\\}", true],
        ["30\\%", "30", true], ["30\\%", "0.3", true], ["0.3", "30\\%", true], ["0.3", "30", false], ["3\\%", "0.3", false]
    ])("%s vs %s -> %s", (pred, gold, equal) => {
        expect(mathEqual(pred, gold)).toBe(equal);
    });

    it("is exact: tiny and huge values that differ are different", () => {
        expect(mathEqual("\\frac{1}{2^{98}}", "\\frac{1}{2^{99}}")).toBe(false);
        expect(mathEqual("\\frac{1}{2^{98}}", "\\frac{2}{2^{99}}")).toBe(true);
        expect(mathEqual("\\frac{1}{2006!}", "\\frac{1}{2004!}")).toBe(false);
        expect(mathEqual("\\frac{1}{3 \\cdot 2^{2006}}", "\\frac{2^{2005}+1}{3 \\cdot 2^{2006}}")).toBe(false);
        expect(mathEqual("2^{100}", "1267650600228229401496703205376")).toBe(true);
        expect(mathEqual("2^{100}", "1267650600228229401496703205377")).toBe(false);
        expect(mathEqual("10^{100}+1", "10^{100}")).toBe(false);
        expect(mathEqual("\\frac{\\pi}{2^{98}}", "\\frac{\\pi}{2^{99}}")).toBe(false);
        expect(mathEqual("\\sqrt{2}+10^{-30}", "\\sqrt{2}")).toBe(false);
        expect(mathEqual("\\sqrt{2}\\cdot\\sqrt{3}", "\\sqrt{6}")).toBe(true);
        expect(mathEqual("\\frac{x}{2^{98}}", "\\frac{x}{2^{99}}")).toBe(false);
    });

    it("accepts a decimal for an exact value only to about six significant figures", () => {
        expect(mathEqual("0.0833333333333333", "\\frac{1}{12}")).toBe(true);
        expect(mathEqual("0.333333", "\\frac{1}{3}")).toBe(true);
        expect(mathEqual("0.3333", "\\frac{1}{3}")).toBe(false);
        expect(mathEqual("1.414", "\\sqrt{2}")).toBe(false);
        // Two decimals are compared exactly: cents matter.
        expect(mathEqual("16386.19", "16386.20")).toBe(false);
        expect(mathEqual("16386.2", "16386.20")).toBe(true);
    });

    it("compares a chain by its final value, and also the value before ≈", () => {
        expect(mathEqual("x = 5+5+1 = 7 = 11", "11")).toBe(true);
        expect(mathEqual("\\frac{9.5}{3.14159} \\approx 3.01", "\\frac{9.5}{3.14159}")).toBe(true);
        expect(mathEqual("\\frac{1}{2} = \\frac{10}{9}", "\\frac{1}{2}")).toBe(false);
    });

    it("grades a relation that states no value as wrong, without looping (a garbled model answer)", () => {
        const garbled = "100borrre- 14\n\n\n<|begin_of_solution|>\n91 - 30: orrreso\u001c 101";
        expect(mathEqual(garbled, "153")).toBe(false);
        expect(mathEqual("a < b > c", "153")).toBe(false);
        expect(grade(`<|begin_of_thought|>\n\nx\n\n<|begin_of_solution|>\n\n71 + 40 = \\boxed{${garbled}}\n\n<|end_of_solution|>`, "153"))
            .toMatchObject({correct: false});
    });
});

describe("answers in other formats", () => {
    it.each([
        ["\\{1,2\\} \\cup \\{3\\}", "\\{1,2,3\\}", true], ["45°", "45", true], ["\\approx 3.14", "3.14", true], ["\\langle 1, 2 \\rangle", "(1,2)", true],
        ["6.02 \\times 10^{23}", "6.02e23", true], ["−5", "-5", true], ["12 eggs", "12", true], ["5 square meters", "5", true],
        ["x=1 \\text{ or } x=-1", "\\pm 1", true], ["x \\le -2 \\text{ or } x \\ge 3", "(-\\infty,-2]\\cup[3,\\infty)", true],
        ["\\ln(xy)", "\\ln x + \\ln y", true], ["\\tan 45^\\circ", "1", true], ["\\gcd(12, 18)", "6", true], ["\\frac{1+i}{1-i}", "i", true],
        ["(a+b)^2", "a^2+2ab+b^2", true], ["(a+b)^2", "a^2+b^2", false], ["\\sqrt{12}", "3\\sqrt{2}", false], ["\\textbf{even}", "even", true],
        ["\\$20", "20 \\text{ dollars}", true], ["-\\infty", "\\infty", false], ["(2, 3)", "\\{2, 3\\}", false]
    ])("\\boxed{%s} vs %s -> %s", (pred, gold, equal) => {
        expect(grade(boxed(pred), gold).correct).toBe(equal);
    });

    it("reads a bare gold as written (products such as 2ab are not prose)", () => {
        expect(grade(boxed("(a+b)^2"), "a^2+2ab+b^2").correct).toBe(true);
        expect(grade("The solutions are $x=2$ and $x=3$.", "2, 3").correct).toBe(true);
        expect(grade("The solutions are $x=2$ and $x=3$.", "2, 4").correct).toBe(false);
        expect(grade("**Final Answer**\n\n\\[\\boxed{12}\\]", "So the answer is: \\[ \\boxed{12} \\]").correct).toBe(true);
    });
});

describe("multiple choice", () => {
    it.each([
        ["Answer: B", "B"], ["The answer is (C).", "C"], ["the correct option is D because", "D"], ["\\boxed{\\text{(E)}}", "E"],
        ["Answer: c", "C"], ["So the answer is \"C\".", "C"], ["D. it can't be A or B", "D"], ["B。 不是 A", "B"],
        ["It's not A because it doesn't make sense, therefore I think it's B", "B"], ["**Answer: A**", "A"], ["答案是 C", "C"],
        ["The answer is C.\n\nAnswer: A", "A"], ["La réponse est D", "D"]
    ])("%s picks %s", (response, letter) => {
        expect(extractChoice(response)).toBe(letter);
    });

    it("finds no letter in prose that names none, and skips the article 'A'", () => {
        expect(extractChoice("The Pacific Ocean is larger than the Atlantic, Indian, and Arctic oceans.")).toBeNull();
        expect(extractChoice("A triangle has three sides.")).toBeNull();
    });

    it("reads gold letters in their spellings and maps option text when the choices are given", () => {
        expect(parseChoiceGold("(D) Alina")).toBe("D");
        expect(parseChoiceGold("\\text{(C)}")).toBe("C");
        expect(parseChoiceGold("C Cecile")).toBe("C");
        expect(parseChoiceGold("x+1")).toBeNull();
        expect(grade("The answer is Paris.", "B", {type: "choice", choices: ["London", "Paris", "Rome", "Berlin"]})).toMatchObject({correct: true, extracted: "B"});
        expect(grade("Answer: B", "Paris", {type: "choice", choices: ["London", "Paris", "Rome", "Berlin"]}).correct).toBe(true);
    });

    it("grades a letter gold as a choice under the default math type", () => {
        expect(grade("thinking about it I think the correct answer is C", "C")).toMatchObject({correct: true, extracted: "C"});
        expect(grade("C", "(A) Cecile").correct).toBe(false);
    });
});

describe("exact match", () => {
    it("compares text ignoring case, spacing and wrappers, after extraction", () => {
        expect(grade("The answer is \\boxed{\\text{Paris}}", "paris", {type: "exact"})).toMatchObject({correct: true, extracted: "\\text{Paris}"});
        expect(grade("Answer: New  York.", "new york", {type: "exact"}).correct).toBe(true);
        expect(grade("\\boxed{2/4}", "1/2", {type: "exact"}).correct).toBe(false);
    });
});

describe("options and robustness", () => {
    it("refuses an unknown type with an OptionError", () => {
        expect(() => grade("1", "1", {type: "fuzzy" as never})).toThrow(OptionError);
    });

    it("cannot be stalled by one pathological input", () => {
        const nested = (n: number, f: (s: string) => string) => {
            let s = "x";
            for (let i = 0; i < n; i++) s = f(s);
            return s;
        };
        const inputs: [string, string][] = [
            [boxed("2^{2^{2^{2^{2^{2^{2}}}}}}"), "2"], [boxed("10^{10^{10}}"), "10^{10^{10}}+1"], [boxed("1000000!"), "5"],
            [boxed("\\sum_{k=1}^{10^{12}} k"), "5"], [boxed(nested(200, (s) => `(${s}+1)`)), "x+200"], [boxed("x+".repeat(700) + "1"), "700x+1"],
            ["a".repeat(1_000_000), "5"], ["\\boxed{".repeat(10_000), "5"], ["{".repeat(50_000), "5"], ["$".repeat(100_000), "5"],
            ["The answer is " + "$x$ ".repeat(20_000), "5"], [boxed("\\tan(\\pi/2)"), "1"], [boxed("x^{" + "9".repeat(400) + "}"), "x"]
        ];
        for (const [pred, gold] of inputs) {
            const start = performance.now();
            const r = grade(pred, gold);
            // Far above the typical cost (well under a millisecond); only a hang fails this.
            expect(performance.now() - start, pred.slice(0, 40)).toBeLessThan(5000);
            expect(typeof r.correct).toBe("boolean");
        }
        // Values too large to compute are compared by their written form, never rounded together.
        expect(grade(boxed("10^{10^{10}}"), "10^{10^{10}}+1").correct).toBe(false);
        expect(grade(boxed("10^{10^{10}}"), "10^{10^{10}}").correct).toBe(true);
        expect(grade(boxed("x+".repeat(700) + "1"), "701x+1").correct).toBe(false);
    });

    it("treats a spent time budget as a verdict of 'different'", () => {
        const a = "\\sum_{k=1}^{2000} k x";
        const b = "\\sum_{k=1}^{2000} x k";
        expect(mathEqual(a, b)).toBe(true);
        expect(mathEqual(a, b, {timeoutMs: 0.001})).toBe(false);
    });
});
