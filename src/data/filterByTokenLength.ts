// Token-length bounds with a pluggable counter: pass a model's tokenizer
// (`(t) => model.tokenize(t).length`) or approximateTokenCount.

export type TokenLengthOptions<T> = {
    text: (item: T) => string,
    countTokens: (text: string) => number,
    min?: number,
    max?: number
};

export function filterByTokenLength<T>(items: readonly T[], options: TokenLengthOptions<T>): {kept: T[], removed: {index: number, tokens: number}[]} {
    const min = options.min ?? 0;
    const max = options.max ?? Number.POSITIVE_INFINITY;
    const kept: T[] = [];
    const removed: {index: number, tokens: number}[] = [];
    items.forEach((item, index) => {
        const tokens = options.countTokens(options.text(item));
        if (tokens >= min && tokens <= max) kept.push(item);
        else removed.push({index, tokens});
    });
    return {kept, removed};
}

/** About one token per four characters of English, one per character of CJK: for when no tokenizer is at hand. */
export function approximateTokenCount(text: string): number {
    let cjk = 0;
    for (const c of text) if (/[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]/.test(c)) cjk++;
    return Math.ceil((text.length - cjk) / 4) + cjk;
}
