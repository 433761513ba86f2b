// GPU checks: run only where a GPU backend registers a device (never in CI).
import {describe, expect, it} from "vitest";
import {getBackend} from "../src/engine/binding.js";
import {loadModel} from "../src/engine/Model.js";
import {testModel} from "./helpers/models.js";

const backend = getBackend();

describe.skipIf(!backend.hasGpu)(`GPU (${backend.variant.name})`, () => {
    it("offloads every layer to device memory and generates there", async () => {
        const file = await testModel("tiny", "f32");
        const gpu = backend.devices.find((d) => d.type === "gpu" || d.type === "igpu")!;
        const freeBefore = gpu.memoryFree;
        const onGpu = await loadModel(file, {gpuLayers: "max"});
        expect(onGpu.facts.gpuLayers).toBe(-1);
        const after = (backend.binding.devices() as typeof backend.devices).find((d) => d.name === gpu.name)!;
        // The weights (13 MB) now live in device memory.
        expect(freeBefore - after.memoryFree).toBeGreaterThan(10_000_000);
        const out = await onGpu.generateGreedy(onGpu.applyChatTemplate([{role: "user", content: "2+2?"}]), {maxTokens: 8});
        expect(out.tokens.length).toBeGreaterThan(0);
        await onGpu.dispose();
    });
});
