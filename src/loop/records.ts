// What the loop writes into its run folder, each with one typed shape: a step's record in
// state.json (read back when a resumed run skips the step), the lines of metrics.jsonl
// (read by the report), and summary.json.
import {z} from "zod";
import {evalMetricsSchema} from "../evaluate/evaluate.js";

// --- step records (state.json) ---------------------------------------------------------

export const evalStepSchema = z.object({metrics: z.array(evalMetricsSchema)});

export const exploreStepSchema = z.object({
    problems: z.array(z.string()),
    samples: z.number().int(),
    correct: z.number().int(),
    /** Problems every sample of which was correct (dropped from later rounds with dropSolved). */
    solvedByAll: z.array(z.string())
});

export const selectStepSchema = z.object({
    selected: z.number().int(),
    pairs: z.number().int(),
    /** Perplexities of the correct candidates, for the report. */
    perplexities: z.array(z.number())
});

export const trainStepSchema = z.union([
    z.object({
        adapter: z.string(),
        records: z.number().int(),
        steps: z.number().int(),
        seconds: z.number(),
        firstLoss: z.number().nullable(),
        lastLoss: z.number().nullable(),
        /** The loss curve: means of consecutive logged steps, at most 200 points. */
        losses: z.array(z.number()).default([]),
        tokensPerSecond: z.number().nullable()
    }),
    /** A round with nothing to learn from keeps its adapter and says why. */
    z.object({skipped: z.string()})
]);
export type TrainStep = z.infer<typeof trainStepSchema>;

export const grpoStepSchema = z.object({
    adapter: z.string(),
    steps: z.number().int(),
    /** Problems the steps drew from (after curation). */
    problems: z.number().int(),
    seconds: z.number(),
    firstReward: z.number().nullable(),
    lastReward: z.number().nullable()
});

// --- metrics.jsonl -----------------------------------------------------------------------

export const metricSchema = z.discriminatedUnion("kind", [
    evalMetricsSchema.extend({kind: z.literal("eval"), phase: z.string()}),
    z.object({
        kind: z.literal("explore"), round: z.number().int(), problems: z.number().int(), samples: z.number().int(),
        correctShare: z.number(), solvedByAll: z.number().int(),
        /** The yield per domain: problems, samples and the share of them correct. */
        domains: z.array(z.object({domain: z.string(), problems: z.number().int(), samples: z.number().int(), correctShare: z.number()})).default([])
    }),
    selectStepSchema.extend({kind: z.literal("select"), round: z.number().int()}),
    trainStepSchema.options[0].extend({kind: z.literal("train"), phase: z.string(), method: z.enum(["sft", "dpo"])}),
    /** One online-RL step of a grpo round. */
    z.object({
        kind: z.literal("grpo"), round: z.number().int(), step: z.number().int(), reward: z.number(), rewardStd: z.number(),
        accuracy: z.number(), unfinished: z.number(), meanLength: z.number(), maxLength: z.number(), clippedRatio: z.number(),
        kl: z.number().nullable(), entropy: z.number().nullable(), seconds: z.number()
    })
]);
export type Metric = z.infer<typeof metricSchema>;
/** A line of metrics.jsonl: a metric and when it was written. */
export const metricLineSchema = z.intersection(metricSchema, z.object({at: z.string()}));
export type MetricLine = z.infer<typeof metricLineSchema>;

// --- summary.json ------------------------------------------------------------------------

const setSummarySchema = z.object({
    set: z.string(),
    problems: z.number().int(),
    accuracy: z.number(),
    format_adherence: z.number(),
    mean_tokens: z.number(),
    truncated: z.number(),
    domains: z.array(z.object({
        domain: z.string(), problems: z.number().int(), accuracy: z.number(), format_adherence: z.number(),
        mean_tokens: z.number(), truncated: z.number()
    })),
    k: z.number().int().optional(),
    maj_at_k: z.number().optional(),
    pass_at_k: z.number().optional()
});

export const phaseSummarySchema = z.object({
    name: z.string(),
    /** The first evaluation set's figures. */
    accuracy: z.number(),
    format_adherence: z.number(),
    mean_tokens: z.number(),
    sets: z.array(setSummarySchema)
});
export type PhaseSummary = z.infer<typeof phaseSummarySchema>;

/** A phase's line in summary.json (snake_case, as every JSON file the CLI writes for people). */
export function phaseSummary(name: string, metrics: readonly z.infer<typeof evalMetricsSchema>[]): PhaseSummary {
    const sets = metrics.map((m) => ({
        set: m.set, problems: m.problems, accuracy: m.accuracy, format_adherence: m.formatAdherence, mean_tokens: m.meanTokens,
        truncated: m.truncated,
        domains: m.domains.map((d) => ({domain: d.domain, problems: d.problems, accuracy: d.accuracy, format_adherence: d.formatAdherence,
            mean_tokens: d.meanTokens, truncated: d.truncated})),
        ...(m.k == null ? {} : {k: m.k, maj_at_k: m.majAtK, pass_at_k: m.passAtK})
    }));
    const first = sets[0];
    return {name, accuracy: first?.accuracy ?? 0, format_adherence: first?.format_adherence ?? 0, mean_tokens: first?.mean_tokens ?? 0, sets};
}
