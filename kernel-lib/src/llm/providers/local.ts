import { existsSync } from 'fs';
import { ggufPathFor } from '../embedded';
import type { ChatMessage } from '../types';
import { ProviderFailure } from '../retry';
import { withSystemInstruction, type Provider, type ProviderCall, type ProviderResult } from './types';

/**
 * node-llama-cpp is ESM with top-level await: it cannot be required, only imported. The compiler
 * (module node16) keeps this import() as is; its types are derived from it for the same reason.
 */
const importNodeLlamaCpp = () => import('node-llama-cpp');

type NodeLlamaCpp = Awaited<ReturnType<typeof importNodeLlamaCpp>>;
type Llama = Awaited<ReturnType<NodeLlamaCpp['getLlama']>>;
type LlamaModel = Awaited<ReturnType<Llama['loadModel']>>;
type LlamaContext = Awaited<ReturnType<LlamaModel['createContext']>>;
type LlamaContextSequence = ReturnType<LlamaContext['getSequence']>;
type LlamaGrammar = Awaited<ReturnType<Llama['createGrammar']>>;
type LlamaChatSession = InstanceType<NodeLlamaCpp['LlamaChatSession']>;
type ChatHistoryItem = ReturnType<LlamaChatSession['getChatHistory']>[number];
type Token = Parameters<LlamaModel['detokenize']>[0][number];
type ChatWrapper = NonNullable<ConstructorParameters<NodeLlamaCpp['LlamaChatSession']>[0]['chatWrapper']>;

/** A call's prompt exactly as the model evaluates it: the token ids and their text (special tokens as text). */
export interface RenderedPrompt {
  text: string;
  tokens: number[];
}

export interface LocalProviderOptions {
  /** Folder of the GGUF files; each call's model name maps to a file in it (llm/embedded.ts). */
  modelsDir?: string;
  contextSize: number;
  threads: number;
  timeoutMs: number;
}

/**
 * A context and its one sequence, kept between calls: a call whose prompt starts like the last
 * one's (the chat template, a stage's shared system prompt) evaluates only the tokens after the
 * common prefix, which on a CPU is most of a call's time. The answer is the same as from a fresh
 * sequence: only identical tokens are reused.
 */
interface ContextSlot {
  context: LlamaContext;
  sequence: LlamaContextSequence;
}

/** A loaded GGUF and what hangs off it: one context per LoRA adapter, compiled grammars. */
interface LoadedModel {
  lib: NodeLlamaCpp;
  llama: Llama;
  model: LlamaModel;
  /** How chat messages become the prompt text (see chatWrapperFor). */
  chatWrapper: Exclude<ChatWrapper, 'auto'>;
  contexts: Map<string, Promise<ContextSlot>>;
  grammars: Map<string, Promise<LlamaGrammar>>;
}

/** Models loaded in this process, by file path: loading takes seconds, so it happens once. */
const loadedModels = new Map<string, Promise<LoadedModel>>();

/**
 * Generations run one at a time in this process, whichever model serves them: the CPU has few
 * cores, and two models decoding side by side would each run at less than half speed.
 */
let generationQueue: Promise<unknown> = Promise.resolve();

/** Adapter contexts kept alive per model; the least recently used one beyond this is disposed. */
const MAX_ADAPTER_CONTEXTS = 3;

const FIX_MISSING_MODEL =
  'Run `npm start` (or scripts/setup) to fetch it, set NANORESEARCH_MODELS_DIR to the folder holding it, ' +
  'or set NANORESEARCH_LLM_BASE_URL to use an OpenAI-compatible server instead';

/**
 * The embedded model, run in this process by node-llama-cpp on the CPU. JSON answers are
 * constrained by a grammar built from the schema; a LoRA adapter GGUF can be applied per call.
 */
export class LocalProvider implements Provider {
  readonly name = 'local' as const;

  constructor(private readonly options: LocalProviderOptions) {}

  async generate(call: ProviderCall): Promise<ProviderResult> {
    const run = generationQueue.then(async () => this.generateWith(await this.load(call.model), call));
    generationQueue = run.catch(() => undefined);
    return run;
  }

