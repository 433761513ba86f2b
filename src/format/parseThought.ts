// Splits a response in the long-form thought format into its thought and its solution,
// with a verdict on whether it is well formed and, when not, every reason why.
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

function positions(text: string, marker: string): number[] {
    const out: number[] = [];
    for (let i = text.indexOf(marker); i >= 0; i = text.indexOf(marker, i + marker.length)) out.push(i);
    return out;
}

/** Parses `text` as `<|begin_of_thought|> … <|end_of_thought|> <|begin_of_solution|> … <|end_of_solution|>`. */
export function parseThought(text: string): ThoughtParse {
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

function lastPresent(at: Record<MarkerName, number[]>): MarkerName {
    let last: MarkerName = "beginThought";
    for (const name of ORDER) if (at[name].length > 0) last = name;
    return last;
}
