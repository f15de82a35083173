import { existsSync, statSync } from 'fs';
import * as path from 'path';
import type { StageBundle } from '@nanoresearch/schema';
import type { ArtifactKind, StageArtifact } from '../stage-contract';

export type { ArtifactKind, StageArtifact };

/** Most files a card lists: an experiment that writes hundreds of files still gets a readable card. */
export const MAX_CARD_ARTIFACTS = 50;

/** The order files are listed in: what a researcher opens first, first. */
const KIND_ORDER: ArtifactKind[] = ['paper', 'latex', 'bibtex', 'result', 'code', 'log', 'data', 'file'];

/** What a workspace file is, from its path. */
export function artifactKind(file: string): ArtifactKind {
  const ext = path.extname(file).toLowerCase();
  const parts = file.split(/[\\/]/);
  if (ext === '.md' && parts.includes('paper')) return 'paper';
  if (ext === '.tex') return 'latex';
  if (ext === '.bib') return 'bibtex';
  if (ext === '.log' || parts.includes('logs')) return 'log';
  if (parts.includes('results') || ext === '.json') return 'result';
  if (parts.includes('data')) return 'data';
  if (['.py', '.sh', '.r', '.jl', '.ipynb', '.js', '.ts'].includes(ext)) return 'code';
  return 'file';
}

/**
 * The files of a stage run: the `*_path` fields of its output (the paper, its LaTeX and BibTeX)
 * and `produced` (what the stage returned in StageResult.artifacts, its log). Paths relative to
 * the workspace; files that do not exist are left out.
 */
export function collectArtifacts(output: unknown, workspace: string, produced: readonly string[] = []): StageArtifact[] {
  const named =
    output && typeof output === 'object' && !Array.isArray(output)
      ? Object.entries(output as Record<string, unknown>)
          .filter(([key, value]) => key.endsWith('_path') && typeof value === 'string' && value.trim() !== '')
          .map(([, value]) => value as string)
      : [];
  const seen = new Set<string>();
  const found: StageArtifact[] = [];
  for (const candidate of [...named, ...produced]) {
    const relative = path.isAbsolute(candidate) ? path.relative(workspace, candidate) : path.normalize(candidate);
    if (!relative || relative.split(path.sep)[0] === '..' || seen.has(relative)) continue;
    seen.add(relative);
    const absolute = path.join(workspace, relative);
    if (!existsSync(absolute) || !statSync(absolute).isFile()) continue;
    found.push({ path: relative.split(path.sep).join('/'), kind: artifactKind(relative) });
  }
  found.sort((a, b) => KIND_ORDER.indexOf(a.kind) - KIND_ORDER.indexOf(b.kind) || a.path.localeCompare(b.path));
  return found.slice(0, MAX_CARD_ARTIFACTS);
}

/**
 * The links of a card: each file relative to `cwd` (the kernel's working directory, which is the
 * notebook's folder, so the extension resolves it like a relative link in the notebook). A file
 * in a hidden folder gets no link: JupyterLab refuses to open hidden paths.
 */
export function artifactLinks(artifacts: readonly StageArtifact[], workspace: string, cwd: string = process.cwd()): NonNullable<StageBundle['artifacts']> {
  return artifacts.map(a => {
    const relative = path.relative(cwd, path.resolve(workspace, a.path));
    const parts = relative.split(path.sep);
    const hidden = parts.some(part => part.startsWith('.') && part !== '..' && part !== '.');
    return { path: a.path, kind: a.kind, href: hidden || path.isAbsolute(relative) ? null : parts.join('/') };
  });
}
