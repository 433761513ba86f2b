// Renders a model's Jinja chat template, as Hugging Face's apply_chat_template does.
import {Template} from "@huggingface/jinja";

export type ChatTemplateContext = {addGenerationPrompt: boolean, bosToken: string, eosToken: string};

/** The template itself rejected the messages (raise_exception): not a renderer limitation. */
export class ChatTemplateRefusal extends Error {}

const compiled = new Map<string, Template>();

export function renderChatTemplate(template: string, messages: readonly {role: string, content: string}[], ctx: ChatTemplateContext): string {
    let t = compiled.get(template);
    if (t == null) {
        t = new Template(template);
        compiled.set(template, t);
    }
    return t.render({
        messages: messages.map((m) => ({role: m.role, content: m.content})),
        add_generation_prompt: ctx.addGenerationPrompt,
        bos_token: ctx.bosToken,
        eos_token: ctx.eosToken,
        raise_exception: (message: string) => {
            throw new ChatTemplateRefusal(`the chat template refused the messages: ${message}`);
        }
    });
}
