// Choosing the llama.cpp variant (no model, no GPU needed).
import {describe, expect, it} from "vitest";
import {type VariantInfo, rankVariants} from "../src/engine/binding.js";
import {NativeError} from "../src/errors.js";

const v = (name: string, gpu: VariantInfo["gpu"], source = false): VariantInfo =>
    ({name, addon: `still-${name}.node`, source, gpu, libDir: `lib/${name}`, fallbackBackendDirs: []});
const linux = [v("cpu", null), v("cuda", "cuda"), v("vulkan", "vulkan")];

describe("rankVariants", () => {
    it("prefers CUDA where an NVIDIA driver is present, CPU otherwise, and Vulkan only on request", () => {
        expect(rankVariants(linux, new Set(["cuda"])).map((x) => x.name)).toEqual(["cuda", "cpu"]);
        expect(rankVariants(linux, new Set()).map((x) => x.name)).toEqual(["cpu"]);
        expect(rankVariants(linux, new Set(), "vulkan").map((x) => x.name)).toEqual(["vulkan"]);
    });

    it("prefers a build made from source", () => {
        const withSource = [...linux, v("source", null, true), v("source-cuda", "cuda", true)];
        expect(rankVariants(withSource, new Set()).map((x) => x.name)).toEqual(["source", "cpu"]);
        expect(rankVariants(withSource, new Set(["cuda"])).map((x) => x.name)).toEqual(["source-cuda", "source", "cuda", "cpu"]);
    });

    it("uses Metal on Apple silicon", () => {
        expect(rankVariants([v("metal", "metal")], new Set(["metal"])).map((x) => x.name)).toEqual(["metal"]);
    });

    it("names the variants that exist when asked for one that does not", () => {
        expect(() => rankVariants(linux, new Set(), "rocm")).toThrow(NativeError);
        expect(() => rankVariants(linux, new Set(), "rocm")).toThrow("llama.cpp variant 'rocm' is not built; available: cpu, cuda, vulkan.");
        expect(rankVariants(linux, new Set(), "auto").map((x) => x.name)).toEqual(["cpu"]);
    });
});
