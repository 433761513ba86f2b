// Finding the final answer in a response. Where to look: the solution part of a
// well-formed response (else after `</think>`, else the whole text). What to take, in
// order: the last \boxed{}/\fbox{} (boxes joined only by "and", commas or spacing merge
// into a list); the text after the last "final answer is" / "answer:" anchor; the whole
// text when it is a bare answer; the last math segment ($…$, \(…\), \[…\]) or the last
// number at the end of a sentence, whichever comes later.
import {END_OF_TURN, parseThought} from "../format/parseThought.js";
import {braceMatches} from "./latexScan.js";

export type ExtractionSource = "boxed" | "anchor" | "bare" | "math" | "number" | "short";
export type Extraction = {text: string, source: ExtractionSource};


/** Where the final answer lives: the solution part, the text after `</think>`, or everything. */
export function answerRegions(response: string): string[] {
    const cut = response.search(END_OF_TURN);
    const text = cut >= 0 ? response.slice(0, cut) : response;
    const regions: string[] = [];
    const parsed = parseThought(text);
    if (parsed.solution != null && parsed.solution.trim() !== "") regions.push(parsed.solution);
    const think = text.lastIndexOf("</think>");
    if (think >= 0 && text.slice(think + 8).trim() !== "") regions.push(text.slice(think + 8));
    regions.push(text);
    return regions;
}

/** The final math answer in `response`, or null when none can be found. */
export function extractMathAnswer(response: string): Extraction | null {
    for (const region of answerRegions(response)) {
        const found = extractFrom(region);
        if (found != null) return found;
    }
    return null;
}

function extractFrom(text: string): Extraction | null {
    const boxed = lastBoxed(text);
    // A "final answer" stated after the last box overrides it (the boxes were intermediate steps).
    if (boxed != null && !finalAnchorAfter(text, boxed.end)) return {text: boxed.text, source: "boxed"};
    const anchored = afterAnchor(text);
    if (anchored != null) return {text: anchored, source: "anchor"};
    if (isBare(text)) return {text: text.trim(), source: "bare"};
    const math = mathSegments(text);
    const number = lastNumber(text);
    const lastMath = math[math.length - 1];
    if (lastMath != null && !(number != null && number.index > lastMath.end && number.atSentenceEnd)) return {text: mergeTrailing(text, math), source: "math"};
    if (number != null) return {text: number.text, source: "number"};
    const short = text.trim();
    if (short !== "" && short.length <= 60 && !short.includes("\n")) return {text: short, source: "short"};
    return null;
}

// ---- boxes ----

type Span = {content: string, start: number, end: number};

export function boxedSpans(text: string): Span[] {
    const out: Span[] = [];
    const re = /\\(?:boxed|fbox|framebox)(?![a-zA-Z])\s*/g;
    let closes: Map<number, number> | undefined;
    for (let m = re.exec(text); m != null; m = re.exec(text)) {
        const open = m.index + m[0].length;
        if (text[open] === "{") {
            closes ??= braceMatches(text);
            const close = closes.get(open) ?? -1;
            if (close < 0) continue;
            out.push({content: text.slice(open + 1, close), start: m.index, end: close + 1});
            re.lastIndex = close + 1;
        } else {
            const word = /^[^\s$]+/.exec(text.slice(open));
            if (word != null) out.push({content: word[0], start: m.index, end: open + word[0].length});
        }
    }
    return out;
}

// Text allowed between boxes that belong to one answer.
const JOINER = /^(?:[\s$,;.]|\\[,;:! ]|\\q?quad|\\text\{\s*(?:and|or|,)?\s*\}|\\\(|\\\)|\\\[|\\\]|and|or|&)*$/;

/** The answer boxed last in a text (boxes joined by "and", commas, … count as one answer); null when nothing is boxed. */
export function boxedAnswer(text: string): string | null {
    return lastBoxed(text)?.text ?? null;
}

function lastBoxed(text: string): {text: string, end: number} | null {
    const spans = boxedSpans(text);
    if (spans.length === 0) return null;
    const group = [spans[spans.length - 1]!];
    for (let k = spans.length - 2; k >= 0; k--) {
        const between = text.slice(spans[k]!.end, group[0]!.start);
        if (!JOINER.test(between)) break;
        group.unshift(spans[k]!);
    }
    return {text: group.map((s) => s.content.trim()).join(", "), end: group[group.length - 1]!.end};
}

