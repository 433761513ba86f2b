// Multiple-choice answers: the letter a response picks, in its common spellings
// ("Answer: B", "the answer is (B)", "\boxed{B}", "B.", "**B**", "答案是 B"), and the
// letter a gold answer names ("C", "(C)", "\text{(C)}", "(D) Alina").
import {answerRegions, boxedSpans} from "./extractAnswer.js";
import {normalizeAnswer} from "./normalizeAnswer.js";

export const DEFAULT_LETTERS = "ABCDEFGHIJ";

const STRONG_ANCHOR = /(?:final\s+answer|correct\s+(?:answer|option|choice)|the\s+answer|answer|option|choice)\s*(?:is\b|:|：|=|-)|réponse\s+(?:finale\s+)?est|la\s+respuesta\s+es|die\s+antwort\s+ist|答案(?:是|为|：|:)/;
const WEAK_ANCHOR = /\banswer\b|答案|选/;

export type ChoiceOptions = {
    /** Letters that can be answers (default A–J). */
    letters?: string,
    /** The options' texts in letter order, so an answer that quotes an option's text counts. */
    choices?: readonly string[]
};

/** The letter a gold answer names, or null when it is not a choice letter. */
export function parseChoiceGold(gold: string, letters = DEFAULT_LETTERS): string | null {
    const s = normalizeAnswer(gold).replace(/\s+/g, " ").trim();
    const set = `[${letters}]`;
    const m = new RegExp(`^\\(?(${set})\\)?$`).exec(s)
        ?? new RegExp(`^\\((${set})\\)\\s*\\S.*$`).exec(s)
        ?? new RegExp(`^(${set})[.):]\\s+\\S.*$`).exec(s)
        ?? new RegExp(`^(${set})\\s+[A-Za-z].*$`).exec(s);
    return m?.[1] ?? null;
}

/** The letter a response picks, or null. */
export function extractChoice(response: string, options: ChoiceOptions = {}): string | null {
    const letters = options.letters ?? DEFAULT_LETTERS;
    for (const region of answerRegions(response)) {
        const found = choiceIn(region, letters, options.choices);
        if (found != null) return found;
    }
    return null;
}

function choiceIn(text: string, letters: string, choices: readonly string[] | undefined): string | null {
    const set = `[${letters}]`;
    const setLower = `[${letters.toLowerCase()}]`;

    // \boxed{B}, \boxed{(B)}, \boxed{\text{B}}, \boxed{B. text}
    const boxes = boxedSpans(text);
    for (let k = boxes.length - 1; k >= 0; k--) {
        // A letter (or an option's text) is short; long boxes are worked answers, not picks.
        if (boxes[k]!.content.length > 300) continue;
        const inner = normalizeAnswer(boxes[k]!.content);
        const m = new RegExp(`^\\(?(${set})\\)?(?:[.:)]?\\s.*)?$`).exec(inner);
        if (m != null) return m[1]!;
        const viaText = byChoiceText(inner, choices, letters);
        if (viaText != null) return viaText;
    }

    // Anchors; the last one wins. A letter right after the anchor may be lower case or quoted;
    // after a strong anchor ("the answer is", "Answer:") the first letter in that sentence counts.
    const plain = text.replace(/\*\*|__|`/g, "").replace(/\\text\{([^{}]*)\}/g, "$1").replace(/\$/g, "");
    const anchor = new RegExp(`(${STRONG_ANCHOR.source})|(${WEAK_ANCHOR.source})`, "gi");
    let result: string | null = null;
    for (let m = anchor.exec(plain); m != null; m = anchor.exec(plain)) {
        const strong = m[1] != null;
        const rest = plain.slice(m.index + m[0].length, m.index + m[0].length + 300);
        const lead = `^\\s*(?:is\\s+|:\\s*)?(?:option\\s+|choice\\s+)?["'“‘(\\[]?\\s*`;
        const direct = new RegExp(`${lead}(${set})\\s*["'”’)\\]]?(?![A-Za-z0-9])`).exec(rest)
            ?? new RegExp(`${lead}(${setLower})\\s*["'”’)\\]]?\\s*(?:[.,;!]|$|\\n)`).exec(rest);
        if (direct != null) {
            result = direct[1]!.toUpperCase();
            continue;
        }
        if (!strong) continue;
        const sentence = rest.split(/[.\n。!?](?:\s|$)|\n/)[0] ?? rest;
        const loose = new RegExp(`(?<![A-Za-z0-9'’])\\(?(${set})\\)?(?![A-Za-z0-9'’])`).exec(sentence);
        if (loose != null) {
            result = loose[1]!;
            continue;
        }
        const viaText = byChoiceText(sentence, choices, letters);
        if (viaText != null) result = viaText;
    }
    if (result != null) return result;

    // A response that opens with its letter: "B.", "(B)", "B)", "B:", "B。", or just "B".
    const lead = new RegExp(`^\\s*\\(?(${set})\\)?(?:[.:)。,，]|\\s*$|\\s+(?![a-z]))`).exec(plain);
    if (lead != null) return lead[1]!;

    // Otherwise the last standalone letter, skipping the article "A" and the pronoun "I".
    const standalone = new RegExp(`(?<![A-Za-z0-9'’_\\\\-])\\(?(${set})\\)?(?![A-Za-z0-9'’_-])`, "g");
    let last: string | null = null;
    for (let m = standalone.exec(plain); m != null; m = standalone.exec(plain)) {
        const after = plain.slice(m.index + m[0].length);
        if ((m[1] === "A" || m[1] === "I") && !m[0].startsWith("(") && /^\s+[a-z]/.test(after)) continue;
        last = m[1]!;
    }
    if (last != null) return last;
    return byChoiceText(plain, choices, letters);
}

function byChoiceText(text: string, choices: readonly string[] | undefined, letters: string): string | null {
    if (choices == null || choices.length === 0) return null;
    const key = (s: string) => s.normalize("NFKC").toLowerCase().replace(/[^\p{L}\p{N}]+/gu, " ").trim();
    const t = key(text);
    if (t === "") return null;
    const hits = choices.map((c, i) => ({i, k: key(c)})).filter((c) => c.k !== "" && (t === c.k || t.endsWith(` ${c.k}`) || t.startsWith(`${c.k} `)));
    if (hits.length !== 1) return null;
    return letters[hits[0]!.i] ?? null;
}

/** Grades a multiple-choice response against a gold letter (or gold option text with `choices`). */
export function gradeChoice(response: string, gold: string, options: ChoiceOptions = {}): {correct: boolean, extracted: string | null} {
    const letters = options.letters ?? DEFAULT_LETTERS;
    let goldLetter = parseChoiceGold(gold, letters);
    if (goldLetter == null && options.choices != null) goldLetter = byChoiceText(gold, options.choices, letters);
    const extracted = extractChoice(response, options);
    return {correct: goldLetter != null && extracted === goldLetter, extracted};
}
