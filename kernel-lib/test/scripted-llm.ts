/**
 * An Llm against the scripted loopback server, for the LLM layer's tests: tiny retry delays, its
 * accounting rows collected, the server closed after each test. Roles use `writer-model`, the
 * planner `planner-model`.
 */
import { createLlm, type LlmCallRecord, type LlmConfig } from '../src/llm';
import { startScriptedLlmServer, type LlmScript, type ScriptedLlmServer } from '../src/testing';

export const user = (content: string) => [{ role: 'user' as const, content }];

let server: ScriptedLlmServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

export async function scripted(script: LlmScript, config: Partial<LlmConfig> = {}) {
  server = await startScriptedLlmServer(script);
  const rows: LlmCallRecord[] = [];
  const llm = createLlm(
    {
      provider: 'openai',
      baseURL: server.url,
      models: { default: 'writer-model', planner: 'planner-model' },
      retryBaseDelayMs: 1,
      retryMaxDelayMs: 5,
      ...config
    },
    undefined,
    { onCall: row => rows.push(row) }
  );
  return { llm, rows, server };
}
