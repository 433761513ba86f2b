// A LoRA adapter (llama.cpp's adapter GGUF), loaded for one model.
import {ModelError, StillError} from "../errors.js";
import {inspectGguf} from "./inspectGguf.js";
import type {ModelHandle} from "./ModelHandle.js";
import type {NativeAdapter} from "./native.js";

export class Adapter {
    private disposed = false;

    private constructor(readonly path: string, readonly model: ModelHandle, private readonly handle: NativeAdapter,
                        readonly metadata: Record<string, unknown>) {}

    /** @internal Use Model.loadAdapter(). */
    static async load(model: ModelHandle, path: string): Promise<Adapter> {
        const binding = model.backend.binding;
        const gguf = await inspectGguf(path, (t) => binding.ggmlTypeInfo(t));
        if (gguf.type !== "adapter" || gguf.metadata["adapter.type"] !== "lora")
            throw new ModelError(path, `${path} is not a LoRA adapter (general.type is ${JSON.stringify(gguf.type)}, adapter.type ${JSON.stringify(gguf.metadata["adapter.type"] ?? null)}).`);
        if (gguf.architecture !== model.facts.architecture)
            throw new ModelError(path, `${path} is an adapter for ${gguf.architecture} models, but ${model.path} is ${model.facts.architecture}.`);
        try {
            return new Adapter(path, model, await binding.loadAdapter(model.nativeModel(), path), gguf.metadata);
        } catch (err) {
            const message = (err as Error).message ?? String(err);
            throw new ModelError(path, `llama.cpp could not load the adapter ${path} for ${model.path}: ${message.replace(/^[a-z_]+: /, "")}`, {cause: err});
        }
    }

    /** @internal The native handle, for an engine of the same model. */
    native(model: ModelHandle): NativeAdapter {
        if (this.disposed) throw new StillError(`the adapter ${this.path} has been disposed.`);
        if (model !== this.model) throw new StillError(`the adapter ${this.path} was loaded for ${this.model.path}, not ${model.path}.`);
        return this.handle;
    }

    dispose() {
        this.disposed = true;
        this.handle.dispose();
    }
}

/** Adapters with their scales as an engine's setAdapters() takes them. */
export type AdapterChoice = readonly {adapter: Adapter, scale?: number}[];

/** The native [adapter, scale] pairs of `adapters`, checked to belong to `model`. */
export function nativeAdapters(model: ModelHandle, adapters: AdapterChoice): [NativeAdapter, number][] {
    return adapters.map(({adapter, scale}) => [adapter.native(model), scale ?? 1]);
}
