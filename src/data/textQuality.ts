// Degenerate text: loops (a phrase repeated to the end, repeated lines, one n-gram taking
// over) and gibberish (replacement characters, control characters, few letters, endless
// tokens). Thresholds are on the conservative side: reasoning repeats itself a little.

export type TextQuality = {repetitive: boolean, gibberish: boolean, reasons: string[]};

export type TextQualityOptions = {
    /** A tail unit repeated at least this many times is a loop (default 4). */
    minTailRepeats?: number,
    /** Share of long lines that repeat an earlier line (default 0.4). */
    maxDuplicateLineShare?: number,
    /** Share of words covered by repeated word 10-grams (default 0.75; LaTeX-heavy math repeats a lot). */
    maxRepeatedNgramShare?: number
};

export function textQuality(text: string, options: TextQualityOptions = {}): TextQuality {
    const reasons: string[] = [];
    const minTail = options.minTailRepeats ?? 4;
    const words = text.split(/\s+/).filter((w) => w !== "");

    const tail = repeatedTail(words, minTail);
    if (tail != null) reasons.push(`ends in a loop: "${tail.unit}" repeated ${tail.times} times`);
    const charTail = tail == null ? repeatedCharTail(text, minTail + 4) : null;
    if (charTail != null) reasons.push(`ends in a loop: "${charTail.unit}" repeated ${charTail.times} times`);

    const lines = text.split("\n").map((l) => l.trim()).filter((l) => l.length >= 20);
    if (lines.length >= 5) {
        const seen = new Set<string>();
        let dup = 0;
        for (const l of lines) {
            if (seen.has(l)) dup++;
            else seen.add(l);
        }
        const share = dup / lines.length;
        if (share > (options.maxDuplicateLineShare ?? 0.4)) reasons.push(`${Math.round(share * 100)}% of lines repeat earlier lines`);
    }

    if (words.length >= 200) {
        const n = 10;
        const counts = new Map<string, number>();
        for (let i = 0; i + n <= words.length; i++) {
            const g = words.slice(i, i + n).join(" ");
            counts.set(g, (counts.get(g) ?? 0) + 1);
        }
        const covered = new Uint8Array(words.length);
        for (let i = 0; i + n <= words.length; i++) {
            if ((counts.get(words.slice(i, i + n).join(" ")) ?? 0) > 1) covered.fill(1, i, i + n);
        }
        const share = covered.reduce((a, b) => a + b, 0) / words.length;
        if (share > (options.maxRepeatedNgramShare ?? 0.75)) reasons.push(`${Math.round(share * 100)}% of words are in repeated 10-word phrases`);
    }
    const repetitive = reasons.length > 0;

    const gib: string[] = [];
    const chars = [...text];
    if (chars.length > 0) {
        const replacement = chars.filter((c) => c === "\uFFFD").length;
        if (replacement / chars.length > 0.01) gib.push(`${replacement} replacement characters (bad decoding)`);
        const control = chars.filter((c) => /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/.test(c)).length;
        if (control > 0) gib.push(`${control} control characters`);
        const nonSpace = chars.filter((c) => !/\s/.test(c));
        const letters = nonSpace.filter((c) => /[\p{L}\p{N}]/u.test(c)).length;
        if (nonSpace.length >= 50 && letters / nonSpace.length < 0.25) gib.push(`only ${Math.round((letters / nonSpace.length) * 100)}% letters and digits`);
        const longTokens = words.filter((w) => w.length > 80 && !/^\\|\$|https?:/.test(w));
        if (words.length >= 5 && longTokens.length / words.length > 0.1) gib.push(`${longTokens.length} tokens longer than 80 characters`);
    }
    return {repetitive, gibberish: gib.length > 0, reasons: [...reasons, ...gib]};
}

/** The shortest run of 1–50 words that repeats back-to-back at the end at least `min` times. */
function repeatedTail(words: string[], min: number): {unit: string, times: number} | null {
    for (let p = 1; p <= 50 && p * min <= words.length; p++) {
        let times = 1;
        while ((times + 1) * p <= words.length && sameRun(words, words.length - (times + 1) * p, words.length - p, p)) times++;
        // Single-word units need more repeats (e.g. "very very very").
        if (times >= (p === 1 ? min * 2 : min) && p * times >= 8) return {unit: words.slice(words.length - p).join(" "), times};
    }
    return null;
}

function sameRun(words: string[], a: number, b: number, len: number): boolean {
    for (let i = 0; i < len; i++) if (words[a + i] !== words[b + i]) return false;
    return true;
}

/** Character-level loops without spaces ("abcabcabc…"). */
function repeatedCharTail(text: string, min: number): {unit: string, times: number} | null {
    const t = text.trimEnd();
    for (let p = 1; p <= 100 && p * min <= t.length; p++) {
        const unit = t.slice(t.length - p);
        let times = 1;
        while ((times + 1) * p <= t.length && t.slice(t.length - (times + 1) * p, t.length - times * p) === unit) times++;
        if (times >= min && p * times >= 40) return {unit, times};
    }
    return null;
}
