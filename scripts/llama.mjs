// Where llama.cpp comes from: the source bundled in node-llama-cpp (headers, and the
// from-source build) and the prebuilt libraries of its @node-llama-cpp/<platform> packages.
// Used by the CMake configure step, scripts/build-native.mjs and scripts/build-source.mjs.
import {execFileSync} from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import {fileURLToPath} from "node:url";

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

export const depsDir = path.join(projectRoot, "deps");
export const sourceDir = path.join(depsDir, "llama.cpp");
export const sourceBuildsDir = path.join(depsDir, "llama-build");

/** The folder of an installed package (most packages here export no package.json), or null. */
export function packageDir(name) {
    let entry;
    try {
        entry = fileURLToPath(import.meta.resolve(name));
    } catch {
        return null;
    }
    for (let dir = path.dirname(entry); dir !== path.dirname(dir); dir = path.dirname(dir)) {
        const pkg = readJson(path.join(dir, "package.json"));
        if (pkg?.name === name) return dir;
    }
    return null;
}

export function nodeLlamaCppDir() {
    const dir = packageDir("node-llama-cpp");
    if (dir == null) throw new Error("node-llama-cpp is not installed. Run `npm install` in " + projectRoot + ".");
    return dir;
}

/** The llama.cpp release bundled in node-llama-cpp, and the bundle that holds its source. */
export function bundledRelease() {
    const llamaDir = path.join(nodeLlamaCppDir(), "llama");
    const info = JSON.parse(fs.readFileSync(path.join(llamaDir, "llama.cpp.info.json"), "utf8"));
    const bundle = path.join(llamaDir, "gitRelease.bundle");
    if (!fs.existsSync(bundle))
        throw new Error(`node-llama-cpp ships no llama.cpp source bundle at ${bundle}.`);
    return {release: String(info.tag), repo: String(info.llamaCppGithubRepo), bundle};
}

/** Extracts the bundled llama.cpp source into deps/llama.cpp once per release; returns its path. */
export function ensureSource({log = () => {}} = {}) {
    const {release, bundle} = bundledRelease();
    const marker = path.join(sourceDir, ".still-release");
    if (fs.existsSync(marker) && fs.readFileSync(marker, "utf8").trim() === release)
        return {dir: sourceDir, release};

    log(`extracting llama.cpp ${release} from ${path.relative(projectRoot, bundle)}`);
    fs.rmSync(sourceDir, {recursive: true, force: true});
    fs.mkdirSync(depsDir, {recursive: true});
    try {
        execFileSync("git", ["clone", "--quiet", "--no-hardlinks", bundle, sourceDir], {stdio: ["ignore", "ignore", "pipe"]});
    } catch (err) {
        const stderr = err.stderr ? String(err.stderr).trim() : err.message;
        throw new Error(`could not extract llama.cpp from ${bundle} with git (${stderr}). ` +
            "Possible solutions: install git, or check that node_modules/node-llama-cpp is complete (reinstall it).");
    }
    fs.writeFileSync(marker, release + "\n");
    return {dir: sourceDir, release};
}

/** The @node-llama-cpp packages that carry prebuilt libraries for this platform, by variant. */
function prebuiltPackageNames() {
    const {platform, arch} = process;
    if (platform === "linux" && arch === "x64")
        return [["cpu", "linux-x64"], ["cuda", "linux-x64-cuda"], ["vulkan", "linux-x64-vulkan"]];
    if (platform === "linux" && arch === "arm64") return [["cpu", "linux-arm64"]];
    if (platform === "linux" && arch === "arm") return [["cpu", "linux-armv7l"]];
    if (platform === "darwin" && arch === "arm64") return [["metal", "mac-arm64-metal"]];
    if (platform === "darwin" && arch === "x64") return [["cpu", "mac-x64"]];
    if (platform === "win32" && arch === "x64")
        return [["cpu", "win-x64"], ["cuda", "win-x64-cuda"], ["vulkan", "win-x64-vulkan"]];
    if (platform === "win32" && arch === "arm64") return [["cpu", "win-arm64"]];
    return [];
}

const libPatterns = {
    llama: /^(lib)?llama(\.[a-z]+)?(\.v[\d.]+)?\.(so|dylib|lib)$/,
    common: /^(lib)?llama-common\.(so|dylib|lib)$/,
    ggml: /^(lib)?ggml(\.[a-z]+)?(\.v[\d.]+)?\.(so|dylib|lib)$/,
    ggmlBase: /^(lib)?ggml-base\.(so|dylib|lib)$/
};

function findLibs(dir) {
    const files = fs.readdirSync(dir);
    const pick = (re) => files.find((f) => re.test(f));
    const libs = {llama: pick(libPatterns.llama), ggml: pick(libPatterns.ggml), ggmlBase: pick(libPatterns.ggmlBase)};
    if (!libs.llama || !libs.ggml || !libs.ggmlBase) return null;
    const common = pick(libPatterns.common);
    return {
        llama: path.join(dir, libs.llama),
        ggml: path.join(dir, libs.ggml),
        ggmlBase: path.join(dir, libs.ggmlBase),
        // llama.cpp's "common" library, which its tools need (absent from some builds)
        common: common == null ? null : path.join(dir, common)
    };
}

