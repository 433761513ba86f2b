// Choosing the llama.cpp variant and ggml's CPU backend module (no GPU needed).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {execa} from "execa";
import {afterAll, describe, expect, it} from "vitest";
import {type VariantInfo, chosenCpuBackend, cpuBackendModules, getBackend, rankVariants} from "../src/engine/binding.js";
import {NativeError} from "../src/errors.js";
import {testModel} from "./helpers/models.js";

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

describe("choosing one of ggml's CPU backend modules (STILL_GGML_CPU)", () => {
    const folder = fs.mkdtempSync(path.join(os.tmpdir(), "still-cpu-modules-"));
    for (const f of ["libggml-base.so", "libggml-cpu-haswell.so", "libggml-cpu-zen4.so", "libllama.so", "ggml-cpu-icelake.dll"]) fs.writeFileSync(path.join(folder, f), "");
    const cpu: VariantInfo = {...v("cpu", null), libDir: folder};
    afterAll(() => fs.rmSync(folder, {recursive: true, force: true}));

    it("finds the module a name stands for, and nothing where none is named", () => {
        expect(chosenCpuBackend(cpu, "haswell")).toBe(path.join(folder, "libggml-cpu-haswell.so"));
        expect(chosenCpuBackend(cpu, "icelake")).toBe(path.join(folder, "ggml-cpu-icelake.dll"));
        expect(chosenCpuBackend(cpu, undefined)).toBeUndefined();
        expect(chosenCpuBackend(cpu, "auto")).toBeUndefined();
        expect([...cpuBackendModules(cpu).keys()].sort()).toEqual(["haswell", "icelake", "zen4"]);
    });

    it("names the modules there are when asked for one that is not there, and refuses GPU variants", () => {
        expect(() => chosenCpuBackend(cpu, "alderlake")).toThrow(NativeError);
        expect(() => chosenCpuBackend(cpu, "alderlake")).toThrow("STILL_GGML_CPU=alderlake: the cpu variant has no such ggml CPU backend (it has: haswell, icelake, zen4).");
        expect(() => chosenCpuBackend({...v("cuda", "cuda"), libDir: folder}, "haswell")).toThrow("the cuda variant loads its own (set STILL_VARIANT=cpu)");
    });

    // The cpu variant's own modules, where it has them (prebuilt packages for x86-64): the
    // baseline one runs on every CPU of its kind.
    const installed = (() => {
        try {
            return cpuBackendModules(getBackend({variant: "cpu"}).variant);
        } catch {
            return new Map<string, string>();
        }
    })();
    const pick = installed.has("x64") ? "x64" : undefined;
    it.skipIf(pick == null)("loads that module alone, and the engine runs on it", async () => {
        const script = `
            import fs from "node:fs";
            import {loadModel} from "./dist/src/engine/Model.js";
            const m = await loadModel(process.argv[1]);
            const out = [];
            for await (const s of m.rollouts({parallel: 2}).generate([{prompt: "Hello"}], {temperature: 0, maxTokens: 4})) out.push(s.tokens.length);
            await m.dispose();
            const loaded = [...new Set(fs.readFileSync("/proc/self/maps", "utf8").match(/libggml-cpu-[\\w.]+\\.so/g) ?? [])];
            process.stdout.write(JSON.stringify({loaded, out}) + "\\n");`;
        const run = (name: string) => execa(process.execPath, ["--input-type=module", "-e", script, file], {env: {STILL_VARIANT: "cpu", STILL_GGML_CPU: name}, reject: false});
        const file = await testModel("tiny");
        const res = await run(pick!);
        expect(res.exitCode, res.stderr).toBe(0);
        expect(JSON.parse(res.stdout.trim().split("\n").at(-1)!)).toEqual({loaded: [`libggml-cpu-${pick}.so`], out: [4]});
        const bad = await run("no-such-cpu");
        expect(bad.exitCode).not.toBe(0);
        expect(bad.stderr).toContain("STILL_GGML_CPU=no-such-cpu: the cpu variant has no such ggml CPU backend (it has: ");
    }, 60_000);
});
