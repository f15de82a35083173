import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import { schemas as projectSchemas } from '@nanoresearch/schema';
import type { JsonSchema } from './types';

/** Compiled validators by schema text: a schema is compiled once per process. */
const validators = new Map<string, ValidateFunction>();

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
  if (!validate) {
    // One Ajv per schema: two schemas may carry the same $id (an edited copy of a project schema).
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    const ownId = typeof schema.$id === 'string' ? schema.$id : undefined;
    for (const known of Object.values(projectSchemas) as JsonSchema[]) {
      if (known.$id !== ownId) ajv.addSchema(known);
    }
    validate = ajv.compile(schema);
    validators.set(key, validate);
  }
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
  return (
    `Answer with one JSON object only, no prose and no code fence. ` +
    `It must match this JSON Schema ("${name}"):\n${JSON.stringify(schema)}`
  );
}
