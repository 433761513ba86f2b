// `still eval` as a function: a model (plus adapters) on evaluation sets, into a folder that
// holds everything it found: eval.json (the figures, each problem's outcome, the settings),
// responses/<set>.jsonl (every response with its gold answer, gradable again with
// `still grade --file`), the chunk files a resumed run continues from, and report.html.
// Options, files, sets and the model are all checked before anything is written, so bad
// input leaves no half-written folder; `resume` continues an interrupted evaluation.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import {CodeVerifier} from "../code/verifyCode.js";
import type {Problem} from "../data/problemSchema.js";
import {gpuLayersSchema, loadModel} from "../engine/Model.js";
import {kvCachePlan, rolloutEngineOptionsSchema, samplingSchema} from "../engine/Rollouts.js";
import {endpointOptionsSchema} from "../remote/RemoteRollouts.js";
import {problemMessages} from "../format/buildChatMessages.js";
import {DataError, OptionError, parseOptions, throwIfAborted} from "../errors.js";
import type {GradedSample} from "../explore/sampleAndGrade.js";
import {resolveSystemPrompt} from "../format/systemPrompt.js";
import {templateVariables, thinkingFields} from "../format/thinking.js";
import {readJsonFile, writeJsonAtomic, writeJsonlAtomic, readJsonlFile} from "../io/jsonl.js";
import {writeFileAtomic} from "../io/atomicFile.js";
import {renderReport} from "../loop/report.js";
import {gradedSampleSchema} from "../explore/sampleAndGrade.js";
import {compareEvaluations, setComparisonSchema} from "./compare.js";
import {type EvalSet, evalMetricsSchema, evaluate} from "./evaluate.js";
import {evalSetSchema, loadEvalSet} from "./loadEvalSet.js";

const sampling = samplingSchema.shape;

export const evaluationOptionsSchema = z.object({
    model: z.string().min(1).describe("GGUF model"),
    adapters: z.array(z.object({
        path: z.string().min(1),
        scale: z.number().default(1)
    })).describe("LoRA adapters applied together, each with its scale").default([]),
    sets: z.array(evalSetSchema.extend({
        name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "letters, digits, dot, dash and underscore")
    })).min(1, "needs at least one evaluation set").describe("Evaluation sets"),
    greedy: z.boolean().describe("Greedy pass@1 (one response per problem at temperature 0)").default(true),
    samples: z.number().int().min(1).optional().describe("Also k sampled responses per problem, for mean@k, maj@k and pass@k"),
    temperature: sampling.temperature.unwrap().default(0.6),
    topK: sampling.topK.unwrap().default(40),
    topP: sampling.topP,
    maxTokens: sampling.maxTokens.unwrap().default(4096),
    seed: z.number().int().min(0).describe("Seeds the sampled responses").default(0),
    parallel: rolloutEngineOptionsSchema.shape.parallel,
    ...thinkingFields,
    systemPrompt: z.string().nullable().optional().describe("System message before each question (default: for format still, the one asking for the STILL markers; for think, none)"),
    systemFile: z.string().optional().describe("Read the system message from a file"),
    gpuLayers: gpuLayersSchema,
    threads: z.number().int().min(1).optional().describe("CPU threads; default all"),
    out: z.string().min(1).describe("Folder for the evaluation (eval.json, responses, report.html)"),
    resume: z.boolean().describe("Continue the evaluation already in --out").default(false),
    compare: z.string().optional().describe("An earlier evaluation's folder: each set side by side with a paired test"),
    label: z.string().min(1).optional().describe("The name of this evaluation in reports (default: the model's and adapters' file names)"),
    remote: endpointOptionsSchema.optional().describe("Sample on OpenAI-compatible servers instead of the local engine: the model file then only gives " +
        "the chat template and tokenizer, and the served model or adapter is named by remote.model"),
    unsafeRunWithoutSandbox: z.boolean().describe("Where no sandbox is available, run code problems' programs unisolated (unsafe)").default(false)
});
export type EvaluationOptions = z.input<typeof evaluationOptionsSchema>;

