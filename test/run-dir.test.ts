// A run folder's config across versions: a run begun when the schema had fewer keys with
// defaults resumes unchanged; a config that differs in a value is refused.
import fs from "node:fs";
import path from "node:path";
import {describe, expect, it} from "vitest";
import {parseRunConfig} from "../src/loop/config.js";
import {configHash, RunDir} from "../src/loop/RunDir.js";
import {tmpDir} from "./helpers/models.js";

describe("a run folder's config", () => {
    it("resumes a run whose config.json lacks keys a later version gave defaults, and refuses a changed config", async () => {
        const runsDir = fs.mkdtempSync(path.join(tmpDir, "run-dir-"));
        const config = parseRunConfig({name: "r", runsDir, model: {path: "m.gguf"}, data: {problems: "p.jsonl"}}, path.join(runsDir, "r.json"));
        const run = await RunDir.start(config);
        // the folder as an earlier version wrote it: a key with a default missing, the state's hash over that file
        const stored = JSON.parse(fs.readFileSync(run.path("config.json"), "utf8")) as Record<string, unknown>;
        delete stored.seed;
        fs.writeFileSync(run.path("config.json"), JSON.stringify(stored, null, 2));
        const state = JSON.parse(fs.readFileSync(run.path("state.json"), "utf8")) as {config: string};
        state.config = configHash(stored);
        fs.writeFileSync(run.path("state.json"), JSON.stringify(state));

        const reopened = await RunDir.open(run.dir);
        expect(reopened.config).toEqual(config);
        await expect(RunDir.start(reopened.config)).resolves.toBeInstanceOf(RunDir);
        await expect(RunDir.start({...config, seed: 5})).rejects.toThrow(/holds another configuration for this run name/);
        // edited by hand since the run began: refused too
        fs.writeFileSync(run.path("config.json"), JSON.stringify({...stored, seed: 7}, null, 2));
        await expect(RunDir.start(config)).rejects.toThrow(/holds another configuration/);
    });
});