function finalAnchorAfter(text: string, from: number): boolean {
    return /final\s+answer\s*(?:is\b|:)/i.test(text.slice(from));
}

// ---- anchors ----

const ANCHOR = /(?:final\s+answer|the\s+answer|correct\s+answer|answer)\s*(?:is\b|:|=|\bwould\s+be\b|\bshould\s+be\b)|\banswer\s*[:：]|réponse\s+(?:finale\s+)?est|la\s+respuesta\s+es|die\s+antwort\s+ist|答案(?:是|为|：|:)|^#{4}(?=\s)/gim;

function afterAnchor(text: string): string | null {
    let last: RegExpExecArray | null = null;
    for (let m = ANCHOR.exec(text); m != null; m = ANCHOR.exec(text)) last = m;
    ANCHOR.lastIndex = 0;
    if (last == null) return null;
    let rest = text.slice(last.index + last[0].length, last.index + last[0].length + 2000);
    rest = firstSentence(rest).trim();
    // "Final Answer: The largest $n$ is 34" -> "34"
    if (/^(?:the|our|my|a|an|this|that|its)\s/i.test(rest)) {
        const is = [...rest.matchAll(/\s(?:is|are|equals|=)\s/g)].filter((m) => !insideMath(rest, m.index));
        const lastIs = is[is.length - 1];
        if (lastIs != null) rest = rest.slice(lastIs.index + lastIs[0].length).trim();
    }
    rest = rest.replace(/^[:\s*_]+/, "").replace(/[\s.,;:*_]+$/, "");
    if (rest === "") return null;
    const math = mathSegments(rest);
    if (math.length > 0) {
        const outside = stripSegments(rest, math);
        if (/[A-Za-z]{2,}/.test(outside.replace(/\b(?:and|or)\b/g, "")) || math.length === 1) return mergeTrailing(rest, math);
    }
    return rest;
}

/** Text up to the end of the first sentence (a full stop followed by a space or the end), outside math. */
function firstSentence(s: string): string {
    const line = s.split(/\n\s*\n|\n(?=\S)/)[0] ?? s;
    const segments = mathSegments(line);
    for (let i = 0; i < line.length; i++) {
        if (line[i] === "." && (i + 1 >= line.length || /\s/.test(line[i + 1]!)) && !segments.some((g) => i > g.start && i < g.end)) return line.slice(0, i);
    }
    return line;
}

// ---- math segments ----

type Segment = {content: string, start: number, end: number};

/** `$…$`, `$$…$$`, `\(…\)`, `\[…\]` segments in order; `\$` is a dollar sign, and `$…$` does not cross a blank line. */
export function mathSegments(text: string): Segment[] {
    const out: Segment[] = [];
    let i = 0;
    while (i < text.length) {
        const c = text[i];
        if (c === "\\" && (text[i + 1] === "(" || text[i + 1] === "[")) {
            const closer = text[i + 1] === "(" ? "\\)" : "\\]";
            const end = text.indexOf(closer, i + 2);
            if (end < 0) break;
            out.push({content: text.slice(i + 2, end), start: i, end: end + 2});
            i = end + 2;
            continue;
        }
        if (c === "\\") {
            i += 2;
            continue;
        }
        if (c === "$") {
            const display = text[i + 1] === "$";
            const open = i + (display ? 2 : 1);
            let j = open;
            let end = -1;
            while (j < text.length) {
                if (text[j] === "\\") {
                    j += 2;
                    continue;
                }
                if (text[j] === "$") {
                    end = j;
                    break;
                }
                if (!display && text[j] === "\n" && /^\n\s*\n/.test(text.slice(j))) break;
                j++;
            }
            if (end < 0) {
                i = open;
                continue;
            }
            out.push({content: text.slice(open, end), start: i, end: end + (display ? 2 : 1)});
            i = end + (display ? 2 : 1);
            continue;
        }
        i++;
    }
    return out.filter((s) => s.content.trim() !== "");
}

