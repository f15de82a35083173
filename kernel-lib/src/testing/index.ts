/** Loopback servers for tests: they stand in for external services, on 127.0.0.1 only. */
export * from './scripted-llm-server';
export * from './literature-fixture-server';
