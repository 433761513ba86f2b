// A run's folder: the resolved config, state.json (which steps are done, written
// atomically), per-step artifacts, metrics.jsonl. A step is done when state.json says so;
// anything a killed step left behind is redone by the step itself.
import {createHash} from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import {DataError} from "../errors.js";
import {appendJsonl, writeJsonAtomic} from "../io/jsonl.js";
import {type RunConfig, runConfigSchema} from "./config.js";

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
            if (run.state.config !== hash)
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

    /** Opens an existing run folder. */
    static async open(dir: string): Promise<RunDir> {
        const read = async <T>(file: string, schema: z.ZodType<T>): Promise<T> => {
            let raw: unknown;
            try {
                raw = JSON.parse(await fsp.readFile(path.join(dir, file), "utf8"));
            } catch (err) {
                throw new DataError(path.join(dir, file), `cannot be read (${(err as Error).message}); is ${dir} a run folder?`);
            }
            const parsed = schema.safeParse(raw);
            if (!parsed.success) throw new DataError(path.join(dir, file), `is not valid: ${z.prettifyError(parsed.error)}`);
            return parsed.data;
        };
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

    info(step: string): Record<string, unknown> | undefined {
        return this.state.steps[step]?.info;
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
     * does not repeat them (nor compute them).
     */
    async metricsOnce(key: string, records: () => Promise<Record<string, unknown>[]>) {
        const step = `metrics/${key}`;
        if (this.isDone(step)) return;
        for (const r of await records()) await this.metric(r);
        await this.markDone(step);
    }

    /** Appends one line to metrics.jsonl. */
    async metric(record: Record<string, unknown>) {
        await appendJsonl(this.path("metrics.jsonl"), [{at: new Date().toISOString(), ...record}]);
    }
}

export function configHash(config: RunConfig) {
    return createHash("sha256").update(JSON.stringify(config)).digest("hex").slice(0, 16);
}