function insideMath(text: string, index: number): boolean {
    return mathSegments(text).some((s) => index > s.start && index < s.end);
}

/** The text with each segment blanked out (same length, so indices still match). */
function stripSegments(text: string, segs: Segment[]): string {
    let out = "";
    let last = 0;
    for (const s of segs) {
        out += text.slice(last, s.start) + " ".repeat(s.end - s.start);
        last = s.end;
    }
    return out + text.slice(last);
}

/** The last segment, merged with the ones before it when only "and", "or" or commas join them. */
function mergeTrailing(text: string, segs: Segment[]): string {
    const group = [segs[segs.length - 1]!];
    for (let k = segs.length - 2; k >= 0; k--) {
        const between = text.slice(segs[k]!.end, group[0]!.start);
        if (!/^\s*(?:,|;|and|or|,\s*and|,\s*or)\s*$/.test(between)) break;
        group.unshift(segs[k]!);
    }
    return group.map((s) => s.content.trim().replace(/[.,;]+$/, "")).join(", ");
}

// ---- numbers and bare answers ----

const NUMBER = /(?<![A-Za-z0-9_.\\])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*\/\s*\d+(?:\.\d+)?)?(?:\s*(?:\\%|%|percent\b))?/g;

function lastNumber(text: string): {text: string, index: number, atSentenceEnd: boolean} | null {
    const plain = stripSegments(text, mathSegments(text));
    let last: RegExpExecArray | null = null;
    for (let m = NUMBER.exec(plain); m != null; m = NUMBER.exec(plain)) last = m;
    NUMBER.lastIndex = 0;
    if (last == null) return null;
    // At the end of a sentence: only a short unit or a currency sign may follow.
    const after = plain.slice(last.index + last[0].length);
    const atSentenceEnd = /^\s*(?:[A-Za-z]{1,3}|[²³€$%°])?\s*(?:[.!?;)]|$|\n)/.test(after);
    return {text: last[0].trim(), index: last.index, atSentenceEnd};
}

// Two-letter words that mark prose (longer unknown words count as prose too).
const PROSE_PAIRS = new Set(["is", "so", "it", "of", "to", "in", "be", "we", "an", "as", "at", "by", "if", "on", "us", "my", "me", "he", "do", "up", "the"]);

const ALLOWED_WORDS = new Set([
    "and", "or", "pi", "sqrt", "exp", "sin", "cos", "tan", "sec", "csc", "cot", "ln", "log", "inf", "infinity", "oo",
    "percent", "degrees", "degree", "dollars", "dollar", "cents", "units", "unit", "miles", "meters", "cm", "km", "mm", "inches", "feet",
    "hours", "minutes", "seconds", "days", "years", "yuan", "square", "sq", "ft", "in", "kg", "mph"
]);

/**
 * The whole text is an answer: at most one unknown word outside math and commands (units,
 * "and", function names and products such as `ab` are fine), and then only in a short text.
 */
function isBare(text: string): boolean {
    const t = text.trim();
    if (t === "" || t.length > 400) return false;
    const segments = mathSegments(t);
    const outside = stripSegments(t, segments).replace(/\\[a-zA-Z]+(?:\s*\{[^{}]*\})?/g, " ");
    const words = outside.match(/[A-Za-z]{2,}/g) ?? [];
    const prose = words.filter((w) => !ALLOWED_WORDS.has(w.toLowerCase()) && (w.length >= 3 || PROSE_PAIRS.has(w.toLowerCase())));
    // Beside delimited math, any prose word means the answer is in the math.
    return prose.length === 0 || (segments.length === 0 && prose.length === 1 && t.length <= 40);
}

/**
 * The answer in a gold string: its last box, or what follows an answer anchor, or the math
 * it wraps in delimiters when prose surrounds it; otherwise the gold as written.
 */
export function extractGoldAnswer(gold: string): string {
    const boxed = lastBoxed(gold);
    if (boxed != null) return boxed.text;
    const anchored = afterAnchor(gold);
    if (anchored != null) return anchored;
    const math = mathSegments(gold);
    if (math.length > 0 && !isBare(gold)) return mergeTrailing(gold, math);
    return gold.trim();
}
