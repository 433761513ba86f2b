// Exact and near-duplicate removal. Exact: the same text once case, Unicode form and
// spacing are normalised. Near: shingles (character 5-grams for texts up to 1,000
// characters such as questions, word 5-grams beyond), MinHash signatures and banded LSH to
// find candidates, then the exact Jaccard similarity of the shingle sets decides.

export type DedupeOptions<T> = {
    /** The text that identifies an item (e.g. the question). */
    key: (item: T) => string,
    /** Jaccard similarity at or above which two items are near duplicates (default 0.8); 1 turns near matching off. */
    nearThreshold?: number
};

export type Removal = {index: number, duplicateOf: number, kind: "exact" | "near", similarity: number};

const PERMUTATIONS = 128;
const BANDS = 32; // 4 rows per band: candidates from about 0.5 similarity up

export function normalizeForDedupe(text: string): string {
    return text.normalize("NFKC").toLowerCase().replace(/\s+/g, " ").trim();
}

/** Keeps the first of each group of duplicates, in input order. */
export function dedupe<T>(items: readonly T[], options: DedupeOptions<T>): {kept: T[], removed: Removal[]} {
    const threshold = options.nearThreshold ?? 0.8;
    const removed: Removal[] = [];
    const keptIdx: number[] = [];
    const exact = new Map<string, number>();
    const shingles: (Set<number> | null)[] = [];
    const buckets = new Map<string, number[]>();

    items.forEach((item, index) => {
        const text = normalizeForDedupe(options.key(item));
        const first = exact.get(text);
        if (first != null) {
            removed.push({index, duplicateOf: first, kind: "exact", similarity: 1});
            shingles.push(null);
            return;
        }
        exact.set(text, index);
        if (threshold >= 1) {
            keptIdx.push(index);
            shingles.push(null);
            return;
        }
        const set = shingleSet(text);
        shingles.push(set);
        const sig = minhash(set);
        const keys = bandKeys(sig);
        let best: {other: number, sim: number} | null = null;
        const seen = new Set<number>();
        for (const key of keys) {
            for (const other of buckets.get(key) ?? []) {
                if (seen.has(other)) continue;
                seen.add(other);
                const sim = jaccard(set, shingles[other]!);
                if (sim >= threshold && (best == null || sim > best.sim)) best = {other, sim};
            }
        }
        if (best != null) {
            removed.push({index, duplicateOf: best.other, kind: "near", similarity: best.sim});
            return;
        }
        keptIdx.push(index);
        for (const key of keys) {
            const list = buckets.get(key);
            if (list == null) buckets.set(key, [index]);
            else list.push(index);
        }
    });
    return {kept: keptIdx.map((i) => items[i]!), removed};
}

function hash32(s: string, seed = 0x811c9dc5): number {
    let h = seed >>> 0;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
    return mix(h);
}

function mix(h: number): number {
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h >>> 0;
}

/** Character 5-grams for short texts, word 5-grams for long ones. */
function shingleSet(text: string): Set<number> {
    const out = new Set<number>();
    const words = text.split(" ").filter((w) => w !== "");
    if (text.length > 1000 && words.length >= 5) {
        for (let i = 0; i + 5 <= words.length; i++) out.add(hash32(words.slice(i, i + 5).join(" ")));
    } else {
        for (let i = 0; i + 5 <= text.length; i++) out.add(hash32(text.slice(i, i + 5)));
        if (out.size === 0) out.add(hash32(text));
    }
    return out;
}

const SEEDS = Array.from({length: PERMUTATIONS}, (_, i) => mix(0x9e3779b9 + i * 0x632be5ab));

function minhash(set: Set<number>): Uint32Array {
    const sig = new Uint32Array(PERMUTATIONS).fill(0xffffffff);
    for (const h of set) {
        for (let p = 0; p < PERMUTATIONS; p++) {
            const v = mix(h ^ SEEDS[p]!);
            if (v < sig[p]!) sig[p] = v;
        }
    }
    return sig;
}

function bandKeys(sig: Uint32Array): string[] {
    const rows = PERMUTATIONS / BANDS;
    const keys: string[] = [];
    for (let b = 0; b < BANDS; b++) keys.push(`${b}:${Array.from(sig.subarray(b * rows, (b + 1) * rows)).join(",")}`);
    return keys;
}

function jaccard(a: Set<number>, b: Set<number>): number {
    let inter = 0;
    const [small, large] = a.size < b.size ? [a, b] : [b, a];
    for (const x of small) if (large.has(x)) inter++;
    const union = a.size + b.size - inter;
    return union === 0 ? 1 : inter / union;
}
