// What this machine's CPU can run, from /proc/cpuinfo (empty elsewhere).
import fs from "node:fs";

const cpuFlags = (() => {
    try {
        return new Set((fs.readFileSync("/proc/cpuinfo", "utf8").match(/^flags\s*:(.*)$/m)?.[1] ?? "").trim().split(/\s+/));
    } catch {
        return new Set<string>();
    }
})();

/** Whether the CPU has AVX-512 VNNI (still's Q8_0 kernels' 16-row tiles). */
export const hasAvx512Vnni = ["avx512f", "avx512bw", "avx512vl", "avx512_vnni"].every((f) => cpuFlags.has(f));

/** Whether the CPU has AVX-VNNI (the 256-bit VNNI of client CPUs; still's Q8_0 kernels' 8-row tiles). */
export const hasAvxVnni = ["avx2", "fma", "f16c", "avx_vnni"].every((f) => cpuFlags.has(f));

/** Whether the CPU has AVX-512 BF16 (still-train's BF16 products run only there). */
export const hasAvx512Bf16 = ["avx512f", "avx512bw", "avx512vl", "avx512_bf16"].every((f) => cpuFlags.has(f));