function gpuOf(dir, fallback) {
    const files = fs.readdirSync(dir);
    if (files.some((f) => /ggml-cuda\./.test(f))) return "cuda";
    if (files.some((f) => /ggml-vulkan\./.test(f))) return "vulkan";
    if (files.some((f) => /ggml-metal\./.test(f)) || fallback === "metal") return process.platform === "darwin" ? "metal" : null;
    return fallback === "cpu" ? null : fallback;
}

/**
 * Every llama.cpp build the addon can link to: the prebuilt variants installed for this platform,
 * and builds made by `npm run build:source` (deps/llama-build/<name>/bin).
 */
export function llamaVariants() {
    const {release} = bundledRelease();
    const variants = [];
    for (const [name, pkg] of prebuiltPackageNames()) {
        const pkgDir = packageDir(`@node-llama-cpp/${pkg}`);
        if (pkgDir == null) continue; // optional dependency not installed on this machine
        const libDir = path.join(pkgDir, "bins", pkg);
        if (!fs.existsSync(libDir)) continue;
        const meta = readJson(path.join(libDir, "_nlcBuildMetadata.json"));
        const builtRelease = meta?.buildOptions?.llamaCpp?.release;
        if (builtRelease != null && builtRelease !== release)
            throw new Error(`@node-llama-cpp/${pkg} holds llama.cpp ${builtRelease} but node-llama-cpp bundles ${release} sources; ` +
                "reinstall node-llama-cpp so both come from the same version.");
        const libs = findLibs(libDir);
        if (libs == null) continue;
        const extDirs = [];
        if (name === "cuda") {
            const extPkgDir = packageDir(`@node-llama-cpp/${pkg}-ext`); // optional too
            const extDir = extPkgDir && path.join(extPkgDir, "bins", pkg, "fallback");
            if (extDir && fs.existsSync(extDir)) extDirs.push(extDir);
        }
        variants.push({name, source: false, libDir, libs, gpu: gpuOf(libDir, name), fallbackBackendDirs: extDirs});
    }
    if (fs.existsSync(sourceBuildsDir)) {
        for (const entry of fs.readdirSync(sourceBuildsDir).sort()) {
            const libDir = path.join(sourceBuildsDir, entry, "bin");
            if (!fs.existsSync(libDir)) continue;
            const libs = findLibs(libDir);
            if (libs == null) continue;
            variants.push({name: entry, source: true, libDir, libs, gpu: gpuOf(libDir, "cpu"), fallbackBackendDirs: []});
        }
    }
    return variants;
}

function readJson(file) {
    try {
        return JSON.parse(fs.readFileSync(file, "utf8"));
    } catch {
        return null;
    }
}

const cmakePath = (p) => p.replaceAll("\\", "/");

// `node scripts/llama.mjs --cmake OUT.cmake --manifest variants.json`: called by CMakeLists.txt.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
    const arg = (flag) => {
        const i = process.argv.indexOf(flag);
        return i >= 0 ? process.argv[i + 1] : undefined;
    };
    try {
        const {dir, release} = ensureSource({log: (m) => console.error(`still: ${m}`)});
        const variants = llamaVariants();
        if (variants.length === 0)
            throw new Error(`no prebuilt llama.cpp for ${process.platform}-${process.arch} is installed and no source build exists. ` +
                "Possible solutions: `npm run build:source`, or reinstall with optional dependencies enabled.");
        const lines = [
            `set(STILL_LLAMA_RELEASE "${release}")`,
            `set(STILL_LLAMA_SOURCE_DIR "${cmakePath(dir)}")`,
            `set(STILL_VARIANTS ${variants.map((v) => v.name).join(" ")})`
        ];
        for (const v of variants) {
            lines.push(`set(STILL_VARIANT_${v.name}_LIBDIR "${cmakePath(v.libDir)}")`);
            lines.push(`set(STILL_VARIANT_${v.name}_LIBS "${cmakePath(v.libs.llama)};${cmakePath(v.libs.ggml)};${cmakePath(v.libs.ggmlBase)}")`);
            lines.push(`set(STILL_VARIANT_${v.name}_COMMON "${v.libs.common == null ? "" : cmakePath(v.libs.common)}")`);
        }
        const out = arg("--cmake");
        if (out) fs.writeFileSync(out, lines.join("\n") + "\n");
        else console.log(lines.join("\n"));
        const manifest = arg("--manifest");
        if (manifest) {
            fs.mkdirSync(path.dirname(manifest), {recursive: true});
            fs.writeFileSync(manifest, JSON.stringify({
                release,
                variants: variants.map((v) => ({
                    name: v.name,
                    addon: `still-${v.name}.node`,
                    source: v.source,
                    gpu: v.gpu,
                    // relative to the project root, so a moved checkout keeps working
                    libDir: path.relative(projectRoot, v.libDir),
                    fallbackBackendDirs: v.fallbackBackendDirs.map((d) => path.relative(projectRoot, d))
                }))
            }, null, 2) + "\n");
        }
    } catch (err) {
        console.error(`still: ${err.message}`);
        process.exit(1);
    }
}
