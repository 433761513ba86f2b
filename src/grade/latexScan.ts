// Small LaTeX scanning helpers: brace matching, arguments, and splitting at the top level
// (outside brackets, braces and environments). Brackets are counted without regard to
// their kind, so half-open intervals such as `[0,1)` nest like any other group.

const OPENERS = new Set(["(", "[", "{", "\\{", "\\lbrace", "\\langle", "\\begin"]);
const CLOSERS = new Set([")", "]", "}", "\\}", "\\rbrace", "\\rangle", "\\end"]);

/** One token: a command (`\name` or `\` plus one character) or a single character. */
export type Token = {text: string, start: number, end: number};

export function tokenize(s: string): Token[] {
    const out: Token[] = [];
    let i = 0;
    while (i < s.length) {
        const start = i;
        if (s[i] === "\\" && i + 1 < s.length) {
            i++;
            if (/[a-zA-Z]/.test(s[i]!)) while (i < s.length && /[a-zA-Z]/.test(s[i]!)) i++;
            else i++;
        } else {
            i++;
        }
        out.push({text: s.slice(start, i), start, end: i});
    }
    return out;
}

/** Index of the `}` closing the group that opens at `open` (`s[open] === "{"`), or -1. */
export function matchBrace(s: string, open: number): number {
    let depth = 0;
    for (let i = open; i < s.length; i++) {
        const c = s[i];
        if (c === "\\") {
            i++;
            continue;
        }
        if (c === "{") depth++;
        else if (c === "}" && --depth === 0) return i;
    }
    return -1;
}

/** Every group's opening index mapped to its closing index, in one pass (escaped braces skipped). */
export function braceMatches(s: string): Map<number, number> {
    const out = new Map<number, number>();
    const stack: number[] = [];
    for (let i = 0; i < s.length; i++) {
        const c = s[i];
        if (c === "\\") {
            i++;
            continue;
        }
        if (c === "{") stack.push(i);
        else if (c === "}" && stack.length > 0) out.set(stack.pop()!, i);
    }
    return out;
}

/**
 * Reads one macro argument starting at `from` (after skipping spaces): a `{…}` group, a
 * command, or one character. Returns the argument's text (without braces) and where it ends.
 */
export function readArgument(s: string, from: number): {arg: string, end: number} | null {
    let i = from;
    while (i < s.length && s[i] === " ") i++;
    if (i >= s.length) return null;
    if (s[i] === "{") {
        const close = matchBrace(s, i);
        if (close < 0) return null;
        return {arg: s.slice(i + 1, close), end: close + 1};
    }
    if (s[i] === "\\") {
        let j = i + 1;
        if (j < s.length && /[a-zA-Z]/.test(s[j]!)) while (j < s.length && /[a-zA-Z]/.test(s[j]!)) j++;
        else j++;
        return {arg: s.slice(i, j), end: j};
    }
    if (s[i] === "}" || s[i] === "]" || s[i] === ")") return null;
    return {arg: s[i]!, end: i + 1};
}

/**
 * Splits `s` at top-level separators. `separator(tokens, k)` returns how many tokens the
 * separator at position k spans (0 when there is none).
 */
export function splitTopLevel(s: string, separator: (tokens: Token[], k: number) => number): {parts: string[], seps: string[]} {
    const tokens = tokenize(s);
    const parts: string[] = [];
    const seps: string[] = [];
    let depth = 0;
    let partStart = 0;
    for (let k = 0; k < tokens.length; k++) {
        const t = tokens[k]!.text;
        if (OPENERS.has(t)) {
            depth++;
            continue;
        }
        if (CLOSERS.has(t)) {
            depth = Math.max(0, depth - 1);
            continue;
        }
        if (depth !== 0) continue;
        const n = separator(tokens, k);
        if (n > 0) {
            const first = tokens[k]!;
            const last = tokens[k + n - 1]!;
            parts.push(s.slice(partStart, first.start));
            seps.push(s.slice(first.start, last.end));
            partStart = last.end;
            k += n - 1;
        }
    }
    parts.push(s.slice(partStart));
    return {parts, seps};
}

/** Splits at top-level occurrences of any of the given tokens (commands must match whole). */
export function splitAtTokens(s: string, seps: readonly string[]): {parts: string[], seps: string[]} {
    const set = new Set(seps);
    return splitTopLevel(s, (tokens, k) => (set.has(tokens[k]!.text) ? 1 : 0));
}

/** True when the whole of `s` is one bracketed group: its first opener closes at its last character. */
export function isWrapped(s: string, open: string, close: string): boolean {
    if (!s.startsWith(open) || !s.endsWith(close) || s.length < open.length + close.length) return false;
    const tokens = tokenize(s);
    let depth = 0;
    for (let k = 0; k < tokens.length; k++) {
        const t = tokens[k]!.text;
        if (OPENERS.has(t)) depth++;
        else if (CLOSERS.has(t)) {
            depth--;
            if (depth === 0) return tokens[k]!.end === s.length;
        }
    }
    return false;
}

/** Replaces every `\name{…}` (with the group matched) by `replace(content)`. */
export function replaceCommandGroups(s: string, names: readonly string[], replace: (content: string, name: string) => string): string {
    const re = new RegExp(`\\\\(${names.join("|")})(?![a-zA-Z])\\s*\\{`, "g");
    let out = "";
    let last = 0;
    for (;;) {
        re.lastIndex = last;
        const m = re.exec(s);
        if (m == null) break;
        const open = m.index + m[0].length - 1;
        const close = matchBrace(s, open);
        if (close < 0) break;
        out += s.slice(last, m.index) + replace(s.slice(open + 1, close), m[1]!);
        last = close + 1;
    }
    return out + s.slice(last);
}