  private async generateWith(loaded: LoadedModel, call: ProviderCall): Promise<ProviderResult> {
    const { sequence } = await this.contextFor(loaded, call.adapter?.ggufPath ?? null);
    const { history, prompt } = toChatHistory(modelMessages(call));
    const grammar = call.jsonSchema ? await grammarFor(loaded, call.jsonSchema, maxStringLengthFor(call.maxTokens)) : undefined;

    // A new session on the kept sequence: the history is set in full, so nothing of an earlier
    // call's conversation is in this one; only its evaluated prefix is reused.
    const session = new loaded.lib.LlamaChatSession({ contextSequence: sequence, autoDisposeSequence: false, chatWrapper: loaded.chatWrapper });
    const signal = this.options.timeoutMs > 0 ? AbortSignal.timeout(this.options.timeoutMs) : undefined;
    const outputBefore = sequence.tokenMeter.usedOutputTokens;
    try {
      session.setChatHistory(history);
      const promptTokens = countPromptTokens(loaded, session, history, prompt);
      const room = this.options.contextSize - promptTokens;
      if (room < Math.min(call.maxTokens ?? 256, 256)) {
        throw new ProviderFailure(
          `The prompt of ${promptTokens} tokens leaves no room for an answer in the embedded model's context of ${this.options.contextSize} tokens`,
          false,
          undefined,
          'Raise contextSize in Lab.open({ llm: { ...llmConfigFromEnv(), contextSize: 8192 } }), or point NANORESEARCH_LLM_BASE_URL at an OpenAI-compatible endpoint with a longer context (then restart the kernel)'
        );
      }
      const { responseText: text, stopReason } = await session.promptWithMeta(prompt, {
        ...(call.maxTokens !== undefined && { maxTokens: call.maxTokens }),
        ...(call.temperature !== undefined && { temperature: call.temperature }),
        ...(call.seed !== undefined && { seed: call.seed }),
        ...(grammar && { grammar }),
        ...(signal && { signal }),
        // The card's live preview and token count of a call in flight.
        ...(call.onText && { onTextChunk: call.onText })
      });
      return {
        text,
        model: call.model,
        // Generated tokens as the model counted them (grammar-forced whitespace included).
        usage: { promptTokens, completionTokens: sequence.tokenMeter.usedOutputTokens - outputBefore },
        truncated: stopReason === 'maxTokens'
      };
    } catch (err) {
      if (err instanceof ProviderFailure) throw err;
      if (signal?.aborted) {
        throw new ProviderFailure(
          `The embedded model ${call.model} did not finish within ${this.options.timeoutMs} ms`,
          false,
          undefined,
          // The suggestion doubles today's limit: a limit that fired is never the one to suggest.
          `Raise the per-call limit: Lab.open({ llm: { ...llmConfigFromEnv(), timeoutMs: ${this.options.timeoutMs * 2} } }) or NANORESEARCH_LLM_TIMEOUT_MS=${this.options.timeoutMs * 2} (then restart the kernel); ` +
            'a machine busy with other work slows the embedded model; or point NANORESEARCH_LLM_BASE_URL at a faster OpenAI-compatible endpoint',
          undefined,
          { cause: err }
        );
      }
      throw new ProviderFailure(`The embedded model failed: ${(err as Error).message}`, false, undefined, undefined, undefined, {
        cause: err
      });
    } finally {
      session.dispose();
    }
  }

  /**
   * The prompt `generate(call)` gives the model, without generating: the chat template applied to
   * the messages (the JSON instruction included when the call has a schema), as token ids and
   * their text. The planner stores this text as its x, so the trainer scores y in this context.
   */
  async renderPrompt(call: Pick<ProviderCall, 'model' | 'messages' | 'jsonSchema'>): Promise<RenderedPrompt> {
    const loaded = await this.load(call.model);
    const { history, prompt } = toChatHistory(modelMessages(call));
    const tokens = [...promptTokensOf(loaded, loaded.chatWrapper, history, prompt)];
    return { text: loaded.model.detokenize(tokens as Token[], true), tokens };
  }

