#!/usr/bin/env node
// package-lock.json must record every optional dependency of every locked package, for
// every platform, or `npm ci` refuses the tree on a clean clone ("Missing: … from lock
// file"). npm leaves out the platform packages it cannot resolve from the registry it
// talks to; node-llama-cpp ships one such package per platform (mac, win, riscv, …).
//
//   node scripts/lock-platforms.mjs --check   lists what is missing; exit 1 if anything is
//   node scripts/lock-platforms.mjs --fix     adds the missing entries (os and cpu from the
//                                             registry's metadata of the same or an earlier
//                                             version; npm fetches the package itself by
//                                             version on the platform that needs it)
import {execFileSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const lockFile = path.join(root, "package-lock.json");

/** Every optional dependency named by a locked package that the lock has no entry for. */
export function missingOptional(lock) {
    const missing = [];
    for (const [where, entry] of Object.entries(lock.packages ?? {})) {
        for (const [name, range] of Object.entries(entry.optionalDependencies ?? {})) {
            // resolved like node: nested first, then each folder up to the root
            let dir = where;
            let found = false;
            for (;;) {
                const key = (dir === "" ? "" : `${dir}/`) + `node_modules/${name}`;
                if (lock.packages[key] != null) {
                    found = true;
                    break;
                }
                if (dir === "") break;
                const up = dir.lastIndexOf("/node_modules/");
                dir = up < 0 ? "" : dir.slice(0, up);
            }
            if (!found) missing.push({name, range, by: where || "(root)"});
        }
    }
    return missing;
}

function registryFacts(name, range) {
    const view = (spec) => {
        try {
            return JSON.parse(execFileSync("npm", ["view", spec, "os", "cpu", "libc", "engines", "license", "version", "--json"],
                {encoding: "utf8", stdio: ["ignore", "pipe", "ignore"]}));
        } catch {
            return null;
        }
    };
    let facts = view(`${name}@${range}`);
    if (Array.isArray(facts)) facts = facts.at(-1);
    if (facts == null) {
        // not on this registry at that version: the platform fields of the latest one
        const versions = view(name);
        facts = Array.isArray(versions) ? versions.at(-1) : versions;
    }
    return facts;
}

if (process.argv[1] != null && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv[2]);

function main(mode) {
    if (mode !== "--check" && mode !== "--fix") {
        process.stderr.write("usage: node scripts/lock-platforms.mjs --check | --fix\n");
        process.exit(2);
    }
    const lock = JSON.parse(fs.readFileSync(lockFile, "utf8"));
    const missing = missingOptional(lock);
    if (mode === "--check") {
        for (const m of missing) process.stdout.write(`missing from package-lock.json: ${m.name}@${m.range} (optional dependency of ${m.by})\n`);
        process.exit(missing.length === 0 ? 0 : 1);
    }
    for (const m of missing) {
        const facts = registryFacts(m.name, m.range);
        if (facts == null) throw new Error(`the registry knows nothing of ${m.name}; cannot describe it in the lock file`);
        const entry = {version: m.range, optional: true};
        for (const k of ["cpu", "libc", "license", "os", "engines"]) if (facts[k] != null) entry[k] = facts[k];
        lock.packages[`node_modules/${m.name}`] = entry;
        process.stdout.write(`added ${m.name}@${m.range} (${[entry.os, entry.cpu].flat().join(" ")})\n`);
    }
    lock.packages = Object.fromEntries(Object.entries(lock.packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : a > b ? 1 : 0)));
    fs.writeFileSync(lockFile, JSON.stringify(lock, null, 2) + "\n");
}