/** The KV cache the evaluation plans for: `parallel` samples of the longest prompt plus maxTokens. */
export const kvPlanSchema = z.object({parallel: z.number().int(), tokensPerSample: z.number().int(), bytes: z.number(), free: z.number(), fits: z.number().int()});
export type KvPlan = z.infer<typeof kvPlanSchema>;

/** What an evaluation folder's eval.json holds. */
export const evaluationRecordSchema = z.object({
    label: z.string(),
    model: z.string(),
    adapters: z.array(z.object({path: z.string(), scale: z.number()})),
    settings: z.record(z.string(), z.unknown()),
    seconds: z.number(),
    finishedAt: z.string(),
    sets: z.array(evalMetricsSchema),
    compare: z.object({against: z.string(), label: z.string(), sets: z.array(setComparisonSchema)}).optional(),
    kvCache: kvPlanSchema.optional()
});
export type EvaluationRecord = z.infer<typeof evaluationRecordSchema>;

export type EvaluationProgress = {set: string, done: number, total: number};


const SETTINGS_FILE = "settings.json";
const RECORD_FILE = "eval.json";

/** Reads an earlier evaluation's record (its folder, or its eval.json). */
export async function readEvaluation(dirOrFile: string): Promise<EvaluationRecord> {
    const file = fs.existsSync(dirOrFile) && fs.statSync(dirOrFile).isDirectory() ? path.join(dirOrFile, RECORD_FILE) : dirOrFile;
    if (!fs.existsSync(file)) throw new DataError(file, "does not exist: not a finished evaluation (still eval writes eval.json last)");
    return readJsonFile(file, evaluationRecordSchema, " (an eval.json written by still eval)");
}

