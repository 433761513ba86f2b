// The long-form thought format: parsing with reasons, building, converting R1/QwQ output,
// the system prompt and chat messages.
import {describe, expect, it} from "vitest";
import {buildChatMessages, buildTrainingMessages, formatQuestion} from "../src/format/buildChatMessages.js";
import {convertThinkTags} from "../src/format/convertThinkTags.js";
import {formatThought} from "../src/format/formatThought.js";
import {MARKERS} from "../src/format/markers.js";
import {detectThoughtFormat, parseThought, thoughtSpans} from "../src/format/parseThought.js";
import {DEFAULT_SYSTEM_PROMPT, loadSystemPrompt} from "../src/format/systemPrompt.js";
import {DataError, OptionError} from "../src/errors.js";
import {scratchFile} from "./helpers/fixtures.js";

const {beginThought: bT, endThought: eT, beginSolution: bS, endSolution: eS} = MARKERS;
const codes = (text: string) => parseThought(text).issues.map((i) => i.code);

describe("parseThought", () => {
    it("accepts a well-formed response and returns both parts trimmed", () => {
        const r = parseThought(`${bT}\n  step 1\nstep 2 \n${eT}\n\n${bS}\nso 4\n${eS}\n`);
        expect(r).toEqual({wellFormed: true, thought: "step 1\nstep 2", solution: "so 4", issues: []});
    });

    it.each([
        [`${bT} t ${eT} s ${eS}`, ["missing-marker"]],
        [`${bT} t ${eT}${bT} u ${eT} ${bS} s ${eS}`, ["repeated-marker", "repeated-marker", "text-outside"]],
        [`${bS} s ${eS} ${bT} t ${eT}`, ["marker-order", "text-outside"]],
        [`${bT}   ${eT} ${bS} s ${eS}`, ["empty-thought"]],
        [`${bT} t ${eT} ${bS} \n ${eS}`, ["empty-solution"]],
        [`Sure! ${bT} t ${eT} ${bS} s ${eS}`, ["text-outside"]],
        [`${bT} t ${eT} between ${bS} s ${eS}`, ["text-outside"]],
        [`${bT} t ${eT} ${bS} s ${eS} P.S.`, ["text-outside"]],
        [`${bT} thinking and thinking`, ["truncated"]],
        [`${bT} t ${eT}\n`, ["truncated"]],
        [`${bT} t ${eT} ${bS} half a solu`, ["truncated"]],
        ["plain text", ["missing-marker", "missing-marker", "missing-marker", "missing-marker"]]
    ])("%j is malformed: %j", (text, expected) => {
        const r = parseThought(text);
        expect(r.wellFormed).toBe(false);
        expect(codes(text)).toEqual(expected);
        for (const issue of r.issues) expect(issue.message.length).toBeGreaterThan(5);
    });

    it("still returns the parts of a malformed response where it can", () => {
        expect(parseThought(`${bT} t ${eT} ${bS} half`)).toMatchObject({thought: "t", solution: "half"});
        expect(parseThought("no markers")).toMatchObject({thought: null, solution: null});
    });
});

describe("formatThought", () => {
    it("builds a response that parses back to its parts", () => {
        const text = formatThought({thought: " think \n", solution: "\\boxed{4}"});
        expect(text.startsWith(bT)).toBe(true);
        expect(parseThought(text)).toEqual({wellFormed: true, thought: "think", solution: "\\boxed{4}", issues: []});
    });

    it("refuses empty parts and parts that contain markers", () => {
        expect(() => formatThought({thought: " ", solution: "s"})).toThrow(OptionError);
        expect(() => formatThought({thought: "t", solution: ""})).toThrow(OptionError);
        expect(() => formatThought({thought: `a ${eT} b`, solution: "s"})).toThrow(/contains the marker/);
    });
});

describe("convertThinkTags", () => {
    it("converts DeepSeek-R1 / QwQ output, with or without the opening tag", () => {
        for (const text of ["<think>\nLet me see.\n</think>\n\nThe answer is 4.", "Let me see.\n</think>\n\nThe answer is 4."]) {
            const r = convertThinkTags(text);
            expect(r).toMatchObject({ok: true, thought: "Let me see.", solution: "The answer is 4."});
            if (r.ok) expect(parseThought(r.response)).toMatchObject({wellFormed: true, thought: "Let me see.", solution: "The answer is 4."});
        }
    });

    it.each([
        ["<think>never ends", /no <\/think>/],
        ["<think>a</think>b</think>c", /more than once/],
        ["<think>   </think> answer", /thought is empty/],
        ["<think>thought</think>   ", /no answer/],
        ["preamble <think>t</think> a", /before <think>/]
    ])("says why %j cannot be converted", (text, why) => {
        const r = convertThinkTags(text);
        expect(r.ok).toBe(false);
        if (!r.ok) expect(r.reason).toMatch(why);
    });
});

