// What the rollout engine and the scorer share on the TypeScript side: one native engine
// over a model, adapters swapped between runs, one run at a time with its AbortSignal and
// its errors mapped in one place.
import type {z} from "zod";
import {StillError, throwIfAborted} from "../errors.js";
import {type AdapterChoice, nativeAdapters} from "./Adapter.js";
import {withAbortFlag} from "./binding.js";
import type {ModelHandle} from "./ModelHandle.js";
import {type NativeAbortFlag, type NativeAdapter, nativeError} from "./native.js";

type NativeEngine = {setAdapters(adapters: [NativeAdapter, number][]): void, dispose(): void};

export abstract class BatchEngine<N extends NativeEngine> {
    private running = false;
    private disposed = false;

    protected constructor(protected readonly model: ModelHandle, protected readonly native: N,
                          /** Names the engine in messages ("rollout engine"). */
                          private readonly what: string) {}

    /** LoRA adapters (with scales) applied from the next run; [] removes them. */
    setAdapters(adapters: AdapterChoice) {
        if (this.running) throw new StillError("adapters cannot change while a run is in progress.");
        this.native.setAdapters(nativeAdapters(this.model, adapters));
    }

    dispose() {
        this.disposed = true;
        this.native.dispose();
    }

    /** Refuses a run on a disposed or busy engine, or under a fired signal (synchronously). */
    protected checkIdle(signal: AbortSignal | undefined, operation: string) {
        if (this.disposed) throw new StillError(`the ${this.what} has been disposed.`);
        if (this.running) throw new StillError(`this ${this.what} is already running; wait for the run to end or create another.`);
        throwIfAborted(signal, operation);
    }

    /**
     * One native run: marked running until it settles, cancelled by `signal`, its final
     * stats checked against `stats`, its errors mapped (cancelled → AbortError, …).
     */
    protected runNative<S>(operation: string, signal: AbortSignal | undefined, stats: z.ZodType<S>,
                           call: (abort: NativeAbortFlag) => Promise<unknown>): Promise<S> {
        this.checkIdle(signal, operation);
        this.running = true;
        return withAbortFlag(this.model.backend, signal, call)
            .then((s) => stats.parse(s), (err: unknown) => {
                throw nativeError(err, this.model.errorContext(operation));
            })
            .finally(() => {
                this.running = false;
            });
    }
}