  /**
   * log p(tokens[i] | tokens[<i]) for every i >= from, as this model (with the adapter) computes
   * it: the full-vocabulary distribution before any grammar or sampler option. For checks that the
   * trainer scores an answer as inference does; it runs in the generation queue.
   */
  async tokenLogprobs(call: { model: string; adapterPath?: string | null; tokens: number[]; from: number }): Promise<number[]> {
    const run = generationQueue.then(async () => {
      const { sequence } = await this.contextFor(await this.load(call.model), call.adapterPath ?? null);
      await sequence.clearHistory();
      const wanted = (i: number) => i >= call.from - 1 && i < call.tokens.length - 1;
      const out = await sequence.controlledEvaluate(
        call.tokens.map(id => id as Token).map((token, i) => (wanted(i) ? [token, { generateNext: { probabilities: true } }] : token))
      );
      const logprobs: number[] = [];
      for (let i = Math.max(call.from, 1); i < call.tokens.length; i++)
        logprobs.push(Math.log(out[i - 1]?.next.probabilities?.get(call.tokens[i] as Token) ?? 0));
      return logprobs;
    });
    generationQueue = run.catch(() => undefined);
    return run;
  }

  private load(model: string): Promise<LoadedModel> {
    const modelPath = this.options.modelsDir ? ggufPathFor(model, this.options.modelsDir) : undefined;
    if (!modelPath || !existsSync(modelPath)) {
      const what = modelPath
        ? `The embedded model file ${modelPath} (model ${model}) is missing`
        : `No models folder was found for the embedded model ${model}`;
      return Promise.reject(new ProviderFailure(what, false, undefined, FIX_MISSING_MODEL));
    }
    let loading = loadedModels.get(modelPath);
    if (!loading) {
      loading = loadModel(modelPath);
      loadedModels.set(modelPath, loading);
      // A failed load is not cached: the next call tries again (e.g. after the file is fetched).
      loading.catch(() => loadedModels.delete(modelPath));
    }
    return loading;
  }

  private contextFor(loaded: LoadedModel, adapterPath: string | null): Promise<ContextSlot> {
    const key = adapterPath ?? '';
    let context = loaded.contexts.get(key);
    if (context) {
      // Re-insert to mark it most recently used.
      loaded.contexts.delete(key);
      loaded.contexts.set(key, context);
      return context;
    }
    if (adapterPath && !existsSync(adapterPath)) {
      return Promise.reject(
        new ProviderFailure(
          `The LoRA adapter file ${adapterPath} is missing`,
          false,
          undefined,
          'Train one with lab.train() or switch adapters with useAdapter()'
        )
      );
    }
    context = loaded.model
      .createContext({
        contextSize: this.options.contextSize,
        threads: this.options.threads,
        sequences: 1,
        ...(adapterPath && { lora: { adapters: [{ filePath: adapterPath }] } })
      })
      .then(created => ({ context: created, sequence: created.getSequence() }))
      .catch((err: Error) => {
        loaded.contexts.delete(key);
        const what = adapterPath ? `Could not load the LoRA adapter ${adapterPath}` : 'Could not create a context for the embedded model';
        throw new ProviderFailure(
          `${what}: ${err.message}`,
          false,
          undefined,
          adapterPath ? 'Check that the adapter was written for this base model' : undefined,
          undefined,
          {
            cause: err
          }
        );
      });
    loaded.contexts.set(key, context);
    while (loaded.contexts.size > MAX_ADAPTER_CONTEXTS) {
      const [oldestKey, oldest] = loaded.contexts.entries().next().value as [string, Promise<ContextSlot>];
      loaded.contexts.delete(oldestKey);
      void oldest.then(slot => slot.context.dispose()).catch(() => undefined);
    }
    return context;
  }
}

async function loadModel(modelPath: string): Promise<LoadedModel> {
  try {
    const lib = await importNodeLlamaCpp();
    const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: lib.LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath });
    return { lib, llama, model, chatWrapper: chatWrapperFor(lib, model), contexts: new Map(), grammars: new Map() };
  } catch (err) {
    const message = (err as Error).message;
    const hint = /experimental-vm-modules/.test(message)
      ? 'Under jest, run node with --experimental-vm-modules (`npm test -w kernel-lib` does)'
      : 'Check that node-llama-cpp 3.21.1 is installed with its prebuilt CPU binary and that the file is a GGUF model';
    throw new ProviderFailure(`Could not load the embedded model ${modelPath}: ${message}`, false, undefined, hint, undefined, {
      cause: err
    });
  }
}

