// Seeded randomness for the loop and the demo: the same seed gives the same problem
// order, the same subsets and the same teacher thoughts on every machine.

/** A seeded generator (mulberry32) of numbers in [0, 1). */
export function rng(seed: number): () => number {
    let s = seed >>> 0;
    return () => {
        s = (s + 0x6d2b79f5) >>> 0;
        let t = s;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

/** A copy of `items` in a Fisher–Yates order drawn from rng(seed). */
export function shuffle<T>(items: readonly T[], seed: number): T[] {
    const next = rng(seed);
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
}

/** One of `items`, drawn with `next`. */
export function pick<T>(next: () => number, items: readonly T[]): T {
    return items[Math.floor(next() * items.length)]!;
}
