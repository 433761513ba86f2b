// From graded rollouts to training data: the perplexity of each candidate under the
// current model (our scorer), length bounds, then per problem the correct trajectories
// to keep (SFT) and the correct/incorrect pairs (DPO: chosen = correct with high
// perplexity, rejected = incorrect with low perplexity, as in STILL-2).
import type {Problem} from "../data/problemSchema.js";
import type {Adapter} from "../engine/Adapter.js";
import type {Model} from "../engine/Model.js";
import {throwIfAborted} from "../errors.js";
import {problemMessages} from "../format/buildChatMessages.js";
import type {RunConfig} from "../loop/config.js";
import type {GradedSample} from "../explore/sampleAndGrade.js";
import type {EndpointOptions} from "../remote/RemoteRollouts.js";
import {scoreRemote} from "../remote/remoteScore.js";

export type ScoredSample = GradedSample & {perplexity: number};

export type Selection = {
    /** Correct trajectories kept for SFT. */
    selected: ScoredSample[],
    /** Preference pairs for DPO. */
    pairs: {id: string, chosen: ScoredSample, rejected: ScoredSample}[],
    /** Every candidate with its perplexity (correct and well-formed, or incorrect). */
    scored: ScoredSample[]
};

export async function select(o: {
    model: Model,
    adapter?: Adapter | undefined,
    problems: readonly Problem[],
    samples: readonly GradedSample[],
    systemPrompt: string | null,
    config: RunConfig["select"],
    maxPairsPerProblem: number,
    threads?: number | undefined,
    signal?: AbortSignal | undefined,
    /** Score on servers that give prompt log-probs (vLLM) instead of locally; called once, when there is something to score. */
    remote?: (() => Promise<EndpointOptions>) | undefined,
    onLog?: ((line: string) => void) | undefined
}): Promise<Selection> {
    const byId = new Map(o.problems.map((p) => [p.id, p]));
    const inBounds = (s: GradedSample) => s.tokens.length >= o.config.minTokens && (o.config.maxTokens == null || s.tokens.length <= o.config.maxTokens);
    // Only complete responses: a sample cut by the length limit is neither a good
    // demonstration nor a fair rejection.
    const candidates = o.samples.filter((s) => s.finish === "stop" && s.tokens.length > 0 && inBounds(s) && (!s.correct || s.wellFormed));
    throwIfAborted(o.signal, "selection");
    const records = candidates.map((s) => ({id: `${s.id}/${s.sample}`, prompt: problemMessages(byId.get(s.id)!, o.systemPrompt), completion: s.tokens}));
    let perplexities: number[];
    if (o.remote != null && records.length > 0) {
        const endpoints = await o.remote();
        const results = await scoreRemote(records.map((r) => ({id: r.id, prompt: o.model.promptTokens(r.prompt), completion: r.completion})), endpoints,
            {...(o.signal == null ? {} : {signal: o.signal}), ...(o.onLog == null ? {} : {onLog: o.onLog})});
        perplexities = results.map((r) => r.perplexity);
    } else {
        const scorer = o.model.scorer({overflow: "truncate", ...(o.threads == null ? {} : {threads: o.threads})});
        if (o.adapter != null) scorer.setAdapters([{adapter: o.adapter}]);
        try {
            perplexities = (await scorer.score(records, o.signal == null ? {} : {signal: o.signal})).map((r) => r.perplexity);
        } finally {
            scorer.dispose();
        }
    }
    const scored: ScoredSample[] = candidates.map((s, i) => ({...s, perplexity: perplexities[i]!}));

    const correct = scored.filter((s) => s.correct);
    const sortedPpl = correct.map((s) => s.perplexity).sort((a, b) => a - b);
    const quantile = (q: number) => sortedPpl.length === 0 ? 0 : sortedPpl[Math.min(sortedPpl.length - 1, Math.floor(q * (sortedPpl.length - 1)))]!;
    const [lo, hi] = [quantile(o.config.band[0]), quantile(o.config.band[1])];

    const selected: ScoredSample[] = [];
    const pairs: Selection["pairs"] = [];
    for (const p of o.problems) {
        const mine = scored.filter((s) => s.id === p.id);
        const good = mine.filter((s) => s.correct);
        const ordered = o.config.policy === "highest" ? [...good].sort((a, b) => b.perplexity - a.perplexity || a.sample - b.sample)
            : o.config.policy === "band" ? good.filter((s) => s.perplexity >= lo && s.perplexity <= hi).sort((a, b) => a.perplexity - b.perplexity || a.sample - b.sample)
            : [...good].sort((a, b) => a.perplexity - b.perplexity || a.sample - b.sample);
        selected.push(...ordered.slice(0, o.config.maxPerProblem));

        const chosen = [...good].sort((a, b) => b.perplexity - a.perplexity || a.sample - b.sample);
        const rejected = mine.filter((s) => !s.correct).sort((a, b) => a.perplexity - b.perplexity || a.sample - b.sample);
        for (let k = 0; k < Math.min(chosen.length, rejected.length, o.maxPairsPerProblem); k++)
            pairs.push({id: p.id, chosen: chosen[k]!, rejected: rejected[k]!});
    }
    return {selected, pairs, scored};
}
