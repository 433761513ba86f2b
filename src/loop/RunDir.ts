// A run's folder: the resolved config, state.json (which steps are done, written
// atomically), per-step artifacts, metrics.jsonl. A step is done when state.json says so;
// anything a killed step left behind is redone by the step itself.
import {createHash} from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import {DataError} from "../errors.js";
import {appendJsonl, readJsonFile, writeJsonAtomic} from "../io/jsonl.js";
import {type RunConfig, runConfigSchema} from "./config.js";
import type {Metric} from "./records.js";

const stateSchema = z.object({
    version: z.literal(1),
    /** Hash of the resolved config: a resume with another config is refused. */
    config: z.string(),
    created: z.string(),
    steps: z.record(z.string(), z.object({at: z.string(), info: z.record(z.string(), z.unknown()).default({})}))
});
type State = z.infer<typeof stateSchema>;

export class RunDir {
    private constructor(readonly dir: string, readonly config: RunConfig, private state: State) {}

    /** Creates the run's folder (or opens it to resume, when it holds the same config). */
    static async start(config: RunConfig): Promise<RunDir> {
        const dir = path.join(config.runsDir, config.name);
        const hash = configHash(config);
        if (fs.existsSync(path.join(dir, "state.json"))) {
            const run = await RunDir.open(dir);
            if (run.state.config !== hash && !await run.sameConfigWithNewDefaults(hash))
                throw new DataError(path.join(dir, "config.json"), "holds another configuration for this run name; " +
                    "resume it with `still run --resume`, or give the new config another name");
            return run;
        }
        await fsp.mkdir(dir, {recursive: true});
        await writeJsonAtomic(path.join(dir, "config.json"), config);
        const state: State = {version: 1, config: hash, created: new Date().toISOString(), steps: {}};
        await writeJsonAtomic(path.join(dir, "state.json"), state);
        return new RunDir(dir, config, state);
    }

    /**
     * Whether the folder's config.json is the one its run began with (it still hashes to the
     * state's record) and resolves today to the config hashed as `hash`: a run begun by a
     * version whose schema had fewer keys with defaults, resumed unchanged.
     */
    private async sameConfigWithNewDefaults(hash: string): Promise<boolean> {
        const stored: unknown = JSON.parse(await fsp.readFile(this.path("config.json"), "utf8"));
        return configHash(stored) === this.state.config && configHash(this.config) === hash;
    }

    /** Opens an existing run folder. */
    static async open(dir: string): Promise<RunDir> {
        const read = <S extends z.ZodType>(file: string, schema: S) => readJsonFile(path.join(dir, file), schema, `; is ${dir} a run folder?`);
        const config = await read("config.json", runConfigSchema);
        const state = await read("state.json", stateSchema);
        return new RunDir(dir, config, state);
    }

    path(...parts: string[]) {
        return path.join(this.dir, ...parts);
    }

    isDone(step: string) {
        return this.state.steps[step] != null;
    }

    /**
     * A step of the run: its record from state.json when it is done already, else what
     * `work` returns, recorded once it has finished.
     */
    async step<S extends z.ZodType<Record<string, unknown>>>(name: string, schema: S, work: () => Promise<z.output<S>>): Promise<{record: z.output<S>, ran: boolean}> {
        const done = this.state.steps[name];
        if (done != null) {
            const parsed = schema.safeParse(done.info);
            if (!parsed.success)
                throw new DataError(this.path("state.json"), `the record of step ${name} is not valid (${z.prettifyError(parsed.error)}); ` +
                    "the run folder was written by another version of still");
            return {record: parsed.data, ran: false};
        }
        const record = await work();
        await this.markDone(name, record);
        return {record, ran: true};
    }

    get completed(): string[] {
        return Object.keys(this.state.steps);
    }

    /** Records a step as done (atomically: a kill leaves the old or the new state.json). */
    async markDone(step: string, info: Record<string, unknown> = {}) {
        this.state = {...this.state, steps: {...this.state.steps, [step]: {at: new Date().toISOString(), info}}};
        await writeJsonAtomic(this.path("state.json"), this.state);
    }

    /**
     * Appends metric lines once per run under `key`: a resumed run that wrote them before
     * does not repeat them.
     */
    async metricsOnce(key: string, metrics: readonly Metric[]) {
        const step = `metrics/${key}`;
        if (this.isDone(step)) return;
        const at = new Date().toISOString();
        await appendJsonl(this.path("metrics.jsonl"), metrics.map((m) => ({at, ...m})));
        await this.markDone(step);
    }
}

/** The hash state.json records: of a config as JSON (resolved, or as a folder's config.json holds it). */
export function configHash(config: unknown) {
    return createHash("sha256").update(JSON.stringify(config)).digest("hex").slice(0, 16);
}
