// A LoRA adapter (llama.cpp's adapter GGUF), loaded for one model.
import {ModelError, StillError} from "../errors.js";
import {inspectGguf} from "./inspectGguf.js";
import type {Model} from "./Model.js";

export interface NativeAdapter {
    dispose(): void;
}

export class Adapter {
    private disposed = false;

    private constructor(readonly path: string, readonly model: Model, private readonly handle: NativeAdapter,
                        readonly metadata: Record<string, unknown>) {}

    /** @internal Use Model.loadAdapter(). */
    static async load(model: Model, path: string, load: (p: string) => Promise<NativeAdapter>,
                      typeSizes: Parameters<typeof inspectGguf>[1]): Promise<Adapter> {
        const gguf = await inspectGguf(path, typeSizes);
        if (gguf.type !== "adapter" || gguf.metadata["adapter.type"] !== "lora")
            throw new ModelError(path, `${path} is not a LoRA adapter (general.type is ${JSON.stringify(gguf.type)}, adapter.type ${JSON.stringify(gguf.metadata["adapter.type"] ?? null)}).`);
        if (gguf.architecture !== model.facts.architecture)
            throw new ModelError(path, `${path} is an adapter for ${gguf.architecture} models, but ${model.path} is ${model.facts.architecture}.`);
        try {
            return new Adapter(path, model, await load(path), gguf.metadata);
        } catch (err) {
            const message = (err as Error).message ?? String(err);
            throw new ModelError(path, `llama.cpp could not load the adapter ${path} for ${model.path}: ${message.replace(/^[a-z_]+: /, "")}`, {cause: err});
        }
    }

    /** @internal The native handle, for an engine of the same model. */
    native(model: Model): NativeAdapter {
        if (this.disposed) throw new StillError(`the adapter ${this.path} has been disposed.`);
        if (model !== this.model) throw new StillError(`the adapter ${this.path} was loaded for ${this.model.path}, not ${model.path}.`);
        return this.handle;
    }

    dispose() {
        this.disposed = true;
        this.handle.dispose();
    }
}
