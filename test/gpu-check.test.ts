// The GPU check's packaging, checked where there is no GPU (here and in CI): the dry run packs
// what would travel to the GPU machine, reads it back and measures it; the on-device run
// refuses a machine without an NVIDIA GPU with one sentence and a report saying so.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {describe, expect, it} from "vitest";
import {getBackend} from "../src/engine/binding.js";
import {tmpDir} from "./helpers/models.js";

const root = path.resolve(import.meta.dirname, "..");
const script = path.join(root, "scripts", "gpu-check.sh");

type DryRun = {
    dry_run: boolean, variant: string | null, variant_source_build: boolean | null, entries: number, archive_mb: number, tracked_mb: number | null,
    cuda_libraries_packed: boolean, travelling_mb: number, limit_mb: number,
    plan: {name: string, limit_s: number}[], plan_seconds: number, fits: boolean, problems: string[]
};

describe("npm run gpu:check", () => {
    it("--dry-run packs Node.js, dist/, the runtime packages and the CUDA variant's binaries, reads them back and measures what travels", async () => {
        const res = await execa("bash", [script, "--dry-run"], {cwd: root, reject: false});
        expect(res.exitCode, res.stderr).toBe(0);
        const r = JSON.parse(res.stdout.trim().split("\n").at(-1)!) as DryRun;
        expect(r.dry_run).toBe(true);
        // nothing the GPU machine needs first is missing from the archive, and the script parses
        expect(r.problems.filter((p) => /lacks|gpu-check\.sh|add up to/.test(p))).toEqual([]);
        expect(r.entries).toBeGreaterThan(100);
        expect(r.plan.map((p) => p.name)).toEqual(["facts", "tests", "bench-rollout", "bench-score", "bench-train", "peft-train"]);
        expect(r.plan_seconds).toBeLessThanOrEqual(8 * 60);
        // what travels: the archive and the tracked tree; without the CUDA libraries well under the limit
        expect(r.tracked_mb).toBeGreaterThan(0);
        expect(r.travelling_mb).toBeCloseTo(r.archive_mb + (r.tracked_mb ?? 0), 0);
        expect(r.travelling_mb).toBeLessThan(r.limit_mb);
        const cuda = getBackend().manifest.variants.find((v) => v.gpu === "cuda");
        if (cuda == null) {
            expect(r.variant).toBeNull();
            expect(r.fits).toBe(false);
        } else if (!cuda.source) {
            // node-llama-cpp's prebuilt CUDA libraries (every architecture) are refused, with the way out
            expect(r.cuda_libraries_packed).toBe(false);
            expect(r.fits).toBe(false);
            expect(r.problems.join(" ")).toMatch(/build:source -- --cuda --cuda-arch 90/);
        }
    }, 300_000);

    // (a GPU machine would run the whole check here)
    it.skipIf(fs.existsSync("/proc/driver/nvidia/version"))("on a machine without an NVIDIA GPU the check refuses with one sentence and writes a report saying so", async () => {
        const out = path.join(tmpDir, "gpu-check-out");
        const res = await execa("bash", [script, "--out", out], {cwd: root, reject: false});
        expect(res.exitCode).toBe(1);
        expect(res.stderr).toMatch(/error: no NVIDIA GPU here/);
        const report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8")) as {error?: string, steps: unknown[]};
        expect(report.error).toMatch(/no NVIDIA GPU/);
        expect(report.steps).toEqual([]);
    });
});