/**
 * Frees every embedded model loaded in this process (its contexts and native handles), so the
 * process can exit; the next local call loads the model again.
 */
export async function disposeLocalModels(): Promise<void> {
  const loading = [...loadedModels.values()];
  loadedModels.clear();
  await generationQueue;
  const llamas = new Set<Llama>();
  for (const pending of loading) {
    const loaded = await pending.catch(() => undefined);
    if (!loaded) continue;
    await loaded.model.dispose();
    llamas.add(loaded.llama);
  }
  // Models may share one llama instance: each is disposed once, after its models.
  for (const llama of llamas) await llama.dispose();
}

/**
 * The prompt's rendering: the model's own GGUF chat template (the one transformers applies too,
 * so the trainer scores an answer in the context the model was given) wherever node-llama-cpp's
 * built-in wrapper for the model renders a system + user turn differently from it; else the
 * built-in wrapper. SmolLM2: the built-in ChatML wrapper prepends the BOS token, which for this
 * model is `<|im_start|>`, so every prompt began with it twice; Qwen2.5: the two agree.
 */
function chatWrapperFor(lib: NodeLlamaCpp, model: LlamaModel): Exclude<ChatWrapper, 'auto'> {
  const builtIn = lib.resolveChatWrapper(model);
  let template: Exclude<ChatWrapper, 'auto'>;
  try {
    template = lib.resolveChatWrapper(model, { type: 'jinjaTemplate' });
  } catch {
    return builtIn;
  }
  const probe: ChatHistoryItem[] = [{ type: 'system', text: 'S' }];
  const render = (wrapper: Exclude<ChatWrapper, 'auto'>) => {
    try {
      return promptTokensOf({ model }, wrapper, probe, 'U').join(',');
    } catch {
      return null;
    }
  };
  const fromTemplate = render(template);
  return fromTemplate !== null && fromTemplate !== render(builtIn) ? template : builtIn;
}

/** The messages the model is given: a call with a schema gets the JSON instruction as (part of) its system message. */
function modelMessages(call: Pick<ProviderCall, 'messages' | 'jsonSchema'>): ChatMessage[] {
  return call.jsonSchema ? withSystemInstruction(call.messages, grammarInstruction(call.jsonSchema)) : call.messages;
}

/**
 * What the prompt says about the answer's form. The grammar already forces the schema, keys
 * included, so the schema text itself (often over 1,000 tokens) would only cost prompt time on a
 * CPU; naming the keys keeps the model's answer and the grammar in step.
 */
function grammarInstruction(schema: Record<string, unknown>): string {
  const keys = Object.keys((schema.properties ?? {}) as Record<string, unknown>);
  return `Answer with one JSON object only${keys.length ? `, with the keys ${keys.join(', ')}` : ''}.`;
}

/**
 * A small model tends to run on inside a free-text string until the token limit cuts the JSON
 * off, which wastes the call. So when a token limit is set, the grammar caps every string the
 * schema leaves unbounded at as many characters as the limit has tokens (about a quarter of it,
 * leaving the rest for the structure and its whitespace); the answer still satisfies the schema.
 */
function maxStringLengthFor(maxTokens: number | undefined): number | undefined {
  return maxTokens === undefined ? undefined : Math.max(32, maxTokens);
}

function grammarFor(loaded: LoadedModel, schema: Record<string, unknown>, maxStringLength: number | undefined): Promise<LlamaGrammar> {
  const key = `${maxStringLength ?? ''}:${JSON.stringify(schema)}`;
  let grammar = loaded.grammars.get(key);
  if (!grammar) {
    grammar = loaded.llama
      .createGrammarForJsonSchema(grammarSchema(schema, maxStringLength) as never)
      .then(pretty => loaded.llama.createGrammar({ grammar: compactJson(pretty.grammar), stopGenerationTriggers: [JSON_STOP], trimWhitespaceSuffix: true }));
    loaded.grammars.set(key, grammar);
    grammar.catch(() => loaded.grammars.delete(key));
  }
  return grammar;
}

/** How node-llama-cpp's JSON grammar ends an answer (its root rule closes with these newlines). */
const JSON_STOP = '\n\n\n\n';

