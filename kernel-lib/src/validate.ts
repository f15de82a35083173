import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { schemas } from '@nanoresearch/schema';

/** A schema-validation failure: names the schema and lists each error with its JSON path. */
export class SchemaValidationError extends Error {
  constructor(
    readonly schemaName: string,
    readonly errors: string[]
  ) {
    super(`invalid ${schemaName}: ${errors.join('; ')}`);
    this.name = 'SchemaValidationError';
  }
}

let ajv: Ajv2020 | undefined;

/** One Ajv instance holding every project schema, so cross-file `$ref`s resolve by `$id`. */
function registry(): Ajv2020 {
  if (!ajv) {
    ajv = new Ajv2020({ allErrors: true, strict: false });
    addFormats(ajv);
    for (const schema of Object.values(schemas)) ajv.addSchema(schema);
  }
  return ajv;
}

/** The `$id` of a project schema from its file stem, e.g. `stage-bundle`. */
function schemaId(name: string): string {
  const schema = schemas[`${name}.schema.json`];
  if (!schema) throw new Error(`unknown schema '${name}': known are ${Object.keys(schemas).join(', ')}`);
  return schema.$id as string;
}

/** Errors of `value` against the named project schema (file stem, e.g. `sdpo-example`); empty when valid. */
export function schemaErrors(name: string, value: unknown): string[] {
  const validate = registry().getSchema(schemaId(name));
  if (!validate) throw new Error(`schema '${name}' failed to compile`);
  if (validate(value)) return [];
  return (validate.errors ?? []).map(e => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`);
}

/**
 * Errors of `value` against one part of a project schema, named by a JSON pointer into it, e.g.
 * ('bridge-methods', '/properties/sql/properties/params'); empty when valid.
 */
export function schemaErrorsAt(name: string, pointer: string, value: unknown): string[] {
  const validate = registry().getSchema(`${schemaId(name)}#${pointer}`);
  if (!validate) throw new Error(`schema '${name}' has nothing at '${pointer}'`);
  if (validate(value)) return [];
  return (validate.errors ?? []).map(e => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`);
}

/** Throws SchemaValidationError unless `value` is valid against the named project schema. */
export function assertValid<T>(name: string, value: unknown): T {
  const errors = schemaErrors(name, value);
  if (errors.length) throw new SchemaValidationError(name, errors);
  return value as T;
}
