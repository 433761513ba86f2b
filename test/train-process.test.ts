// The trainer process wrapper against a fake trainer that prints JSON lines.
import path from "node:path";
import {describe, expect, it} from "vitest";
import {AbortError, TrainerError} from "../src/errors.js";
import {type TrainerEvent, runTrainer} from "../src/train/runTrainer.js";

const fake = path.join(import.meta.dirname, "helpers", "fakeTrainer.mjs");
const run = (mode: string, options: Parameters<typeof runTrainer>[2] = {}) =>
    runTrainer(process.execPath, [fake], {...options, env: {FAKE_MODE: mode}});

describe("runTrainer", () => {
    it("turns JSON lines into typed events as they come", async () => {
        const seen: TrainerEvent[] = [];
        const result = await run("ok", {onEvent: (e) => seen.push(e)});
        expect(result.exitCode).toBe(0);
        expect(seen.map((e) => e.type)).toEqual(["start", "step", "step", "step", "done"]);
        expect(result.events).toEqual(seen);
        const step = seen[1];
        expect(step?.type === "step" && step.loss).toBe(4);
    });

    it("raises TrainerError with the trainer's error sentence, exit code and stderr tail", async () => {
        const err = await run("error", {explain: (m) => m.replace("record 3", "pairs.jsonl:4 (record 3)")}).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TrainerError);
        const te = err as TrainerError;
        expect(te.exitCode).toBe(1);
        expect(te.message).toBe("data.bin: pairs.jsonl:4 (record 3): tokens[2] = 999 is not a token of the model");
        expect(te.stderrTail).toContain("load_backend: loaded CPU backend");
    });

    it("reports a crash by its signal and the end of stderr", async () => {
        const err = await run("crash").catch((e: unknown) => e);
        expect(err).toBeInstanceOf(TrainerError);
        expect((err as TrainerError).message).toMatch(/killed by SIGSEGV.*something went very wrong/);
    });

    it("refuses output that is not a progress event", async () => {
        await expect(run("garbage")).rejects.toThrow(/not a progress event: this is not json/);
    });

    it("stops the trainer with SIGINT when the signal fires, and says where it stopped", async () => {
        const controller = new AbortController();
        let steps = 0;
        const promise = run("hang", {
            signal: controller.signal,
            onEvent: (e) => {
                if (e.type === "step" && ++steps === 3) controller.abort();
            }
        });
        const err = await promise.catch((e: unknown) => e);
        expect(err).toBeInstanceOf(AbortError);
        expect((err as Error).message).toMatch(/cancelled at step \d+; the checkpoint is ck\.gguf/);
    });

    it("does not start when the signal has already fired", async () => {
        const controller = new AbortController();
        controller.abort();
        await expect(run("ok", {signal: controller.signal})).rejects.toBeInstanceOf(AbortError);
    });
});
