import {defineConfig} from "vitest/config";

export default defineConfig({
    test: {
        include: ["test/**/*.test.ts"],
        // One process per file: the native addon and llama.cpp's backends are process-wide.
        pool: "forks",
        testTimeout: 60_000,
        hookTimeout: 120_000
    }
});
