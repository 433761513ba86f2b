// Command-line options made from the same zod schemas the API validates with: a flag's
// help text is the field's description, its default the field's default, and the values
// commander collects are coerced and checked by that schema. No default or meaning is
// written twice.
import {Command, Option} from "commander";
import {z} from "zod";
import {parseOptions} from "../errors.js";

/** One command-line option for a field of an options schema. */
export type CliOption = {
    /** Commander flags: "--top-k <k>", "--json", "--no-gpu". */
    flags: string,
    /** The field it sets, as a dotted path into the schema ("lora.rank"); default: the flag's name in camelCase. */
    field?: string,
    /** Help text instead of the field's description (as for a --no-… twin of an option). */
    help?: string
};

type Wrapped = {base: z.ZodType, description: string | undefined, defaultValue: unknown, hasDefault: boolean, optional: boolean};

/** The type under a field's default/optional/nullable wrappers, and what the wrappers say. */
function unwrap(schema: z.ZodType): Wrapped {
    let s = schema;
    let description = s.description;
    let defaultValue: unknown;
    let hasDefault = false;
    let optional = false;
    for (;;) {
        const def = s._zod.def as {type: string, innerType?: z.ZodType, defaultValue?: unknown};
        if (def.type === "default" || def.type === "prefault") {
            hasDefault = true;
            defaultValue = def.defaultValue;
        } else if (def.type === "optional" || def.type === "nullable") {
            optional = true;
        } else {
            break;
        }
        s = def.innerType!;
        description ??= s.description;
    }
    return {base: s, description, defaultValue, hasDefault, optional};
}

/** The field at a dotted path of an object schema (through wrappers). */
function fieldAt(schema: z.ZodType, path: string): z.ZodType {
    let s = schema;
    for (const key of path.split(".")) {
        const base = unwrap(s).base;
        const shape = (base._zod.def as {shape?: Record<string, z.ZodType>}).shape;
        const next = shape?.[key];
        if (next == null) throw new Error(`no field ${path} in the options schema`);
        s = next;
    }
    return s;
}

const spec = (o: string | CliOption): CliOption => (typeof o === "string" ? {flags: o} : o);

function fieldOf(option: Option, o: CliOption) {
    return o.field ?? option.attributeName();
}

/** Registers `options` on `cmd`, each described by its field of `schema`. */
export function addOptions(cmd: Command, schema: z.ZodType, options: readonly (string | CliOption)[]): Command {
    for (const raw of options) {
        const o = spec(raw);
        const option = new Option(o.flags);
        const f = unwrap(fieldAt(schema, fieldOf(option, o)));
        let help = o.help ?? f.description ?? "";
        if (f.hasDefault && !option.negate && f.defaultValue !== undefined && f.defaultValue !== false && !isEmpty(f.defaultValue))
            help += ` (default: ${Array.isArray(f.defaultValue) ? f.defaultValue.join(",") : String(f.defaultValue)})`;
        option.description = help;
        if (!f.hasDefault && !f.optional && !option.negate && !option.isBoolean()) option.makeOptionMandatory();
        cmd.addOption(option);
    }
    return cmd;
}

function isEmpty(v: unknown) {
    return (Array.isArray(v) && v.length === 0) || (typeof v === "object" && v != null && Object.keys(v).length === 0);
}

/**
 * The options commander collected, put at their fields, coerced from text to the fields'
 * types and checked by `schema`; one OptionError ("invalid options: …") names every problem.
 */
export function parseCli<S extends z.ZodType>(schema: S, raw: Record<string, unknown>, options: readonly (string | CliOption)[]): z.output<S> {
    const input: Record<string, unknown> = {};
    for (const o of options.map(spec)) {
        const option = new Option(o.flags);
        const value = raw[option.attributeName()];
        if (value === undefined) continue;
        const path = fieldOf(option, o);
        const base = unwrap(fieldAt(schema, path)).base;
        if (option.negate) {
            // --no-x: false for a boolean field, null ("none") for any other; its implied true says nothing
            if (value === false) setAt(input, path, base._zod.def.type === "boolean" ? false : null);
            continue;
        }
        if (value === false) continue; // the --no-x twin of this option was given
        setAt(input, path, coerce(base, value));
    }
    return parseOptions(schema, input, "options");
}

function setAt(target: Record<string, unknown>, path: string, value: unknown) {
    const keys = path.split(".");
    let t = target;
    for (const k of keys.slice(0, -1)) t = (t[k] ??= {}) as Record<string, unknown>;
    t[keys.at(-1)!] = value;
}

/** Text from the command line as the field's type: numbers, comma lists; anything else as given. */
function coerce(base: z.ZodType, value: unknown): unknown {
    const def = base._zod.def as {type: string, options?: z.ZodType[]};
    // a repeatable option (<value...>): each value as the element's type
    if (Array.isArray(value) && def.type === "array")
        return value.map((v) => coerce(unwrap((def as unknown as {element: z.ZodType}).element).base, v));
    if (typeof value !== "string") return value;
    const numeric = /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(value.trim());
    switch (def.type) {
        case "number":
            return value.trim() === "" ? Number.NaN : Number(value);
        case "union":
            return numeric && def.options!.some((o) => unwrap(o).base._zod.def.type === "number") ? Number(value) : value;
        case "array": {
            const element = unwrap((def as unknown as {element: z.ZodType}).element).base;
            return value.split(",").map((v) => v.trim()).filter((v) => v !== "").map((v) => coerce(element, v));
        }
        default:
            return value;
    }
}

// --- fields that several commands take -------------------------------------------------------

export const commonFields = {
    model: z.string().min(1).describe("GGUF model"),
    systemPrompt: z.string().nullable().optional().describe("System message before each question (default: the one asking for the STILL thought format)"),
    systemFile: z.string().optional().describe("Read the system message from a file"),
    json: z.boolean().describe("Print the result as one JSON object").default(false)
};

/** --adapter and --adapter-scale. */
export function adapterFields() {
    return {
        adapter: z.string().optional().describe("LoRA adapter GGUF to apply"),
        adapterScale: z.number().describe("Scale of the adapter").default(1)
    };
}

export const adapterFlags: CliOption[] = [{flags: "--adapter <file>"}, {flags: "--adapter-scale <s>"}];
export const systemFlags: CliOption[] = [
    {flags: "--system <text>", field: "systemPrompt"},
    {flags: "--system-file <file>"},
    {flags: "--no-system", field: "systemPrompt", help: "No system message"}
];

/** A script's own command line (the benchmarks): its options from `schema`, parsed from process.argv (--help exits). */
export function parseArgv<S extends z.ZodType>(schema: S, flags: readonly (string | CliOption)[]): z.output<S> {
    const cmd = addOptions(new Command(), schema, flags);
    cmd.parse(process.argv);
    return parseCli(schema, cmd.opts(), flags);
}
