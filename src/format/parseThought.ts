// Splits a response into its thought and its solution, with a verdict on whether it is
// well formed and, when not, every reason why. Two forms: STILL's long-form thought
// format (four markers) and the native form of thinking models (DeepSeek-R1, QwQ, Qwen3):
// `<think>` thought `</think>` solution, where the opening tag may be missing because the
// chat template already wrote it into the prompt.
import {z} from "zod";
import {MARKERS, type MarkerName} from "./markers.js";

export const formatIssueSchema = z.object({
    code: z.enum(["missing-marker", "repeated-marker", "marker-order", "empty-thought", "empty-solution", "text-outside", "truncated"]),
    message: z.string()
});
export type FormatIssue = z.infer<typeof formatIssueSchema>;

export const thoughtParseSchema = z.object({
    wellFormed: z.boolean(),
    /** The thought steps (trimmed), when a begin-of-thought marker was found. */
    thought: z.string().nullable(),
    /** The final solution (trimmed), when a begin-of-solution marker was found. */
    solution: z.string().nullable(),
    issues: z.array(formatIssueSchema)
});
export type ThoughtParse = z.infer<typeof thoughtParseSchema>;

const ORDER: MarkerName[] = ["beginThought", "endThought", "beginSolution", "endSolution"];

/** still: the four STILL markers; think: `<think>…</think>` then the solution; auto: still when any STILL marker is there, else think when a think tag is, else still. */
export const thoughtFormats = ["still", "think"] as const;
export type ThoughtFormat = (typeof thoughtFormats)[number];

export const THINK_OPEN = "<think>";
export const THINK_CLOSE = "</think>";

/** Texts of the tokens that end a turn, as chat templates write them. */
export const END_OF_TURN = /<\|im_end\|>|<\|im_start\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>|<\/s>|<\|end_of_text\|>/;

export type ThoughtSpans = {
    /** The thought's text, markers excluded ([start, end) in characters). */
    thought: [number, number] | null,
    /** The thought with its markers (what a thought-only loss mask trains). */
    markedThought: [number, number] | null,
    /** The solution's text, markers excluded. */
    solution: [number, number] | null
};

/** Where the thought and the solution of a response lie, in its own form; null for a part that is not closed. */
export function thoughtSpans(text: string): ThoughtSpans {
    if (detectThoughtFormat(text) === "think") {
        const close = text.indexOf(THINK_CLOSE);
        if (close < 0) return {thought: null, markedThought: null, solution: null};
        const open = text.lastIndexOf(THINK_OPEN, close);
        const after = close + THINK_CLOSE.length;
        const end = text.slice(after).search(END_OF_TURN);
        return {
            thought: [open >= 0 ? open + THINK_OPEN.length : 0, close],
            markedThought: [open >= 0 ? open : 0, after],
            solution: [after, end < 0 ? text.length : after + end]
        };
    }
    const span = (a: MarkerName, b: MarkerName): [number, number] | null => {
        const i = text.indexOf(MARKERS[a]);
        const j = i < 0 ? -1 : text.indexOf(MARKERS[b], i + MARKERS[a].length);
        return j < 0 ? null : [i, j + MARKERS[b].length];
    };
    const inner = (s: [number, number] | null, a: MarkerName, b: MarkerName): [number, number] | null =>
        s == null ? null : [s[0] + MARKERS[a].length, s[1] - MARKERS[b].length];
    const t = span("beginThought", "endThought");
    return {thought: inner(t, "beginThought", "endThought"), markedThought: t, solution: inner(span("beginSolution", "endSolution"), "beginSolution", "endSolution")};
}

/** The form a response is in (see ThoughtFormat). */
export function detectThoughtFormat(text: string): ThoughtFormat {
    if (ORDER.some((n) => text.includes(MARKERS[n]))) return "still";
    return text.includes(THINK_CLOSE) || text.includes(THINK_OPEN) ? "think" : "still";
}

function positions(text: string, marker: string): number[] {
    const out: number[] = [];
    for (let i = text.indexOf(marker); i >= 0; i = text.indexOf(marker, i + marker.length)) out.push(i);
    return out;
}

/**
 * Parses `text` as `<|begin_of_thought|> … <|end_of_thought|> <|begin_of_solution|> … <|end_of_solution|>`
 * (format still), as `<think> … </think> …` (think), or in the form it is written in (auto, the default).
 */
export function parseThought(text: string, format: ThoughtFormat | "auto" = "auto"): ThoughtParse {
    const form = format === "auto" ? detectThoughtFormat(text) : format;
    return form === "think" ? parseThink(text) : parseStill(text);
}

