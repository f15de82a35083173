/** The paper as sections, and its renderings: Markdown, LaTeX and BibTeX. */
import type { Paper } from '@nanoresearch/schema';
import * as path from 'path';
import type { StageContext } from '../stage-contract';
import { writeWorkspaceFile } from './common';

export const SECTIONS = ['abstract', 'introduction', 'related_work', 'method', 'experiments', 'conclusion'] as const;
export type SectionName = (typeof SECTIONS)[number];

export const SECTION_HEADINGS: Record<SectionName, string> = {
  abstract: 'Abstract',
  introduction: 'Introduction',
  related_work: 'Related Work',
  method: 'Method',
  experiments: 'Experiments',
  conclusion: 'Conclusion'
};

export interface PaperDraft {
  title: string;
  sections: { name: SectionName; text: string }[];
  bibliography: Paper[];
}

/** Citation keys used as `[@key]` or `[@a; @b]` in a text. */
export function citedKeys(text: string): string[] {
  const keys = new Set<string>();
  for (const group of text.matchAll(/\[([^\]]*@[^\]]*)\]/g)) for (const k of group[1].matchAll(/@([\w:.-]*\w)/g)) keys.add(k[1]);
  return [...keys];
}

/**
 * `text` citing only `known` keys: an unknown key is taken out of its [@a; @b] group, and a group
 * left empty is removed. A small model invents plausible keys; the paper cites retrieved papers only.
 */
export function withKnownCitations(text: string, known: Set<string>): { text: string; removed: string[] } {
  const removed = new Set<string>();
  const cleaned = text.replace(/\s?\[([^\]]*@[^\]]*)\]/g, (group, inner: string) => {
    const keys = [...inner.matchAll(/@([\w:.-]*\w)/g)].map(k => k[1]);
    const kept = keys.filter(k => known.has(k));
    for (const k of keys) if (!known.has(k)) removed.add(k);
    if (kept.length === keys.length) return group;
    return kept.length ? `${group.startsWith(' ') ? ' ' : ''}[${kept.map(k => `@${k}`).join('; ')}]` : '';
  });
  return { text: cleaned, removed: [...removed] };
}

export function renderMarkdown(draft: PaperDraft): string {
  const cited = new Set(draft.sections.flatMap(s => citedKeys(s.text)));
  const refs = draft.bibliography.filter(p => cited.has(p.key));
  return (
    [
      `# ${draft.title}`,
      ...draft.sections.map(s => `## ${SECTION_HEADINGS[s.name]}\n\n${s.text.trim()}`),
      `## References\n\n${refs.map(p => `- [${p.key}] ${(p.authors ?? []).join(', ') || 'Anonymous'} (${p.year ?? 'n.d.'}). ${p.title}.${p.venue ? ` ${p.venue}.` : ''}${p.doi ? ` doi:${p.doi}` : ''}`).join('\n')}`
    ].join('\n\n') + '\n'
  );
}

function latexEscape(text: string): string {
  return text
    .replace(/\\/g, '\\textbackslash{}')
    .replace(/([&%$#_{}])/g, '\\$1')
    .replace(/~/g, '\\textasciitilde{}')
    .replace(/\^/g, '\\textasciicircum{}');
}

/** Markdown body to LaTeX: citations, bold/italic, lists and pipe tables. */
export function markdownToLatex(md: string): string {
  const inline = (s: string) =>
    latexEscape(s)
      .replace(
        /\[((?:[^\]]*?)@[^\]]*)\]/g,
        (_, inner: string) => `\\cite{${[...inner.matchAll(/@([\w:.-]*\w)/g)].map(m => m[1].replace(/\\_/g, '_')).join(',')}}`
      )
      .replace(/\*\*([^*]+)\*\*/g, '\\textbf{$1}')
      .replace(/\*([^*]+)\*/g, '\\emph{$1}');
  const out: string[] = [];
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s*\|.*\|\s*$/.test(line)) {
      const rows: string[][] = [];
      while (i < lines.length && /^\s*\|.*\|\s*$/.test(lines[i])) {
        if (!/^\s*\|[\s:|-]+\|\s*$/.test(lines[i]))
          rows.push(
            lines[i]
              .trim()
              .slice(1, -1)
              .split('|')
              .map(c => c.trim())
          );
        i++;
      }
      i--;
      out.push(
        `\\begin{tabular}{${'l'.repeat(rows[0]?.length ?? 1)}}`,
        '\\hline',
        ...rows.map((r, j) => `${r.map(inline).join(' & ')} \\\\${j === 0 ? ' \\hline' : ''}`),
        '\\hline',
        '\\end{tabular}'
      );
    } else if (/^\s*[-*]\s+/.test(line)) {
      out.push('\\begin{itemize}');
      while (i < lines.length && /^\s*[-*]\s+/.test(lines[i])) out.push(`  \\item ${inline(lines[i++].replace(/^\s*[-*]\s+/, ''))}`);
      i--;
      out.push('\\end{itemize}');
    } else out.push(inline(line));
  }
  return out.join('\n');
}

export function renderLatex(draft: PaperDraft): string {
  const body = draft.sections
    .map(s =>
      s.name === 'abstract'
        ? `\\begin{abstract}\n${markdownToLatex(s.text.trim())}\n\\end{abstract}`
        : `\\section{${SECTION_HEADINGS[s.name]}}\n${markdownToLatex(s.text.trim())}`
    )
    .join('\n\n');
  return [
    '\\documentclass{article}',
    '\\usepackage[utf8]{inputenc}',
    '\\usepackage{natbib}',
    `\\title{${latexEscape(draft.title)}}`,
    '\\begin{document}',
    '\\maketitle',
    body,
    '\\bibliographystyle{plainnat}',
    '\\bibliography{references}',
    '\\end{document}',
    ''
  ].join('\n');
}

export function renderBibtex(papers: Paper[]): string {
  const field = (name: string, value: string | number | null | undefined) =>
    value === undefined || value === null || value === '' ? '' : `  ${name} = {${String(value).replace(/[{}]/g, '')}},\n`;
  return (
    papers
      .map(
        p =>
          `@article{${p.key},\n${field('title', p.title)}${field('author', (p.authors ?? []).join(' and '))}${field('year', p.year)}${field('journal', p.venue)}${field('doi', p.doi)}${field('url', p.url)}}`
      )
      .join('\n\n') + '\n'
  );
}

/** Writes paper.md, paper.tex and references.bib under <workspace>/paper/; returns their workspace-relative paths. */
export function writePaperFiles(ctx: StageContext, draft: PaperDraft): { paper_path: string; tex_path: string; bib_path: string } {
  const dir = 'paper';
  const paths = { paper_path: path.join(dir, 'paper.md'), tex_path: path.join(dir, 'paper.tex'), bib_path: path.join(dir, 'references.bib') };
  writeWorkspaceFile(ctx, paths.paper_path, renderMarkdown(draft));
  writeWorkspaceFile(ctx, paths.tex_path, renderLatex(draft));
  writeWorkspaceFile(ctx, paths.bib_path, renderBibtex(draft.bibliography));
  return paths;
}
