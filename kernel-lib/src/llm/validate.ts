import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import { schemas as projectSchemas } from '@nanoresearch/schema';
import type { JsonSchema } from './types';

/** Compiled validators by schema text, most recently used last. */
const validators = new Map<string, ValidateFunction>();
/**
 * Validators kept. Planner schemas differ per call (their enums list the call's candidates),
 * so the cache is bounded; a schema seen again after eviction is compiled again.
 */
const VALIDATORS_KEPT = 64;

/**
 * The Ajv that knows the project's schemas, shared by every schema without a `$id` of its own.
 * Adding the project schemas costs ~40 ms (Ajv compiles its meta-schema for each new instance),
 * which a fresh instance per planner call paid on every stage.
 */
let shared: Ajv2020 | null = null;

function ajvWithProjectSchemas(except?: string): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  for (const known of Object.values(projectSchemas) as JsonSchema[]) {
    if (known.$id !== except) ajv.addSchema(known);
  }
  return ajv;
}

/**
 * Validates `value` against `schema` (JSON Schema 2020-12). The project's schemas are known to
 * the validator, so a schema may `$ref` them by file name (e.g. `planner-output.schema.json`).
 * Returns readable error lines; empty when valid.
 */
export function validateAgainst(schema: JsonSchema, value: unknown): string[] {
  const validate = validatorFor(schema);
  return validate(value) ? [] : (validate.errors ?? []).map(describeError);
}

function validatorFor(schema: JsonSchema): ValidateFunction {
  const key = JSON.stringify(schema);
  let validate = validators.get(key);
  if (validate) validators.delete(key);
  else if (typeof schema.$id === 'string') {
    // A schema with its own $id gets its own Ajv: it may reuse a project schema's $id (an edited copy).
    validate = ajvWithProjectSchemas(schema.$id).compile(schema);
  } else {
    shared ??= ajvWithProjectSchemas();
    validate = shared.compile(schema);
    // The compiled function stands alone; Ajv's own cache of the schema would only grow.
    shared.removeSchema(schema);
  }
  validators.set(key, validate);
  if (validators.size > VALIDATORS_KEPT) validators.delete(validators.keys().next().value as string);
  return validate;
}

function describeError(e: ErrorObject): string {
  const at = e.instancePath || '(root)';
  if (e.keyword === 'additionalProperties') {
    return `${at}: unexpected property "${(e.params as { additionalProperty: string }).additionalProperty}"`;
  }
  if (e.keyword === 'enum') {
    return `${at}: must be one of ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`;
  }
  return `${at}: ${e.message ?? e.keyword}`;
}

/** The name a schema is sent and reported under: explicit, else its title, else `response`. */
export function schemaNameOf(schema: JsonSchema, explicit?: string): string {
  const raw = explicit ?? (typeof schema.title === 'string' ? schema.title : 'response');
  return raw.replace(/[^a-zA-Z0-9_-]/g, '_').slice(0, 64) || 'response';
}

/** The instruction that carries a schema inside the prompt (json_object / none / local). */
export function schemaInstruction(schema: JsonSchema, name: string): string {
  return `Answer with one JSON object only, no prose and no code fence. ` + `It must match this JSON Schema ("${name}"):\n${JSON.stringify(schema)}`;
}
