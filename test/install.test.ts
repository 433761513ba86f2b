// The locked tree installs anywhere: `npm ci` on a clean clone needs every platform's
// optional package in package-lock.json, not only this machine's.
import fs from "node:fs";
import path from "node:path";
import {describe, expect, it} from "vitest";
// @ts-expect-error a plain script module without types
import {missingOptional} from "../scripts/lock-platforms.mjs";
import {repoRoot} from "./helpers/fixtures.js";

describe("package-lock.json", () => {
    const lock = JSON.parse(fs.readFileSync(path.join(repoRoot, "package-lock.json"), "utf8"));

    it("records every optional dependency of every locked package", () => {
        expect(missingOptional(lock)).toEqual([]);
    });

    it("holds each llama.cpp platform package node-llama-cpp names, at its pinned version", () => {
        const llama = lock.packages["node_modules/node-llama-cpp"];
        const names = Object.keys(llama.optionalDependencies);
        expect(names).toEqual(expect.arrayContaining(["@node-llama-cpp/mac-arm64-metal", "@node-llama-cpp/win-x64-cuda", "@node-llama-cpp/linux-x64"]));
        for (const name of names) expect(lock.packages[`node_modules/${name}`]?.version, name).toBe(llama.version);
    });

    it("finds what a lock without them lacks", () => {
        const pruned = structuredClone(lock);
        delete pruned.packages["node_modules/@node-llama-cpp/mac-arm64-metal"];
        expect(missingOptional(pruned)).toEqual([{name: "@node-llama-cpp/mac-arm64-metal", range: lock.packages["node_modules/node-llama-cpp"].version, by: "node_modules/node-llama-cpp"}]);
    });
});
