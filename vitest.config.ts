import {defineConfig} from "vitest/config";

export default defineConfig({
    test: {
        include: ["test/**/*.test.ts"],
        globalSetup: ["test/helpers/globalSetup.ts"],
        // One process per file: the native addon and llama.cpp's backends are process-wide.
        pool: "forks",
        testTimeout: 60_000,
        // Tiny models: one llama.cpp thread each. Thread hand-offs cost more than the
        // work (two threads are 20× slower per token on a 2-core machine).
        env: {STILL_THREADS: "1"},
        hookTimeout: 120_000
    }
});