/**
 * The JSON schema grammar with one optional space where it allows a newline and indentation:
 * pretty-printing a plan cost the 135M planner about 300 whitespace tokens per call, a third of
 * its time; the answer is the same JSON.
 */
function compactJson(grammar: string): string {
  return grammar
    .split('\n')
    .map(line => line.replace(/^((?:comma-)?whitespace-[\w-]+) ::= .*$/, (_rule, name: string) => `${name} ::= ${name.startsWith('comma-') ? '"," ' : ''}[ ]?`))
    .join('\n');
}

/** Annotation keywords node-llama-cpp's grammar builder does not know; they do not constrain anything. */
const ANNOTATIONS = new Set(['$schema', '$id', '$comment', 'title', 'examples', 'default', 'format', 'readOnly', 'writeOnly']);

/**
 * The schema as the grammar builder takes it: annotation keywords dropped (in every nested
 * schema, never a property named like one) and unbounded strings capped at `maxStringLength`.
 */
function grammarSchema(schema: unknown, maxStringLength: number | undefined): unknown {
  if (Array.isArray(schema)) return schema.map(item => grammarSchema(item, maxStringLength));
  if (!schema || typeof schema !== 'object') return schema;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (ANNOTATIONS.has(key)) continue;
    if ((key === 'properties' || key === '$defs') && value && typeof value === 'object') {
      out[key] = Object.fromEntries(Object.entries(value).map(([name, sub]) => [name, grammarSchema(sub, maxStringLength)]));
    } else if (key === 'enum' || key === 'const' || key === 'required') {
      out[key] = value;
    } else {
      out[key] = grammarSchema(value, maxStringLength);
    }
  }
  const unboundedString = out.type === 'string' && out.maxLength === undefined && out.enum === undefined && out.const === undefined;
  if (maxStringLength !== undefined && unboundedString) out.maxLength = maxStringLength;
  return out;
}

/**
 * Chat messages as node-llama-cpp history plus the prompt to answer: system messages joined
 * into one, earlier turns as history, the last user message as the prompt.
 */
function toChatHistory(messages: ChatMessage[]): { history: ChatHistoryItem[]; prompt: string } {
  const system = messages.filter(m => m.role === 'system').map(m => m.content);
  const turns = messages.filter(m => m.role !== 'system');
  const last = turns[turns.length - 1];
  const prompt = last && last.role === 'user' ? last.content : '';
  const earlier = last && last.role === 'user' ? turns.slice(0, -1) : turns;
  const history: ChatHistoryItem[] = [];
  if (system.length) history.push({ type: 'system', text: system.join('\n\n') });
  for (const m of earlier) {
    history.push(m.role === 'user' ? { type: 'user', text: m.content } : { type: 'model', response: [m.content] });
  }
  return { history, prompt };
}

/** Tokens of the prompt as the model's chat template renders it, counted by the model's tokenizer. */
function countPromptTokens(loaded: LoadedModel, session: LlamaChatSession, history: ChatHistoryItem[], prompt: string): number {
  return promptTokensOf(loaded, session.chatWrapper, history, prompt).length;
}

/** The prompt's token ids: the history and the user prompt rendered by `wrapper`, up to the model's turn. */
function promptTokensOf(
  loaded: Pick<LoadedModel, 'model'>,
  wrapper: Pick<LlamaChatSession['chatWrapper'], 'generateContextState'>,
  history: ChatHistoryItem[],
  prompt: string
): number[] {
  const state = wrapper.generateContextState({
    chatHistory: [...history, { type: 'user', text: prompt }, { type: 'model', response: [] }]
  });
  return state.contextText.tokenize(loaded.model.tokenizer) as number[];
}

/**
 * The prompt an embedded-model call would give the model (LocalProvider.renderPrompt), for code
 * that holds an Llm config rather than the provider: the planner stores it as x.
 */
export function renderEmbeddedPrompt(modelsDir: string | undefined, call: Pick<ProviderCall, 'model' | 'messages' | 'jsonSchema'>): Promise<RenderedPrompt> {
  return new LocalProvider({ modelsDir, contextSize: 0, threads: 1, timeoutMs: 0 }).renderPrompt(call);
}