/** `<think>` thought `</think>` solution; the opening tag may be missing (the template opened the thought). */
function parseThink(text: string): ThoughtParse {
    const issues: FormatIssue[] = [];
    const opens = positions(text, THINK_OPEN);
    const closes = positions(text, THINK_CLOSE);
    if (opens.length > 1) issues.push({code: "repeated-marker", message: `${THINK_OPEN} appears ${opens.length} times`});
    if (closes.length > 1) issues.push({code: "repeated-marker", message: `${THINK_CLOSE} appears ${closes.length} times`});
    const open = opens[0] ?? -1;
    const close = closes[0] ?? -1;
    if (open >= 0 && close >= 0 && close < open)
        issues.push({code: "marker-order", message: `${THINK_CLOSE} comes before ${THINK_OPEN}`});
    const from = open >= 0 && (close < 0 || open < close) ? open + THINK_OPEN.length : 0;
    if (open > 0 && text.slice(0, open).trim() !== "" && (close < 0 || open < close))
        issues.push({code: "text-outside", message: `text outside the markers: before ${THINK_OPEN}`});
    if (close < 0) {
        issues.push({code: "truncated", message: `the response ends inside the thought (no ${THINK_CLOSE})`});
        return {wellFormed: false, thought: text.slice(from).trim(), solution: null, issues};
    }
    const thought = text.slice(from, close).trim();
    const solution = text.slice(close + THINK_CLOSE.length).trim();
    if (thought === "") issues.push({code: "empty-thought", message: "the thought is empty"});
    if (solution === "") issues.push({code: "empty-solution", message: "the solution is empty"});
    return {wellFormed: issues.length === 0, thought, solution, issues};
}

function parseStill(text: string): ThoughtParse {
    const issues: FormatIssue[] = [];
    const at = {} as Record<MarkerName, number[]>;
    for (const name of ORDER) at[name] = positions(text, MARKERS[name]);
    const first = (name: MarkerName) => at[name][0] ?? -1;
    const endOf = (name: MarkerName) => first(name) + MARKERS[name].length;

    for (const name of ORDER) {
        if (at[name].length > 1) issues.push({code: "repeated-marker", message: `${MARKERS[name]} appears ${at[name].length} times`});
    }

    const bT = first("beginThought");
    const eT = first("endThought");
    const bS = first("beginSolution");
    const eS = first("endSolution");

    // A response that stops early: an opened part never closes, and nothing follows it.
    let truncated = false;
    if (bT >= 0 && eT < 0 && bS < 0 && eS < 0) {
        truncated = true;
        issues.push({code: "truncated", message: `the response ends inside the thought (no ${MARKERS.endThought})`});
    } else if (bS >= 0 && eS < 0) {
        truncated = true;
        issues.push({code: "truncated", message: `the response ends inside the solution (no ${MARKERS.endSolution})`});
    } else if (bT >= 0 && eT >= 0 && bS < 0 && eS < 0 && text.slice(eT + MARKERS.endThought.length).trim() === "") {
        truncated = true;
        issues.push({code: "truncated", message: `the response ends after the thought (no ${MARKERS.beginSolution})`});
    }
    for (const name of ORDER) {
        if (at[name].length > 0) continue;
        const coveredByTruncation = truncated && ORDER.indexOf(name) > ORDER.indexOf(lastPresent(at));
        if (!coveredByTruncation) issues.push({code: "missing-marker", message: `${MARKERS[name]} is missing`});
    }

    const present = ORDER.filter((n) => at[n].length > 0).map((n) => first(n));
    if (present.some((p, i) => i > 0 && p < present[i - 1]!))
        issues.push({code: "marker-order", message: "the markers are out of order (expected begin/end of thought, then begin/end of solution)"});

    let thought: string | null = null;
    if (bT >= 0) {
        const stop = [eT, bS, eS].filter((p) => p > bT);
        thought = text.slice(endOf("beginThought"), stop.length > 0 ? Math.min(...stop) : text.length).trim();
        if (thought === "" && eT > bT) issues.push({code: "empty-thought", message: "the thought is empty"});
    }
    let solution: string | null = null;
    if (bS >= 0) {
        const stop = [eS].filter((p) => p > bS);
        solution = text.slice(endOf("beginSolution"), stop.length > 0 ? stop[0]! : text.length).trim();
        if (solution === "" && eS > bS) issues.push({code: "empty-solution", message: "the solution is empty"});
    }

    const outside: string[] = [];
    if (bT > 0 && text.slice(0, bT).trim() !== "") outside.push("before the thought");
    if (eT >= 0 && bS > eT && text.slice(endOf("endThought"), bS).trim() !== "") outside.push("between the thought and the solution");
    if (eS >= 0 && text.slice(endOf("endSolution")).trim() !== "") outside.push("after the solution");
    if (outside.length > 0) issues.push({code: "text-outside", message: `text outside the markers: ${outside.join(", ")}`});

    return {wellFormed: issues.length === 0, thought, solution, issues};
}

/**
 * Why a response stops before giving its answer, or null: cut at maxTokens (finish "length"),
 * a thought never closed, or a response ending inside its thought or solution. Such a
 * response never counts as correct, whatever number it wrote last (`parsed`: the text's
 * parseThought, when at hand).
 */
export function cutShortReason(text: string, finish?: "stop" | "length", parsed: ThoughtParse = parseThought(text)): string | null {
    if (finish === "length") return "cut at maxTokens";
    if ((text.includes(MARKERS.beginThought) && !text.includes(MARKERS.endThought)) || (text.includes(THINK_OPEN) && !text.includes(THINK_CLOSE)))
        return "the thought never closed";
    if (parsed.issues.some((i) => i.code === "truncated")) return "the response ends inside its thought or solution";
    return null;
}

function lastPresent(at: Record<MarkerName, number[]>): MarkerName {
    let last: MarkerName = "beginThought";
    for (const name of ORDER) if (at[name].length > 0) last = name;
    return last;
}