/** Runs an evaluation into `out` (see the top of this file) and returns its record. */
export async function runEvaluation(options: EvaluationOptions, hooks: {
    signal?: AbortSignal | undefined,
    onProgress?: ((p: EvaluationProgress) => void) | undefined,
    /** The KV cache planned, before any sampling (local sampling only). */
    onPlan?: ((plan: KvPlan) => void) | undefined,
    /** The remote client's log lines (endpoints leaving and rejoining the rotation). */
    onLog?: ((line: string) => void) | undefined
} = {}): Promise<EvaluationRecord> {
    const o = parseOptions(evaluationOptionsSchema, options, "evaluation options");
    if (o.remote != null && o.adapters.length > 0)
        throw new OptionError("adapters apply to the local engine; on servers, serve the adapter there and name it as the endpoints' model.");
    if (!o.greedy && o.samples == null) throw new OptionError("nothing to evaluate: without greedy decoding, give samples (k ≥ 1).");
    const names = o.sets.map((s) => s.name);
    const repeated = names.find((n, i) => names.indexOf(n) !== i);
    if (repeated != null) throw new OptionError(`two evaluation sets are named ${JSON.stringify(repeated)}; give each its own name.`);
    for (const [what, file] of [["model", o.model], ...o.adapters.map((a) => ["adapter", a.path]), ...o.sets.map((s) => [`set ${s.name}`, s.path])])
        if (!fs.existsSync(file!)) throw new DataError(file!, `does not exist (the ${what})`);

    // everything that can be wrong is found before the folder is touched
    const sets: EvalSet[] = [];
    for (const s of o.sets) sets.push(await loadEvalSet(s, {seed: o.seed, signal: hooks.signal}));
    const earlier = o.compare == null ? undefined : await readEvaluation(o.compare);
    const systemPrompt = await resolveSystemPrompt({system: o.systemPrompt === undefined && o.format === "think" ? null : o.systemPrompt, systemFile: o.systemFile});
    const variables = templateVariables(o.format, o.thinking);
    const adapters = o.adapters.map((a) => ({path: path.resolve(a.path), scale: a.scale}));
    const label = o.label ?? [o.model, ...o.adapters.map((a) => a.path)].map((f) => path.basename(f, path.extname(f))).join(" + ");
    const config = {greedy: o.greedy, samples: o.samples ?? 0, temperature: o.temperature, topK: o.topK, topP: o.topP, maxTokens: o.maxTokens, parallel: o.parallel};
    const settings = {
        model: path.resolve(o.model), adapters, systemPrompt, format: o.format, templateVariables: variables, seed: o.seed, ...config,
        ...(o.remote == null ? {} : {remote: {urls: o.remote.urls, model: o.remote.model ?? null}}),
        sets: o.sets.map((s) => ({name: s.name, path: path.resolve(s.path), format: s.format, limit: s.limit ?? null}))
    };
    await checkFolder(o.out, settings, o.resume);

    const codeLanguages = [...new Set(sets.flatMap((s) => s.problems.flatMap((p) => p.code == null ? [] : [p.code.language ?? "python"])))];
    const verifier = codeLanguages.length === 0 ? undefined : new CodeVerifier({unsafe: o.unsafeRunWithoutSandbox});
    if (verifier != null) await verifier.ready(codeLanguages);

    // on servers, the tokenizer and template only
    const model = await loadModel(o.model, {gpuLayers: o.gpuLayers, signal: hooks.signal, vocabOnly: o.remote != null});
    model.setChatTemplateVariables(variables);
    const started = performance.now();
    try {
        const loaded = [];
        for (const a of adapters) loaded.push({adapter: await model.loadAdapter(a.path), scale: a.scale});
        // long generations: the KV cache every slot needs, planned before anything runs
        const longestPrompt = Math.max(...sets.flatMap((set) => set.problems.map((p) => model.promptTokens(problemMessages(p, systemPrompt)).length)));
        const tokensPerSample = longestPrompt + o.maxTokens + 1;
        const plan = o.remote == null ? kvCachePlan(model, {parallel: o.parallel, tokensPerSample}) : null;
        const kvCache: KvPlan | undefined = plan == null ? undefined : {parallel: o.parallel, tokensPerSample, bytes: plan.bytes, free: plan.free, fits: plan.fits};
        if (plan != null && plan.fits < o.parallel)
            throw new OptionError(`${o.parallel} parallel samples of up to ${tokensPerSample} tokens (the longest prompt, ${longestPrompt}, plus ${o.maxTokens}) need ` +
                `${(plan.bytes / 2 ** 30).toFixed(1)} GiB of KV cache but ${(plan.free / 2 ** 30).toFixed(1)} GiB are free: ` +
                (plan.fits > 0 ? `at most ${plan.fits} fit; lower parallel to ${plan.fits}, or lower max tokens.` : "not even one fits; lower max tokens."));
        if (kvCache != null) hooks.onPlan?.(kvCache);
        throwIfAborted(hooks.signal, "the evaluation");
        await fsp.mkdir(o.out, {recursive: true});
        await writeJsonAtomic(path.join(o.out, SETTINGS_FILE), settings);
        const metrics = await evaluate({
            model, adapters: loaded, sets, config, format: o.format, systemPrompt, seed: o.seed, threads: o.threads, verifier,
            dir: path.join(o.out, "responses"), signal: hooks.signal, remote: o.remote, onLog: hooks.onLog,
            onProgress: (set, done, total) => hooks.onProgress?.({set, done, total})
        });
        for (const set of sets) await writeResponses(o.out, set, o.greedy, o.samples ?? 0);
        const record: EvaluationRecord = {
            label, model: settings.model, adapters, settings, seconds: (performance.now() - started) / 1000,
            finishedAt: new Date().toISOString(), sets: metrics, ...(kvCache == null ? {} : {kvCache}),
            ...(earlier == null ? {} : {compare: {against: path.resolve(o.compare!), label: earlier.label, sets: compareEvaluations(earlier.sets, metrics, {seed: o.seed})}})
        };
        await writeFileAtomic(path.join(o.out, "report.html"), evaluationReport(record, earlier));
        await writeJsonAtomic(path.join(o.out, RECORD_FILE), record);
        return record;
    } finally {
        await model.dispose();
    }
}

