// The options of the commands that can sample on OpenAI-compatible servers (generate, eval):
// the same fields and flags everywhere, and what they make for the remote client.
import {z} from "zod";
import {endpointOptionsSchema, type EndpointOptions} from "../remote/RemoteRollouts.js";
import type {CliOption} from "./cliOptions.js";

export const endpointFields = {
    endpoint: z.array(z.url({protocol: /^https?$/})).optional().describe("Sample on OpenAI-compatible servers instead (llama-server, vLLM, SGLang); repeat for several. " +
        "The model file then only gives the chat template and tokenizer"),
    endpointModel: endpointOptionsSchema.shape.model,
    endpointConcurrency: endpointOptionsSchema.shape.concurrency,
    apiKeyEnv: endpointOptionsSchema.shape.apiKeyEnv,
    requestTimeout: endpointOptionsSchema.shape.timeoutMs,
    endpointPrompt: endpointOptionsSchema.shape.prompt,
    endpointLogprobs: endpointOptionsSchema.shape.logprobs,
    samplesPerRequest: endpointOptionsSchema.shape.samplesPerRequest
};

export const endpointFlags: (string | CliOption)[] = [
    "--endpoint <url...>", "--endpoint-model <name>", "--endpoint-concurrency <n>", "--api-key-env <name>", "--request-timeout <ms>", "--endpoint-prompt <tokens|text>",
    "--samples-per-request <n>", {flags: "--no-endpoint-logprobs", help: "Do not ask servers for log-probs (faster on llama-server; samples are written without them)"}
];

const endpointObject = z.object(endpointFields);
type EndpointFieldValues = z.output<typeof endpointObject>;

/** The remote client's options from the command's, or undefined when no --endpoint is given. */
export function endpointOptionsFrom(o: EndpointFieldValues): EndpointOptions | undefined {
    if (o.endpoint == null || o.endpoint.length === 0) return undefined;
    return {
        urls: o.endpoint, concurrency: o.endpointConcurrency, timeoutMs: o.requestTimeout, prompt: o.endpointPrompt, logprobs: o.endpointLogprobs,
        samplesPerRequest: o.samplesPerRequest,
        ...(o.endpointModel == null ? {} : {model: o.endpointModel}), ...(o.apiKeyEnv == null ? {} : {apiKeyEnv: o.apiKeyEnv})
    };
}
