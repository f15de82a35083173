/**
 * The import drawing of kernel-lib/src, checked: modules (a top-level file or folder) import each
 * other without a circle, so every import runs from a higher layer to a lower one (the layers are
 * listed in kernel-lib/README.md). The entry points may import anything and nothing imports them.
 */
import { readdirSync, readFileSync, statSync } from 'fs';
import * as path from 'path';

const SRC = path.resolve(__dirname, '..', 'src');
const ENTRY_POINTS = new Set(['bridge', 'cli', 'index', 'internals', 'bench', 'testing']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap(name => {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) return sourceFiles(full);
    return name.endsWith('.ts') ? [full] : [];
  });
}

/** The module a file belongs to: its top-level folder, or its own name for a top-level file. */
function moduleOf(file: string): string {
  const [first] = path.relative(SRC, file).split(path.sep);
  return first.replace(/\.ts$/, '');
}

/** Module → the other modules it imports (relative imports only; `import type` counts too). */
function importGraph(): Map<string, Set<string>> {
  const graph = new Map<string, Set<string>>();
  for (const file of sourceFiles(SRC)) {
    const from = moduleOf(file);
    const edges = graph.get(from) ?? new Set<string>();
    graph.set(from, edges);
    for (const match of readFileSync(file, 'utf8').matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s+'(\.{1,2}\/[^']+)'/g)) {
      const target = moduleOf(path.resolve(path.dirname(file), match[1]));
      if (target !== from) edges.add(target);
    }
  }
  return graph;
}

/** A circle of modules, or null when the graph has none. */
function findCircle(graph: Map<string, Set<string>>): string[] | null {
  const state = new Map<string, 'open' | 'done'>();
  const trail: string[] = [];
  const visit = (node: string): string[] | null => {
    if (state.get(node) === 'done') return null;
    if (state.get(node) === 'open') return [...trail.slice(trail.indexOf(node)), node];
    state.set(node, 'open');
    trail.push(node);
    for (const next of graph.get(node) ?? []) {
      const circle = visit(next);
      if (circle) return circle;
    }
    trail.pop();
    state.set(node, 'done');
    return null;
  };
  for (const node of graph.keys()) {
    const circle = visit(node);
    if (circle) return circle;
  }
  return null;
}

test('kernel-lib/src has no import circle between its modules', () => {
  const graph = importGraph();
  expect(graph.size).toBeGreaterThan(20);
  // The drawing is read right: edges the design has are there.
  expect([...graph.get('lab')!]).toEqual(expect.arrayContaining(['orchestrator', 'stages', 'store']));
  expect([...graph.get('orchestrator')!]).toEqual(expect.arrayContaining(['planner', 'stage-contract', 'records']));
  expect(findCircle(graph)).toBeNull();
});

test('no module imports an entry point (bridge, cli, index, internals, bench, testing)', () => {
  const offenders = [...importGraph()].flatMap(([from, targets]) =>
    ENTRY_POINTS.has(from) ? [] : [...targets].filter(t => ENTRY_POINTS.has(t)).map(t => `${from} → ${t}`)
  );
  expect(offenders).toEqual([]);
});

test('the circle finder finds a circle (the check can fail)', () => {
  const graph = new Map([
    ['a', new Set(['b'])],
    ['b', new Set(['c'])],
    ['c', new Set(['a'])]
  ]);
  expect(findCircle(graph)).toEqual(['a', 'b', 'c', 'a']);
});