describe("prompts", () => {
    it("asks for the format in the default system prompt", () => {
        for (const m of Object.values(MARKERS)) expect(DEFAULT_SYSTEM_PROMPT).toContain(m);
        expect(DEFAULT_SYSTEM_PROMPT).toContain("\\boxed");
    });

    it("loads a prompt file and refuses a missing or empty one", async () => {
        expect(await loadSystemPrompt(scratchFile("prompt.txt", "\uFEFF  Think first.\n"))).toBe("Think first.");
        await expect(loadSystemPrompt(scratchFile("empty.txt", " \n"))).rejects.toThrow(DataError);
        await expect(loadSystemPrompt("/nonexistent/prompt.txt")).rejects.toThrow(/cannot read the system prompt/);
    });

    it("assembles chat messages for generation and for training", () => {
        expect(buildChatMessages(" What is 6×7? ")).toEqual([{role: "system", content: DEFAULT_SYSTEM_PROMPT}, {role: "user", content: "What is 6×7?"}]);
        expect(buildChatMessages("Q", {systemPrompt: null})).toEqual([{role: "user", content: "Q"}]);
        expect(buildChatMessages("Q", {systemPrompt: "Be brief."})[0]).toEqual({role: "system", content: "Be brief."});
        expect(formatQuestion("Which?", ["red", "blue"])).toBe("Which?\n\n(A) red\n(B) blue");
        const train = buildTrainingMessages({question: "Q", response: formatThought({thought: "t", solution: "s"})}, {systemPrompt: null});
        expect(train.map((m) => m.role)).toEqual(["user", "assistant"]);
    });
});

describe("parseThought in the <think> form", () => {
    it("reads the form thinking models write, with or without the opening tag", () => {
        expect(parseThought("<think>\nwork\n</think>\n\nThe answer is 4.")).toMatchObject({wellFormed: true, thought: "work", solution: "The answer is 4."});
        // DeepSeek-R1's template writes <think> into the prompt: the response starts inside the thought
        expect(parseThought("work\n</think>\n\n4")).toMatchObject({wellFormed: true, thought: "work", solution: "4"});
        expect(detectThoughtFormat("work </think> 4")).toBe("think");
        expect(detectThoughtFormat(`${MARKERS.beginThought} <think>`)).toBe("still");
    });

    it("names what is wrong: cut inside the thought, repeated tags, empty parts, text before the thought", () => {
        const codes = (t: string) => parseThought(t, "think").issues.map((i) => i.code);
        expect(parseThought("<think>still going", "think")).toMatchObject({wellFormed: false, thought: "still going", solution: null});
        expect(codes("<think>still going")).toEqual(["truncated"]);
        expect(codes("<think>a</think>b</think>c")).toContain("repeated-marker");
        expect(codes("<think></think>answer")).toEqual(["empty-thought"]);
        expect(codes("<think>a</think>")).toEqual(["empty-solution"]);
        expect(codes("hello <think>a</think>b")).toEqual(["text-outside"]);
        // the still format does not accept the think form, and the other way round
        expect(parseThought("<think>a</think>b", "still").wellFormed).toBe(false);
        expect(parseThought(formatThought({thought: "t", solution: "s"}), "think").wellFormed).toBe(false);
    });

    it("locates the parts of either form", () => {
        const think = "<think>\nabc\n</think>\n\nxyz<|im_end|>\n";
        const spans = thoughtSpans(think);
        expect(think.slice(...spans.thought!).trim()).toBe("abc");
        expect(think.slice(...spans.markedThought!)).toBe("<think>\nabc\n</think>");
        expect(think.slice(...spans.solution!).trim()).toBe("xyz");
        const still = formatThought({thought: "t1", solution: "s1"});
        const s = thoughtSpans(still);
        expect(still.slice(...s.thought!).trim()).toBe("t1");
        expect(still.slice(...s.solution!).trim()).toBe("s1");
        expect(still.slice(...s.markedThought!)).toMatch(new RegExp(`^${MARKERS.beginThought.replace(/\|/g, "\\|")}[\\s\\S]*${MARKERS.endThought.replace(/\|/g, "\\|")}$`));
        expect(thoughtSpans("<think>cut short")).toEqual({thought: null, markedThought: null, solution: null});
    });
});