/** The folder is new or empty; or, to resume, holds an evaluation with the same settings. */
async function checkFolder(out: string, settings: Record<string, unknown>, resume: boolean) {
    if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new DataError(out, "is a file, not a folder for the evaluation");
    const entries = fs.existsSync(out) ? await fsp.readdir(out) : [];
    if (entries.length === 0) return;
    const file = path.join(out, SETTINGS_FILE);
    if (!resume) throw new OptionError(`${out} already holds ${fs.existsSync(file) ? "an evaluation" : "other files"}: resume it, or choose another output folder.`);
    if (!fs.existsSync(file)) throw new DataError(out, "holds files but no evaluation to resume (no settings.json)");
    const earlier = await readJsonFile(file, z.record(z.string(), z.unknown()));
    const differs = Object.keys({...earlier, ...settings}).filter((k) => JSON.stringify(earlier[k]) !== JSON.stringify(settings[k]));
    if (differs.length > 0)
        throw new OptionError(`${out} holds an evaluation with other settings (${differs.join(", ")}): resume it with the same options, or choose another output folder.`);
}

/** responses/<set>.jsonl: each response with its gold answer(s), type and verdict, in `still grade --file`'s layout. */
async function writeResponses(out: string, set: EvalSet, greedy: boolean, samples: number) {
    const dir = path.join(out, "responses", set.name);
    const read = async (kind: string): Promise<GradedSample[]> => {
        const folder = path.join(dir, kind);
        if (!fs.existsSync(folder)) return [];
        const files = (await fsp.readdir(folder)).filter((f) => /^chunk-\d+\.jsonl$/.test(f)).sort();
        const rows: GradedSample[] = [];
        for (const f of files) rows.push(...await readJsonlFile(path.join(folder, f), gradedSampleSchema));
        return rows;
    };
    const byId = new Map(set.problems.map((p) => [p.id, p]));
    const lines = [];
    for (const kind of [...(greedy ? ["greedy"] : []), ...(samples > 0 ? ["sampled"] : [])]) {
        for (const s of await read(kind)) {
            const p = byId.get(s.id);
            if (p == null) continue;
            lines.push({
                id: s.id, kind, sample: s.sample, response: s.text, ...goldFields(p),
                correct: s.correct, extracted: s.extracted, finish: s.finish, tokens: s.tokens.length, wellFormed: s.wellFormed
            });
        }
    }
    await writeJsonlAtomic(path.join(out, "responses", `${set.name}.jsonl`), lines);
}

/** What `still grade --file` needs to grade a response to `p` again. */
function goldFields(p: Problem): Record<string, unknown> {
    if (p.type === "code") {
        const c = p.code!;
        return {type: "code", language: c.language, tests: c.tests, ...(c.check == null ? {} : {check: c.check, entry_point: c.entryPoint}),
            ...(c.call == null ? {} : {call: c.call}), ...(c.setup == null ? {} : {setup: c.setup})};
    }
    return {gold: p.alternatives == null ? p.answer : [p.answer, ...p.alternatives], type: p.type, ...(p.choices == null ? {} : {choices: p.choices})};
}

/** report.html of an evaluation: its figures, and the earlier evaluation's beside them when compared. */
export function evaluationReport(record: EvaluationRecord, earlier?: EvaluationRecord): string {
    const lines = (r: EvaluationRecord) => r.sets.map((m) => ({kind: "eval" as const, phase: r.label, ...m}));
    const labelA = earlier == null ? undefined : (earlier.label === record.label ? `${earlier.label} (earlier)` : earlier.label);
    const before = earlier == null ? [] : lines({...earlier, label: labelA!});
    return renderReport(`still eval: ${record.label}`, [...before, ...lines(record)], {
        source: "eval.json",
        ...(record.compare == null ? {} : {comparison: {a: labelA!, b: record.label, sets: record.compare.sets}})
    });
}
